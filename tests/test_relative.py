"""Relative pitch (trainer/relative.py): its layers against plain numpy lookups, and the three
forms of a model (training sequence, windowed, step) agreeing, with and without it."""
import numpy as np
import pytest

from playbach.events import FIELDS
from playbach.trainer.model import ModelConfig, build_model
from playbach.trainer.runfolder import model_config
from playbach.trainer.relative import (MAX_INTERVAL, NUM_INTERVALS, DurationGivenPitch, IntervalEmbedding,
                                       PitchOneHots, RelativeLogits, interval_ids)

PITCHES = (36, 38, 40, 41, 43, 45, 47, 48, 50, 60, 62, 64, 72, 79)   # a gap wider than MAX_INTERVAL too


def onehot(ids, size):
    return np.eye(size, dtype=np.float32)[np.asarray(ids)]


def test_interval_ids_are_signed_semitones_clipped_at_max_interval():
    ids = interval_ids(PITCHES) - MAX_INTERVAL
    v = np.array(PITCHES)
    assert ids[0, 1] == 2 and ids[1, 0] == -2 and (np.diag(ids) == 0).all()
    assert ids[0, -1] == MAX_INTERVAL and ids[-1, 0] == -MAX_INTERVAL      # 43 semitones apart
    inside = np.abs(v[None, :] - v[:, None]) <= MAX_INTERVAL
    assert (ids[inside] == (v[None, :] - v[:, None])[inside]).all()


def test_interval_embedding_is_the_row_of_the_interval_and_zero_without_a_previous_note():
    layer = IntervalEmbedding(PITCHES, 5)
    rng = np.random.default_rng(0)
    previous, current = rng.integers(len(PITCHES), size=(2, 3, 7))
    out = np.asarray(layer(onehot(previous, len(PITCHES)), onehot(current, len(PITCHES))))
    table = np.asarray(layer.embeddings)
    np.testing.assert_allclose(out, table[interval_ids(PITCHES)[previous, current]], atol=1e-6)
    silent = np.asarray(layer(np.zeros((1, 1, len(PITCHES)), np.float32), onehot([[3]], len(PITCHES))))
    assert not silent.any()


def test_relative_logits_read_the_interval_logits_from_this_pitch():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(4, NUM_INTERVALS)).astype(np.float32)
    now = rng.integers(len(PITCHES), size=4)
    out = np.asarray(RelativeLogits(PITCHES)(r, onehot(now, len(PITCHES))))
    expected = np.stack([r[k, interval_ids(PITCHES)[now[k]]] for k in range(4)])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_pitch_onehots_shift_by_one_event():
    previous, current = PitchOneHots(5)(np.array([[4, 1, 2]]))
    assert np.asarray(current).argmax(-1).tolist() == [[4, 1, 2]]
    assert np.asarray(previous)[0, 0].sum() == 0 and np.asarray(previous)[0, 1:].argmax(-1).tolist() == [4, 1]


@pytest.mark.parametrize("relative,voices,given_pitch,cell_clip", [
    (True, 2, True, 0.3), (True, 0, True, 0.3), (True, 2, False, None), (True, 1, False, 0.3),
    (True, 0, False, None), (False, 0, False, None)])
def test_sequence_windowed_and_step_forms_agree(relative, voices, given_pitch, cell_clip):
    """The step model fed one event at a time (state, and with relative pitch the previous pitch,
    carried by hand) and the windowed model on the last N events give the training model's
    distributions; with the voice context inputs (today's default), without them, and an
    absolute-pitch config, as runs made before those have. With the duration head given the
    pitch, the training form is told the next pitch and the other two give a row per pitch: the
    row of that pitch is the training form's. With a cell clip (trainer/clipped.py; the weights
    here take c past it) every form carries the clipped state; without one, as runs made before."""
    from playbach.heads import NEXT_PITCH, duration_given
    from playbach.trainer.step import build_step_model, build_windowed_model, input_sizes, state_sizes

    cfg = ModelConfig(vocab_sizes=(5, len(PITCHES), 4, 2), embed_dims=(3, 4, 3, 2), units=(8, 6), window=6,
                      relative_pitch=relative, pitch_values=PITCHES if relative else (), voices=voices,
                      duration_given_pitch=given_pitch, cell_clip=cell_clip)
    trained = build_model(cfg)
    rng = np.random.default_rng(2)
    for w in trained.weights:  # past the initial near-zero weights, so the pitch paths matter
        w.assign(rng.normal(scale=0.5, size=w.shape).astype(np.float32))
    sizes = input_sizes(cfg)   # the fields' vocabularies, then the context inputs' ids
    ids = np.stack([rng.integers(v, size=10) for v in sizes.values()], axis=1)
    names = list(sizes)
    following = np.append(ids[1:, 1], 3)          # the pitch the duration head is asked about
    extra = {NEXT_PITCH: following[None].astype(np.int32)} if given_pitch else {}
    sequence = trained({**{n: ids[None, :, j].astype(np.int32) for j, n in enumerate(names)}, **extra})

    step = build_step_model(cfg, trained)
    state = {role: np.zeros((1, size), np.float32) for role, size in state_sizes(cfg).items()}
    reached = 0.0
    for t in range(len(ids)):
        out = step({**{n: onehot(ids[t:t + 1, j], sizes[n]) for j, n in enumerate(names)}, **state})
        state = {role: np.asarray(out[role]) for role in state}
        reached = max(reached, *(np.abs(state[c]).max() for c in ("c0", "c1")))
        for f in FIELDS:
            got = np.asarray(out[f])[0]
            if f == "duration" and given_pitch:
                assert got.shape == (len(PITCHES), 4)
                got = duration_given(got, following[t])
            np.testing.assert_allclose(got, np.asarray(sequence[f])[0, t], atol=1e-5)
    if relative:
        assert state["prev_pitch"].argmax() == ids[-1, 1]
    if cell_clip:
        assert reached == pytest.approx(cell_clip), "the clip never acted: the test would not see it missing"

    windowed = build_windowed_model(cfg, trained)
    last = windowed({n: ids[None, :cfg.window, j].astype(np.int32) for j, n in enumerate(names)})
    for f in FIELDS:  # a window from the start of the piece: the same prefix, so the same numbers
        got = np.asarray(last[f])[0]
        if f == "duration" and given_pitch:
            got = duration_given(got, following[cfg.window - 1])
        np.testing.assert_allclose(got, np.asarray(sequence[f])[0, cfg.window - 1], atol=1e-5)


def test_duration_given_pitch_reads_the_pitch_and_its_interval_from_the_reference():
    """DurationGivenPitch against its formula in numpy, for every pitch at once and for the one
    pitch the training form is told; two pitches at the same interval from different references
    get different rows (the pitch's own embedding), and the rows are distributions."""
    layer = DurationGivenPitch(PITCHES, durations=5, dims=4)
    rng = np.random.default_rng(3)
    h = rng.normal(size=(2, 6)).astype(np.float32)
    reference = rng.integers(len(PITCHES), size=2)
    layer(h, onehot(reference, len(PITCHES)))  # builds it; then weights of the test's own seed,
    for v in layer.weights:  # as keras's unseeded draw can leave every unit dead (all rows equal)
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    every = np.asarray(layer(h, onehot(reference, len(PITCHES))))
    assert every.shape == (2, len(PITCHES), 5)
    w = {v.name: np.asarray(v) for v in layer.weights}
    for k in range(2):
        z = np.maximum(h[k] @ w["hidden"] + w["bias"] + w["pitch_embeddings"]
                       + w["interval_embeddings"][interval_ids(PITCHES)[reference[k]]], 0)
        logits = z @ w["out"] + w["out_bias"]
        expected = np.exp(logits - logits.max(-1, keepdims=True))
        np.testing.assert_allclose(every[k], expected / expected.sum(-1, keepdims=True), atol=1e-5)
    told = rng.integers(len(PITCHES), size=2)
    one = np.asarray(layer(h, onehot(reference, len(PITCHES)), onehot(told, len(PITCHES))))
    np.testing.assert_allclose(one, every[np.arange(2), told], atol=1e-6)
    assert not np.allclose(every[0, 1], every[0, 2])


def test_configs_of_older_runs_mean_absolute_pitch():
    """A run.json from before relative pitch and recurrent dropout is read as what it was trained
    with, although both are on by default for a new run."""
    old = {"vocab_sizes": [5, 6, 4, 2], "embed_dims": [3, 4, 3, 2], "units": [8], "dropout": 0.2,
           "window": 6, "learning_rate": 0.005}
    cfg = model_config(old)
    assert cfg.relative_pitch is False and cfg.pitch_values == () and cfg.recurrent_dropout == 0.0
    assert ModelConfig(vocab_sizes=(5, 6, 4, 2)).relative_pitch is True
    assert "embed_interval" not in [layer.name for layer in build_model(cfg).layers]


def test_relative_pitch_without_matching_pitch_values_is_refused():
    cfg = ModelConfig(vocab_sizes=(5, 6, 4, 2), units=(8,), relative_pitch=True, pitch_values=(60, 62))
    with pytest.raises(ValueError, match="2 values for a pitch vocabulary of 6"):
        build_model(cfg)
