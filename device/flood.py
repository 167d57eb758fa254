"""Bounds on what a MIDI input may cost the play loop, whatever arrives on it.

A flood (20,000 messages a second of SysEx, active sensing, clock, stray note_offs, notes on
every channel) must not stall the loop, grow memory, or silence the model by looking like a
person playing. So: rtmidi's queue has a fixed size (QUEUE_SIZE: what does not fit is dropped
by rtmidi, not kept), each loop pass takes at most MAX_DRAIN messages, a phrase keeps at most
MAX_PHRASE notes, and `RateGuard` stops taking notes as playing while they come faster than any
person plays (NOTE_RATE a second), with one log line when it starts and one when it ends.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

QUEUE_SIZE = 16384    # rtmidi's input queue (messages): about 0.8 s of a 20,000/s flood
MAX_DRAIN = 2048      # messages taken per loop pass; the loop passes every few ms under a flood
MAX_PHRASE = 512      # notes kept of a phrase being played (the model hears at most its window anyway)
NOTE_RATE = 256       # note messages a second above which the input is a flood, not a person


class RateGuard:
    """Counts events in one-second windows; `allow` is False from the event that goes over
    `limit` until a whole window stays under it."""

    def __init__(self, limit: int = NOTE_RATE, what: str = "input") -> None:
        self.limit, self.what = limit, what
        self.window_start = float("-inf")
        self.count = 0
        self.flooded = False
        self.dropped = 0

    def allow(self, now: float) -> bool:
        if now - self.window_start >= 1.0:
            if self.flooded and self.count <= self.limit:
                log.warning("%s flood over: %d note messages ignored", self.what, self.dropped)
                self.flooded, self.dropped = False, 0
            self.window_start, self.count = now, 0
        self.count += 1
        if not self.flooded and self.count > self.limit:
            log.warning("%s flood: more than %d note messages a second; ignoring notes until it stops",
                        self.what, self.limit)
            self.flooded = True
        if self.flooded:
            self.dropped += 1
        return not self.flooded


class Quieted:
    """A log line that a flood may ask for thousands of times a second (Start on the clock port):
    said at most once every `every` seconds, the ones held back counted into the next."""

    def __init__(self, logger: logging.Logger, every: float = 1.0) -> None:
        self.logger, self.every = logger, every
        self.said_at = float("-inf")
        self.held = 0

    def info(self, now: float, message: str, *args) -> None:
        if now - self.said_at < self.every:
            self.held += 1
            return
        if self.held:
            message, args = message + " (%d more not logged since)", (*args, self.held)
        self.logger.info(message, *args)
        self.said_at, self.held = now, 0
