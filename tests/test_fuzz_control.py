"""The control socket fuzzed (issue 22 item 1): whatever line a local client sends, the player's
socket server answers it with one reply (an error saying what was wrong, or the op's answer) or,
for a line over the limit, refuses it and hangs up; serve() never raises into the play loop, and
the next client is served. The server is the real one (device/control.py); the player behind it
is tests/fixtures_control.py's stand-in (no model, no MIDI; the real checks of a live change for `set`)."""
from __future__ import annotations

import json
import socket
import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from fixtures_control import StandIn, json_values

from playbach import wire
from playbach.device.control import ControlServer

FUZZ = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

requests = st.fixed_dictionaries({"op": st.sampled_from(wire.OPS) | st.text(max_size=10)},
                                 optional={"id": json_values, "changes": json_values, "seconds": json_values,
                                           "bundle": json_values, "opening": json_values})
# what a line can be: raw bytes, text, or a request-shaped object (Python's json writes NaN and Infinity)
lines = (st.binary(max_size=400) | st.text(max_size=200).map(str.encode)
         | requests.map(lambda r: json.dumps(r).encode())).map(lambda b: b.replace(b"\n", b" "))

DEEP = b"[" * 5000                                             # RecursionError out of json.loads
DEEP_ID = b'{"op":"status","id":' + b"[" * 900 + b"]" * 900 + b"}"   # decodes; its echo would not encode
HUGE = b'{"op":"set","changes":{"bpm":1e999},"id":1e999}'     # inf: not JSON, cannot be echoed


@FUZZ
@given(lines)
@example(DEEP)
@example(DEEP_ID)
@example(HUGE)
@example(b'{"op":"take","seconds":NaN}')
@example(b"1" * 5000)
def test_decode_gives_an_encodable_object_or_a_value_error(line):
    try:
        message = wire.decode(line)
    except ValueError as e:
        assert str(e)
        return
    assert isinstance(message, dict)
    wire.encode(message)   # whatever was accepted can be echoed back (an `id`)


def exchange(server: ControlServer, path: str, line: bytes) -> tuple[list[dict], bool]:
    """Send `line` then a panic request on a fresh connection; the replies (frames left out) until
    both are answered, or the hang-up. serve() runs as the play loop runs it: a raise here is the
    player stopping."""
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.setblocking(False)
    client.sendall(line + b"\n" + b'{"op":"panic","id":"after"}\n')
    wanted = 2 if line.strip() else 1
    data, closed, replies = b"", False, []
    for _ in range(400):
        server.serve(time.monotonic(), None)
        try:
            chunk = client.recv(1 << 20)
            closed = not chunk
            data += chunk
        except BlockingIOError:
            pass
        replies = [r for r in map(json.loads, data.splitlines()) if r.get("type") != "frame"]
        if closed or len(replies) >= wanted:
            break
        time.sleep(0.001)
    client.close()
    for _ in range(200):   # it sees the hang-up: the slot is free again (the loop sleeps while
        server.serve(time.monotonic(), None)   # control work has had its share: control_guard.Budget)
        if not server.conns:
            break
        time.sleep(0.001)
    return replies, closed


def test_no_line_stops_the_player_and_the_next_request_is_answered(tmp_path):
    player = StandIn(tmp_path)
    path = str(tmp_path / "c.sock")
    server = ControlServer(path, "", player)

    @FUZZ
    @given(lines)
    @example(DEEP)
    @example(DEEP_ID)
    @example(HUGE)
    @example(b'{"op":"set","changes":{"bpm":NaN}}')
    @example(b'{"op":"set","changes":{"bpm":' + b"9" * 5000 + b"}}")
    @example(b"x" * (wire.MAX_REQUEST + 10))
    def fuzz(line):
        replies, closed = exchange(server, path, line)
        assert all(isinstance(r, dict) and isinstance(r.get("ok"), bool) for r in replies), replies
        if len(line) >= wire.MAX_REQUEST:
            assert closed and "longer than" in replies[0]["error"]
            return
        assert {"ok": True, "id": "after"} in replies, replies
        assert len(replies) == (2 if line.strip() else 1), replies   # one answer to the line, refused or not
        assert len(server.conns) == 0

    try:
        fuzz()
        assert 10.0 <= player.settings.bpm <= 400.0   # nothing let a bad tempo through
    finally:
        server.close()
