"""Following a MIDI clock, the logic without ports: messages and their arrival times in, the
transport state and a tick-to-time map out (device/clock.py drives the scheduler with it).

A drum machine or DAW sends 24 ticks (0xF8) per quarter, Start (0xFA), Stop (0xFC), Continue
(0xFB) and Song Position Pointer (0xF2, in 16ths). `TempoFit` is a least-squares line through the
recent ticks (up to 2 beats of them), so ±1 ms of jitter and JACK's period quantization average
out, restarted from the last few ticks when they leave the line evenly spaced (a tempo jump), so
a new tempo is taken within a beat. Before it has two ticks it runs through the one it has at the
default tempo: the first tick after Start is song position 0, and nothing has a time before it.

The song position is counted in tick periods, not ticks received: MIDI over DIN or USB drops a
byte now and then. A tick far off the line is not put on it at once: the next few tell what it
was (TempoFit.add): ticks lost before it (they all come one whole number of periods late, evenly
spaced), a new tempo (evenly spaced at another period, ticks lost among them counted: the line
is refitted from them; a smaller change or a ramp, leaving the line steadily over a few more
ticks, too), or a busy host's stall (late, then a clump: left out of the line).
While the clock is clean a gap of about two or three periods is counted as lost ticks at once,
and taken back if the next tick comes early (it was one coming late): ticks are never early.
"""
from __future__ import annotations

import itertools
import logging
import statistics
from collections import deque

log = logging.getLogger(__name__)

PPQ = 24                       # MIDI clock ticks per quarter
TICK, START, CONTINUE, STOP, SPP = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
BPM_LOW, BPM_HIGH = 20.0, 400.0
LOSS_SECONDS = 2.0             # no tick for this long while following: stop and wait
FIT_TICKS = 48                 # the line is fitted through at most this many ticks (2 beats)
CONFIRM_OFF = 3                # ticks off the line in a row before they are judged (TempoFit.add)
MIN_DRIFT = 0.1                # a new tempo moves its ticks at least this many periods a tick (10 %)
OFF_SECONDS = 0.004            # off the line: by more than this (JACK periods and ±1 ms jitter stay inside)
GAP_TICKS = 4                  # more than this many tick periods without a tick: a pause
LOST_SLACK = 0.3               # a gap within this many periods of a whole number >= 2: ticks were lost
MAX_LOST = 2                   # ... at most this many in a row (a longer gap is lateness or a pause)
NOISE_TICKS = 8                # the ticks' straying is measured on at least this many
NOISE_LIMIT = 0.25             # gaps are counted as lost ticks at once only while ticks stray less than
                               # this many periods and none was off the line for FIT_TICKS
CONFIRM_TICKS = PPQ // 4       # ticks counted lost are taken back if one of the next 6 comes early
MAX_HELD = 8                   # refused ticks are counted after all when the clock proves sane, up to this many
SMALL_CHANGE_TICKS = 5         # a change of tempo under MIN_DRIFT is judged on at least this many ticks off
MAX_LEFT_OUT = FIT_TICKS // 2  # ... and at most this many (the ticks left out of the line in a row)
PAUSE_SECONDS = GAP_TICKS * 60.0 / (PPQ * BPM_LOW)   # no tick for this long: the clock paused


def median_slope(points: list[tuple[float, float]]) -> float:
    """The median of the slopes between every two of the (x, y) points (Theil-Sen): one point
    far off, a tick the transport held back, does not tilt it."""
    return statistics.median((y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in itertools.combinations(points, 2))


class TempoFit:
    """Time of tick n as a + b*n, fitted by least squares through the recent (n, time) pairs.

    With fewer than two ticks in, the line runs through the one there is at the period it last
    had (the default tempo's before any), so a tick's own time is never lost while waiting."""

    def __init__(self, default_period: float) -> None:
        self.points: deque[tuple[int, float]] = deque(maxlen=FIT_TICKS)
        self.a, self.b = 0.0, 0.0
        self.default_period = default_period
        self.noise = 0.0            # how far ticks stray from the line (s): a robust sigma (median
                                    # distance), so a host's stall now and then is not jitter
        self.pending: list[tuple[int, float]] = []       # ticks off the line, not yet judged
        self.last_off = -10**9                           # the last tick number that was off the line
        self.left_out: deque[tuple[int, float]] = deque(maxlen=MAX_LEFT_OUT)   # judged a clump's, in a row

    @property
    def ready(self) -> bool:
        return len(self.points) >= 2 and self.b > 0

    @property
    def period(self) -> float:
        return self.b if self.b > 0 else self.default_period

    def bpm(self) -> float:
        return 60.0 / (self.period * PPQ)

    def time_of(self, n: float) -> float:
        if self.ready or not self.points:
            return self.a + self.period * n
        last_n, last_t = self.points[-1]
        return last_t + (n - last_n) * self.period

    def reset(self) -> None:
        self.points.clear()
        self.pending.clear()
        self.left_out.clear()

    def renumber(self, first: int, by: int) -> None:
        """Ticks from number `first` on are numbered `by` more (ticks counted lost were not)."""
        moved = [(n + by if n >= first else n, t) for n, t in self.points]
        self.points.clear()
        self.points.extend(moved)
        self.pending = [(n + by if n >= first else n, t) for n, t in self.pending]   # they wait, renumbered too
        self.left_out.clear()
        self._fit()

    def add(self, n: int, t: float) -> tuple[int, int] | None:
        """Tick number n arrived at t. A tick far off the line waits (self.pending) until the
        next ones tell what it was: ticks lost before it (all late by one whole number of
        periods, evenly spaced), a new tempo (evenly spaced at another period), or a host's
        stall (a clump: it is left out of the line). Returns (first, by) when lost ticks were
        found: ticks from number `first` on are numbered `by` more."""
        # Early by up to LOST_SLACK of a period is a tempo's drift, which the line follows; late by
        # more than the jitter is the transport's lateness (ticks are never early), and a stall's
        # late ticks on a line refitted from a few would tilt it and hide a tick lost in the stall.
        off = max(self.late_off, LOST_SLACK * self.period)
        if len(self.points) >= 4 and not -off <= t - self.time_of(n) <= self.late_off:
            self.pending.append((n, t))
            self.last_off = n
            return self._judge_pending() if len(self.pending) >= CONFIRM_OFF else None
        self.pending.clear()      # back on the line: what was off it was a stall's
        self.left_out.clear()
        self.points.append((n, t))
        self._fit()
        return None

    @property
    def late_off(self) -> float:
        """Later than the line by more than this, a tick is off it (JACK periods and jitter stay inside)."""
        return max(OFF_SECONDS, 3 * self.noise)

    def _judge_pending(self) -> tuple[int, int] | None:
        """Ticks lost (or counted lost that were not): the pending ones are all off by one whole
        number of periods, no more apart than that; a new tempo: they come evenly spaced (one gap
        may be a whole number of their periods, ticks lost there, judged on two ticks more) and
        drift off the line; else a clump, whose oldest tick is left out (the rest wait on)."""
        p, found = self.pending, None
        late = [(t - self.time_of(n)) / self.period for n, t in p]
        whole = round(late[-1])
        steps = self._steps(p)
        if self._steady_drift(run := list(self.left_out) + p):
            self._new_line(run)                          # (before a lost tick: they too come late by a period)
        elif 1 <= abs(whole) <= MAX_LOST and all(abs(x - whole) <= LOST_SLACK for x in late) \
                and max(late) - min(late) <= LOST_SLACK:
            found = (p[0][0], whole)                     # renumbered: whole ticks were lost before
            self.points.extend((n + whole, t) for n, t in p)
        elif steps is not None and max(steps) > 1 and len(p) < CONFIRM_OFF + 2:
            return None                                  # ticks lost in a new tempo? two more tell
        elif steps is not None and self._drifting(numbered := self._numbered(p, steps), steps):
            # evenly spaced at a tempo a clock may have, leaving the line further each tick: a new
            # tempo, the line refitted from them, numbered past the ticks lost between them
            lost_at = next((i for i, k in enumerate(steps, 1) if k > 1), None)
            if lost_at is not None:
                found = (p[lost_at][0], steps[lost_at - 1] - 1)
            self._new_line(numbered)
        else:
            self.left_out.append(p.pop(0))               # a clump: the oldest is left out
            return None
        p.clear()
        self.left_out.clear()
        self._fit()
        return found

    def _steps(self, p: list[tuple[int, float]]) -> list[int] | None:
        """Tick periods between the pending ticks at their own spacing: 1 each when they come
        evenly spaced at a tempo a clock may have, one of them 2..MAX_LOST + 1 where ticks were
        lost; None when they are not spaced so (a clump)."""
        gaps = [b[1] - a[1] for a, b in zip(p, p[1:])]
        if min(gaps) < 60.0 / (PPQ * BPM_HIGH):
            return None
        steps = [round(g / min(gaps)) for g in gaps]
        if max(steps) == 1:
            return steps if max(gaps) - min(gaps) < LOST_SLACK * self.period else None
        unit = sum(gaps) / sum(steps)   # the spacing all of them fit (the shortest gap has its jitter)
        if any(abs(g - k * unit) >= LOST_SLACK / 2 * self.period for g, k in zip(gaps, steps)) \
                or sum(k > 1 for k in steps) > 1 or max(steps) > MAX_LOST + 1:
            return None                 # (half the slack: a stall's clump is seldom so even)
        return steps

    @staticmethod
    def _numbered(p: list[tuple[int, float]], steps: list[int]) -> list[tuple[int, float]]:
        """The pending ticks numbered `steps` apart from the first."""
        return [(p[0][0] + sum(steps[:i]), t) for i, (_, t) in enumerate(p)]

    def _steady_drift(self, run: list[tuple[int, float]]) -> bool:
        """The ticks left off the line in a row, numbered one apart, leaving it steadily: a change
        of tempo under MIN_DRIFT a tick, which the line cannot follow (its ticks are off it within
        a tick or two) and which would be counted as a lost tick once a whole period off. Their
        lateness lies on a line of its own (the median of the pairwise slopes: a tick the transport
        held back does not tilt it), three in four within half the jitter's bound and none earlier
        than that, and it moved more than three times their straying from first to last, by at
        most 2 * MIN_DRIFT periods a tick. A stall's late ticks, the clump that ends it and a lost
        tick's (all about one period late, not moving) do not."""
        if len(run) < SMALL_CHANGE_TICKS or [n for n, _ in run] != list(range(run[0][0], run[0][0] + len(run))) \
                or (steps := self._steps(run)) is None or max(steps) > 1:
            return False
        late = [t - self.time_of(n) for n, t in run]
        slope = median_slope(list(enumerate(late)))
        a = statistics.median(y - slope * i for i, y in enumerate(late))
        off = sorted(y - a - slope * i for i, y in enumerate(late))
        straying = sorted(abs(r) for r in off)[len(off) * 3 // 4]
        return (straying <= self.late_off / 2 and off[0] >= -self.late_off / 2
                and max(3 * straying, OFF_SECONDS / 2) < abs(slope) * (len(run) - 1)
                and abs(slope) <= 2 * MIN_DRIFT * self.period)   # (a clump drained at a steady pace is faster)

    def _new_line(self, numbered: list[tuple[int, float]]) -> None:
        """The line refitted from a new tempo's ticks (and the old line's last, where it fits them)."""
        keep = self._on_new_line(numbered)
        self.points.clear()
        self.points.extend(keep + numbered)

    def _on_new_line(self, numbered: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The last tick on the old line, kept with a new tempo's ticks when it lies where their
        spacing puts it: a tick that came late just before the change fitted the old, slower
        line by chance, and in the new line it would tilt a tempo judged on three ticks. The
        spacing is the median of the pairwise ones (one late tick among them does not move it)."""
        kept = list(self.points)[-1:]
        unit = median_slope(kept + numbered)
        a = statistics.median(t - unit * n for n, t in numbered)
        return [(n, t) for n, t in kept if abs(t - a - unit * n) <= LOST_SLACK / 2 * unit]

    def _drifting(self, numbered: list[tuple[int, float]], steps: list[int]) -> bool:
        """The pending ticks, so numbered, leave the line further each period, all one way."""
        late = [(t - self.time_of(n)) / self.period for n, t in numbered]
        drift = [(b - a) / k for a, b, k in zip(late, late[1:], steps)]
        return min(drift) >= MIN_DRIFT or max(drift) <= -MIN_DRIFT

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
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        if not 60.0 / (PPQ * BPM_HIGH) <= b <= 60.0 / (PPQ * BPM_LOW):
            return   # a few ticks delivered together say nothing of the tempo: keep the last line
        self.a, self.b = t0 + my - b * (mx + n0), b
        if k >= NOISE_TICKS:   # (kept through a refit: a few ticks say little of how they stray)
            residuals = sorted(abs(y - my - b * (x - mx)) for x, y in zip(xs, ys))
            self.noise = 1.4826 * residuals[k // 2]   # the median distance, as a normal sigma


class Follower:
    """MIDI clock messages in, transport state and a tick-to-time map out. No I/O: testable alone.

    `feed(data, t)` takes one raw message and its arrival time; it returns "start" (Start or
    Continue: the next tick is song position `position`), "stop", or None. Ticks at an absurd
    tempo and malformed SPPs are ignored with one log line (per episode), never raised.
    """

    def __init__(self, bpm: float) -> None:
        self.fit = TempoFit(60.0 / (bpm * PPQ))
        self.count = 0                 # tick periods so far, lost ticks included (the fit's x axis)
        self.skipped = 0               # ticks the last accepted one was counted past (lost on the way)
        self.skip_count = 0            # ... the count of the tick that was counted past them
        self.held = 0                  # ticks refused as absurd since the last one taken
        self.running = False
        self.position = 0              # song position (clock ticks) of the next tick
        self.base: tuple[int, int] | None = None   # (tick count, song position) while running
        self.last_tick: float | None = None         # arrival of the last accepted tick
        self.last_raw: float | None = None          # arrival of the last tick, accepted or not
        self.heard: float | None = None             # arrival of the last accepted tick, Start or Continue
        self.intervals: deque[float] = deque(maxlen=4)
        self.absurd_logged = False
        self.tempo_log: list[tuple[float, float]] | None = None   # (time, bpm) per tick, for --stats
        self.arrivals: list[float] | None = None    # every tick's arrival, taken or not (--stats: a take replayed)

    @property
    def bpm(self) -> float:
        return self.fit.bpm()

    def feed(self, data: list[int], t: float) -> str | None:
        status = data[0] if data else 0
        if status in (TICK, START, CONTINUE, STOP) and len(data) != 1:
            return None   # a real-time message is one byte: this is none
        if status == TICK:
            self._tick(t)
        elif status == START:
            self.position = 0
            return self._start(t)
        elif status == CONTINUE:
            return self._start(t)
        elif status == STOP:
            return self._stop()
        elif status == SPP:
            self._spp(data)
        return None

    def _start(self, t: float) -> str:
        self.running, self.base = True, None   # the next accepted tick is `position`
        self.heard = t
        self.fit.reset()     # the line before says nothing about when the ticks after come
        self.intervals.clear()
        self.last_raw = None
        self.skipped = 0
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

    def _tick(self, t: float) -> None:
        if self.arrivals is not None:
            self.arrivals.append(t)
        if not self._plausible(t):
            return
        if self.last_tick is not None and t - self.last_tick > PAUSE_SECONDS:
            self.fit.reset()   # the old line says nothing about when the resumed ticks come
            self.skipped = 0
        periods = self._periods_since_last(t) + self._release_held()   # may take back a gap first
        self.count += periods
        self.last_tick = self.heard = t
        lost = self.fit.add(self.count, t)
        if lost is not None:   # the fit found ticks lost before its pending ones
            self._renumber(*lost)
        if self.running and self.base is None:
            self.base = (self.count, self.position)
        if self.tempo_log is not None and self.fit.ready:
            self.tempo_log.append((t, self.fit.bpm()))

    def _plausible(self, t: float) -> bool:
        """False for a tick of a clock outside BPM_LOW-BPM_HIGH (the mean of the last intervals,
        from two on, so an absurd clock never gets a line of its own), logged once per episode.
        Ticks that a busy host delivers together have tiny intervals too, but they come late, never
        ahead of the line: a tick no earlier than the line expects its count is taken. The gap
        before such a clump counts in the mean (only a pause, PAUSE_SECONDS, does not), so the
        clump's ticks refused are counted when the next clump begins (_release_held)."""
        if self.last_raw is not None and t - self.last_raw <= PAUSE_SECONDS:
            self.intervals.append(t - self.last_raw)   # a pause is not a tempo
        self.last_raw = t
        if len(self.intervals) < 2:
            return True
        bpm = 60.0 / (PPQ * max(sum(self.intervals) / len(self.intervals), 1e-9))
        catching_up = (not self.absurd_logged and self.fit.ready   # (a clock refused stays so while it is absurd)
                       and t >= self.fit.time_of(self.count + 1) - self.fit.b / 2)
        if not BPM_LOW <= bpm <= BPM_HIGH and not catching_up:
            self.held += 1
            if not self.absurd_logged:
                log.warning("MIDI clock at %.0f BPM is outside %g-%g BPM: its ticks are ignored",
                            bpm, BPM_LOW, BPM_HIGH)
                self.absurd_logged = True
            return False
        self.absurd_logged = False
        return True

    def _periods_since_last(self, t: float) -> int:
        """Tick periods from the last accepted tick to this one: 1, or more when ticks were lost
        on the way (MIDI drops a byte now and then): a gap of about a whole number of the line's
        periods from where the line puts the last tick (its jitter averaged out). Only while the
        clock is clean; else, and for a second gap at once, the fit judges (TempoFit.add)."""
        if not self.fit.ready or self.last_tick is None:
            return 1
        if self.skipped and self.count - self.skip_count >= CONFIRM_TICKS:
            self.skipped = 0   # no tick since came early: they were lost
        if self.skipped and self.fit.time_of(self.count + 1) - t > self.fit.b / 2:
            self._take_back()  # ticks are never early: the gap was one coming late, none lost
            return 1
        if self.fit.noise > self.fit.b * NOISE_LIMIT or self.count - self.fit.last_off < FIT_TICKS:
            return 1   # (when ticks come that unevenly, a gap is lateness as likely as loss)
        since = self.fit.time_of(self.count)
        periods = (t - since) / self.fit.b
        whole = round(periods)
        if whole < 2 or whole > MAX_LOST + 1 or abs(periods - whole) > LOST_SLACK:
            return 1
        if self.skipped and self.skip_count == self.count:
            self._take_back()   # a second gap at once: a slower tempo (which the fit judges), no loss
            return 1
        self.skipped, self.skip_count = whole - 1, self.count + whole
        return whole

    def _take_back(self) -> None:
        """The ticks counted lost at skip_count were not: it and the ones after are renumbered."""
        self.fit.renumber(self.skip_count, -self.skipped)
        self._renumber(self.skip_count, -self.skipped)
        self.skipped = 0

    def _renumber(self, first: int, by: int) -> None:
        """Ticks from number `first` on are numbered `by` more: the count and the song's base."""
        self.count += by
        if self.base is not None and self.base[0] >= first:
            self.base = (self.base[0] + by, self.base[1])

    def _release_held(self) -> int:
        """Ticks refused while the clock looked absurd, counted now that a tick is taken: a clump
        that a busy host delivered together (a few); more in a row were an absurd clock's."""
        held, self.held = self.held, 0
        return held if held <= MAX_HELD else 0

    def quiet(self, now: float) -> bool:
        """No tick for more than GAP_TICKS of the line's periods: the clock has stopped ticking
        (lost ticks leave shorter gaps), so nothing after its last tick is due yet."""
        return self.last_tick is not None and now - self.last_tick > GAP_TICKS * self.fit.period

    def song_position(self, count: float) -> float:
        """Song position (clock ticks) of tick number `count` while running."""
        n, p = self.base
        return p + (count - n)

    def time_of_position(self, position: float) -> float:
        """When song position `position` is (was) due, from the fitted line."""
        n, p = self.base
        return self.fit.time_of(n + (position - p))

    def lost(self, now: float) -> bool:
        """True once when no tick came for LOSS_SECONDS while running, counted from the last tick
        or the Start or Continue after it (then it is stopped)."""
        if self.running and self.heard is not None and now - self.heard > LOSS_SECONDS:
            self._stop()
            self.fit.reset()
            return True
        return False
