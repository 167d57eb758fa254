"""Representative inputs for full-int8 calibration, taken from the run's training pieces.

For the step model the LSTM state fed in with each event is the state the float32 step model
actually reaches playing that piece from its start -- random states would calibrate the int8
ranges of h and c for values the model never produces, and waste the 256 levels.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from playbach.runtime import StepModel
from playbach.voices import input_names


def step_samples(float_step: StepModel, pieces: dict[str, np.ndarray], count: int = 500,
                 events_per_piece: int = 256) -> list[dict[str, np.ndarray]]:
    """Up to `count` step-model input dicts (the one-hot event inputs + the states reached), spread
    over pieces; `pieces` are (n, 4) token ids (the step model computes any voice context itself)."""
    samples = []
    for ids in pieces.values():
        float_step.reset()
        for event in ids[:events_per_piece]:
            float_step.load(event)
            samples.append({role: float_step.interpreter.get_tensor(index).copy()
                            for role, (index, _) in float_step.inputs.items()})
            float_step.advance()
    return _spread(samples, count)


def window_samples(pieces: dict[str, np.ndarray], window: int, count: int = 200,
                   seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Up to `count` windowed-model input dicts: random full windows of the pieces' id rows."""
    rng = np.random.default_rng(seed)
    long_enough = [ids for ids in pieces.values() if len(ids) >= window]
    samples = []
    for _ in range(count if long_enough else 0):
        ids = long_enough[rng.integers(len(long_enough))]
        start = rng.integers(len(ids) - window + 1)
        chunk = ids[start:start + window]
        samples.append({name: chunk[:, j].reshape(1, -1).astype(np.int32)
                        for j, name in enumerate(input_names(chunk.shape[1]))})
    return samples


def as_dataset(samples: list[dict[str, np.ndarray]]) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
    """The converter's representative_dataset: a generator function over dicts keyed by input name."""
    def generate():
        yield from samples
    return generate


def _spread(samples: list, count: int) -> list:
    if len(samples) <= count:
        return samples
    picks = np.linspace(0, len(samples) - 1, count).round().astype(int)
    return [samples[i] for i in picks]
