"""Repeat memory: copy what followed the same passage earlier in this piece or take.

Bach writes out repeats and reuses figures; an LSTM that reads the piece from its start cannot
copy 200 events back, but a lookup can. After each event the memory finds the longest run of
whole events (onset, pitch, duration, velocity) that ends here and also ended at an earlier
position j; the event that followed j is its guess for the next one. The guess is mixed into
each head's distribution with a weight that grows with the run's length:

    p = (1 - w[field, bucket(length)]) * p_model + w[field, bucket(length)] * onehot(guess)

The weights are fitted on validation pieces by the trainer and travel in bundle.json
("memory"). A cache in the manner of Kuhn & De Mori (1990) for n-grams, Grave et al. (2017)
for neural models; the trainer also scores the n-gram with the same memory, like for like.

Live, a copy must not run forever: once a take has copied a passage, the end of the copy matches
the end of the original, and what followed the original is the start of the copy -- a loop.
`max_repeat` silences the memory while the current run is longer than that.
"""
from __future__ import annotations

import numpy as np

# lower edges of the match-length buckets; bucket 0 is "no earlier match"
BUCKET_EDGES = (1, 2, 4, 8, 16, 32)
NUM_BUCKETS = len(BUCKET_EDGES) + 1


def bucket_of(length: int) -> int:
    """0 for no match, else 1 + the index of the last edge <= length."""
    return int(np.searchsorted(BUCKET_EDGES, length, side="right"))


ID_BITS = 15    # a token id packs into 15 bits: four make one int64 key, compared in one pass


class Tape:
    """An append-only record of events (as packed keys) that states of a memory share.

    A state is (tape, length). Rows below the tape's tip are never written again, so a state
    taken earlier reads what it saw; appending at the tip writes in place, and appending behind
    it (a state restored after the memory went on: the planner's next candidate) first copies
    the state's rows to a tape of its own. A take appends without copying."""

    def __init__(self, keys: np.ndarray, room: int = 256):
        n = len(keys)
        self.keys = np.zeros(max(room, 2 * n), dtype=np.int64)
        self.keys[:n], self.tip = keys, n

    def append(self, length: int, key: int) -> "Tape":
        """The tape holding rows [:length] and then this key (self, or a copy)."""
        tape = self
        if length != self.tip or length == len(self.keys):
            tape = Tape(self.keys[:length])
        tape.keys[length] = key
        tape.tip = length + 1
        return tape


def pack(ids: np.ndarray) -> int:
    """An event's four token ids as one number (ID_BITS each)."""
    key = 0
    for i in np.asarray(ids, dtype=np.int64).reshape(4).tolist():
        if not 0 <= i < 1 << ID_BITS:
            raise ValueError(f"RepeatMemory.observe: token ids {np.ravel(ids).tolist()} "
                             f"outside 0..{(1 << ID_BITS) - 1}")
        key = key << ID_BITS | i
    return key


def unpack(key: int) -> np.ndarray:
    """An event's four token ids from its packed number (pack's inverse)."""
    mask = (1 << ID_BITS) - 1
    return np.array([key >> shift & mask for shift in (3 * ID_BITS, 2 * ID_BITS, ID_BITS, 0)], dtype=np.int64)


class RepeatMemory:
    """Token-id events in; the next event's guess, and the heads with it mixed in, out.

    weights: fields x NUM_BUCKETS (None: guesses only, nothing mixed). max_repeat > 0 leaves the
    heads alone while the run is longer than it (see the module doc); 0 = no limit."""

    def __init__(self, weights: np.ndarray | None = None, max_repeat: int = 0, capacity: int = 4096):
        self.weights, self.max_repeat, self.capacity = weights, max_repeat, capacity
        self.reset()

    def reset(self) -> None:
        self.tape, self.length = Tape(np.zeros(0, dtype=np.int64)), 0
        # the runs ending at earlier positions that equal the run ending at the newest event, as
        # (positions, lengths): a run is nonzero only where the newest event occurred before
        self.runs = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        self.best = (-1, 0)                          # the latest of the longest runs: (j, length)

    @property
    def events(self) -> np.ndarray:
        """The events remembered, oldest first (token ids)."""
        return np.array([unpack(key) for key in self.tape.keys[:self.length].tolist()],
                        dtype=np.int64).reshape(-1, 4)

    def observe(self, ids: np.ndarray) -> None:
        key = pack(ids)
        # a run ends at j when event j is this one; it is one longer than the run that ended at j - 1
        at = np.flatnonzero(self.tape.keys[:self.length] == key)
        positions, lengths = self.runs
        before = np.zeros(len(at), dtype=np.int64)
        if len(positions) and len(at):
            i = np.minimum(np.searchsorted(positions, at - 1), len(positions) - 1)
            before = np.where(positions[i] == at - 1, lengths[i], 0)
        self.runs = (at, before + 1)
        self.tape = self.tape.append(self.length, key)
        self.length += 1
        if self.length > self.capacity:                 # forget the oldest half, keep it O(capacity)
            keep = self.capacity // 2
            offset = self.length - keep
            self.tape, self.length = Tape(self.tape.keys[offset:self.length]), keep
            at, lengths = self.runs[0] - offset, self.runs[1]
            # a run may not reach back past the oldest event kept: position j has j + 1 behind it
            self.runs = (at[at >= 0], np.minimum(lengths[at >= 0], at[at >= 0] + 1))
        positions, lengths = self.runs
        last = len(lengths) - 1 - int(lengths[::-1].argmax()) if len(lengths) else -1
        self.best = (int(positions[last]), int(lengths[last])) if last >= 0 else (-1, 0)

    def state(self) -> tuple:
        """What the next guess depends on, for restore(): the Improviser tries continuations."""
        return self.tape, self.length, self.runs, self.best

    def restore(self, state: tuple) -> None:
        self.tape, self.length, self.runs, self.best = state

    def guess(self) -> tuple[np.ndarray | None, int]:
        """(ids of the event that followed the longest earlier match, its length), or (None, 0)."""
        j, length = self.best
        if length == 0:
            return None, 0
        return unpack(int(self.tape.keys[j + 1])), length

    def mix(self, head_probs: list[np.ndarray]) -> list[np.ndarray]:
        """Each head's distribution with the current guess mixed in."""
        guess, length = self.guess()
        if self.weights is None or guess is None or (self.max_repeat and length > self.max_repeat):
            return head_probs
        weights = self.weights[:, bucket_of(length)].tolist()
        return [MixedRows(probs, w, token) if probs.ndim == 2 else mixed_in(probs, w, token)
                for probs, w, token in zip(head_probs, weights, guess.tolist())]


def mixed_in(probs: np.ndarray, w: float, token: int) -> np.ndarray:
    """(1 - w) * probs + w * onehot(token), in float64."""
    p = np.asarray(probs, dtype=np.float64) * (1.0 - w)
    p[token] += w
    return p


class MixedRows:
    """A duration head with a row per pitch (playbach/heads.py) with the guess mixed into every row,
    each row mixed when it is read: a draw reads one row of dozens."""
    ndim = 2

    def __init__(self, rows: np.ndarray, w: float, token: int):
        self.rows, self.w, self.token = rows, w, token

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, pitch: int) -> np.ndarray:
        return mixed_in(self.rows[pitch], self.w, self.token)


def weights_from_dict(d: dict | None) -> np.ndarray | None:
    """bundle.json / run.json "memory" -> weights, checked; None when there is none."""
    if not d:
        return None
    if tuple(d.get("bucket_edges", ())) != BUCKET_EDGES:
        raise ValueError(f"memory bucket_edges {d.get('bucket_edges')} != {list(BUCKET_EDGES)}")
    w = np.asarray(d["weights"], dtype=np.float64)
    if w.shape != (4, NUM_BUCKETS) or (w < 0).any() or (w > 1).any():
        raise ValueError(f"memory weights must be 4 x {NUM_BUCKETS} numbers in [0, 1], got shape {w.shape}")
    return w


def weights_to_dict(weights: np.ndarray) -> dict:
    return {"bucket_edges": list(BUCKET_EDGES), "weights": np.round(weights, 4).tolist()}


MIN_RUN = 8   # events: a shorter run is a motif, not a copy


def earlier_run_lengths(events: np.ndarray) -> np.ndarray:
    """For each position i, the longest run of whole events ending at i that also ended at some j < i:
    the repeat memory's own match length, with room never to forget (as trainer/repeats.replay)."""
    memory = RepeatMemory(capacity=max(4096, 2 * len(events)))
    lengths = []
    for event in events:
        memory.observe(event)
        lengths.append(memory.guess()[1])
    return np.array(lengths, dtype=np.int64)


def take_repeat_figures(events: np.ndarray) -> dict:
    """The share of events inside a run of >= MIN_RUN events that already occurred earlier in the
    take, the longest such run, and the run at the last event (a looping take ends in a growing one)."""
    runs = earlier_run_lengths(events)
    inside = np.zeros(len(events), dtype=bool)
    for i in np.nonzero(runs >= MIN_RUN)[0]:
        inside[i - runs[i] + 1:i + 1] = True
    return {"share_in_repeats": float(inside.mean()), "longest_repeat": int(runs.max()),
            "run_at_end": int(runs[-1])}
