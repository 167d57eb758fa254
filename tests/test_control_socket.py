"""The control socket served by the play loop itself (device/control.py, issue 13 item 6): a piece
of control work runs only where it fits before the next note, a request wakes the loop's wait,
and a long take is encoded over several passes. A stand-in player: no model, no MIDI."""
from __future__ import annotations

import json
import socket
import time
from types import SimpleNamespace

import pytest

from playbach.device.control import ControlServer
from playbach.device.control_ops import TAKE_CHUNK


class StandIn:
    """What Ops reads of a Player for `panic` and `take`."""

    def __init__(self, folder):
        self.s = {"bundle": str(folder / "bundle"), "record": "", "stats": "", "program": 0, "channel": 1}
        self.scheduler = SimpleNamespace(keep_played=False, played=[], seconds_per_tick=0.01)
        self.panics = 0

    def panic(self) -> None:
        self.panics += 1


@pytest.fixture
def rig(tmp_path):
    player = StandIn(tmp_path)
    server = ControlServer(str(tmp_path / "c.sock"), "", player)
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(5)
    client.connect(str(tmp_path / "c.sock"))
    server.serve(time.monotonic(), None)   # accepted
    yield server, client, player
    client.close()
    server.close()


def replies(server: ControlServer, client: socket.socket, n: int, deadline=None, passes: int = 200) -> list[dict]:
    """Serve until the client has n reply lines (each pass as the loop would, `deadline` ahead)."""
    data = b""
    client.setblocking(False)
    for _ in range(passes):
        server.serve(time.monotonic(), deadline)
        try:
            data += client.recv(1 << 20)
        except BlockingIOError:
            pass
        if data.count(b"\n") >= n:
            break
    client.setblocking(True)
    return [json.loads(line) for line in data.split(b"\n")[:n]]


def test_nothing_is_done_when_the_next_note_is_too_close(rig):
    server, client, player = rig
    client.sendall(b'{"op":"panic","id":1}\n')
    time.sleep(0.05)
    for _ in range(20):   # the next note 1 ms away: less than twice any piece of work's first guess
        server.serve(time.monotonic(), time.monotonic() + 0.001)
    assert player.panics == 0
    assert replies(server, client, 1, deadline=time.monotonic() + 1.0) == [{"ok": True, "id": 1}]
    assert player.panics == 1


def test_a_request_wakes_the_wait_and_a_quiet_socket_does_not(rig):
    server, client, _ = rig
    began = time.monotonic()
    server.wait(0.2)
    assert time.monotonic() - began >= 0.19
    client.sendall(b'{"op":"panic"}\n')
    began = time.monotonic()
    server.wait(5.0)
    assert time.monotonic() - began < 1.0


def test_a_long_take_is_encoded_over_several_passes(rig):
    server, client, player = rig
    now = time.monotonic()
    server.ops.take.extend((now - 300 + i * 0.25, 60 + i % 12, 0.2, 80) for i in range(2 * TAKE_CHUNK + 3))
    count = len(server.ops.take)
    client.sendall(b'{"op":"take","id":"t"}\n')
    passes = 0
    data = b""
    client.setblocking(False)
    while b"\n" not in data and passes < 100:
        server.serve(time.monotonic(), None)
        passes += 1
        try:
            data += client.recv(1 << 20)
        except BlockingIOError:
            assert server.more   # work left that fits: the loop comes back at once, not after a sleep
    reply = json.loads(data)
    assert reply["ok"] and reply["id"] == "t" and len(reply["take"]["notes"]) == count
    assert reply["take"]["notes"][0] == [0.0, 60, 0.2, 80] and passes >= 3


def test_nan_is_refused_and_the_server_goes_on(rig):
    server, client, _ = rig
    client.sendall(b'{"op":"status","id":NaN}\n{"op":"panic","id":2}\n')
    first, second = replies(server, client, 2)
    assert "not JSON" in first["error"] and second == {"ok": True, "id": 2}
