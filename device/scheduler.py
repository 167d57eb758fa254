"""Places notes on the monotonic clock: every note_on and note_off at an absolute time.

Notes live on a tick grid (the codec's ticks per quarter). A tick's time is computed from one
fixed origin (time, tick) and the tempo, never by adding up sleeps, so errors cannot accumulate.
A tempo change re-anchors the origin at the present moment; notes already queued then follow the
new tempo. The scheduler only orders and times messages; sending them is the output's job.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, NamedTuple

NOTE_OFF, NOTE_ON = 0, 1  # at the same tick a note_off leaves first, so a repeated pitch re-strikes
START_DELAY = 0.05        # seconds from a (re)start to its first note, so that note is not late


class Entry(NamedTuple):
    """One queued message; a tuple, so the heap orders by tick, then kind, then serial."""
    tick: int
    kind: int          # NOTE_OFF or NOTE_ON
    serial: int
    pitch: int
    velocity: int
    note_id: int
    channel: int = 0   # on the wire, 0..15 (device/voicing.py chose it)


Message = tuple[str, int, int, int]   # (kind, pitch, velocity, wire channel), what the output sends


@dataclass(frozen=True)
class Upcoming:
    """A note sounding or scheduled, on the monotonic clock (off None while unknown)."""
    note_id: int
    on: float
    off: float | None
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Played:
    """One note as it sounded, for the recording (ticks) and the live bench (times)."""
    start_tick: int
    pitch: int
    duration: int
    velocity: int
    on_time: float   # the monotonic time the note_on was due
    off_time: float  # and its note_off
    channel: int = 0  # the wire channel it sounded on, so a four-voice take is recorded as heard


class Scheduler:
    def __init__(self, ticks_per_quarter: int, bpm: float, start_time: float,
                 on_played: Callable[[Played], None] | None = None):
        self.ticks_per_quarter = ticks_per_quarter
        self.bpm = bpm
        self.origin_time, self.origin_tick = start_time, 0.0
        self.cursor = 0                    # tick of the last added note's onset
        self.queue: list[Entry] = []
        self.serial = itertools.count()
        # (channel, pitch) -> (note_id, start tick, velocity): two voices may share a pitch on two channels
        self.sounding: dict[tuple[int, int], tuple[int, int, int]] = {}
        self.on_played = on_played         # told of each note as it ends (device/take_log.py)

    # --- the tick <-> time map ----------------------------------------------------------------
    @property
    def seconds_per_tick(self) -> float:
        return 60.0 / (self.bpm * self.ticks_per_quarter)

    def time_of(self, tick: float) -> float:
        return self.origin_time + (tick - self.origin_tick) * self.seconds_per_tick

    def tick_at(self, time: float) -> float:
        return self.origin_tick + (time - self.origin_time) / self.seconds_per_tick

    def set_bpm(self, bpm: float, now: float) -> None:
        """Change tempo from `now` on: re-anchor so the present tick keeps its time."""
        self.origin_tick, self.origin_time = self.tick_at(now), now
        self.bpm = bpm

    def anchor(self, tick: float, time: float, bpm: float) -> None:
        """Follow an outside clock (MIDI clock): `tick` is at `time`, at `bpm` from there."""
        self.origin_tick, self.origin_time, self.bpm = tick, time, bpm

    def restart_at(self, time: float, ticks_per_quarter: int | None = None) -> None:
        """Let the next added note (onset delta 0) fall at `time` (after a pause, e.g. live input);
        a new take may bring another grid (`ticks_per_quarter`), once nothing is queued."""
        if ticks_per_quarter is not None and ticks_per_quarter != self.ticks_per_quarter:
            if self.queue or self.sounding:
                raise RuntimeError("Scheduler.restart_at: a new grid with notes still queued")
            self.ticks_per_quarter = ticks_per_quarter
        self.origin_tick, self.origin_time = float(self.cursor), time

    # --- adding and taking notes -------------------------------------------------------------
    def add(self, onset: int, pitch: int, duration: int, velocity: int, channel: int = 0) -> None:
        """One event (field values): its onset is a delta from the previous note's onset; `channel`
        the wire channel it goes out on."""
        self.cursor += int(onset)
        note_id = next(self.serial)
        start, end = self.cursor, self.cursor + max(1, int(duration))
        heapq.heappush(self.queue, Entry(start, NOTE_ON, note_id, int(pitch), int(velocity), note_id, channel))
        heapq.heappush(self.queue, Entry(end, NOTE_OFF, note_id, int(pitch), 0, note_id, channel))

    def first_onset(self) -> int:
        """Tick of the first queued note_on; the cursor when none is queued."""
        return min((e.tick for e in self.queue if e.kind == NOTE_ON), default=self.cursor)

    def move_to(self, tick: int) -> None:
        """Move the queued notes, none of them started, so the first note_on falls on `tick`
        (notes made ready while a followed clock was stopped, placed where it starts)."""
        if self.sounding:
            raise RuntimeError("Scheduler.move_to: notes are sounding")
        by = tick - self.first_onset()
        self.queue = [e._replace(tick=e.tick + by) for e in self.queue]   # the same order: still a heap
        self.cursor += by

    def lead(self, now: float) -> float:
        """How far ahead of the clock generation is, in seconds."""
        return self.time_of(self.cursor) - now

    def next_due(self) -> float | None:
        return self.time_of(self.queue[0].tick) if self.queue else None

    def upcoming(self) -> list[Upcoming]:
        """What sounds and what is scheduled, in that order, on the monotonic clock."""
        offs = {e.note_id: e.tick for e in self.queue if e.kind == NOTE_OFF}
        notes = [(nid, start, pitch, vel) for (_, pitch), (nid, start, vel) in self.sounding.items()]
        notes += [(e.note_id, e.tick, e.pitch, e.velocity) for e in self.queue if e.kind == NOTE_ON]
        return [Upcoming(nid, self.time_of(on), None if offs.get(nid) is None else self.time_of(offs[nid]), pitch, vel)
                for nid, on, pitch, vel in notes]

    def pop_due(self, now: float) -> list[Message]:
        """Messages due by `now` as (kind, pitch, velocity, channel), in order; a chord's notes come together.

        A note_on of a pitch that is still sounding on its channel first ends the sounding one; a
        note_off whose note was ended that way is dropped, so every note_on gets exactly one note_off.
        """
        out = []
        while self.queue and self.time_of(self.queue[0].tick) <= now:
            tick, kind, _, pitch, velocity, note_id, channel = heapq.heappop(self.queue)
            key = (channel, pitch)
            if kind == NOTE_ON:
                if key in self.sounding:
                    out.append(self._end(key, tick))
                self.sounding[key] = (note_id, tick, velocity)
                out.append(("note_on", pitch, velocity, channel))
            elif key in self.sounding and self.sounding[key][0] == note_id:
                out.append(self._end(key, tick))
        return out

    def _end(self, key: tuple[int, int], tick: int) -> Message:
        note_id, start, velocity = self.sounding.pop(key)
        if self.on_played is not None:
            self.on_played(Played(start, key[1], max(1, tick - start), velocity, self.time_of(start),
                                  self.time_of(max(tick, start + 1)), key[0]))
        return ("note_off", key[1], 0, key[0])

    def stop(self, now: float) -> list[Message]:
        """End every sounding note now and forget the rest: the note_offs to send."""
        tick = max(int(self.tick_at(now)), 0)
        offs = [self._end(key, max(tick, self.sounding[key][1] + 1)) for key in list(self.sounding)]
        self.queue.clear()
        return offs

    def clear_future(self, now: float) -> None:
        """Drop queued notes that have not started (sounding notes still end on time)."""
        keep = [e for e in self.queue if e.kind == NOTE_OFF and (e.channel, e.pitch) in self.sounding
                and self.sounding[e.channel, e.pitch][0] == e.note_id]
        self.queue = keep
        heapq.heapify(self.queue)
        self.cursor = max(self.cursor, int(self.tick_at(now)))
