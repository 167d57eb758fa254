"""The baseline: a backoff n-gram per field, the order chosen on validation.

Each field (onset, pitch, duration, velocity) is its own token sequence. Probabilities are
interpolated Witten-Bell down to an add-k unigram, so every token of the vocabulary gets a
real probability and the NLL is honest (it sums to one). Histories restart at each piece,
padded with a start symbol, and the targets are events 1..n-1 of each piece -- the same ones
the Keras model is scored on.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

START = -1


class NGram:
    """Counts up to `max_order`; `distributions(seq)` gives P_m(next | history) for every order m."""

    def __init__(self, vocab_size: int, max_order: int = 6, k: float = 0.1):
        self.vocab_size, self.max_order, self.k = vocab_size, max_order, k
        self.unigram = np.zeros(vocab_size)
        # per context length m>=1: context tuple -> {token: count}
        self.counts: list[dict] = [defaultdict(lambda: defaultdict(int)) for _ in range(max_order)]

    def fit(self, sequences: list[np.ndarray]) -> "NGram":
        for seq in sequences:
            padded = [START] * (self.max_order - 1) + [int(t) for t in seq]
            for i in range(self.max_order - 1, len(padded)):
                w = padded[i]
                self.unigram[w] += 1
                for m in range(1, self.max_order):
                    self.counts[m][tuple(padded[i - m:i])][w] += 1
        total = self.unigram.sum()
        self.p0 = (self.unigram + self.k) / (total + self.k * self.vocab_size)
        # freeze: (count total, distinct types, token->count) per context
        self.table = [None] + [{h: (sum(c.values()), len(c), dict(c)) for h, c in self.counts[m].items()}
                               for m in range(1, self.max_order)]
        return self

    def _chain(self, history: list[int]) -> list[np.ndarray]:
        """[P_1, ..., P_max_order] for the next token after `history` (padded with START)."""
        probs, p = [self.p0], self.p0
        for m in range(1, self.max_order):
            entry = self.table[m].get(tuple(history[-m:]))
            if entry is not None:
                total, types, seen = entry
                q = p * types
                for w, c in seen.items():
                    q[w] += c
                p = q / (total + types)
            probs.append(p)
        return probs

    def probs(self, seq: np.ndarray, order: int) -> np.ndarray:
        """(n-1, vocab): row t is P_order(seq[t+1] | seq[..t]), the rows evaluate.py scores."""
        history = [START] * (self.max_order - 1) + [int(seq[0])]
        rows = []
        for target in seq[1:].tolist():
            rows.append(self._chain(history)[order - 1])
            history.append(target)
        return np.array(rows).reshape(-1, self.vocab_size)

    def score_orders(self, sequences: list[np.ndarray]) -> list[dict]:
        """For each order 1..max_order: {"order", "top1", "nll"} on targets seq[1:] of every piece."""
        hits = np.zeros(self.max_order)
        nll = np.zeros(self.max_order)
        n = 0
        for seq in sequences:
            history = [START] * (self.max_order - 1) + [int(seq[0])]
            for target in seq[1:].tolist():
                for m, p in enumerate(self._chain(history)):
                    hits[m] += int(np.argmax(p)) == target
                    nll[m] -= math.log(p[target])
                history.append(target)
                n += 1
        n = max(n, 1)
        return [{"order": m + 1, "top1": hits[m] / n, "nll": nll[m] / n} for m in range(self.max_order)]


def choose_order(train: list[np.ndarray], val: list[np.ndarray], vocab_size: int,
                 max_order: int = 6) -> tuple[NGram, int, float]:
    """Fit on train; the order with the lowest validation NLL, and that NLL."""
    model = NGram(vocab_size, max_order).fit(train)
    best = min(model.score_orders(val), key=lambda s: s["nll"])
    return model, best["order"], float(best["nll"])
