"""Live input: call and response, and knobs.

A person plays on a MIDI input port. While they play the model is quiet; when they pause for
`gap` seconds with no key down, their phrase (timed on the monotonic clock, put on the codec's
grid at the current tempo) is handed to the player, which lets the model answer it. CC knobs set
settings live: which CC sets which setting, over which values, is playbach.settings.KNOBS; the
input only reports `{setting: value}` and the player applies it (Take.apply checks it).

No Python callback: rtmidi queues what arrives and the player's loop drains the queue with
`poll`. (A callback would run Python in JACK's realtime thread, which then waits for the GIL;
under load JACK gives up on it and events are lost or repeated.) Times inside a phrase come from
rtmidi's own delta stamps, so the loop's wake-ups don't blur the rhythm. Like the output, the
input port may come and go: it is looked for until it appears and again after it vanishes.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import rtmidi

from playbach.events import merge_overlaps, notes_to_events, quantize_notes
from playbach.device.flood import MAX_DRAIN, MAX_PHRASE, QUEUE_SIZE, RateGuard
from playbach.device.midi_io import WatchedPort
from playbach.device.voicing import Thru
from playbach.settings import Knob

log = logging.getLogger(__name__)
KNOB_SECONDS = 0.05      # knob turns reach the take at most this often (coalesced)


@dataclass
class LiveNews:
    """What happened on the input since the last poll."""
    playing: bool = False                  # someone is playing: be quiet
    phrase: np.ndarray | None = None       # a finished phrase (event values) to answer
    panic: bool = False                    # CC 120 or 123: end every sounding note now
    changes: dict[str, object] = field(default_factory=dict)   # setting -> value from CC knobs (the last turn of each)
    thru: list[list[int]] = field(default_factory=list)        # messages to pass to the output (setting thru)


class LiveInput(WatchedPort):
    client_class = functools.partial(rtmidi.MidiIn, queue_size_limit=QUEUE_SIZE)
    direction = "input"
    connected_text = "listening on input port '{name}'"

    def __init__(self, api: str, wanted: str, ticks_per_quarter: int, gap: float = 1.0,
                 knobs: dict[int, Knob] | None = None, retry_seconds: float = 1.0, thru: Thru | None = None):
        super().__init__(api, wanted, retry_seconds, client_name="playbach-in")
        self.thru = thru                                  # what passes to the output (device/voicing.py)
        self.tpq, self.gap = ticks_per_quarter, gap
        self.knobs = knobs or {}                          # CC number -> the setting it turns
        self.clock = 0.0                                  # seconds, summed from rtmidi's deltas
        self.down: dict[int, tuple[float, int]] = {}     # pitch -> (clock, velocity) of keys held
        self.phrase: list[tuple[float, int, float, int]] = []  # (start, pitch, seconds, velocity)
        self.last_activity = float("-inf")                # monotonic time of the last key event
        self.notes_guard = RateGuard(what=f"input '{wanted}'")
        self.turned: dict[str, object] = {}               # knob turns not yet handed on: setting -> last value
        self.handed = float("-inf")                       # when the last were

    def regrid(self, ticks_per_quarter: int) -> None:
        """Put phrases on another take's grid (a restart with another bundle)."""
        self.tpq = ticks_per_quarter

    def _on_connect(self) -> None:
        self.client.ignore_types(sysex=True, timing=True, active_sense=True)

    def _on_vanish(self) -> None:
        """Unplugged keyboard: let go of its held keys, or the model would wait on them forever."""
        for pitch, (start, velocity) in self.down.items():
            self.phrase.append((start, pitch, self.clock - start, velocity))
        self.down.clear()
        self.last_activity = time.monotonic()

    def _take(self, data: list[int], now: float) -> tuple[str, object] | None:
        """Note a key going down or up; a knob's turn is returned as (setting, value). `data` is a
        checked note or CC (3 bytes, data bytes < 0x80), read as bytes: a flood of 20,000 a second
        is read between notes."""
        kind, number, value = data[0] & 0xF0, data[1], data[2]
        if kind == 0x90 and value > 0:
            self.down[number] = (self.clock, value)
            self.last_activity = now
        elif kind in (0x80, 0x90) and number in self.down:
            start, velocity = self.down.pop(number)
            self.phrase.append((start, number, self.clock - start, velocity))
            self.last_activity = now
        elif kind == 0xB0 and number in self.knobs:
            knob = self.knobs[number]
            return knob.name, knob.value(value)
        return None

    def poll(self, now: float, bpm: float) -> LiveNews:
        """Drain what arrived; a phrase is finished after `gap` s of silence with no key down.
        Knob turns are handed on at most every KNOB_SECONDS, the last value of each (a hand turns
        a knob slower than that; a flood of CCs would apply a change on every pass)."""
        news = LiveNews()
        if self.connected:
            self._drain(news, now)
            del self.phrase[:-MAX_PHRASE]   # a phrase that never ends (a flood) keeps its last notes only
        if self.turned and now - self.handed >= KNOB_SECONDS:
            news.changes, self.turned, self.handed = self.turned, {}, now
        super().poll(now)
        news.playing = bool(self.down) or (bool(self.phrase) and now - self.last_activity < self.gap)
        if self.phrase and not news.playing:
            news.phrase = self.to_events(self.phrase, bpm)
            self.phrase = []
        return news

    def _drain(self, news: LiveNews, now: float) -> None:
        for _ in range(MAX_DRAIN):   # bounded: the rest waits for the next pass (or is dropped by rtmidi)
            if (item := self.client.get_message()) is None:
                break
            data, delta = item
            self.clock += delta
            if not data or not 0x80 <= data[0] < 0xF0:
                continue   # system messages (clock on the wrong port, SysEx, active sensing): not ours
            note = data[0] & 0xF0 in (0x80, 0x90) and len(data) == 3 and max(data[1:]) <= 0x7F
            if note and not self.notes_guard.allow(now):
                if self.down or self.phrase:   # what the flood pressed is no one playing
                    self.down.clear()
                    self.phrase.clear()
                continue   # nor does it pass thru to the synth
            if self.thru is not None and self.thru.passes(data):
                news.thru.append(list(data))
            if data[0] & 0xF0 not in (0x80, 0x90, 0xB0) or len(data) != 3 or max(data[1:]) > 0x7F:
                continue   # what nothing here reads (pitch bend, aftertouch, program) or a malformed
                # note or CC: not parsed at all (a cut-short pitch bend raised IndexError in mido)
            if data[0] & 0xF0 == 0xB0 and data[1] in (120, 123):
                news.panic = True   # all sound off / all notes off
                continue
            turned = self._take(data, now)
            if turned is not None:
                self.turned[turned[0]] = turned[1]

    def to_events(self, phrase: list[tuple[float, int, float, int]], bpm: float) -> np.ndarray:
        """Seconds -> quarters at the current tempo -> the codec's grid -> event values."""
        t0 = min(p[0] for p in phrase)
        per_quarter = 60.0 / bpm
        raw = [((s - t0) / per_quarter, pitch, d / per_quarter, v) for s, pitch, d, v in phrase]
        notes, _ = quantize_notes(raw, self.tpq)
        notes, _ = merge_overlaps(notes)
        return notes_to_events(notes)
