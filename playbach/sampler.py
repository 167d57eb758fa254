"""Sampling one token from a probability vector: a mask, temperature, top-k, and a tilt.

Used by the Improviser, which drives both `generate` on the desktop and the live loop on the Pi,
so a take sounds the same whichever side made it. Steering works here, on the model's choices,
never on a sampled note: a pitch outside the allowed range gets probability 0 before the draw
(the pitch head is absolute: index i is the codec's pitch vocab[i], also for the relative-pitch
model), and a density aim tilts the onset head (p(o) * exp(-lambda * o), lambda solved so the
expected onset distance is the aim's).
"""
from __future__ import annotations

import numpy as np

from playbach.heads import duration_given

# exponential tilts tried for the onset head (per tick); wide enough to reach any onset vocabulary's ends
PLAUSIBLE = 1e-6   # an onset below this share of the likeliest one's weight is never tilted into a take
LONGEST = 4.0      # nor one longer than this many times the aimed mean onset
_LAMBDAS = np.sinh(np.linspace(-8.0, 8.0, 385)) / 10   # up to ~150 per tick: a sharp head still reaches its aim


def weights(probs: np.ndarray, temperature: float = 1.0, top_k: int = 0,
            allowed: np.ndarray | None = None) -> np.ndarray:
    """Unnormalised draw weights: tokens not `allowed` get 0, the rest reshaped by `temperature`
    (0 = only the likeliest allowed token) and cut to the `top_k` best (0 = all)."""
    # ufuncs and their .reduce are called directly, not through ndarray.max() and friends: the same
    # numbers, without numpy's Python-level wrappers (a planned note draws about forty times)
    logits = np.log(np.maximum(np.asarray(probs, dtype=np.float64).ravel(), 1e-12))
    if allowed is not None:
        logits = np.where(allowed, logits, -np.inf)
    if temperature <= 0:
        out = np.zeros_like(logits)
        out[np.argmax(logits)] = 1.0
        return out
    logits = logits / temperature
    if 0 < top_k < logits.size:
        cut = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits >= cut, logits, -np.inf)
    return np.exp(logits - np.maximum.reduce(logits))


def tilt_to_mean(w: np.ndarray, values: np.ndarray, mean: float) -> np.ndarray:
    """`w` tilted by exp(-lambda * value) so the expected value is `mean` (as near as the values
    allow: an aim beyond the largest or smallest value gives the nearest end)."""
    with np.errstate(divide="ignore"):          # log(0) = -inf: a token the mask or top-k took out
        logits = np.log(w) - np.outer(_LAMBDAS, values)                      # (lambdas, tokens)
    scaled = np.exp(logits - logits.max(axis=1, keepdims=True))
    means = scaled @ values / scaled.sum(axis=1)                             # falls as lambda grows
    i = int(np.clip(np.searchsorted(-means, -mean), 1, len(_LAMBDAS) - 1))
    # between the two tilts that straddle the aim, in the proportion that makes the mean the aim
    below, above = scaled[i] / scaled[i].sum(), scaled[i - 1] / scaled[i - 1].sum()
    share = np.clip((mean - means[i]) / (means[i - 1] - means[i]), 0.0, 1.0) if means[i - 1] > means[i] else 0.0
    return share * above + (1 - share) * below


def sample(probs: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0,
           allowed: np.ndarray | None = None) -> int:
    """Draw an index from `probs`: see weights()."""
    return draw(weights(probs, temperature, top_k, allowed), rng, temperature <= 0)


def draw(w: np.ndarray, rng: np.random.Generator, greedy: bool = False) -> int:
    """An index drawn with weights `w`; `greedy` takes the heaviest and draws no random number
    (so a seeded take's random stream is the same with or without steering)."""
    if greedy:
        return int(np.argmax(w))
    # what rng.choice(w.size, p=w / w.sum()) does, without its checks: the same index from the same
    # random number, so a seeded take is the same; in half the time (the planner draws often)
    cdf = np.add.accumulate(w / np.add.reduce(w))
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))


def sample_event(head_probs: list[np.ndarray], rng: np.random.Generator, temperature: float = 1.0,
                 top_k: int = 0, rhythm_temperature: float | None = None, pitch_allowed: np.ndarray | None = None,
                 onset_values: np.ndarray | None = None, onset_mean: float | None = None) -> np.ndarray:
    """One token id per field (onset, pitch, duration, velocity) from the model's four heads.

    `temperature` governs pitch and velocity, `rhythm_temperature` onset and duration (None = the
    same); `pitch_allowed` masks the pitch head; `onset_mean` (ticks) tilts the onset head, whose
    token values are `onset_values`. A duration head with a row per pitch (playbach/heads.py) is
    read at the pitch drawn."""
    rhythm = temperature if rhythm_temperature is None else rhythm_temperature
    onset, pitch, duration, velocity = head_probs
    w_onset = weights(onset, rhythm, top_k)
    if onset_mean is not None and onset_values is not None:
        # at temperature 0 the tilt works on the model's own distribution, then the likeliest is taken
        w = w_onset if rhythm > 0 else weights(onset, 1.0, top_k)
        # only among onsets the model finds plausible: an exponential tilt would otherwise make a
        # 6-quarter rest it gives 1e-9 the way to raise the mean of a chord it is sure of. Judged on
        # the model's own distribution: a low rhythm temperature sharpens what it thinks, not what
        # the density aim may choose from (a voice-aware model is sure of its onsets)
        plausible = np.asarray(onset) >= PLAUSIBLE * np.max(onset)
        # nor a rest many times the aim: one such gap is a debt the following onsets repay only
        # by stacking chords, so a take would swing between silence and clusters
        plausible &= onset_values <= max(LONGEST * onset_mean, onset_values[onset_values > 0].min(initial=0))
        w_onset = tilt_to_mean(np.where(plausible, w, 0.0), onset_values, onset_mean)
    onset_id = draw(w_onset, rng, rhythm <= 0)
    pitch_id = draw(weights(pitch, temperature, top_k, pitch_allowed), rng, temperature <= 0)
    return np.array([onset_id, pitch_id,
                     draw(weights(duration_given(duration, pitch_id), rhythm, top_k), rng, rhythm <= 0),
                     draw(weights(velocity, temperature, top_k), rng, temperature <= 0)], dtype=np.int64)
