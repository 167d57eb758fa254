"""The int8 twin's pitch head (trainer/int8_head.py): the trained head's three parts gathered into
one matmul give the same distribution, and its floor bounds the logits. In Keras, float32: what
the converter rounds once is the same function."""
import numpy as np
import pytest

from playbach.trainer.int8_head import LOGITS
from playbach.trainer.model import ModelConfig, build_model
from playbach.trainer.step import build_step_model, input_sizes, state_sizes

PITCHES = (36, 38, 40, 41, 43, 45, 47, 48, 50, 60, 62, 64, 72, 79)


def play(step, cfg, ids):
    """The step model fed `ids` one event at a time (state carried): the outputs of each step."""
    sizes = input_sizes(cfg)
    state = {role: np.zeros((1, size), np.float32) for role, size in state_sizes(cfg).items()}
    outs = []
    for row in ids:
        x = [np.eye(size, dtype=np.float32)[[i]] for i, size in zip(row, sizes.values())]
        out = step(x + list(state.values()))
        state = {role: np.asarray(out[role]) for role in state}
        outs.append({k: np.asarray(v) for k, v in out.items()})
    return outs


@pytest.mark.parametrize("voices", [0, 1])
def test_the_merged_pitch_head_is_the_trained_heads_sum(voices):
    cfg = ModelConfig(vocab_sizes=(5, len(PITCHES), 4, 2), embed_dims=(3, 4, 3, 2), units=(8, 6),
                      pitch_values=PITCHES, voices=voices, cell_clip=None)
    trained = build_model(cfg)
    rng = np.random.default_rng(4)
    for w in trained.weights:   # biases too: the merged bias rows must carry the interval biases
        w.assign(rng.normal(scale=0.7, size=w.shape).astype(np.float32))
    ids = np.stack([rng.integers(v, size=12) for v in input_sizes(cfg).values()], axis=1)
    plain = play(build_step_model(cfg, trained), cfg, ids)
    twin = build_step_model(cfg, trained, for_int8=True)
    assert twin.get_layer(LOGITS) is not None
    for a, b in zip(plain, play(twin, cfg, ids)):
        np.testing.assert_allclose(b["pitch"], a["pitch"], atol=1e-5)
        assert not np.allclose(a["pitch"], a["pitch"].mean())   # the pitch parts shape it

    # a floor under every logit: the same distribution; a floor at 0 lifts some: changed
    floored = build_step_model(cfg, trained, for_int8=True, logit_floor=-1e3)
    for a, b in zip(plain, play(floored, cfg, ids)):
        np.testing.assert_allclose(b["pitch"], a["pitch"], atol=1e-5)
    high = build_step_model(cfg, trained, for_int8=True, logit_floor=0.0)
    changed = [not np.allclose(a["pitch"], b["pitch"], atol=1e-3) for a, b in zip(plain, play(high, cfg, ids))]
    assert any(changed)
