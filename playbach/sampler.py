"""Sampling one token from a probability vector: temperature, then top-k.

Used by the Improviser, which drives both `generate` on the desktop and the live loop on the Pi,
so a take sounds the same whichever side made it.
"""
from __future__ import annotations

import numpy as np


def sample(probs: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0,
           allowed: np.ndarray | None = None) -> int:
    """Draw an index from `probs` reshaped by `temperature` (0 = argmax) and cut to the `top_k` best (0 = all);
    tokens not `allowed` (a bool per token; None = all) get probability 0 first."""
    logits = np.log(np.maximum(np.asarray(probs, dtype=np.float64).ravel(), 1e-12))
    if allowed is not None:
        logits = np.where(allowed, logits, -np.inf)
    if temperature <= 0:
        return int(np.argmax(logits))
    logits = logits / temperature
    if 0 < top_k < logits.size:
        cut = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits >= cut, logits, -np.inf)
    logits -= logits.max()
    weights = np.exp(logits)
    return int(rng.choice(weights.size, p=weights / weights.sum()))


def sample_event(head_probs: list[np.ndarray], rng: np.random.Generator, temperature: float = 1.0,
                 top_k: int = 0) -> np.ndarray:
    """One token id per field (onset, pitch, duration, velocity) from the model's four heads."""
    return np.array([sample(p, rng, temperature, top_k) for p in head_probs], dtype=np.int64)
