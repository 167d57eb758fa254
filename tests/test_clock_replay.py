"""device/clockreplay.py: a clock take's tick arrivals replayed through the Follower (fast tier)."""
import json
from pathlib import Path

import pytest
from fixtures_clock import stalled_change_take as take

from playbach.device.clockreplay import replay
from playbach.device.follower import PPQ

BOOKWORM_TAKE = Path(__file__).parent / "data" / "clock-take-bookworm.json"


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


def test_the_emulated_bookworm_take_keeps_the_sources_count():
    """A real take (tests/data/clock-take-bookworm.json, the emulated Pi's clock check on
    bookworm): 50 -> 70 -> 45 -> 60 BPM over USB, stalls of up to 0.33 s after the change to 70
    (late, then a clump), every 200th tick not sent, one of them inside a stall. Replayed, the
    count ends on the source's and at most 5 % of ticks are off it while the follower finds a
    loss. The follower before took the stalls' late ends onto the new tempo's young line, read the
    tick after the lost one as on time, and stayed a tick behind: 1,134 of 1,529 ticks off."""
    result = replay(json.loads(BOOKWORM_TAKE.read_text()))
    assert result["off_at_end"] == 0 and result["ticks_off"] <= 0.05 * result["ticks"], result
