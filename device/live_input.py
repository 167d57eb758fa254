"""Live input: call and response, and knobs.

A person plays on a MIDI input port. While they play the model is quiet; when they pause for
`gap` seconds with no key down, their phrase (timed on the monotonic clock, put on the codec's
grid at the current tempo) is handed to the player, which lets the model answer it. Two CC
numbers set the temperature and the tempo live. rtmidi calls back on its own thread; the
player collects the results from its loop with `poll`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from playbach.device.events import merge_overlaps, notes_to_events, quantize_notes
from playbach.device.midi_io import backend, find_port, port_lister

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


class LiveInput:
    def __init__(self, api: str, wanted: str, ticks_per_quarter: int, gap: float = 1.0,
                 cc_temperature: int = -1, cc_tempo: int = -1, retry_seconds: float = 1.0):
        self.api, self.wanted, self.tpq, self.gap = api, wanted, ticks_per_quarter, gap
        self.cc_temperature, self.cc_tempo, self.retry_seconds = cc_temperature, cc_tempo, retry_seconds
        self.backend = backend(api)
        self.lister = None
        self.port = None
        self.lock = threading.Lock()
        self.down: dict[int, tuple[float, int]] = {}     # pitch -> (time, velocity) of keys held
        self.phrase: list[tuple[float, int, float, int]] = []  # (start, pitch, seconds, velocity)
        self.last_activity = float("-inf")
        self.knobs: dict[str, float] = {}
        self.last_check = float("-inf")
        self.state = ""

    def _connect(self, now: float) -> None:
        if now - self.last_check < self.retry_seconds:
            return
        self.last_check = now
        self.lister = self.lister or port_lister(self.api, output=False, client_name="playbach-watch-in")
        names = self.lister.get_ports() if self.lister else []
        name = find_port(names, self.wanted)
        if name is None:
            text = f"no MIDI input port matching '{self.wanted}'; ports: {names}; retrying"
            level = logging.WARNING
        else:
            self.port = self.backend.open_input(name, callback=self._receive)
            text, level = f"listening on input port '{name}'", logging.INFO
        if text != self.state:
            log.log(level, "%s", text)
            self.state = text

    def _receive(self, msg) -> None:
        now = time.monotonic()
        with self.lock:
            if msg.type == "note_on" and msg.velocity > 0:
                self.down[msg.note] = (now, msg.velocity)
                self.last_activity = now
            elif msg.type in ("note_on", "note_off") and msg.note in self.down:
                start, velocity = self.down.pop(msg.note)
                self.phrase.append((start, msg.note, now - start, velocity))
                self.last_activity = now
            elif msg.type == "control_change" and msg.control == self.cc_temperature:
                self.knobs["temperature"] = cc_to(msg.value, *TEMPERATURE_RANGE)
            elif msg.type == "control_change" and msg.control == self.cc_tempo:
                self.knobs["bpm"] = cc_to(msg.value, *BPM_RANGE)

    def poll(self, now: float, bpm: float) -> LiveNews:
        """Collect what arrived; a phrase is finished after `gap` s of silence with no key down."""
        if self.port is None:
            self._connect(now)
        news = LiveNews()
        with self.lock:
            news.temperature = self.knobs.pop("temperature", None)
            news.bpm = self.knobs.pop("bpm", None)
            news.playing = bool(self.down) or (bool(self.phrase) and now - self.last_activity < self.gap)
            if self.phrase and not news.playing:
                phrase, self.phrase = self.phrase, []
                news.phrase = self.to_events(phrase, bpm)
        return news

    def to_events(self, phrase: list[tuple[float, int, float, int]], bpm: float) -> np.ndarray:
        """Seconds -> quarters at the current tempo -> the codec's grid -> event values."""
        t0 = min(p[0] for p in phrase)
        per_quarter = 60.0 / bpm
        raw = [((s - t0) / per_quarter, pitch, d / per_quarter, v) for s, pitch, d, v in phrase]
        notes, _ = quantize_notes(raw, self.tpq)
        notes, _ = merge_overlaps(notes)
        return notes_to_events(notes)

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
        if self.lister is not None:
            self.lister.delete()
