"""`playbach web` fuzzed (issue 22 item 1): whatever body, header or cookie a stranger sends, the
answer is a 2xx or a 4xx saying why, never a 500. The real aiohttp app (web/server.py) on
127.0.0.1 in a thread, spoken to in raw HTTP (so any header bytes can be sent), its link on the
real control socket server (device/control.py) served in another thread; the player behind that
is the stand-in of tests/fixtures_control.py (no model, no MIDI; the real Player.apply for settings).

The guard's rate limits are tested in tests/test_web.py; here they are reset before each example,
or a fuzzer sending wrong tokens would only ever see 429s."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from fixtures_control import TOKEN, WebRig, assert_clear, json_values

from playbach import settings as pb_settings

FUZZ = settings(max_examples=100, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = WebRig(tmp_path_factory.mktemp("fuzz_web"))
    yield rig
    rig.close()


AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
DEEP = b"[" * 5000
bodies = (st.binary(max_size=300)
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.dictionaries(st.sampled_from([k.name for k in pb_settings.KEYS]) | st.text(max_size=8), json_values,
                            max_size=3).map(lambda d: json.dumps(d).encode()))
header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@FUZZ
@given(body=bodies)
@example(body=DEEP)
@example(body=b'{"token": ' + b"[" * 3000 + b"]" * 3000 + b"}")
def test_login_bodies_get_a_4xx_never_a_500(rig, body):
    assert_clear(*rig.send("POST", "/api/login", body, {"Content-Type": "application/json"}))


@FUZZ
@given(body=bodies)
@example(body=b'{"bpm": 1e999}')
@example(body=b'{"bpm": -1e999, "temperature": 1}')
@example(body=b'{"bpm": NaN}')
@example(body=b'{"bpm": ' + b"9" * 5000 + b"}")
@example(body=DEEP)
def test_settings_bodies_get_a_2xx_or_a_4xx_with_a_reason(rig, body):
    status, answer, _ = rig.send("POST", "/api/settings", body, AUTH)
    assert_clear(status, answer)
    assert 10.0 <= rig.player.settings.bpm <= 400.0


@FUZZ
@given(body=bodies)
@example(body=b'{"bundle": 1e999}')
def test_restart_bodies_get_a_4xx_never_a_500(rig, body):
    assert_clear(*rig.send("POST", "/api/restart", body, AUTH))


@FUZZ
@given(name=st.sampled_from(["Authorization", "Cookie", "Origin", "Sec-Fetch-Site", "Host", "X-Forwarded-For"]),
       value=header_bytes,
       path=st.sampled_from(["/api/status", "/api/pause", "/api/sessions/revoke", "/api/take.mid?minutes=1"]))
@example(name="Authorization", value="Bearer caf\u00e9\u00ff".encode("latin-1"), path="/api/status")
@example(name="Authorization", value=b"Bearer \xe2\x82\xac\xff\xfe", path="/api/status")
@example(name="Cookie", value=b"playbach_session=\xff\xfe; x=\x00", path="/api/status")
@example(name="Cookie", value="playbach_session=a.\u00b2\u00b3.b".encode(), path="/api/status")
@example(name="Cookie", value=b"playbach_session=a.99999999999999999999999.ff", path="/api/status")
@example(name="Host", value=b"[::1", path="/api/status")
@example(name="Origin", value=b"http://\xff", path="/api/pause")
def test_any_header_gets_a_2xx_or_a_4xx(rig, name, value, path):
    method = "POST" if path in ("/api/pause", "/api/sessions/revoke") else "GET"
    assert_clear(*rig.send(method, path, b"", raw_headers=name.encode() + b": " + value + b"\r\n"))


@FUZZ
@given(minutes=st.text(max_size=12))
@example(minutes="nan")
@example(minutes="1e999")
def test_any_take_query_gets_a_2xx_or_a_4xx(rig, minutes):
    from urllib.parse import quote
    assert_clear(*rig.send("GET", f"/api/take.mid?minutes={quote(minutes)}", b"", AUTH))


def test_the_findings_get_400_with_a_reason(rig):
    for path, body in (("/api/login", DEEP), ("/api/settings", b'{"bpm": 1e999}')):
        status, answer, _ = rig.send("POST", path, body, AUTH)
        assert status == 400 and json.loads(answer)["error"], (path, answer)
    status, _, _ = rig.send("GET", "/api/status", raw_headers="Authorization: Bearer \u00e9\r\n".encode("utf-8"))
    assert status == 401
