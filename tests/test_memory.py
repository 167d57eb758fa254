"""The repeat memory: its matching against a brute-force search, its mixing, the loop guard, the
weights the trainer fits, and the device playing a copy through the real TFLite runtime."""
import json

import numpy as np
import pytest

from playbach.bundle import load_bundle
from playbach.improviser import Improviser
from playbach.memory import (NUM_BUCKETS, RepeatMemory, bucket_of, earlier_run_lengths, take_repeat_figures,
                             weights_from_dict, weights_to_dict)
from playbach.runtime import open_model
from playbach.errors import UserError
from playbach.trainer import repeats


def events(tokens) -> np.ndarray:
    """One token per event, spread over the four fields so whole-event equality is what counts."""
    t = np.asarray(tokens, dtype=np.int64)
    return np.stack([t % 3, t, t % 2, np.zeros_like(t)], axis=1)


def brute_force_guess(history: np.ndarray):
    """Longest earlier match of the newest suffix, the latest one on ties; (None, 0) if none."""
    n, best, where = len(history), 0, -1
    for j in range(n - 1):
        length = 0
        while j - length >= 0 and (history[j - length] == history[n - 1 - length]).all():
            length += 1
        if length and length >= best:
            best, where = length, j
    return (None, 0) if where < 0 else (history[where + 1], best)


def test_written_out_repeat_is_guessed_with_its_length():
    memory = RepeatMemory()
    piece = events([5, 7, 9, 11, 5, 7, 9])
    for row in piece:
        memory.observe(row)
    guess, length = memory.guess()
    assert guess.tolist() == piece[3].tolist() and length == 3


def test_nothing_to_copy_at_the_start_or_without_repeats():
    memory = RepeatMemory()
    assert memory.guess() == (None, 0)
    for row in events([1, 2, 3, 4]):
        memory.observe(row)
    assert memory.guess() == (None, 0)


@pytest.mark.parametrize("capacity", [4096, 16])
def test_incremental_matching_equals_brute_force(capacity):
    rng = np.random.default_rng(3)
    piece = events(rng.integers(0, 3, size=120))   # three tokens: many repeats of every length
    memory = RepeatMemory(capacity=capacity)
    for t, row in enumerate(piece):
        memory.observe(row)
        guess, length = memory.guess()   # past its capacity it knows the newest events only
        want, want_length = brute_force_guess(piece[max(0, t + 1 - len(memory.events)):t + 1])
        assert length == want_length
        assert (guess is None) == (want is None) and (guess is None or guess.tolist() == want.tolist())
    assert len(memory.events) <= capacity


def test_mix_moves_the_bucket_weight_onto_the_guess():
    weights = np.tile(np.linspace(0, 0.9, NUM_BUCKETS), (4, 1))
    memory = RepeatMemory(weights)
    for row in events([1, 2, 3, 1, 2]):               # run of 2 -> bucket 2
        memory.observe(row)
    heads = [np.full(size, 1 / size) for size in (3, 8, 2, 1)]
    mixed = memory.mix(heads)
    w = weights[0, bucket_of(2)]
    guess = events([3])[0]
    for field, (p, q) in enumerate(zip(heads, mixed)):
        assert q.sum() == pytest.approx(1.0)
        assert q[guess[field]] == pytest.approx((1 - w) * p[guess[field]] + w)


def test_loop_guard_silences_the_memory_past_max_repeat():
    memory = RepeatMemory(np.full((4, NUM_BUCKETS), 0.9), max_repeat=5)
    heads = [np.full(size, 1 / size) for size in (3, 8, 2, 1)]
    lengths = []
    for row in events([1, 2, 3, 4] * 4):              # a loop: the run grows by one per event
        memory.observe(row)
        lengths.append(memory.guess()[1])
        copying = memory.mix(heads) is not heads
        assert copying == (1 <= lengths[-1] <= 5)
    assert max(lengths) > 5


def test_fit_trusts_long_runs_that_hold_and_not_guesses_that_fail():
    rng = np.random.default_rng(0)
    # a phrase played twice: the repeat's guesses are right; random fill-ins: mostly wrong
    phrase = rng.integers(0, 8, size=40)
    pieces = [events(np.concatenate([phrase, rng.integers(0, 8, size=30), phrase])) for _ in range(3)]
    uniform = [[np.full((len(p) - 1, size), 1 / size) for size in (3, 8, 2, 1)] for p in pieces]
    replays = repeats.replay(pieces)
    weights = repeats.fit(uniform, pieces, replays)
    assert weights[1, bucket_of(32)] > 0.9             # a 32-event run: copy
    assert (weights[:, 0] == 0).all()                   # no guess, nothing mixed
    plain = repeats.mixed_scores(uniform, pieces, replays, None)
    mixed = repeats.mixed_scores(uniform, pieces, replays, weights)
    assert mixed["pitch"]["nll"] < plain["pitch"]["nll"] - 0.5
    assert plain["pitch"]["nll"] == pytest.approx(np.log(8))


def test_weights_round_trip_and_bad_weights_are_refused():
    w = np.random.default_rng(1).random((4, NUM_BUCKETS))
    assert np.allclose(weights_from_dict(weights_to_dict(w)), w, atol=1e-4)
    assert weights_from_dict(None) is None
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        weights_from_dict({**weights_to_dict(w), "weights": (w + 1).tolist()})


def test_run_and_bundle_carry_the_fitted_weights(tiny_run, tiny_bundle):
    run_memory = json.loads((tiny_run / "run.json").read_text())["memory"]
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["memory"]["weights"] == run_memory["weights"]
    assert np.allclose(load_bundle(tiny_bundle).memory, run_memory["weights"])
    # the memory is fitted on validation, scored on test: on real cello movements it helps the n-gram too
    assert report["baseline"]["ngram_memory"]["pitch_nll"] < report["baseline"]["ngram"]["pitch_nll"]


def test_bad_memory_in_bundle_json_is_named(bundle_copy):
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    meta["memory"]["weights"] = [[2.0] * NUM_BUCKETS] * 4
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match='bundle.json: bad "memory" entry'):
        load_bundle(bundle_copy)


def test_improviser_copies_a_repeat_then_lets_the_model_go_on(tiny_bundle):
    """Real TFLite step model; weights forced to 1 so the copy is certain, max_repeat 16."""
    bundle = load_bundle(tiny_bundle)
    model = open_model(bundle, "cpu", "step", "float32")
    phrase = bundle.openings[0][:20]
    seed = np.concatenate([phrase, phrase[:4]])           # the repeat has begun: a run of 4
    memory = RepeatMemory(np.ones((4, NUM_BUCKETS)), max_repeat=16)
    improviser = Improviser(model, bundle.codec, np.random.default_rng(0), temperature=1.0, memory=memory)
    improviser.plan = 0          # the memory alone: planning would weigh the copy against other beats
    improviser.prime(seed)
    played = np.array([improviser.next_event() for _ in range(len(seed) + 13)])
    # the seed comes back as given (its first onset zeroed), then the run goes 4 -> 16: 13 copied events
    assert played[len(seed):].tolist() == phrase[4:17].tolist()
    assert memory.guess()[1] == 17 and memory.mix(improviser.probs) is improviser.probs


def test_take_repeats_bench_counts_runs_that_occurred_earlier():
    # 20 new events, events 3..12 again (a 10-event repeat), 5 new ones
    take = events(list(range(20)) + list(range(3, 13)) + list(range(100, 105)))
    runs = earlier_run_lengths(take)
    assert runs[:20].tolist() == [0] * 20
    assert runs[20:30].tolist() == list(range(1, 11))
    assert runs[30:].tolist() == [0] * 5
    figures = take_repeat_figures(take)
    assert figures == {"share_in_repeats": 10 / 35, "longest_repeat": 10, "run_at_end": 0}


def test_a_state_taken_stays_as_it_was_while_the_memory_goes_on():
    """The planner keeps states of several continuations at once and goes back to any of them."""
    memory = RepeatMemory()
    for row in events([1, 2, 3, 1, 2]):
        memory.observe(row)
    kept, before = memory.state(), memory.guess()
    for row in events([3, 1, 2, 3, 9, 9]):   # a longer run, then none
        memory.observe(row)
    assert memory.guess()[1] != before[1]
    memory.restore(kept)
    guess, length = memory.guess()
    assert length == before[1] == 2 and guess.tolist() == before[0].tolist()
    memory.observe(events([3])[0])            # goes on from there as if nothing else had been seen
    assert memory.guess()[1] == 3


@pytest.mark.parametrize("bad", [[-1, 0, 0, 0], [0, 0, 1 << 15, 0]])
def test_a_token_id_the_keys_cannot_hold_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="token ids"):
        RepeatMemory().observe(np.array(bad))


def test_two_continuations_from_one_state_each_keep_their_own_events():
    """The planner draws several continuations from one state and keeps one of them, any of them."""
    memory = RepeatMemory()
    for row in events([1, 2, 3, 4]):
        memory.observe(row)
    start = memory.state()
    for row in events([1, 2]):                 # the first continuation: a copy begins
        memory.observe(row)
    first = memory.state()
    memory.restore(start)
    for row in events([7, 7, 7]):              # the second, written where the first's events were
        memory.observe(row)
    assert memory.events[:, 1].tolist() == [1, 2, 3, 4, 7, 7, 7] and memory.guess()[1] == 2
    memory.restore(first)                      # the first is still as it was, and goes on
    assert memory.events[:, 1].tolist() == [1, 2, 3, 4, 1, 2] and memory.guess()[1] == 2
    memory.observe(events([3])[0])
    assert memory.guess()[0].tolist() == events([4])[0].tolist() and memory.guess()[1] == 3


def test_a_duration_head_given_the_pitch_is_mixed_row_by_row_as_a_whole_array_would_be():
    weights = np.tile(np.linspace(0, 0.9, NUM_BUCKETS), (4, 1))
    memory = RepeatMemory(weights)
    for row in events([1, 2, 3, 1, 2]):
        memory.observe(row)
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.ones(5), size=8)   # a duration distribution per pitch
    heads = [np.full(3, 1 / 3), np.full(8, 1 / 8), rows, np.ones(1)]
    mixed = memory.mix(heads)
    w, token = weights[2, bucket_of(2)], events([3])[0][2]
    whole = rows * (1 - w)
    whole[:, token] += w
    assert mixed[2].ndim == 2 and len(mixed[2]) == 8
    for pitch in range(8):
        assert np.array_equal(mixed[2][pitch], whole[pitch])
