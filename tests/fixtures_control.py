"""Stand-ins for the control socket and web tests: the player as the control ops see it
(`StandIn`: a real, empty scheduler and take log and the real checks of a live change; no model,
no MIDI), `WebRig` (the real aiohttp app and the real control socket server in threads, spoken
to in raw HTTP), and `json_values`, the Hypothesis strategy of any JSON value."""
from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
import threading
import time

from fixtures_player import wait_until
from fixtures_web import free_port
from hypothesis import strategies as st

from playbach import settings
from playbach.device.control import ControlServer
from playbach.device.control_ops import PlayerState
from playbach.device.scheduler import Scheduler, Upcoming
from playbach.device.take_log import TakeLog
from playbach.errors import UserError
from playbach.web import server as web_server

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4),
                           max_leaves=20)


def assert_clear(status: int, answer: bytes, _headers: bytes = b"") -> None:
    """What a stranger's request gets: never a 500, and a 4xx says why (but 401, on purpose)."""
    assert status < 500, (status, answer)
    if status >= 400 and status not in (401, 405, 413):
        assert answer.strip(), status


class StandIn:
    """The player as the control ops see it (device/control_ops.Controlled): a real, empty
    scheduler and take log, and the real checks of a live change; no model, no MIDI."""

    def __init__(self, folder):
        self.settings = dataclasses.replace(settings.DEFAULTS, bundle=str(folder / "bundle"), program=0)
        self.take_log = TakeLog(keep_all=False)
        self.programs = [(self.settings.channel - 1, self.settings.program)]
        self.scheduler = Scheduler(4, 150.0, time.monotonic(), self.take_log.add)   # 150 BPM: 0.1 s a tick
        self.paused = False
        self.panics = 0

    def state(self) -> PlayerState:
        return PlayerState(dataclasses.replace(self.settings, bpm=self.scheduler.bpm), self.paused, False,
                           "stand-in", "none", ("first", "second"), "a stand-in")

    def upcoming(self) -> list[Upcoming]:
        return self.scheduler.upcoming()

    def apply(self, changes: dict) -> dict:
        self.settings = dataclasses.replace(self.settings, **settings.check_live(changes, self.settings))
        return {k: getattr(self.settings, k) for k in settings.LIVE}

    def reset(self) -> dict:
        self.settings = dataclasses.replace(self.settings, **{k: getattr(settings.DEFAULTS, k) for k in settings.LIVE})
        return {k: getattr(self.settings, k) for k in settings.LIVE}

    def pause(self, now: float) -> None:
        self.paused = True

    def resume(self, now: float) -> None:
        self.paused = False

    def panic(self) -> None:
        self.panics += 1

    def restart(self, bundle, opening) -> None:
        raise UserError("restart: a stand-in has no take to restart")


TOKEN = secrets.token_urlsafe(32)


class WebRig:
    def __init__(self, folder, token: str = TOKEN, **options):
        folder.mkdir(parents=True, exist_ok=True)
        self.player = StandIn(folder)
        self.control = ControlServer(str(folder / "c.sock"), "", self.player)
        self.port = free_port()
        self.app = web_server.make_app(str(folder / "c.sock"), token, **options)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._play, daemon=True), threading.Thread(target=self._web, daemon=True)]
        for t in self.threads:
            t.start()
        wait_until(lambda: self.app["link"].connected, 20, "the web's link to the socket")
        wait_until(self._listening, 20, "the page's port")   # the link is up before the site listens

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _play(self) -> None:
        while not self.stop.is_set():
            self.control.serve(time.monotonic(), None)
            self.control.wait(0.005)

    def _web(self) -> None:
        async def main() -> None:
            runner = web_server.web.AppRunner(self.app, access_log=None, handle_signals=False)
            await runner.setup()
            await web_server.web.TCPSite(runner, "127.0.0.1", self.port).start()
            while not self.stop.is_set():
                await asyncio.sleep(0.05)
            await runner.cleanup()
        asyncio.run(main())

    def send(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
             raw_headers: bytes = b"", keep_limits: bool = False) -> tuple[int, bytes, bytes]:
        """One request in raw HTTP/1.1; (status, body, the response's headers)."""
        guard = self.app["guard"]
        if not keep_limits:
            guard.fails.clear()
            guard.buckets.clear()
        host = "" if b"Host:" in raw_headers else f"Host: 127.0.0.1:{self.port}\r\n"
        head = f"{method} {path} HTTP/1.1\r\n{host}Connection: close\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        request = head.encode() + raw_headers + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        headers, _, answer = rest.partition(b"\r\n\r\n")
        return int(status_line.split()[1]), answer, headers

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        self.control.close()
