"""What was played, with one owner: the scheduler tells it of each note as the note ends.

The control page's roll and the `take` op read the recent notes (TAKE_NOTES at most: hours of
notes would add up); --stats and a `record` file (a path ending .mid, written whole at the end)
read every note, which is kept only when one of them is asked for; a `record` folder gets the
take in segments as it is played (device/recorder.py), so a long take costs no memory and a
power cut loses at most the last segment. Both recordings keep each note's channel and the
Program Changes the output sent, so a four-voice take is recorded as it was heard.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path
from typing import Sequence

from playbach.device.recorder import Recorder, open_recorder
from playbach.device.scheduler import Played
from playbach.events import Note
from playbach.files import write_text_atomically
from playbach.midifile import write_midi

log = logging.getLogger(__name__)

TAKE_NOTES = 20000        # notes kept for `take` (about 80 minutes at 4 notes a second)


def record_file(record: str) -> str:
    """The `record` setting's one-file meaning (a path ending .mid, written whole at the end, as a
    desktop user expects); "" for none or a folder."""
    return record if record.lower().endswith(".mid") else ""


class TakeLog:
    def __init__(self, keep_all: bool, recent: int = TAKE_NOTES, recorder: Recorder | None = None,
                 programs: Sequence[tuple[int, int]] = (), channel: int = 0):
        """`programs`: the (wire channel, program) changes the output sends, for the `record` file;
        `channel` the one-voice take's wire channel (the file's channel when nothing was played)."""
        self.recent: deque[Played] = deque(maxlen=recent)
        self.programs, self.channel = list(programs), channel
        self.every: list[Played] | None = [] if keep_all else None   # for a record file and --stats
        self.recorder = recorder
        self.notes_played = 0    # note_ons sent (a note is logged when it ends)
        self.sends: list[tuple[float, int]] | None = [] if keep_all else None   # (when, note_ons) per send

    @classmethod
    def for_settings(cls, record: str, stats: str, bpm: float, programs: Sequence[tuple[int, int]],
                     channel: int, record_minutes: float) -> "TakeLog":
        """`programs` as device/voicing.program_changes gives them (what the output sends)."""
        folder = "" if record_file(record) else record
        recorder = open_recorder(folder, bpm, 60.0 * record_minutes, programs, channel)
        return cls(keep_all=bool(record_file(record) or stats), recorder=recorder, programs=programs, channel=channel)

    def sent(self, note_ons: int, at: float) -> None:
        """`note_ons` went to the output at `at` (monotonic s, once the port took them)."""
        self.notes_played += note_ons
        if self.sends is not None and note_ons:
            self.sends.append((at, note_ons))

    def add(self, note: Played) -> None:
        """A note that ended (Scheduler's on_played)."""
        self.recent.append(note)
        if self.every is not None:
            self.every.append(note)
        if self.recorder is not None:
            self.recorder.add(note)

    def poll(self, now: float, bpm: float) -> None:
        """From the play loop now and then: a finished segment goes to the recorder's writer."""
        if self.recorder is not None:
            self.recorder.bpm = bpm
            self.recorder.poll(now)

    def since(self, time: float) -> list[Played]:
        """The recent notes that began at `time` or later, in the order they ended."""
        return [n for n in self.recent if n.on_time >= time]

    def played(self) -> list[Played]:
        """Every note of the take in the order they began (empty unless kept)."""
        return sorted(self.every or [], key=lambda p: (p.on_time, p.pitch))

    def close(self, record: str, ticks_per_quarter: int, bpm: float) -> None:
        """At the end: the last segments written, or the whole take to the `record` file."""
        if self.recorder is not None:
            self.recorder.close()
            log.info("recorded %d segment files to %s", self.recorder.files_written, record)
        elif record_file(record):
            played = self.played()
            notes = [Note(p.start_tick, p.pitch, p.duration, p.velocity) for p in played]
            write_midi(notes, Path(record), ticks_per_quarter, bpm, channel=self.channel,
                       channels=[p.channel for p in played], programs=self.programs)
            log.info("recorded %d notes to %s", len(notes), record)

    def write_stats(self, path: str, **header: object) -> None:
        """--stats: `header`, when each note was due (monotonic time) and its tick, and when the
        note_ons went out (each send's time and count: how late the loop was, as against the due
        times), as JSON."""
        played = self.played()
        write_text_atomically(path, json.dumps({**header, "note_ons": [[p.on_time, p.pitch] for p in played],
                                                "note_ticks": [p.start_tick for p in played],
                                                "note_on_sends": [[t, n] for t, n in self.sends or []]}))
