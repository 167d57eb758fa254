"""The take on disk as it is played: a MIDI file per segment, so a power cut loses at most the
segment being played, however long the take.

    recorder = Recorder("/var/lib/playbach/takes", segment_seconds=300, bpm=90)
    recorder.add(note)      # each note as it ends (pitch, velocity, on_time, off_time; channel if any)
    recorder.poll(now)      # now and then: a segment is written even while nothing plays
    recorder.close()        # at the end: the last segments written, the writer stopped

A segment holds the notes that began in its `segment_seconds` of the take (on the player's
monotonic clock) and is named by the wall-clock time it began, `PREFIX-YYYYmmddTHHMMSSZ.mid`
(UTC; a suffix when a name is taken), so takes sort by time and a new take never overwrites an
old one. Times are written as played: ticks at 480 a quarter of the tempo in force when the
segment was written, so a live tempo change stays exact in seconds. Each note keeps its channel
and each file starts with the Program Changes the output sends (`programs`), so a four-voice take
is a type-1 file of one track per voice that plays back as heard (playbach/midifile.write_midi).

Notes arrive when they end, so a segment is written once a note begins GRACE seconds past its
end (a note still sounding across the boundary still goes in), by a writer thread at normal
priority: encoding and fsync never hold up the play loop. Each file is written beside, fsynced,
renamed in, and its folder fsynced. Memory holds the open segments only, and at most
MAX_QUEUED segments wait for the writer (a disk slower than the music drops the oldest, logged).
A full disk, a read-only or missing folder: logged once when it starts and once when it ends;
the segment is dropped and the music goes on. `add` never raises.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from playbach.events import Note
from playbach.files import fsync_path
from playbach.midifile import write_midi

log = logging.getLogger(__name__)

GRACE = 30.0          # seconds a note may sound across a segment's end and still go in it
MAX_QUEUED = 8        # segments waiting for the writer (each a few thousand notes at most)
TICKS = 480           # ticks per quarter in the files


@dataclass
class Segment:
    start: float                     # the player's monotonic time it begins
    wall: float                      # and the wall-clock time then (its name)
    notes: list = field(default_factory=list)   # (on, off, pitch, velocity, channel), times s from start


class Recorder:
    def __init__(self, folder: str | Path, segment_seconds: float = 300.0, bpm: float = 120.0,
                 program: int = -1, channel: int = 0, prefix: str = "take", grace: float = GRACE,
                 wall_clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 programs: Sequence[tuple[int, int]] | None = None):
        """`channel` is where a note without one goes; `programs` the (channel, program) changes
        each file starts with (None: `program` on `channel`, none for -1)."""
        if not segment_seconds > 0:
            raise ValueError("segment_seconds must be > 0")
        self.folder, self.segment_seconds, self.prefix = Path(folder), float(segment_seconds), prefix
        self.grace = grace
        self.bpm, self.program, self.channel = bpm, program, channel
        self.programs = None if programs is None else list(programs)
        self.wall_clock, self.monotonic = wall_clock, monotonic
        self.open: dict[int, Segment] = {}    # by index from the take's origin
        self.origin: float | None = None
        self.latest = float("-inf")           # the latest onset of a note that ended
        self.arrived = float("-inf")          # when (monotonic) the last note ended
        self.files_written = 0
        self.last_written: Path | None = None
        self.dropped_slow = 0                 # segments dropped because the writer fell behind
        self.dropped_failed = 0               # segments the disk refused
        self.failing: str | None = None        # the error that is being logged, while it lasts
        self.queue: queue.Queue = queue.Queue()
        self.writer = threading.Thread(target=self._write_loop, name="recorder", daemon=True)
        self.writer.start()

    # --- the play loop's side: cheap, never raises ------------------------------------------
    def add(self, note: Any) -> None:
        """A note that ended: `note.on_time`, `note.off_time` (monotonic s), `pitch`, `velocity`
        and `channel` (the wire channel; `self.channel` for a note without one)."""
        on, off = float(note.on_time), float(note.off_time)
        if self.origin is None:
            self.origin = on
        index = max(0, int((on - self.origin) // self.segment_seconds))
        segment = self.open.get(index)
        if segment is None:
            start = self.origin + index * self.segment_seconds
            segment = self.open[index] = Segment(start, self.wall_clock() - (self.monotonic() - start))
        # a note that began before the first one to end (the take's opening chord) starts the take
        begin = max(on - segment.start, 0.0)
        segment.notes.append((begin, max(off - segment.start, begin), int(note.pitch), int(note.velocity),
                              int(getattr(note, "channel", self.channel))))
        self.latest, self.arrived = max(self.latest, on), self.monotonic()
        self._hand_over_before(self.latest)

    def poll(self, now: float) -> None:
        """Hand over the segments that ended more than `grace` seconds before the take's own
        time: the latest onset that ended, or `now` once nothing has ended for `grace` seconds
        (a pause). A player running behind its schedule (a slow machine) logs notes whose
        onsets are well before `now`: by `now` their segment would already be gone."""
        if self.origin is not None:
            idle = self.monotonic() - self.arrived >= self.grace
            self._hand_over_before(now if idle else self.latest)

    def _hand_over_before(self, horizon: float) -> None:
        for done in [i for i in self.open if self.origin + (i + 1) * self.segment_seconds + self.grace <= horizon]:
            self._hand_over(self.open.pop(done))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is open and wait for the writer (at most `timeout` seconds)."""
        for index in sorted(self.open):
            self._hand_over(self.open.pop(index))
        self.queue.put(None)
        self.writer.join(timeout)

    def _hand_over(self, segment: Segment) -> None:
        if not segment.notes:
            return
        if self.queue.qsize() >= MAX_QUEUED:   # the disk is slower than the music: keep memory bounded
            try:
                self.queue.get_nowait()
                self.dropped_slow += 1
                if self.dropped_slow in (1, 10, 100) or self.dropped_slow % 1000 == 0:
                    log.warning("recording: the disk is not keeping up; %d segments dropped", self.dropped_slow)
            except queue.Empty:
                pass
        self.queue.put((segment, self.bpm))

    # --- the writer thread --------------------------------------------------------------------
    def _write_loop(self) -> None:
        try:   # the play loop may be realtime; writing a file is not urgent
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (OSError, AttributeError):
            pass
        while (item := self.queue.get()) is not None:
            segment, bpm = item
            try:
                self.last_written = self._write(segment, bpm)
                self.files_written += 1
                if self.failing is not None:
                    log.warning("recording: writing to %s works again (%s was the last error)", self.folder, self.failing)
                    self.failing = None
            except Exception as e:   # OSError mostly (a full disk, a read-only folder): never the music's end
                self.dropped_failed += 1
                reason = f"{getattr(e, 'strerror', None) or e}"
                if self.failing != reason:
                    log.error("recording: cannot write to %s (%s); the music goes on, segments are lost until it works",
                              self.folder, reason)
                    self.failing = reason

    def _write(self, segment: Segment, bpm: float) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._free_name(segment.wall)
        per_second = TICKS * bpm / 60.0
        held = sorted(segment.notes)
        notes = [Note(round(on * per_second), pitch, max(1, round((off - on) * per_second)), velocity)
                 for on, off, pitch, velocity, _ in held]
        partial = path.with_name(f".{path.name}.partial")
        try:
            write_midi(notes, partial, TICKS, bpm, self.program, self.channel, [n[4] for n in held], self.programs)
            fsync_path(partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        fsync_path(self.folder)   # the new name is on the disk too
        return path

    def _free_name(self, wall: float) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))
        path, n = self.folder / f"{self.prefix}-{stamp}.mid", 1
        while path.exists():
            n += 1
            path = self.folder / f"{self.prefix}-{stamp}-{n}.mid"
        return path


def open_recorder(folder: str, bpm: float, segment_seconds: float, programs: Sequence[tuple[int, int]] = (),
                  channel: int = 0) -> Recorder | None:
    """The recorder of a `record` folder, or None for "" (a `record` file is the take log's);
    `segment_seconds` of the take in each file (a power cut loses at most that, and the GRACE
    after it); `programs` the (wire channel, program) changes the output sends."""
    return Recorder(Path(folder), segment_seconds, bpm, channel=channel, programs=programs) if folder else None
