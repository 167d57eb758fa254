"""The Improviser's parts, each alone (issue 21 item 3): the live key (playbach/live_key.py) with
keys.bend, the density aim and the chord guard (playbach/rhythm.py), the sounding mask. No model."""
import numpy as np
import pytest

from playbach.keys import Key, bend, move_to_key, parse_key
from playbach.live_key import KEY_SETTLE, LiveKey
from playbach.rhythm import DEBT_LIMIT, MAX_CHORD, ChordGuard, DensityAim
from playbach.sounding import Sounding

PITCHES = np.arange(36, 90)   # a vocabulary of 54 pitches, C2 .. F6
C_MAJOR, A_MINOR = Key(0, "major"), Key(9, "minor")


def test_bend_moves_the_third_and_sixth_between_the_modes_and_keeps_the_leading_tone():
    c = np.array([60, 62, 64, 65, 67, 69, 71, 72])               # C major's scale
    assert bend(c, Key(0, "minor")).tolist() == [60, 62, 63, 65, 67, 68, 71, 72]
    assert bend(bend(c, Key(0, "minor")), Key(0, "major")).tolist() == c.tolist()
    events = np.array([[0, p, 4, 80] for p in c])
    assert move_to_key(events, C_MAJOR, Key(0, "minor"), 0, 127)[:, 1].tolist() == bend(c, Key(0, "minor")).tolist()


def test_a_live_key_moves_by_the_smallest_shift_and_settles_in_its_scale():
    k = LiveKey(PITCHES, ticks_per_quarter=4)
    k.move_to(Key(2, "major"), C_MAJOR, 0, 127)                     # C -> D: up 2
    assert k.key == Key(2, "major") and (k.offsets == 2).all() and k.emitted[PITCHES == 60] == 62
    k.move_to(Key(11, "major"), Key(2, "major"), 0, 127)            # from D (heard) to B: down 3 more
    assert (k.offsets == -1).all()                                  # C -> B: down 1, not up 11
    k.reset(0, 127)
    k.move_to(A_MINOR, C_MAJOR, 0, 127)                             # relative minor: A's third and sixth bent
    assert k.emitted[PITCHES == 64] - 64 == -3 - 1                  # E (A's fifth) moves -3, its C# bends to C
    in_scale = np.isin((k.emitted - 9) % 12, (0, 2, 3, 5, 7, 8, 10, 11))
    inside = (k.emitted >= PITCHES[0]) & (k.emitted <= PITCHES[-1])  # moved down: the bottom tokens fall out
    assert (k.range_mask == inside).all() and not inside[:3].any() and inside[3:].all()
    assert (k.allowed() == in_scale & inside).all() and k.settle_left == KEY_SETTLE * 4
    k.played(8)                                                     # the first note after the change starts it
    assert k.settle_left == KEY_SETTLE * 4
    k.played(KEY_SETTLE * 4)
    assert k.settle_left <= 0 and (k.allowed() == inside).all()     # settled: only the range is left
    k.move_to(None, None, 0, 127)
    assert not k.offsets.any() and k.key is None


def test_the_range_wins_over_the_scale_and_is_always_reachable():
    k = LiveKey(PITCHES, ticks_per_quarter=4)
    k.move_to(parse_key("F# major"), C_MAJOR, 61, 61)               # C#: in F# major's scale
    assert k.allowed() is not None and set(k.emitted[k.allowed()]) == {61}
    k.move_to(parse_key("F# major"), C_MAJOR, 60, 60)               # C: not in it; the range wins
    assert set(k.emitted[k.allowed()]) == {60}
    k.fit_range(86, 127)                  # the vocabulary's top 4 pitches: reached by moving an octave
    assert k.range_mask is not None and set(k.emitted[k.range_mask]) == {86, 87, 88, 89}


def test_a_seed_pitch_is_moved_with_the_key_and_folded_into_the_range():
    k = LiveKey(PITCHES, ticks_per_quarter=4)
    assert k.emit_seed(60, 0, 127) == 60                            # no key: as given
    k.move_to(Key(5, "major"), C_MAJOR, 0, 127)                     # C -> F: up 5
    assert k.emit_seed(60, 0, 127) == 65 and k.emit_seed(60, 48, 59) == 53


def test_the_density_aim_pays_its_debt_and_forgives_it_on_a_new_aim():
    aim = DensityAim(np.array([0, 1, 2, 4, 8]), ticks_per_quarter=4)
    assert aim.aim() is None                                        # density 0: the model's own
    aim.set(2.0)                                                    # 2 notes a quarter: 2 ticks apart
    assert aim.aim() == 2.0
    for _ in range(3):
        aim.drew(0)                                                 # three chord notes: 6 ticks behind... ahead
    assert aim.debt == 6.0 and aim.aim() == pytest.approx(2.0 + 0.2 * 6.0)
    for _ in range(100):
        aim.drew(0)
    assert aim.debt == DEBT_LIMIT and aim.aim() == 8.0              # bounded, and within the onsets
    aim.set(1.0)
    assert aim.debt == 0.0 and aim.aim() == 4.0


def test_the_chord_guard_moves_the_note_after_max_chord_on():
    guard = ChordGuard([0, 1, 2])
    assert [guard.check(0) for _ in range(MAX_CHORD)] == [0] * MAX_CHORD
    assert guard.check(0) == 1 and guard.count == 0                 # the smallest step, and counting anew
    assert guard.check(2) == 2 and guard.count == 0


def test_the_sounding_mask_is_by_emitted_pitch():
    s = Sounding(128)
    s.add(0, 62, 4)                                                 # D4 sounds for 4 ticks
    emitted = np.array([60, 62, 64])                                # tokens 0..2 as emitted by a live key
    assert s.tokens(0, emitted).tolist() == [False, True, False]
    assert s.tokens(4, emitted).tolist() == [False, False, False]   # ended exactly there: over
