"""Which voice an event is, read from the events before it: no voice field needed.

An event knows its pitch but not its voice, so a model reading "the interval from the previous
event" hears, inside a chord, the leap from another voice, and its voice leading suffers (issue 11).
On four-part music where every voice sounds until its next note (the JSB chorales), the voice
follows from onsets and durations alone, by a slot rule:

    SLOTS slots, top (0) .. bottom (SLOTS - 1), each with its last pitch and the tick its note
    ends. An event starting at tick s takes the lowest free slot (the highest index whose note has
    ended by s; events of one onset come in ascending pitch, so the bass moves first), or, with
    none free, the slot whose last pitch is nearest.

On the benchmark's valid split the slot is the file's voice for 94.7 % of the events (rests and
voice crossings are the rest). Because it needs only the history, the player's runtime can track
it event by event like the model's state; today only bench/jsb_voice_probe.py uses it (the
measured case for making it a model input: docs/trainer.md, "Closing the gap").

Needs numpy only: the Pi imports this module.
"""
from __future__ import annotations

import numpy as np

SLOTS = 4
MAX_INTERVAL = 24                       # as trainer/relative.py: intervals beyond share the outermost id
NO_INTERVAL = 2 * MAX_INTERVAL + 1      # a slot's first note has no previous pitch


class VoiceTracker:
    """The slot rule, one event at a time (the runtime's form); `features` runs it over a piece."""

    def __init__(self, slots: int = SLOTS):
        self.slots = slots
        self.reset()

    def reset(self) -> None:
        self.last = [-1] * self.slots   # each slot's last pitch, -1 before its first note
        self.end = [0] * self.slots     # the tick its note ends
        self.now = 0

    def _free(self) -> list[int]:
        return [v for v in range(self.slots) if self.end[v] <= self.now]

    def feed(self, onset: int, pitch: int, duration: int) -> tuple[int, int, int]:
        """This event's (slot, interval id from the slot's previous pitch, and the last pitch of
        the slot the *next* event will take: the lowest free one now, else the first to end)."""
        self.now += int(onset)
        free = self._free()
        slot = max(free) if free else min(range(self.slots), key=lambda v: abs(self.last[v] - pitch))
        interval = (NO_INTERVAL if self.last[slot] < 0
                    else int(np.clip(pitch - self.last[slot], -MAX_INTERVAL, MAX_INTERVAL)) + MAX_INTERVAL)
        self.last[slot], self.end[slot] = int(pitch), self.now + int(duration)
        free = self._free()
        following = max(free) if free else max(v for v in range(self.slots) if self.end[v] == min(self.end))
        # where and which the next event will be, if the music goes on without a rest
        self.next_slot, self.next_start = following, self.now if free else min(self.end)
        return slot, interval, self.last[following]


def features(events: np.ndarray, slots: int = SLOTS) -> np.ndarray:
    """(n, 4) event values -> (n, 3) int: slot, interval id, next slot's last pitch (-1: none).
    Causal: row t depends on events 0..t only."""
    tracker = VoiceTracker(slots)
    rows = [tracker.feed(o, p, d) for o, p, d, _ in np.asarray(events, dtype=np.int64).reshape(-1, 4).tolist()]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)
