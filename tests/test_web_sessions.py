"""The control page's sessions and Host check: the cookie holds a session, not
the token; a session lasts web_session_days; `playbach web --rotate-token` ends every session and
the old token, and so does the page's "Sign out other devices" (but its own, lasting a restart); a Host that does not name this machine (DNS rebinding) is refused before any token
is looked at. The real app and socket server of test_fuzz_web's rig (a stand-in player)."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from fixtures_control import TOKEN, WebRig

from playbach.web.guard import COOKIE
from playbach.web.sessions import Hosts, Sessions, host_name


@pytest.fixture
def rig(tmp_path):
    rig = WebRig(tmp_path, hosts=("pi.example",))
    yield rig
    rig.close()


def set_cookie(headers: bytes) -> str | None:
    """The Set-Cookie line of a response's headers, if it has one."""
    return next((h for h in headers.decode().split("\r\n") if h.lower().startswith("set-cookie:")), None)


def cookie_value(line: str) -> str:
    return line.split(":", 1)[1].strip().split(";")[0].split("=", 1)[1]


def login(rig: WebRig, token: str = TOKEN) -> str:
    status, _, headers = rig.send("POST", "/api/login", json.dumps({"token": token}).encode(),
                                  {"Content-Type": "application/json"})
    assert status == 204, status
    line = set_cookie(headers)
    assert line and "HttpOnly" in line and "SameSite=Strict" in line and f"Max-Age={30 * 86400}" in line, line
    return cookie_value(line)


def status_with(rig: WebRig, cookie: str) -> int:
    return rig.send("GET", "/api/status", headers={"Cookie": f"{COOKIE}={cookie}"}, keep_limits=True)[0]


def test_the_cookie_is_a_session_not_the_token_and_a_forged_one_is_refused(rig):
    cookie = login(rig)
    assert TOKEN not in cookie and len(cookie) > 40
    assert status_with(rig, cookie) == 200
    assert login(rig) != cookie   # a new session each login
    sid, expires, mac = cookie.split(".")
    for forged in (f"{sid}.{int(expires) + 86400}.{mac}", f"x{sid}.{expires}.{mac}", TOKEN, ""):
        assert status_with(rig, forged) == 401
    assert len(rig.app["guard"].fails["127.0.0.1"]) >= 3   # a forged session counts as a wrong token


def test_a_session_expires_after_web_session_days():
    sessions = Sessions(b"t" * 32, days=30)
    cookie, now = sessions.new(1e9), 1e9
    assert sessions.check(cookie, now + 29.9 * 86400) == "ok"
    assert sessions.check(cookie, now + 30.1 * 86400) == "expired"
    assert Sessions(b"t" * 32, days=1).check(Sessions(b"t" * 32, days=1).new(now), now + 2 * 86400) == "expired"
    assert Sessions(b"u" * 32).check(cookie, now) == "forged"   # another token: none of its sessions


def test_rotate_token_ends_every_session_and_the_old_token(tmp_path):
    token_file = tmp_path / "web-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    old = WebRig(tmp_path / "old")
    cookie = login(old)
    old.close()
    run = subprocess.run([sys.executable, "-m", "playbach.cli", "web", "--config", os.devnull, "--rotate-token",
                          "--web-token-file", str(token_file)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    new_token = token_file.read_text().strip()
    assert new_token != TOKEN and new_token in run.stdout and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    new = WebRig(tmp_path / "new", token=new_token)   # the service, restarted with its new token
    try:
        assert status_with(new, cookie) == 401
        assert new.send("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 401
        assert status_with(new, login(new, new_token)) == 200
    finally:
        new.close()


def revoke(rig: WebRig, cookie: str) -> tuple[int, str | None]:
    """POST /api/sessions/revoke as the page does: its status, and the new cookie it sets."""
    status, _, headers = rig.send("POST", "/api/sessions/revoke", b"", {"Cookie": f"{COOKIE}={cookie}"})
    line = set_cookie(headers)
    return status, cookie_value(line) if line else None


def test_the_page_signs_out_every_other_device_and_it_lasts_a_restart(tmp_path):
    state = tmp_path / "state"   # the unit's StateDirectory
    state.mkdir()
    first = WebRig(tmp_path / "first", state_dir=str(state))
    try:
        phone, laptop = login(first), login(first)
        status, mine = revoke(first, laptop)
        assert status == 200 and mine is not None
        assert status_with(first, phone) == 401 and status_with(first, laptop) == 401
        assert status_with(first, mine) == 200            # the page that asked stays signed in
        assert revoke(first, phone)[0] == 401             # a revoked session cannot revoke
    finally:
        first.close()
    again = WebRig(tmp_path / "again", state_dir=str(state))   # the service restarted
    try:
        assert status_with(again, phone) == 401 and status_with(again, mine) == 200
    finally:
        again.close()


@pytest.mark.parametrize("salt", [b"", b"short", b"x" * 33])
def test_a_salt_file_that_is_not_one_ends_every_session_and_is_replaced(tmp_path, salt, caplog):
    state = tmp_path / "state"
    state.mkdir()
    rig = WebRig(tmp_path / "a", state_dir=str(state))
    cookie = login(rig)
    rig.close()
    (state / "sessions-salt").write_bytes(salt)
    rig = WebRig(tmp_path / "b", state_dir=str(state))
    try:
        assert status_with(rig, cookie) == 401
        assert len((state / "sessions-salt").read_bytes()) == 32
        assert status_with(rig, login(rig)) == 200
    finally:
        rig.close()
    assert "not a salt of 32" in caplog.text


@pytest.mark.parametrize("host, answered", [
    ("evil.example", False), ("evil.example:8080", False), ("127.0.0.1.evil.example", False), ("", False),
    ("localhost", True), ("127.0.0.1", True), ("[::1]:8080", True), (socket.gethostname(), True),
    (f"{socket.gethostname()}.local.", True), ("PI.example:80", True)])
def test_only_the_names_of_this_machine_are_answered(rig, host, answered):
    raw = f"Host: {host}\r\n".encode()
    page, _, _ = rig.send("GET", "/", raw_headers=raw)
    api, answer, _ = rig.send("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, raw_headers=raw)
    login_, _, _ = rig.send("POST", "/api/login", b'{"token": "a-guess-of-16-chars"}', raw_headers=raw, keep_limits=True)
    if answered:
        assert (page, api, login_) == (200, 200, 401)
    else:
        assert (page, api, login_) == (421, 421, 421) and b"web_hosts" in answer
        assert not rig.app["guard"].fails   # a rebinding page cannot spend the owner's tries


def test_host_names_and_addresses():
    assert host_name("[::1]:8080") == "::1" and host_name("Pi.Local.:80") == "pi.local" and host_name("::1") == "::1"
    hosts = Hosts(["proxy.example", " "])
    assert hosts.allows("proxy.example", None) and not hosts.allows("other.example", None)
    assert hosts.allows("192.168.1.20:8080", "192.168.1.20") and hosts.allows("192.168.1.20", "::ffff:192.168.1.20")
    assert not hosts.allows("192.168.1.21", "192.168.1.20")
    assert Hosts(["*"]).allows("anything.example", None)


def test_the_pages_take_download_keeps_each_voice_on_its_channel(tmp_path):
    """The page's take.mid (web/server.midi_bytes, from the control socket's `take` reply) holds
    each note on the channel it sounded on and the Program Changes the player sent."""
    import mido

    from playbach.midifile import read_midi_channels
    from playbach.web.server import midi_bytes

    take = {"program": -1, "channel": 1, "programs": [[1, 52], [3, 32]],
            "notes": [[0.0, 72, 0.5, 80, 0], [0.0, 67, 0.5, 80, 1], [0.0, 60, 0.5, 80, 2], [0.0, 48, 0.5, 80, 3],
                      [0.5, 74, 0.5, 80, 0]]}
    path = tmp_path / "take.mid"
    path.write_bytes(midi_bytes(take))
    got = sorted((pitch, channel) for _, pitch, _, _, channel in read_midi_channels(path))
    assert got == [(48, 3), (60, 2), (67, 1), (72, 0), (74, 0)]
    changes = sorted((m.channel, m.program) for track in mido.MidiFile(str(path)).tracks for m in track
                     if m.type == "program_change")
    assert changes == [(1, 52), (3, 32)]
