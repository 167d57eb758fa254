import numpy as np

from playbach.sampler import sample, sample_event


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


def test_same_seed_same_take():
    probs = [np.full(5, 0.2), np.full(7, 1 / 7), np.full(3, 1 / 3), np.full(2, 0.5)]
    a = [sample_event(probs, np.random.default_rng(7)).tolist() for _ in range(3)]
    assert a[0] == a[1] == a[2]
