"""Planning (the Improviser's `plan`) and `playbach generate BUNDLE`: the player's take, offline,
reproducible by its seed, under every steering mask; an opening that does not exist is refused."""
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from needs import EVENTS as DEFAULT
from playbach import settings
from playbach.bundle import load_bundle
from playbach.cli import main
from playbach.errors import UserError
from playbach.improviser import Improviser, choose_opening
from playbach.midifile import read_midi
from playbach.take import make_improviser, open_take_model


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT)


@pytest.fixture(scope="module")
def model(bundle):
    return open_take_model(bundle, dataclasses.replace(settings.DEFAULTS, accelerator="cpu"))


def take(bundle, model, events: int = 120, **changes) -> np.ndarray:
    s = dataclasses.replace(settings.DEFAULTS, **{"accelerator": "cpu", "seed": 7, **changes})
    improviser = make_improviser(bundle, model, s)
    return np.stack([improviser.next_event() for _ in range(len(improviser.pending) + events)])


def test_planning_is_on_by_default_and_a_seeded_take_is_reproducible(bundle, model):
    assert settings.DEFAULTS.plan > 0
    planned = take(bundle, model)
    np.testing.assert_array_equal(planned, take(bundle, model))
    assert not np.array_equal(planned, take(bundle, model, plan=0))     # planning chose differently
    assert not np.array_equal(planned, take(bundle, model, seed=8))


def struck_while_sounding(events: np.ndarray, first: int) -> int:
    """How many notes from index `first` on strike a pitch that an earlier note still sounds."""
    starts, hits = np.cumsum(events[:, 0]), 0
    for i in range(max(first, 1), len(events)):
        earlier = (events[:i, 1] == events[i, 1]) & (starts[:i] + events[:i, 2] > starts[i])
        hits += int(earlier.any())
    return hits


def test_every_planned_note_keeps_the_range_and_strikes_no_sounding_pitch(bundle, model):
    events = take(bundle, model, 300, pitch_min=55, pitch_max=72, plan=6)
    opening = len(make_improviser(bundle, model, dataclasses.replace(settings.DEFAULTS, accelerator="cpu", seed=7,
                                                                     pitch_min=55, pitch_max=72)).pending)
    played = events[opening:]
    assert played[:, 1].min() >= 55 and played[:, 1].max() <= 72
    assert struck_while_sounding(events, opening) == 0


def test_a_steering_change_drops_the_rest_of_the_plan(bundle, model):
    """Notes already planned under the old range are not played after the range changes: the very
    next note keeps the new one."""
    s = dataclasses.replace(settings.DEFAULTS, accelerator="cpu", seed=3, plan=8)
    for cut in range(40, 48):     # somewhere inside a planned beat
        improviser = make_improviser(bundle, model, s)
        for _ in range(cut):
            improviser.next_event()
        improviser.steer(pitch_min=40, pitch_max=50)
        after = np.stack([improviser.next_event() for _ in range(12)])
        assert after[:, 1].min() >= 40 and after[:, 1].max() <= 50, cut


def test_a_density_aim_is_met_one_draw_at_a_time(bundle, model):
    """With a density aim the take is drawn unplanned (planning's choice would pull against the
    aim): the same notes as plan 0, and the aim met."""
    events = take(bundle, model, 400, density=1.0, plan=8)
    np.testing.assert_array_equal(events, take(bundle, model, 400, density=1.0, plan=0))
    played = events[40:]
    per_quarter = len(played) / (played[:, 0].sum() / bundle.codec.ticks_per_quarter)
    assert 0.9 < per_quarter < 1.1


class Unsaved:
    """A model without save()/restore(): it cannot be planned with."""

    def reset(self):
        pass

    def step(self, ids):
        return [np.full(n, 1.0 / n) for n in (2, 2, 2, 2)]


def test_a_model_that_cannot_save_its_state_is_not_planned_with(bundle):
    from playbach.events import Codec
    codec = Codec(4, {"onset": [0, 1], "pitch": [60, 62], "duration": [1, 2], "velocity": [80, 90]})
    improviser = Improviser(Unsaved(), codec, np.random.default_rng(0))
    assert improviser.plan == 0
    with pytest.raises(UserError, match="plan"):
        improviser.steer(plan=4)


def test_generate_from_the_bundle_is_reproducible_by_seed(tmp_path):
    paths = [tmp_path / f"{name}.mid" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (11, 11, 12)):
        assert main(["generate", str(DEFAULT), "--out", str(path), "--seed", str(seed), "--events", "80",
                     "--opening", "1", "--pitch-min", "48", "--pitch-max", "76"]) == 0
    a, b, c = (read_midi(p) for p in paths)
    assert a == b and a != c
    assert len(a) >= 80 and all(48 <= n[1] <= 76 for n in a[-80:])


def test_generate_names_the_openings_when_one_does_not_exist(tmp_path, caplog, bundle):
    out = tmp_path / "take.mid"
    assert main(["generate", str(DEFAULT), "--out", str(out), "--opening", "no such chorale"]) == 2
    assert "no such chorale" in caplog.text and all(name in caplog.text for name in bundle.opening_names)
    assert not out.exists()


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wanted=st.one_of(st.text(max_size=12), st.integers(-5, 99).map(str)))
def test_any_opening_value_gives_an_opening_or_the_list(wanted):
    names = ["test/003", "test/017", "valid/002"]
    openings = [np.full((2, 4), i) for i in range(3)]
    try:
        name, events = choose_opening(openings, names, wanted, np.random.default_rng(0), "b")
    except UserError as e:
        assert all(n in str(e) for n in names)
        return
    assert name in names and np.array_equal(events, openings[names.index(name)])
    if wanted.isascii() and wanted.isdigit() and int(wanted) < 3:
        assert name == names[int(wanted)]


def test_the_bench_times_model_work_per_note_with_planning_on_and_off():
    from playbach.harness.bench import per_note
    figures = per_note(DEFAULT, 40)
    off, on = figures["plan=0"], figures[f"plan={settings.DEFAULTS.plan}"]
    assert off["notes"] == on["notes"] == 40
    assert 0 < off["ms_per_note"] < on["ms_per_note"] <= on["slowest_call_ms"]   # several steps a note
