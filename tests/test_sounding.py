"""Never strike a sounding pitch (issue 11 item 8): the Improviser masks the pitches that sound at
a new event's onset, in the loop both `generate` and the player run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from playbach.bundle import load_bundle
from playbach.events import Codec
from playbach.improviser import Improviser
from playbach.memory import RepeatMemory
from playbach.runtime import open_model
from playbach.sounding import Sounding

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "events"


def struck_while_sounding(events: np.ndarray) -> list[int]:
    """Indices of events whose pitch still sounds at their onset, from the values alone (no Sounding)."""
    ends: dict[int, int] = {}
    now, hits = 0, []
    for i, (onset, pitch, duration, _) in enumerate(np.asarray(events).tolist()):
        now += onset
        if ends.get(pitch, 0) > now:
            hits.append(i)
        ends[pitch] = now + duration
    return hits


def test_sounding_follows_onsets_and_durations():
    s = Sounding(3)
    s.add(0, 0, 4)          # token 0 from 0 to 4
    s.add(0, 1, 2)          # a chord: token 1 from 0 to 2
    assert s.at(0).tolist() == [True, True, False]      # the chord's own pitches sound at its onset
    assert s.at(2).tolist() == [True, False, False]     # a note ending at the onset is over
    s.add(4, 2, 1)
    assert s.at(0).tolist() == [False, False, True]
    s.reset()
    assert not s.at(0).any()


def take(unmasked: bool, events: int = 600, seed: int = 7) -> tuple[np.ndarray, int]:
    """A seeded take from the shipped bundle as the player makes it (real runtime, repeat memory);
    `unmasked` turns the mask off, to show the check below would see a struck sounding pitch."""
    bundle = load_bundle(SHIPPED)
    model = open_model(bundle, "cpu", "step", "auto")
    improviser = Improviser(model, bundle.codec, np.random.default_rng(seed), temperature=0.9,
                            memory=RepeatMemory(bundle.memory, max_repeat=64))
    if unmasked:
        improviser.unsounded_pitch = lambda ids, probs: int(ids[1])
    improviser.prime(bundle.openings[0])
    return np.array([improviser.next_event() for _ in range(events)]), len(bundle.openings[0])


def test_a_long_take_never_strikes_a_sounding_pitch():
    events, opening = take(unmasked=False)
    # the opening is a chorale's own notes, which may double a pitch in two voices; from there on
    # every note is the Improviser's
    assert [i for i in struck_while_sounding(events) if i >= opening] == []
    assert len(np.unique(events[opening:, 1])) > 15           # it still plays music, not one safe note
    without, _ = take(unmasked=True)
    assert [i for i in struck_while_sounding(without) if i >= opening], "the check cannot fail: the unmasked take strikes none"


class Fixed:
    """A model that always wants the same event: a chord of pitch token 0, onset 0."""

    def reset(self) -> None: ...

    def step(self, ids: np.ndarray) -> list[np.ndarray]:
        return [np.array([1.0, 0.0]), np.array([0.98, 0.01, 0.01]), np.array([0.0, 1.0]), np.array([1.0])]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_mask_redraws_and_never_leaves_nothing(temperature):
    codec = Codec(4, {"onset": [0, 1], "pitch": [60, 62, 64], "duration": [1, 4], "velocity": [64]})
    improviser = Improviser(Fixed(), codec, np.random.default_rng(0), temperature=temperature)
    improviser.prime(np.array([[0, 60, 4, 64]]))
    played = [improviser.next_event() for _ in range(4)]
    # pitch 60 sounds, so the chord goes on with 62 and 64; then all three sound: the draw stands
    assert sorted(p for _, p, _, _ in played[:3]) == [60, 62, 64]
    assert played[3][1] in (60, 62, 64)
