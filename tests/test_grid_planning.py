"""Planning a grid model's beats (issue 25 item 3): on by default, seeded takes reproducible, the
kept beat one of the candidates drawn and chosen by the model's own scores, a change of steering
in the middle of a planned beat obeyed from the next note. The shipped grid bundle, real runtime.
"""
import numpy as np

from fixtures_grid import draw, take
from playbach.events import events_to_notes
from playbach.grid_planning import GridPlanner


def test_grid_planning_is_on_by_default_and_a_seeded_take_is_reproducible():
    t = take(seed=3)
    assert t.settings.plan > 0 and t.improviser.plan == t.settings.plan
    n = len(t.improviser.pending) + 300
    planned = draw(t, n)
    np.testing.assert_array_equal(planned, draw(take(seed=3), n))
    assert not np.array_equal(planned, draw(take(seed=3, plan=0), n))   # planning chose differently
    assert not np.array_equal(planned, draw(take(seed=4), n))


def test_each_planned_beat_is_one_of_its_candidates_the_likelier_more_often(monkeypatch):
    chosen, offered = [], []
    choose = GridPlanner.choose

    def watched(self, rng):
        end = choose(self, rng)
        assert any(end is state for state, _ in self.trials)   # a candidate drawn, nothing else
        chosen.append(next(score for state, score in self.trials if state is end))
        offered.append(np.mean([score for _, score in self.trials]))
        return end

    monkeypatch.setattr(GridPlanner, "choose", watched)
    t = take(seed=11, plan=8)
    draw(t, len(t.improviser.pending) + 300)
    assert len(chosen) > 50
    # kept by exp(score): the beats kept score higher than the candidates offered, on the whole
    assert np.mean(chosen) > np.mean(offered) + 0.3


def test_a_change_in_the_middle_of_a_planned_beat_holds_from_the_next_note():
    t = take(seed=5, plan=8)
    before = list(draw(t, len(t.improviser.pending) + 100))
    while (event := t.improviser.next_event(until=0.0)) is not None:   # past its deadline: a candidate, then yield
        before.append(event)
    assert t.improviser.planner.start is not None and t.improviser.planner.trials   # a beat half planned
    t.apply({"pitch_min": 60, "pitch_max": 72})
    assert t.improviser.planner.start is None
    after = draw(t, 150)
    assert (after[:, 0] >= 0).all()
    assert after[:, 1].min() >= 60 and after[:, 1].max() <= 72
    starts = [n.start for n in events_to_notes(np.vstack([before, after]))]
    assert starts == sorted(starts)   # time never runs back
