"""GET /api/settings (issue 23 item 1): the page's controls come from the player, one row per live
setting with its range or choices, help and value in force; the token guards it as every /api
call; a change through POST /api/settings shows in it, and a refused change (out of range,
unknown key, a key that cannot change while playing) is a 400 with the reason that changes
nothing. The real aiohttp app and control socket server; the player behind them is the stand-in
of tests/fixtures_control.py (the real live-change checks; no model, no MIDI), so no browser and
no JACK: the fast tier."""
from __future__ import annotations

import json

import pytest
from fixtures_control import TOKEN, WebRig

from playbach import settings

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = WebRig(tmp_path_factory.mktemp("settings_api"))
    yield rig
    rig.close()


def rows(rig: WebRig) -> dict[str, dict]:
    status, answer, _ = rig.send("GET", "/api/settings", headers=AUTH)
    assert status == 200, answer
    return {row["name"]: row for row in json.loads(answer)["settings"]}


def test_the_list_is_the_players_live_settings_with_their_values(rig):
    got = rows(rig)
    assert list(got) == list(settings.LIVE)
    # the same rows the player's definitions give for what is in force (JSON's lists for tuples)
    assert list(got.values()) == json.loads(json.dumps(settings.live_settings(rig.player.state().settings)))
    assert {"key", "density", "pitch_min", "pitch_max", "rhythm_temperature", "temperature", "top_k", "bpm",
            "plan"} <= set(got)
    assert got["key"]["choices"][:2] == ["C major", "C minor"] and len(got["key"]["choices"]) == 24
    assert got["key"]["value"] == "" and "''" in got["key"]["accepts"]
    assert (got["pitch_min"]["low"], got["pitch_min"]["high"], got["pitch_min"]["type"]) == (0, 127, "int")
    assert all(row["help"] for row in got.values())


@pytest.mark.parametrize("auth", [{}, {"Authorization": "Bearer wrong-token-but-long-enough"},
                                  {"Cookie": "playbach_session=forged"}])
def test_without_the_token_it_is_401_and_nothing_else(rig, auth):
    status, answer, _ = rig.send("GET", "/api/settings", headers=auth)
    assert (status, answer) == (401, b"401: Unauthorized\n")


def test_a_change_shows_in_the_list(rig):
    status, answer, _ = rig.send("POST", "/api/settings", json.dumps({"key": "F# major", "density": 2}).encode(), AUTH)
    assert status == 200, answer
    got = rows(rig)
    assert got["key"]["value"] == "F# major" and got["density"]["value"] == 2.0
    assert rig.send("POST", "/api/settings", b'{"key": "", "density": 0}', AUTH)[0] == 200
    assert rows(rig)["key"]["value"] == ""


@pytest.mark.parametrize("change, says", [
    ({"pitch_min": 200}, "key 'pitch_min' = 200 is not allowed; it takes int in [0, 127]"),
    ({"density": -1}, "'density' = -1.0 is not allowed"),
    ({"key": "H major"}, "key 'key' = 'H major' is not allowed"),
    ({"rhythm_temperature": -0.5}, "-1 (the same as temperature) or a float in [0, 5]"),
    ({"top_k": 2.5}, "'top_k' = 2.5 is not allowed"),
    ({"pitch_min": 80, "pitch_max": 60}, "'pitch_min' = 80 is above 'pitch_max' = 60"),
    ({"bpm": 60, "loudness": 3}, "key 'loudness' is not a setting"),
    ({"bpm": 60, "channel": 2}, "key 'channel' cannot change while playing"),
])
def test_a_refused_change_is_a_400_with_the_reason_and_changes_nothing(rig, change, says):
    before = rows(rig)
    status, answer, _ = rig.send("POST", "/api/settings", json.dumps(change).encode(), AUTH)
    assert status == 400 and says in json.loads(answer)["error"], answer
    assert rows(rig) == before
