"""What was played, with one owner: the scheduler tells it of each note as the note ends.

The control page's roll and the `take` op read the recent notes (TAKE_NOTES at most: hours of
notes would add up); --record and --stats read every note, which is kept only when one of them
is asked for.
"""
from __future__ import annotations

from collections import deque

from playbach.device.scheduler import Played

TAKE_NOTES = 20000        # notes kept for `take` (about 80 minutes at 4 notes a second)


class TakeLog:
    def __init__(self, keep_all: bool, recent: int = TAKE_NOTES):
        self.recent: deque[Played] = deque(maxlen=recent)
        self.every: list[Played] | None = [] if keep_all else None   # for --record and --stats
        self.notes_played = 0    # note_ons sent (a note is logged when it ends)

    def sent(self, note_ons: int) -> None:
        self.notes_played += note_ons

    def add(self, note: Played) -> None:
        """A note that ended (Scheduler's on_played)."""
        self.recent.append(note)
        if self.every is not None:
            self.every.append(note)

    def since(self, time: float) -> list[Played]:
        """The recent notes that began at `time` or later, in the order they ended."""
        return [n for n in self.recent if n.on_time >= time]

    def played(self) -> list[Played]:
        """Every note of the take in the order they began (empty unless kept)."""
        return sorted(self.every or [], key=lambda p: (p.on_time, p.pitch))
