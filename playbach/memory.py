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


class RepeatMemory:
    """Token-id events in; the next event's guess, and the heads with it mixed in, out.

    weights: fields x NUM_BUCKETS (None: guesses only, nothing mixed). max_repeat > 0 leaves the
    heads alone while the run is longer than it (see the module doc); 0 = no limit."""

    def __init__(self, weights: np.ndarray | None = None, max_repeat: int = 0, capacity: int = 4096):
        self.weights, self.max_repeat, self.capacity = weights, max_repeat, capacity
        self.reset()

    def reset(self) -> None:
        self.events = np.zeros((0, 4), dtype=np.int64)
        self.keys = np.zeros(0, dtype=np.int64)     # each event packed into one number, to match on
        # runs[j]: how many events ending at j equal the events ending at the newest one (j < newest)
        self.runs = np.zeros(0, dtype=np.int64)
        self.best = (-1, 0)                          # the latest of the longest runs: (j, length)

    def observe(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(4)
        key = 0
        for i in ids.tolist():
            if not 0 <= i < 1 << ID_BITS:
                raise ValueError(f"RepeatMemory.observe: token ids {ids.tolist()} outside 0..{(1 << ID_BITS) - 1}")
            key = key << ID_BITS | i
        if len(self.keys):
            previous = np.concatenate([[0], self.runs])      # runs of the last event, one step back
            self.runs = np.where(self.keys == key, previous + 1, 0)
        # arrays are replaced, never changed in place: a state() taken earlier stays as it was
        self.events = np.concatenate([self.events, ids[None]])
        self.keys = np.concatenate([self.keys, [key]])
        if len(self.events) > self.capacity:                 # forget the oldest half, keep it O(capacity)
            keep = self.capacity // 2
            self.events, self.keys = self.events[-keep:], self.keys[-keep:]
            # a run may not reach back past the oldest event kept: position j has j + 1 behind it
            self.runs = np.minimum(self.runs[-(keep - 1):], np.arange(1, keep))
        j = len(self.runs) - 1 - int(self.runs[::-1].argmax()) if len(self.runs) else -1
        self.best = (j, int(self.runs[j])) if j >= 0 and self.runs[j] > 0 else (-1, 0)

    def state(self) -> tuple:
        """What the next guess depends on, for restore(): the Improviser tries continuations."""
        return self.events, self.keys, self.runs, self.best

    def restore(self, state: tuple) -> None:
        self.events, self.keys, self.runs, self.best = state

    def guess(self) -> tuple[np.ndarray | None, int]:
        """(ids of the event that followed the longest earlier match, its length), or (None, 0)."""
        j, length = self.best
        if length == 0:
            return None, 0
        return self.events[j + 1].copy(), length

    def mix(self, head_probs: list[np.ndarray]) -> list[np.ndarray]:
        """Each head's distribution with the current guess mixed in."""
        guess, length = self.guess()
        if self.weights is None or guess is None or (self.max_repeat and length > self.max_repeat):
            return head_probs
        mixed = []
        for probs, w, token in zip(head_probs, self.weights[:, bucket_of(length)].tolist(), guess.tolist()):
            p = np.asarray(probs, dtype=np.float64) * (1.0 - w)
            p[..., token] += w     # every row of a duration head given the pitch
            mixed.append(p)
        return mixed


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
