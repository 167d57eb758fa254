"""MIDI clock: follow another device's clock (`clock = "follow"`), or send our own (`"send"`).

Following. A drum machine or DAW sends 24 ticks (0xF8) per quarter, Start (0xFA), Stop (0xFC),
Continue (0xFB) and Song Position Pointer (0xF2, in 16ths). `ClockInput` drains them from the
`clock_port` (bounded per loop pass, no callback, like the live input); `Follower` turns them into
a tick-to-time map: a least-squares line through the recent ticks (up to 2 beats of them), so
±1 ms of jitter and JACK's period quantization average out, restarted from the last few ticks
when the ticks leave the line for good (a tempo jump), so a new tempo is taken within a beat.
`FollowClock` drives the scheduler with that map: the scheduler's tick is the song position
(the codec's grid), so a note due on a 16th is sent at the time predicted for that 16th's tick.

When a message arrived is not known exactly: the loop drains every few milliseconds. rtmidi
stamps each message with the time since the previous one (in JACK's process cycle); summed,
they are a clock of the port's own, and its offset to time.monotonic() is the smallest
(drain time - port clock) seen recently, i.e. the message drained soonest after it arrived.

Sending. `SendClock` sends Start, 24 ticks per quarter at the player's tempo and Stop to the
output port; each tick's time is computed from an anchor (no summed sleeps, so no drift), and the
loop wakes for it. The generation guard in the player counts the next tick as a deadline too.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from contextlib import ExitStack
from typing import Callable

import rtmidi

from playbach.device.flood import MAX_DRAIN, QUEUE_SIZE
from playbach.device.midi_io import MidiOutput, WatchedPort

log = logging.getLogger(__name__)

PPQ = 24                       # MIDI clock ticks per quarter
TICK, START, CONTINUE, STOP, SPP = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
BPM_LOW, BPM_HIGH = 20.0, 400.0
LOSS_SECONDS = 2.0             # no tick for this long while following: stop and wait
FIT_TICKS = 48                 # the line is fitted through at most this many ticks (2 beats)
JUMP_TICKS = 2                 # this many ticks in a row off the line: a new tempo, refit from them
JUMP_SECONDS = 0.004           # ... by more than this (JACK periods and ±1 ms jitter stay inside)
OFFSET_WINDOW = 2.0            # seconds over which the port clock's offset is the smallest seen
GAP_TICKS = 4                  # more than this many tick periods without a tick: a pause
POLL_SECONDS = 0.004           # the loop drains the clock port at least this often while following


class TempoFit:
    """Time of tick n as a + b*n, fitted by least squares through the recent (n, time) pairs."""

    def __init__(self) -> None:
        self.points: deque[tuple[int, float]] = deque(maxlen=FIT_TICKS)
        self.a, self.b = 0.0, 0.0
        self.off_line = 0           # consecutive ticks far from the line, all on one side
        self.side = 0

    @property
    def ready(self) -> bool:
        return len(self.points) >= 2 and self.b > 0

    def bpm(self) -> float:
        return 60.0 / (self.b * PPQ)

    def time_of(self, n: float) -> float:
        return self.a + self.b * n

    def reset(self) -> None:
        self.points.clear()
        self.off_line = 0

    def add(self, n: int, t: float) -> None:
        if len(self.points) >= 4:
            residual = t - self.time_of(n)
            side = 1 if residual > 0 else -1
            if abs(residual) > JUMP_SECONDS:
                self.off_line = self.off_line + 1 if side == self.side else 1
                self.side = side
            else:
                self.off_line = 0
            if self.off_line >= JUMP_TICKS:
                # the tempo changed: keep only the ticks since the change (and the one before it)
                keep = list(self.points)[-JUMP_TICKS:]
                self.points.clear()
                self.points.extend(keep)
                self.off_line = 0
        self.points.append((n, t))
        self._fit()

    def _fit(self) -> None:
        k = len(self.points)
        if k < 2:
            return
        n0, t0 = self.points[0]
        xs = [n - n0 for n, _ in self.points]
        ys = [t - t0 for _, t in self.points]
        mx, my = sum(xs) / k, sum(ys) / k
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx <= 0:
            return
        self.b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        self.a = t0 + my - self.b * (mx + n0)


class Follower:
    """MIDI clock messages in, transport state and a tick-to-time map out. No I/O: testable alone.

    `feed(data, t)` takes one raw message and its arrival time; it returns "start" (Start or
    Continue: the next tick is song position `position`), "stop", or None. Ticks at an absurd
    tempo and malformed SPPs are ignored with one log line (per episode), never raised.
    """

    def __init__(self, bpm: float) -> None:
        self.fit = TempoFit()
        self.default_bpm = bpm
        self.count = 0                 # accepted ticks so far (the fit's x axis)
        self.running = False
        self.position = 0              # song position (clock ticks) of the next tick
        self.base: tuple[int, int] | None = None   # (tick count, song position) while running
        self.last_tick: float | None = None         # arrival of the last accepted tick
        self.last_raw: float | None = None          # arrival of the last tick, accepted or not
        self.intervals: deque[float] = deque(maxlen=4)
        self.absurd_logged = False
        self.tempo_log: list[tuple[float, float]] | None = None   # (time, bpm) per tick, for --stats

    @property
    def bpm(self) -> float:
        return self.fit.bpm() if self.fit.ready else self.default_bpm

    def feed(self, data: list[int], t: float) -> str | None:
        status = data[0] if data else 0
        if status == TICK:
            self._tick(t)
        elif status == START:
            self.position = 0
            return self._start()
        elif status == CONTINUE:
            return self._start()
        elif status == STOP:
            return self._stop()
        elif status == SPP:
            self._spp(data)
        return None

    def _start(self) -> str:
        self.running, self.base = True, None   # the next accepted tick is `position`
        return "start"

    def _stop(self) -> str | None:
        was = self.running
        if self.base is not None:
            self.position = self.song_position(self.count) + 1
        self.running, self.base = False, None
        return "stop" if was else None

    def _spp(self, data: list[int]) -> None:
        if len(data) != 3 or data[1] > 0x7F or data[2] > 0x7F:
            log.warning("malformed Song Position Pointer %s: ignored", bytes(data).hex(" "))
            return
        sixteenths = data[1] | (data[2] << 7)
        self.position = sixteenths * PPQ // 4
        if self.running and self.base is not None:   # a jump while running: the next tick is there
            self.base = (self.count + 1, self.position)

    def _pause_before(self, t: float, last: float | None) -> bool:
        """More than GAP_TICKS tick periods (at the fitted tempo, else the slowest allowed one)
        since `last`: the clock stopped ticking (e.g. between Stop and Continue), however briefly."""
        period = self.fit.b if self.fit.ready else 60.0 / (PPQ * BPM_LOW)
        return last is not None and t - last > GAP_TICKS * period

    def _tick(self, t: float) -> None:
        if self.last_raw is not None and not self._pause_before(t, self.last_raw):
            self.intervals.append(t - self.last_raw)   # a pause is not a tempo
        self.last_raw = t
        if len(self.intervals) == self.intervals.maxlen:
            bpm = 60.0 / (PPQ * max(sum(self.intervals) / len(self.intervals), 1e-9))
            if not BPM_LOW <= bpm <= BPM_HIGH:
                if not self.absurd_logged:
                    log.warning("MIDI clock at %.0f BPM is outside %g-%g BPM: its ticks are ignored",
                                bpm, BPM_LOW, BPM_HIGH)
                    self.absurd_logged = True
                return
            self.absurd_logged = False
        if self._pause_before(t, self.last_tick):
            self.fit.reset()   # the old line says nothing about when the resumed ticks come
        self.count += 1
        self.last_tick = t
        self.fit.add(self.count, t)
        if self.running and self.base is None:
            self.base = (self.count, self.position)
        if self.tempo_log is not None and self.fit.ready:
            self.tempo_log.append((t, self.fit.bpm()))

    def song_position(self, count: float) -> float:
        """Song position (clock ticks) of tick number `count` while running."""
        n, p = self.base
        return p + (count - n)

    def time_of_position(self, position: float) -> float:
        """When song position `position` is (was) due, from the fitted line."""
        n, p = self.base
        return self.fit.time_of(n + (position - p))

    def lost(self, now: float) -> bool:
        """True once when no tick came for LOSS_SECONDS while running (then it is stopped)."""
        if self.running and now - (self.last_tick if self.last_tick is not None else now) > LOSS_SECONDS:
            self._stop()
            self.fit.reset()
            return True
        return False


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
            self.follower.tempo_log = []
        self.playing = False     # the scheduler runs on the clock: generate and send
        self.follows = True
        self.events: list[str] = []

    def begin(self, scheduler) -> None:
        pass   # nothing plays before the clock's Start or Continue

    def end(self) -> None:
        pass

    def close(self) -> None:
        self.input.close()

    def next_wake(self, now: float) -> float:
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
                log.info("MIDI clock %s at song position %d (%.2f quarters)", "Start" if f.position == 0
                         else "Continue", f.position, f.position / PPQ)
        if f.lost(now):
            self._silence(now, scheduler, output, f"no MIDI clock for {LOSS_SECONDS:g} s: every note ended; "
                                                  "waiting for Start or Continue")
        if f.running and f.base is not None:
            tpq = scheduler.ticks_per_quarter
            if not self.playing:
                # music resumes on the next beat at or after where the clock is: the beat phase is the song's
                scheduler.cursor = math.ceil(f.song_position(f.count) / PPQ) * tpq
                self.playing = True
            position = f.song_position(f.count)
            scheduler.anchor(position * tpq / PPQ, f.time_of_position(position), f.bpm)

    def _take(self, data: list[int], t: float) -> None:
        event = self.follower.feed(data, t)
        if event is not None:
            self.events.append(event)

    def _silence(self, now: float, scheduler, output: MidiOutput, why: str) -> None:
        if self.playing:
            output.send(scheduler.stop(now))
            output.all_notes_off()
            log.info("%s", why)
        self.playing = False

    def stats(self) -> dict:
        return {"clock_tempo": self.follower.tempo_log or []}


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


def open_clock(settings: dict, output: MidiOutput, ports: ExitStack) -> FollowClock | SendClock | None:
    """The take's clock, by `clock`: None for the player's own (internal)."""
    keep = bool(settings["stats"])
    if settings["clock"] == "follow":
        clock = FollowClock(settings["midi_api"], settings["clock_port"], settings["retry_seconds"],
                            settings["bpm"], keep)
    elif settings["clock"] == "send":
        clock = SendClock(output, keep)
    else:
        return None
    ports.callback(clock.close)
    return clock
