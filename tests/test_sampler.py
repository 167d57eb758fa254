from pathlib import Path

import numpy as np
import pytest

from playbach.bundle import load_bundle
from playbach.improviser import Improviser
from playbach.memory import RepeatMemory
from playbach.runtime import open_model
from playbach.sampler import sample

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "events"


def test_zero_temperature_is_argmax():
    rng = np.random.default_rng(0)
    assert sample(np.array([0.1, 0.7, 0.2]), rng, temperature=0) == 1


def test_top_k_never_draws_outside_the_k_best():
    rng = np.random.default_rng(1)
    p = np.array([0.30, 0.25, 0.20, 0.15, 0.10])
    draws = {sample(p, rng, temperature=2.0, top_k=2) for _ in range(500)}
    assert draws == {0, 1}


def test_temperature_sharpens_and_flattens():
    p = np.array([0.6, 0.3, 0.1])
    def share_of_best(t):
        rng = np.random.default_rng(2)
        return np.mean([sample(p, rng, temperature=t) == 0 for _ in range(3000)])
    assert share_of_best(0.3) > 0.85 > share_of_best(1.0) > 0.5 > share_of_best(5.0)


@pytest.fixture(scope="module")
def shipped_model():
    """The shipped bundle's step model on the CPU, as the player opens it (TFLite, no TensorFlow)."""
    bundle = load_bundle(SHIPPED)
    return bundle, open_model(bundle, "cpu", "step", "auto")


def take(bundle, model, seed: int, events: int = 300) -> np.ndarray:
    """A take as the player makes one: seeded rng, the repeat memory, the first opening."""
    memory = RepeatMemory(bundle.memory, max_repeat=64)
    improviser = Improviser(model, bundle.codec, np.random.default_rng(seed), temperature=0.9, memory=memory)
    improviser.prime(bundle.openings[0])
    return np.array([improviser.next_event() for _ in range(events)])


def test_same_seed_same_take(shipped_model):
    bundle, model = shipped_model
    first = take(bundle, model, seed=1)
    # the same model object again: prime() must reset its LSTM state and the memory
    assert take(bundle, model, seed=1).tolist() == first.tolist()
    other = take(bundle, model, seed=2)
    opening = len(bundle.openings[0])
    assert other[:opening].tolist() == first[:opening].tolist()           # the opening is played as given
    assert (other[opening:] != first[opening:]).any(axis=1).mean() > 0.5   # then the takes part
