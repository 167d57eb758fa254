"""One generation loop: `playbach generate` on the desktop and `playbach play` on the Pi both drive
playbach.improviser.Improviser, through a Keras step model or the converted TFLite one."""
import numpy as np
import pytest

from playbach.improviser import MAX_CHORD
from playbach.trainer.generate import generate
from playbach.events import Codec

TAKE_EVENTS = 64


@pytest.mark.slow
def test_a_seeded_desktop_take_is_the_seeded_take_of_the_float32_bundle(tiny_run, tiny_bundle):
    """The same seed, opening, temperature and memory give the same events from the run's Keras
    model (generate) as from the bundle's float32 step model in the player's loop. The two models
    differ by ~1e-7 per probability; a draw would have to land that close to a bin edge to differ."""
    from playbach.bundle import load_bundle
    from playbach.improviser import Improviser
    from playbach.memory import RepeatMemory, weights_from_dict
    from playbach.runtime import open_model
    from playbach.trainer.runfolder import load_run
    from playbach.trainer.step import KerasStepModel

    run, bundle = load_run(tiny_run), load_bundle(tiny_bundle)
    weights = weights_from_dict(run.meta.get("memory"))
    assert weights is not None and np.allclose(weights, bundle.memory)
    opening = bundle.openings[0]
    np.testing.assert_array_equal(opening, run.pieces["test"][bundle.opening_names[0]][:len(opening)])

    desktop = generate(KerasStepModel(run.config, run.model, run.codec), run.codec, opening, TAKE_EVENTS,
                       np.random.default_rng(5), 1.0, 0, RepeatMemory(weights, 64))
    improviser = Improviser(open_model(bundle, "cpu", "step", "float32"), bundle.codec,
                            np.random.default_rng(5), 1.0, 0, RepeatMemory(bundle.memory, 64))
    improviser.prime(opening)
    pi = np.stack([improviser.next_event() for _ in range(len(opening) + TAKE_EVENTS)])

    assert desktop.shape == (len(opening) + TAKE_EVENTS, 4)
    np.testing.assert_array_equal(desktop, pi)
    sampled = desktop[len(opening):]
    assert len({tuple(e) for e in sampled.tolist()}) > 5, "a take of one repeated event proves little"


class ChordForever:
    """A model sure that every next note starts with the previous one (onset 0)."""

    def __init__(self, sizes):
        self.sizes = sizes

    def reset(self) -> None:
        pass

    def step(self, ids):
        probs = [np.full(n, 1e-6) for n in self.sizes]
        for p in probs:
            p[0] = 1.0
        return [p / p.sum() for p in probs]


def test_generate_has_the_players_chord_guard():
    """A model that insists on onset 0 gets at most MAX_CHORD notes in a chord, then time moves on."""
    codec = Codec(4, {"onset": [0, 1, 2], "pitch": [60, 62], "duration": [1, 2], "velocity": [80]})
    opening = np.array([[0, 60, 1, 80], [1, 62, 1, 80]])
    take = generate(ChordForever(codec.sizes), codec, opening, 100, np.random.default_rng(0), temperature=0)
    onsets = take[len(opening):, 0]
    assert (onsets == 0).any() and (onsets > 0).any()
    longest = max(len(run) for run in "".join("0" if o == 0 else "x" for o in onsets).split("x"))
    assert longest == MAX_CHORD
