"""The live bench end to end, short: its own JACK server and receiver, the real player, a real bundle.

Only that every figure is there and plausible; the figures themselves are the bench's output
(docs/device.md), not a test's, because this machine is shared.
"""
from types import SimpleNamespace

import pytest

from playbach.harness.livebench import PROBE_CC, PROBE_CHANNEL, _transport, run_live_bench


@pytest.fixture(scope="module")
def bundle(play_bundle):
    return play_bundle


def test_a_probe_lost_on_the_way_does_not_shift_the_later_trips():
    sent = [i * 0.1 for i in range(300)]
    lost = {0, 5, 6, 200}
    messages = [(t + 0.001, [0xB0 | PROBE_CHANNEL, PROBE_CC, i % 128]) for i, t in enumerate(sent) if i not in lost]
    messages.insert(3, (0.25, [0x90, 60, 80]))   # a note between them is not a probe
    trips = _transport(SimpleNamespace(sent=sent), messages)
    assert len(trips) == 296 and max(abs(t - 0.001) for t in trips) < 1e-9


@pytest.mark.midi
def test_live_bench_reports_every_figure(bundle):
    r = run_live_bench(bundle, seconds=4, bpm=120)
    assert r["notes"] > 0 and r["notes_matched"] >= 0.9 * r["notes"], r   # JACK may drop one under load
    for key in ("inference_ms", "onset_error_ms", "transport_ms"):
        assert r[key]["n"] > 0 and 0 <= r[key]["median"] <= r[key]["p99"] <= r[key]["max"], r
    assert set(r["onset_beyond_transport_ms"]) == {"median", "p99", "max"}
    assert 0 < r["first_note_s"] < 30
    assert 0 < r["peak_rss_mb"] and 0 < r["rss_without_jack_shm_mb"] <= r["rss_while_playing_mb"]
    assert r["cpu_percent"] is not None and 0 <= r["cpu_percent"] < 100
    # the player's own loop: every note_on accounted for, sent after it was due and not by seconds
    assert r["sent_after_due_ms"]["n"] == r["notes"] and 0 <= r["sent_after_due_ms"]["median"] < 50, r
    assert 0 <= r["notes_sent_late"] <= r["notes"]
    # in time: the typical note arrives within a few JACK periods (5.3 ms) of its time even on a
    # loaded machine; a late player (a 16th is 125 ms here) or a figure in seconds fails
    assert 0 < r["onset_error_ms"]["median"] < 50
