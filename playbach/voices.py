"""Which voice an event is, read from the events before it: no voice field needed.

An event knows its pitch but not its voice, so a model reading "the interval from the previous
event" hears, inside a chord, the leap from another voice, and its voice leading suffers.
On four-part music where every voice sounds until its next note (the JSB chorales), the voice
follows from onsets and durations alone, by a slot rule:

    SLOTS slots, top (0) .. bottom (SLOTS - 1), each with its last pitch and the tick its note
    ends. An event starting at tick s takes the lowest free slot (the highest index whose note has
    ended by s; events of one onset come in ascending pitch, so the bass moves first), or, with
    none free, the slot whose last pitch is nearest.

The slot is the file's voice for most events (rests and voice crossings are where it is not;
docs/experiments/trainer.md has the figure). Because it needs only the history, the runtime tracks it event by
event like the model's state, and a model trained with voices (ModelConfig.voices) gets context
inputs per event from VoiceContext, the first five of CONTEXT (level 1, on) or all ten (level 2): the trainer over whole pieces
(with_context), the device runtime and the desktop step model one event at a time, so both read
the same numbers (docs/trainer.md, "Closing the gap").

    slot            this event's slot
    voice_interval  the interval from that slot's previous pitch (NO_INTERVAL: none)
    voice_pitch     pitch id of the last pitch of the slot the *next* event will take (its own
                    pitch id where that slot has none): the pitch head reads intervals from it
    next_slot       the slot the next event will take if the music goes on without a rest
    next_position   the 16th of a 4/4 bar it will start on, counted from the first event

and with chords (level 2, `--voices chords`) five more, the harmony the next event joins:

    chord_0..3      pitch id of each slot's note still sounding where the next event starts
                    (the pitch vocabulary's size: that slot is silent then)
    next_end        16ths from there to the first of those notes' ends (0: none sounds), at most BAR

Needs numpy only: the Pi imports this module.
"""
from __future__ import annotations

import math

import numpy as np

from playbach.events import FIELDS, Codec

SLOTS = 4
MAX_INTERVAL = 24                       # as trainer/relative.py: intervals beyond share the outermost id
NO_INTERVAL = 2 * MAX_INTERVAL + 1      # a slot's first note has no previous pitch
BAR = 16                                # 16ths in a 4/4 bar
CONTEXT = ("slot", "voice_interval", "voice_pitch", "next_slot", "next_position",
           "chord_0", "chord_1", "chord_2", "chord_3", "next_end")
LEVELS = {"off": 0, "on": 5, "chords": 10}   # --voices: how many of CONTEXT the model reads


def context_names(voices: int) -> tuple[str, ...]:
    """The context inputs of a model with ModelConfig.voices = `voices` (0 off, 1 on, 2 chords)."""
    return CONTEXT[:list(LEVELS.values())[int(voices)]]


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
                    else min(max(int(pitch) - self.last[slot], -MAX_INTERVAL), MAX_INTERVAL) + MAX_INTERVAL)
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


def context_sizes(pitch_size: int) -> dict[str, int]:
    """Each context input's number of ids (one-hot width in the step model)."""
    return {"slot": SLOTS, "voice_interval": NO_INTERVAL + 1, "voice_pitch": pitch_size,
            "next_slot": SLOTS, "next_position": BAR,
            **{f"chord_{v}": pitch_size + 1 for v in range(SLOTS)}, "next_end": BAR + 1}


class VoiceContext:
    """The context ids of each event from the token ids fed so far: reset(), then feed(ids) or
    row(ids) per event. `width`: how many of CONTEXT the model reads (5 or all 10)."""

    def __init__(self, codec: Codec, width: int = len(CONTEXT)):
        if width not in LEVELS.values() or not width:
            raise ValueError(f"a voice context of {width} inputs: expected one of {list(LEVELS.values())[1:]}")
        self.width = width
        # plain lists: read once per event fed, where numpy's scalar indexing costs more than it saves
        self.onsets = [int(v) for v in codec.vocab["onset"]]
        self.pitches = [int(v) for v in codec.vocab["pitch"]]
        self.durations = [int(v) for v in codec.vocab["duration"]]
        self.ticks_per_16th = codec.ticks_per_quarter / 4
        self.pitch_id = {int(p): i for i, p in enumerate(self.pitches)}
        self.tracker = VoiceTracker()

    def reset(self) -> None:
        self.tracker.reset()

    def save(self) -> dict:
        """The tracker's state (a copy), for restore()."""
        return {k: list(v) if isinstance(v, list) else v for k, v in vars(self.tracker).items()}

    def restore(self, state: dict) -> None:
        vars(self.tracker).update({k: list(v) if isinstance(v, list) else v for k, v in state.items()})

    def feed(self, ids: np.ndarray) -> np.ndarray:
        """(4,) token ids of this event -> (width,) context ids, in CONTEXT order."""
        onset, pitch, duration = np.asarray(ids).reshape(-1)[:3].tolist()
        t = self.tracker
        slot, interval, next_pitch = t.feed(self.onsets[onset], self.pitches[pitch], self.durations[duration])
        position = int(t.next_start // self.ticks_per_16th) % BAR
        context = [slot, interval, self.pitch_id.get(next_pitch, pitch), t.next_slot, position]
        if self.width > len(context):   # the chords level: what sounds where the next event starts
            sounding = [v for v in range(t.slots) if t.end[v] > t.next_start]
            context += [self.pitch_id[t.last[v]] if v in sounding else len(self.pitches) for v in range(t.slots)]
            until = min((t.end[v] for v in sounding), default=t.next_start) - t.next_start
            context.append(min(BAR, math.ceil(until / self.ticks_per_16th)))
        return np.array(context, dtype=np.int64)

    def row(self, ids: np.ndarray) -> np.ndarray:
        """(4,) token ids of this event -> (4 + width,): the ids the model reads for it."""
        ids = np.asarray(ids, dtype=np.int64).reshape(len(FIELDS))
        return np.array([*ids.tolist(), *self.feed(ids).tolist()], dtype=np.int64)


def with_context(codec: Codec, ids: np.ndarray, width: int = len(CONTEXT)) -> np.ndarray:
    """(n, 4) token ids of a piece -> (n, 4 + width): each event's ids and its context."""
    context = VoiceContext(codec, width)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1, len(FIELDS))
    return np.stack([context.row(row) for row in ids]).reshape(-1, len(FIELDS) + width)


def input_names(width: int) -> tuple[str, ...]:
    """The model input of each column of an id array: the four fields, then the context if present."""
    widths = [len(FIELDS) + n for n in LEVELS.values()]
    if width not in widths:
        raise ValueError(f"id rows of {width} columns: expected one of {widths}")
    return (FIELDS + CONTEXT)[:width]
