"""MIDI clock: follow another device's clock (`clock = "follow"`), or send our own (`"send"`).

Following. `ClockInput` drains the clock messages from the `clock_port` (bounded per loop pass,
no callback, like the live input); `Follower` (device/follower.py) turns them into a song
position and a tick-to-time map; `FollowClock` drives the scheduler with that map: the
scheduler's tick is the song position (the codec's grid), so a note due on a 16th is sent at the
time predicted for that 16th's tick. When the clock stops ticking the music waits a few ticks on
(nothing further is due), and after LOSS_SECONDS every note is ended.

When a message arrived is not known exactly: the loop drains every few milliseconds, and before
every note it sends. rtmidi stamps each message with the time since the previous one (in JACK's
process cycle); summed, they are a clock of the port's own, and its offset to time.monotonic() is
the smallest (drain time - port clock) seen recently, i.e. the message drained soonest after it
arrived.

Sending. `SendClock` sends Start, 24 ticks per quarter at the player's tempo and Stop to the
output port; each tick's time is computed from an anchor (no summed sleeps, so no drift), and the
loop wakes for it. The generation guard in the player counts the next tick as a deadline too.
"""
from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections import deque
from contextlib import ExitStack
from typing import Callable

import rtmidi

from playbach.device.flood import MAX_DRAIN, QUEUE_SIZE, Quieted
from playbach.device.follower import (CONTINUE, GAP_TICKS, LOSS_SECONDS, PPQ, SPP, START, STOP, TICK,
                                      Follower)
from playbach.device.midi_io import MidiOutput, WatchedPort
from playbach.settings import Settings

log = logging.getLogger(__name__)

OFFSET_WINDOW = 2.0            # seconds over which the port clock's offset is the smallest seen
POLL_SECONDS = 0.004           # the loop drains the clock port at least this often while following,
RUNNING_POLL_SECONDS = 0.012   # ... but this often (dithered, see next_wake) while ticks come on the line
FIRST_TICK_POLL = 0.001        # ... and this often between Start (or Continue) and its first tick
FIRST_TICK_WAIT = 0.5          # ... for at most this long
READY_AHEAD = 0.1              # until the first tick, song position `position` is kept this far ahead


class ClockInput(WatchedPort):
    """The clock port: a MIDI input whose messages come with estimated arrival times."""

    client_class = functools.partial(rtmidi.MidiIn, queue_size_limit=QUEUE_SIZE)
    direction = "input"
    connected_text = "following MIDI clock on port '{name}'"

    def __init__(self, api: str, wanted: str, retry_seconds: float = 1.0):
        super().__init__(api, wanted, retry_seconds, client_name="playbach-clock")
        self.port_clock = 0.0
        self.offsets: deque[tuple[float, float]] = deque()   # (drain time, candidate offset), rising

    def _on_connect(self) -> None:
        self.client.ignore_types(sysex=True, timing=False, active_sense=True)
        self.port_clock, self.offsets = 0.0, deque()

    def drain(self, take: Callable[[list[int], float], None]) -> None:
        """Hand at most MAX_DRAIN messages to `take(data, arrival time)`."""
        if not self.connected:
            return
        batch = []
        for _ in range(MAX_DRAIN):
            item = self.client.get_message()
            if item is None:
                break
            self.port_clock += item[1]
            if item[0] and item[0][0] in (TICK, START, CONTINUE, STOP, SPP):   # the rest is not ours
                batch.append((item[0], self.port_clock))
        if not batch:
            return
        # The drain time is read here, after the messages were taken, so every one of them had
        # arrived by then and an offset can only come out too large, never too small. (The loop
        # pass's `now`, read before the port check, is older: a message arriving during a slow
        # check gave an offset too small, and the minimum below kept it, so every tick, and every
        # note, came early for OFFSET_WINDOW.)
        now = time.monotonic()
        # a monotonic deque of the smallest offset over the window: the message drained soonest
        offset = now - self.port_clock
        while self.offsets and self.offsets[-1][1] >= offset:
            self.offsets.pop()
        self.offsets.append((now, offset))
        while self.offsets[0][0] < now - OFFSET_WINDOW:
            self.offsets.popleft()
        best = self.offsets[0][1]
        for data, stamp in batch:
            take(data, stamp + best)


class FollowClock:
    """Plays in another device's time: starts, stops and moves the scheduler by its clock."""

    def __init__(self, api: str, port: str, retry_seconds: float, bpm: float, keep_log: bool) -> None:
        self.input = ClockInput(api, port, retry_seconds)
        self.follower = Follower(bpm)
        if keep_log:
            self.follower.tempo_log, self.follower.arrivals = [], []
        self.playing = False     # the scheduler runs on the clock (else notes are only made ready)
        self.follows = True
        self.events: list[str] = []
        self.started = float("-inf")   # when the last Start or Continue was taken
        self.said_start, self.said_silence = Quieted(log), Quieted(log)   # a Start/Stop flood logs once a second
        self.dither = random.Random(0)

    def begin(self, scheduler) -> None:
        pass   # nothing plays before the clock's Start or Continue

    def end(self) -> None:
        pass

    def close(self) -> None:
        self.input.close()

    def next_wake(self, now: float) -> float:
        f = self.follower
        if f.running and f.base is None and now - self.started < FIRST_TICK_WAIT:
            return now + FIRST_TICK_POLL   # the first chord leaves as soon as its tick is seen
        if f.running and f.fit.ready and not f.quiet(now):
            # Each note's send drains the port first, so the line it goes by is as fresh as with
            # any poll; between notes a drain only ends the notes sooner after a Stop and gives the
            # arrival estimate its samples, which need only land at scattered phases of the tick
            # (the dither: never locked to it). Fewer empty passes leave a slow CPU for the model.
            return now + self.dither.uniform(0.5, 1.5) * RUNNING_POLL_SECONDS
        return now + POLL_SECONDS

    def poll(self, now: float, scheduler, output: MidiOutput) -> None:
        self.input.poll(now)
        self.input.drain(self._take)
        self.advance(now, scheduler, output)

    def advance(self, now: float, scheduler, output: MidiOutput) -> None:
        """Act on the messages taken since the last pass: start, stop, and place the scheduler."""
        f = self.follower
        events, self.events = self.events, []
        for event in events:
            if event == "stop":
                self._silence(now, scheduler, output, "MIDI clock Stop: every note ended; waiting")
            elif event == "start":
                what = "Start" if f.position == 0 else "Continue"
                self._silence(now, scheduler, output, f"MIDI clock {what} while playing: every note ended")
                self.started = now
                self.said_start.info(now, "MIDI clock %s at song position %d (%.2f quarters)", what, f.position,
                               f.position / PPQ)
        if f.lost(now):
            self._silence(now, scheduler, output, f"no MIDI clock for {LOSS_SECONDS:g} s: every note ended; "
                                                  "waiting for Start or Continue")
        if not f.running:
            # waiting for Start or Continue: the player makes the first notes ready (a lookahead's
            # worth, so the first chord leaves with the first tick however slow a model step is),
            # and none of them is due
            scheduler.anchor(scheduler.first_onset(), now + READY_AHEAD, f.bpm)
            return
        tpq = scheduler.ticks_per_quarter
        if not self.playing:
            # music resumes on the next beat at or after where the clock is: the beat phase is the song's
            position = f.position if f.base is None else f.song_position(f.count)
            scheduler.move_to(math.ceil(position / PPQ) * tpq)
            self.playing = True
        if f.base is None:
            # Start or Continue, no tick yet: the first notes are made ready but none is due
            scheduler.anchor(f.position * tpq / PPQ, now + READY_AHEAD, f.bpm)
        else:
            position = f.song_position(f.count)
            if f.quiet(now):   # the clock stopped ticking: the music waits a few ticks on
                hold = position + GAP_TICKS
                scheduler.anchor(hold * tpq / PPQ, now + POLL_SECONDS, f.bpm)
            else:
                scheduler.anchor(position * tpq / PPQ, f.time_of_position(position), f.bpm)

    def _take(self, data: list[int], t: float) -> None:
        event = self.follower.feed(data, t)
        if event is not None:
            self.events.append(event)

    def _silence(self, now: float, scheduler, output: MidiOutput, why: str) -> None:
        if self.playing:
            output.send(scheduler.stop(now))
            if output.struck:   # a Start/Stop flood sends CC 123 once, not every pass
                output.all_notes_off()
            self.said_silence.info(now, "%s", why)
        self.playing = False

    def stats(self) -> dict:
        return {"clock_tempo": self.follower.tempo_log or [], "clock_arrivals": self.follower.arrivals or []}


class SendClock:
    """Sends Start, evenly spaced ticks at the scheduler's tempo, and Stop to the output port."""

    def __init__(self, output: MidiOutput, keep_log: bool) -> None:
        self.output = output
        self.anchor: tuple[float, int] | None = None   # (time, tick number) the next ticks count from
        self.bpm = 0.0
        self.count = 0
        self.sent: list[float] | None = [] if keep_log else None
        self.playing, self.follows = True, False

    def begin(self, scheduler) -> None:
        """Start with the first note: its time is the first tick's."""
        self.anchor, self.bpm, self.count = (scheduler.origin_time, 0), scheduler.bpm, 0

    def next_time(self) -> float | None:
        if self.anchor is None:
            return None
        t0, n0 = self.anchor
        return t0 + (self.count - n0) * 60.0 / (self.bpm * PPQ)

    def next_wake(self, now: float) -> float:
        due = self.next_time()
        return due if due is not None else now + 1.0

    def poll(self, now: float, scheduler, output: MidiOutput) -> None:
        if self.anchor is None:
            return
        if scheduler.bpm != self.bpm:   # a new tempo from the next tick on, no jump
            self.anchor, self.bpm = (self.next_time(), self.count), scheduler.bpm
        while (due := self.next_time()) <= now:
            if self.count == 0:
                output.send_raw([START])
            output.send_raw([TICK])
            if self.sent is not None:   # when it left, for the bench's jitter of our own scheduling
                self.sent.append(time.monotonic())
            self.count += 1

    def end(self) -> None:
        if self.anchor is not None:
            self.output.send_raw([STOP])
            self.anchor = None

    def close(self) -> None:
        self.end()

    def stats(self) -> dict:
        return {"clock_sent": self.sent or []}


def open_clock(s: Settings, output: MidiOutput, ports: ExitStack) -> FollowClock | SendClock | None:
    """The take's clock, by `clock`: None for the player's own (internal)."""
    keep = bool(s.stats)
    if s.clock == "follow":
        clock = FollowClock(s.midi_api, s.clock_port, s.retry_seconds, s.bpm, keep)
    elif s.clock == "send":
        clock = SendClock(output, keep)
    else:
        return None
    ports.callback(clock.close)
    return clock
