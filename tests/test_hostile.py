"""The hostile load of bench/hostile.py (playbach.harness.hostile) in short windows (5 s each),
against the bar of issue 22 item 2: onset p99 at most 1 ms beyond the quiet window, no note lost,
none left sounding, the page answered, on its kept connection and on a fresh one while a stranger
holds every slot it may (device/control_guard.py; the socket loads run as `nobody`, so the test
runs as root, as the slow tier's SCHED_FIFO needs).

With 5 s windows a p99 is nearly the slowest note, and on a shared 2-core machine another
session's realtime work (its jackd, its player at FIFO) shows as a single late note: a window that
misses the bar is run again alone (the quiet window and it), up to twice, and every try is in the
message."""
from __future__ import annotations

import pytest
from fixtures_appliance import SHIPPED_BUNDLE

from playbach.harness import hostile

HELD = ("control", "cc", "pitchbend", "aftertouch", "startstop", "clock", "connect_storm")
SECONDS = 5.0   # a window: long enough for a control flood to run the player's lookahead dry


@pytest.fixture(scope="module")
def bench(tmp_path_factory, jack_server):   # jack_server: the slow tier's marks and jackd checked
    return hostile.run(SHIPPED_BUNDLE, tmp_path_factory.mktemp("hostile"), SECONDS, 1.0, HELD)


@pytest.mark.midi
def test_the_take_survives_every_load(bench):
    assert bench["player_exit"] == 0 and bench["notes_left_sounding"] == 0, bench
    kept = bench["page_overall"]["kept"]
    assert kept["answered"] >= kept["asked"] - 1, bench["page_overall"]


def holds(window: dict) -> bool:
    return window["notes_lost"] == 0 and window.get("p99_minus_quiet_ms", 0.0) <= 1.0


@pytest.mark.midi
@pytest.mark.parametrize("kind", HELD)
def test_held(bench, kind, tmp_path):
    tries = [bench["windows"][kind]]
    while not holds(tries[-1]) and len(tries) < 3:
        (tmp_path / str(len(tries))).mkdir()
        tries.append(hostile.run(SHIPPED_BUNDLE, tmp_path / str(len(tries)), SECONDS, 1.0, (kind,))["windows"][kind])
    assert holds(tries[-1]), tries


@pytest.mark.midi
@pytest.mark.parametrize("kind", ("control", "connect_storm"))
def test_a_fresh_page_connection_is_answered_while_a_stranger_holds_every_slot(bench, kind):
    w = bench["windows"][kind]
    assert w["peer_uid"] != 0, "run as root: the load is not a stranger's"
    # the page connects as the web does (wire.connect): a connect storm's full listening queue is
    # waited out in turn, so nearly every try is answered under either load
    assert w["connections_kept"] == 6 and w["page"]["fresh"]["answered"] >= SECONDS - 2, w
