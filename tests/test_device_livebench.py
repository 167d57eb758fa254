"""The live bench end to end, short: its own JACK server and receiver, the real player, a real bundle.

Only that every figure is there and plausible; the figures themselves are the bench's output
(docs/device.md), not a test's, because this machine is shared.
"""
import pytest

from playbach.harness.livebench import run_live_bench

pytestmark = pytest.mark.midi


@pytest.fixture(scope="module")
def bundle(play_bundle):
    return play_bundle


def test_live_bench_reports_every_figure(bundle):
    r = run_live_bench(bundle, seconds=4, bpm=120)
    assert r["notes"] > 0 and r["notes_matched"] >= 0.9 * r["notes"], r   # JACK may drop one under load
    for key in ("inference_ms", "onset_error_ms", "transport_ms"):
        assert r[key]["n"] > 0 and 0 <= r[key]["median"] <= r[key]["p99"] <= r[key]["max"], r
    assert set(r["onset_beyond_transport_ms"]) == {"median", "p99", "max"}
    assert 0 < r["first_note_s"] < 30
    assert 0 < r["peak_rss_mb"] and 0 < r["rss_without_jack_shm_mb"] <= r["rss_while_playing_mb"]
    assert r["cpu_percent"] is not None and 0 <= r["cpu_percent"] < 100
    # in time: the typical note arrives within a few JACK periods (5.3 ms) of its time even on a
    # loaded machine; a late player (a 16th is 125 ms here) or a figure in seconds fails
    assert 0 < r["onset_error_ms"]["median"] < 50
