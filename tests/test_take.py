"""A Take (playbach/take.py) built whole offline, changed live, swapped whole by the player's
restart; planning that yields at a deadline plays the same take. The shipped bundle through the
real TFLite runtime; no MIDI port is opened (the player's is made, never connected)."""
import dataclasses
import shutil
import time
from pathlib import Path

import pytest

from playbach import settings
from playbach.errors import UserError
from playbach.take import Take

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "default"


def make(**values) -> Take:
    return Take.build(dataclasses.replace(settings.DEFAULTS, bundle=str(SHIPPED), accelerator="cpu", **values))


def test_a_take_is_built_offline_and_changed_live_all_or_nothing():
    take = make(seed=5)
    first = [take.next_event() for _ in range(40)]
    assert all(len(e) == 4 and all(isinstance(v, int) for v in e) for e in first)
    before = take.settings
    now = take.apply({"temperature": 0.5, "pitch_min": 60, "pitch_max": 72, "bpm": 120})
    assert now == take.in_force() and now["temperature"] == 0.5 and take.settings.bpm == 120.0
    assert take.improviser.steering.pitch_min == 60 and before.pitch_min == 0   # a new value, the old kept
    assert all(60 <= take.next_event()[1] <= 72 for _ in range(100))
    with pytest.raises(UserError, match="none of the model's pitches"):
        take.apply({"temperature": 1.5, "pitch_min": 0, "pitch_max": 20})
    assert take.in_force() == now and take.improviser.steering.temperature == 0.5
    assert take.status(120.0).endswith("120 BPM, temperature 0.50, pitches 60-72")


def test_the_same_seed_plays_the_same_take_however_planning_is_cut_up():
    """A deadline already past: each call draws one candidate and yields (None) until the beat is
    chosen; the notes are the unhurried take's, note for note."""
    whole = make(seed=11)
    assert whole.settings.plan > 0
    expected = [whole.next_event() for _ in range(120)]
    hurried, got, yields = make(seed=11), [], 0
    while len(got) < len(expected):
        event = hurried.next_event(until=time.monotonic() - 1.0)
        if event is None:
            yields += 1
            assert hurried.improviser.longest_piece is not None
        else:
            got.append(event)
    assert got == expected and yields > 20


def test_planning_with_time_to_spare_does_not_yield():
    take = make(seed=2)
    assert all(take.next_event(until=time.monotonic() + 60) is not None for _ in range(60))


@pytest.fixture
def installed(tmp_path) -> Path:
    """Bundles as install.sh lays them out: the shipped one as 'default', a broken one beside it."""
    shutil.copytree(SHIPPED, tmp_path / "default")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bundle.json").write_text("{not json")
    return tmp_path


def test_a_restart_swaps_a_whole_new_take_or_keeps_the_old_one(installed):
    from playbach.device.player import Player

    s = dataclasses.replace(settings.DEFAULTS, bundle=str(installed / "default"), accelerator="cpu", seed=1,
                            midi_api="jack", control_socket="", opening="0")
    player = Player(Take.build(s))
    try:
        player.apply({"temperature": 0.4, "bpm": 100})
        old = player.take
        with pytest.raises(UserError, match="restart: .*broken"):
            player.restart("broken", None)
        assert player.take is old
        player.restart(None, "1")
        new = player.take
        assert new is not old and new.improviser is not old.improviser and new.settings.opening == "1"
        assert new.settings.temperature == 0.4 and player.in_force()["bpm"] == 100.0   # live changes carry over
        assert player.scheduler.ticks_per_quarter == new.ticks_per_quarter
        assert player.state().openings == tuple(new.bundle.opening_names)
    finally:
        player.ports.close()
