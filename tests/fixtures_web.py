"""The control page's rig: the shipped bundle playing into a stamping JACK receiver with its
control socket, `playbach web` in front of it, and Debian's headless Chromium.

`web_rig`   (module) the player, the web service, the receiver and the token; restart_player()
`browser`   a fresh headless Chromium (Selenium at /usr/bin/chromium and /usr/bin/chromedriver;
            nothing downloaded); missing: skipped locally, failed under CI=true (needs.missing)
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import fixtures_player
from fixtures_player import wait_until
from needs import missing

from playbach.harness import jack

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "models" / "default"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BPM = 120.0
_clients = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def note_ons(receiver: jack.Receiver, since: float = 0.0) -> list[float]:
    """When each note began at the receiver (note_on with a velocity), from `since` on."""
    return [t for t, _ in fixtures_player.note_ons(receiver.taken()) if t >= since]


class Rig:
    def __init__(self, server: jack.JackServer, folder: Path):
        self.server, self.folder = server, folder
        self.receiver = jack.Receiver(client=f"playbach-web-rec-{next(_clients)}")
        self.sock = folder / "control.sock"
        self.token = secrets.token_urlsafe(32)
        self.token_file = folder / "web-token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        self.player = None
        self.start_player()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web = self.start_web(self.port)
        wait_until(self.connected, 60, "the web to reach the player")

    def connected(self) -> bool:
        try:
            return bool(self.api("GET", "/api/status")[1].get("connected"))
        except OSError:   # the web service is not listening yet
            return False

    def start_player(self) -> None:
        self.player_log = open(self.folder / "player.log", "a")
        self.player = subprocess.Popen(
            [sys.executable, "-m", "playbach.cli", "play", "--bundle", str(BUNDLE), "--midi-api", "jack",
             "--port", self.receiver.name, "--accelerator", "cpu", "--seed", "1", "--bpm", str(BPM),
             "--control-socket", str(self.sock), "--realtime-priority", "20"],   # as the service: on time under load
            env=self.server.env(), stdout=self.player_log, stderr=subprocess.STDOUT)

    def stop_player(self) -> None:
        jack.stop_process(self.player)
        self.player_log.close()

    def start_web(self, port: int, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "playbach.cli", "web", "--listen", f"127.0.0.1:{port}",
                                 "--control-socket", str(self.sock), "--web-token-file", str(self.token_file), *extra],
                                stdout=open(self.folder / f"web-{port}.log", "w"), stderr=subprocess.STDOUT)

    def api(self, method: str, path: str, body: bytes | dict | None = None, token: str | None = "",
            headers: dict | None = None, url: str | None = None) -> tuple[int, dict | bytes, dict]:
        """(status, JSON or raw body, headers); token '' = the right one, None = none."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token or self.token}"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        request = urllib.request.Request((url or self.url) + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(request, timeout=15) as r:
                status, raw, got = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, raw, got = e.code, e.read(), dict(e.headers)
        try:
            return status, json.loads(raw), got
        except ValueError:
            return status, raw, got

    def note_ons(self, since: float) -> list[float]:
        return note_ons(self.receiver, since)

    def last_scheduled_onset(self) -> float:
        """The latest onset among the notes the player has scheduled now, on the shared monotonic
        clock, read from the first frame of its event stream (/api/events)."""
        request = urllib.request.Request(self.url + "/api/events", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=15) as stream:
            for line in stream:
                if line.startswith(b"data: ") and (frame := json.loads(line[6:]))["type"] == "frame":
                    return max([on for _, on, _, _, _ in frame["notes"]], default=frame["now"])
        raise AssertionError("the event stream ended before a frame")

    def close(self) -> None:
        jack.stop_process(self.web)
        self.stop_player()
        self.receiver.close()


@pytest.fixture(scope="module")
def web_rig(jack_server, tmp_path_factory):
    pytest.importorskip("aiohttp")
    rig = Rig(jack_server, tmp_path_factory.mktemp("web"))
    yield rig
    rig.close()


@pytest.fixture
def browser():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        missing(f"{CHROMIUM} / {CHROMEDRIVER} not found (Debian packages chromium, chromium-driver; scripts/setup.sh)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (the dev extra; scripts/setup.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=412,915"):
        options.add_argument(flag)
    # chromedriver named explicitly: Selenium Manager never looks for (or downloads) a driver
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


