"""Live input: call and response, and knobs.

A person plays on a MIDI input port. While they play the model is quiet; when they pause for
`gap` seconds with no key down, their phrase (timed on the monotonic clock, put on the codec's
grid at the current tempo) is handed to the player, which lets the model answer it. Two CC
numbers set the temperature and the tempo live.

No Python callback: rtmidi queues what arrives and the player's loop drains the queue with
`poll`. (A callback would run Python in JACK's realtime thread, which then waits for the GIL;
under load JACK gives up on it and events are lost or repeated.) Times inside a phrase come from
rtmidi's own delta stamps, so the loop's wake-ups don't blur the rhythm. Like the output, the
input port may come and go: it is looked for until it appears and again after it vanishes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import mido
import numpy as np
import rtmidi

from playbach.events import merge_overlaps, notes_to_events, quantize_notes
from playbach.device.midi_io import WatchedPort

log = logging.getLogger(__name__)

TEMPERATURE_RANGE = (0.1, 2.0)   # CC 0..127 maps linearly onto these
BPM_RANGE = (40.0, 200.0)


@dataclass
class LiveNews:
    """What happened on the input since the last poll."""
    playing: bool = False                  # someone is playing: be quiet
    phrase: np.ndarray | None = None       # a finished phrase (event values) to answer
    temperature: float | None = None
    bpm: float | None = None


def cc_to(value: int, low: float, high: float) -> float:
    return low + (high - low) * value / 127


class LiveInput(WatchedPort):
    client_class = rtmidi.MidiIn
    direction = "input"
    connected_text = "listening on input port '{name}'"

    def __init__(self, api: str, wanted: str, ticks_per_quarter: int, gap: float = 1.0,
                 cc_temperature: int = -1, cc_tempo: int = -1, retry_seconds: float = 1.0):
        super().__init__(api, wanted, retry_seconds, client_name="playbach-in")
        self.tpq, self.gap = ticks_per_quarter, gap
        self.cc_temperature, self.cc_tempo = cc_temperature, cc_tempo
        self.clock = 0.0                                  # seconds, summed from rtmidi's deltas
        self.down: dict[int, tuple[float, int]] = {}     # pitch -> (clock, velocity) of keys held
        self.phrase: list[tuple[float, int, float, int]] = []  # (start, pitch, seconds, velocity)
        self.last_activity = float("-inf")                # monotonic time of the last key event

    def _on_connect(self) -> None:
        self.client.ignore_types(sysex=True, timing=True, active_sense=True)

    def _on_vanish(self) -> None:
        """Unplugged keyboard: let go of its held keys, or the model would wait on them forever."""
        for pitch, (start, velocity) in self.down.items():
            self.phrase.append((start, pitch, self.clock - start, velocity))
        self.down.clear()
        self.last_activity = time.monotonic()

    def _take(self, data: list[int], now: float) -> LiveNews | None:
        try:
            msg = mido.Message.from_bytes(data)
        except ValueError:
            return None
        log.debug("input: %s", msg)
        if msg.type == "note_on" and msg.velocity > 0:
            self.down[msg.note] = (self.clock, msg.velocity)
            self.last_activity = now
        elif msg.type in ("note_on", "note_off") and msg.note in self.down:
            start, velocity = self.down.pop(msg.note)
            self.phrase.append((start, msg.note, self.clock - start, velocity))
            self.last_activity = now
        elif msg.type == "control_change" and msg.control == self.cc_temperature:
            return LiveNews(temperature=cc_to(msg.value, *TEMPERATURE_RANGE))
        elif msg.type == "control_change" and msg.control == self.cc_tempo:
            return LiveNews(bpm=cc_to(msg.value, *BPM_RANGE))
        return None

    def poll(self, now: float, bpm: float) -> LiveNews:
        """Drain what arrived; a phrase is finished after `gap` s of silence with no key down."""
        news = LiveNews()
        if self.connected:
            self._drain(news, now)
        super().poll(now)
        news.playing = bool(self.down) or (bool(self.phrase) and now - self.last_activity < self.gap)
        if self.phrase and not news.playing:
            news.phrase = self.to_events(self.phrase, bpm)
            self.phrase = []
        return news

    def _drain(self, news: LiveNews, now: float) -> None:
        while (item := self.client.get_message()) is not None:
            data, delta = item
            self.clock += delta
            knob = self._take(data, now)
            if knob is not None:
                news.temperature = knob.temperature if knob.temperature is not None else news.temperature
                news.bpm = knob.bpm if knob.bpm is not None else news.bpm

    def to_events(self, phrase: list[tuple[float, int, float, int]], bpm: float) -> np.ndarray:
        """Seconds -> quarters at the current tempo -> the codec's grid -> event values."""
        t0 = min(p[0] for p in phrase)
        per_quarter = 60.0 / bpm
        raw = [((s - t0) / per_quarter, pitch, d / per_quarter, v) for s, pitch, d, v in phrase]
        notes, _ = quantize_notes(raw, self.tpq)
        notes, _ = merge_overlaps(notes)
        return notes_to_events(notes)
