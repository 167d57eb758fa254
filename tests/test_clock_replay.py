"""device/clockreplay.py: a clock take's tick arrivals replayed through the Follower (fast tier)."""
import pytest
from fixtures_clock import stalled_change_take as take

from playbach.device.clockreplay import replay
from playbach.device.follower import PPQ


def test_a_clean_take_keeps_the_count_and_a_stall_at_the_change_is_replayed_as_the_follower_takes_it():
    clean = replay(take(None))
    assert clean["ticks"] == 2 * 16 * PPQ - 3 and clean["off_at_end"] == 0, clean
    stalled = replay(take(16 * PPQ - 3))   # tests/test_clock_follow.py's stall at a tempo change
    assert stalled["off_at_end"] == 0 and stalled["slips"], stalled   # off for a while, then back


def test_a_take_without_every_arrival_is_refused():
    t = take(None)
    t["stats"]["clock_arrivals"].pop()
    with pytest.raises(SystemExit, match="764 tick arrivals for 765 ticks sent"):
        replay(t)
