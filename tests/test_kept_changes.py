"""Settings that last (issue 23 item 2): a live change made through the control socket is kept in
the overrides file, a new player started with the same config and overrides plays it from its first
note, and a reset forgets it and plays the config's values. A real player at a JACK receiver."""
import json
import socket

import numpy as np
import pytest

from playbach.bundle import load_bundle
from fixtures_player import Running, note_ons, wait_until

pytestmark = pytest.mark.midi
KEPT = {"bpm": 180.0, "pitch_min": 60, "pitch_max": 72}


def ask(sock_path, op: str, **args) -> dict:
    """One request on the player's control socket, its reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, f"{op}: the player closed the socket"
            data += chunk
    return json.loads(data)


def start(bundle, jack_server, receiver, tmp_path, stats):
    config = tmp_path / "config.toml"
    config.write_text("bpm = 60\npitch_min = 40\npitch_max = 90\n")
    player = Running(bundle, "--config", config, "--port", receiver.name, "--control-socket", tmp_path / "c.sock",
                     "--overrides", tmp_path / "state" / "overrides.json", "--stats", stats,
                     "--realtime-priority", 10, env=jack_server.env())
    wait_until(lambda: note_ons(receiver.taken()), what="the player's first notes")
    return player


def seconds_per_quarter(stats: dict, ticks_per_quarter: int) -> float:
    """The tempo of the take's first quarter as scheduled: seconds per tick times ticks per quarter."""
    ticks = np.array(stats["note_ticks"], float)
    times = np.array([t for t, _ in stats["note_ons"]])
    first = ticks <= ticks[0] + ticks_per_quarter
    assert len(set(ticks[first])) >= 2, stats["note_ticks"][:10]
    return np.polyfit(ticks[first], times[first], 1)[0] * ticks_per_quarter


def test_a_live_change_outlasts_a_restart_and_reset_forgets_it(play_bundle, jack_server, receiver, tmp_path):
    bundle = play_bundle
    (tmp_path / "state").mkdir()
    kept_file = tmp_path / "state" / "overrides.json"
    player = start(bundle, jack_server, receiver, tmp_path, tmp_path / "s1.json")
    assert ask(tmp_path / "c.sock", "set", changes=KEPT)["ok"]
    wait_until(lambda: kept_file.exists() and json.loads(kept_file.read_text()) == KEPT, timeout=5,
               what="the change written to the overrides file")
    rc, _ = player.stop()
    assert rc == 0, player.log

    receiver.clear()
    player = start(bundle, jack_server, receiver, tmp_path, tmp_path / "s2.json")
    live = ask(tmp_path / "c.sock", "status")["status"]["live"]
    assert {k: live[k] for k in KEPT} == KEPT, live
    wait_until(lambda: len(note_ons(receiver.taken())) >= 12, what="a dozen notes")
    first = [p for _, p in note_ons(receiver.taken())]
    assert all(60 <= p <= 72 for p in first), first   # the kept range from the very first note

    reply = ask(tmp_path / "c.sock", "reset")
    assert reply["ok"] and reply["live"]["bpm"] == 60 and reply["live"]["pitch_max"] == 90, reply
    assert not kept_file.exists()
    live = ask(tmp_path / "c.sock", "status")["status"]["live"]
    assert (live["bpm"], live["pitch_min"], live["pitch_max"]) == (60, 40, 90), live
    rc, _ = player.stop()
    assert rc == 0, player.log
    assert not kept_file.exists(), "a reset's values were written back at exit"
    stats = json.loads((tmp_path / "s2.json").read_text())
    tpq = load_bundle(bundle, verify=False).codec.ticks_per_quarter
    assert seconds_per_quarter(stats, tpq) == pytest.approx(60 / 180, rel=0.02)   # the kept tempo


def test_a_damaged_overrides_file_is_named_and_the_config_plays(play_bundle, jack_server, receiver, tmp_path):
    bundle = play_bundle
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "overrides.json").write_text('{"bpm": 9999, "pitch_min": 60}')
    player = start(bundle, jack_server, receiver, tmp_path, tmp_path / "s.json")
    live = ask(tmp_path / "c.sock", "status")["status"]["live"]
    rc, _ = player.stop()
    assert rc == 0
    assert (live["bpm"], live["pitch_min"]) == (60, 40), live
    assert "overrides.json" in player.log and "'bpm'" in player.log and "playing the config" in player.log, player.log


def test_a_knob_turned_is_kept_too(play_bundle, jack_server, receiver, tmp_path):
    """A CC knob's change goes through Player.apply as the page's does, and is kept the same way."""
    import rtmidi

    kept_file = tmp_path / "overrides.json"
    keyboard = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="playbach-kbd-kept")
    keyboard.open_virtual_port("out")
    try:
        player = Running(play_bundle, "--port", receiver.name, "--input-port", "playbach-kbd-kept",
                         "--cc-tempo", 20, "--overrides", kept_file, "--control-socket", "", env=jack_server.env())
        player.wait_for("listening on input port")
        keyboard.send_message([0xB0, 20, 127])   # the tempo knob to the top: 200 BPM
        wait_until(lambda: kept_file.exists() and json.loads(kept_file.read_text()) == {"bpm": 200.0}, timeout=5,
                   what="the knob's tempo written to the overrides file")
        rc, _ = player.stop()
    finally:
        keyboard.delete()
    assert rc == 0, player.log
