"""Fitting and scoring the repeat memory (playbach/memory.py) on top of any model's distributions.

A model's distributions are given per piece as one (n-1, vocab) array per field: row t is the
distribution of event t+1 given events 0..t, as in evaluate.py. The memory replays the same
piece, so row t is mixed with the guess made after event t. The weights (field x length bucket)
are chosen on validation pieces to minimise each field's NLL, then scored on the test pieces.
"""
from __future__ import annotations

import numpy as np

from playbach.events import FIELDS
from playbach.memory import NUM_BUCKETS, RepeatMemory, bucket_of

GRID = np.linspace(0.0, 0.99, 100)   # candidate weights; < 1 keeps every token possible

Probs = list[list[np.ndarray]]       # per piece, per field: (n-1, vocab)


def replay(pieces: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per piece: (guess ids (n-1, 4), -1 where none; bucket (n-1,)) for targets 1..n-1."""
    out = []
    for ids in pieces:
        memory = RepeatMemory(capacity=max(4096, 2 * len(ids)))
        guesses = np.full((len(ids) - 1, 4), -1, dtype=np.int64)
        buckets = np.zeros(len(ids) - 1, dtype=np.int64)
        for t in range(len(ids) - 1):
            memory.observe(ids[t])
            guess, length = memory.guess()
            if guess is not None:
                guesses[t], buckets[t] = guess, bucket_of(length)
        out.append((guesses, buckets))
    return out


def _target_terms(probs: Probs, pieces: list[np.ndarray], replays, field: int):
    """Flattened over all positions: P_model(target), guess == target, bucket."""
    p, hit, bucket = [], [], []
    for piece_probs, ids, (guesses, buckets) in zip(probs, pieces, replays):
        target = ids[1:, field]
        p.append(piece_probs[field][np.arange(len(target)), target])
        hit.append(guesses[:, field] == target)
        bucket.append(buckets)
    return np.concatenate(p), np.concatenate(hit), np.concatenate(bucket)


def fit(probs: Probs, pieces: list[np.ndarray], replays) -> np.ndarray:
    """Weights (fields x NUM_BUCKETS) that minimise each field's NLL on these pieces; bucket 0 is 0."""
    weights = np.zeros((len(FIELDS), NUM_BUCKETS))
    for field in range(len(FIELDS)):
        p, hit, bucket = _target_terms(probs, pieces, replays, field)
        for b in range(1, NUM_BUCKETS):
            here = bucket == b
            if not here.any():
                continue
            mixed = (1 - GRID[:, None]) * p[here] + GRID[:, None] * hit[here]
            nll = -np.log(np.maximum(mixed, 1e-12)).mean(axis=1)
            weights[field, b] = GRID[int(np.argmin(nll))]
    return weights


def mixed_scores(probs: Probs, pieces: list[np.ndarray], replays, weights: np.ndarray | None) -> dict:
    """{field: {"top1", "nll"}} of the model's distributions with the memory mixed in (None: without)."""
    result = {}
    for field, name in enumerate(FIELDS):
        hits = nll = n = 0.0
        for piece_probs, ids, (guesses, buckets) in zip(probs, pieces, replays):
            q = np.array(piece_probs[field], dtype=np.float64)
            if weights is not None:
                w = weights[field, buckets][:, None]
                q *= 1 - w
                rows = np.flatnonzero(guesses[:, field] >= 0)
                q[rows, guesses[rows, field]] += w[rows, 0]
            target = ids[1:, field]
            hits += (q.argmax(axis=1) == target).sum()
            nll -= np.log(np.maximum(q[np.arange(len(target)), target], 1e-12)).sum()
            n += len(target)
        result[name] = {"top1": float(hits / max(n, 1)), "nll": float(nll / max(n, 1))}
    return result
