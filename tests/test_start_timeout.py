"""The start's timeout as playbach.service sets it (TimeoutStartSec=, TimeoutStartFailureMode=abort)
and the player's side of it, with the real player and a real notify socket.

systemd's watchdog runs only after READY=1, so the start timeout is what catches a start hung in
loading. The player must extend it while it waits for its synth (EXTEND_TIMEOUT_USEC), and never
while it loads; the SIGABRT a timeout sends must end it with exit 1 (restarted: not 2, which the
unit does not restart). systemd's own side, the timer and the restart, runs on the emulated Pi
(scripts/pi-vm.sh, hung_start_recovered)."""
from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from fixtures_appliance import SHIPPED_BUNDLE, read_unit
from fixtures_player import Running

from playbach.device.sdnotify import EXTEND_BY, EXTEND_EVERY

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "playbach.service"


@pytest.fixture
def notify(tmp_path):
    """A datagram socket standing in for systemd's; `received()` is what came, with arrival times."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    got: list[tuple[float, str]] = []

    def received() -> list[tuple[float, str]]:
        while True:
            try:
                got.append((time.monotonic(), sock.recv(4096).decode()))
            except BlockingIOError:
                return got
    yield str(tmp_path / "notify"), received
    sock.close()


def player(bundle: Path, address: str, tmp_path: Path) -> Running:
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000000"}
    # ALSA: there is no sequencer here, so the player waits for its MIDI system, as for a synth
    return Running(bundle, "--midi-api", "alsa", "--port", "no-such-synth", "--retry-seconds", "0.2",
                   "--realtime-priority", "0", "--control-socket", str(tmp_path / "control.sock"), env=env)


def unit_seconds() -> float:
    value = {k: v[-1] for k, v in read_unit(UNIT).items()}["Service.TimeoutStartSec"]
    assert re.fullmatch(r"\d+s?", value), f"TimeoutStartSec={value}: not a finite number of seconds"
    return float(value.rstrip("s"))


def test_waiting_for_the_synth_extends_the_start_timeout_and_loading_does_not(notify, tmp_path):
    address, received = notify
    p = player(SHIPPED_BUNDLE, address, tmp_path)
    p.wait_for("model ", timeout=60)   # the load's log line: loading is over
    loaded = time.monotonic()
    time.sleep(2 * EXTEND_EVERY + 1)
    messages = received()
    rc, _ = p.stop()
    assert rc == 0, p.log
    assert not any("READY=1" in text for _, text in messages), messages
    extends = [(t, text) for t, text in messages if "EXTEND_TIMEOUT_USEC=" in text]
    assert len(extends) >= 3, f"{len(extends)} extensions in {2 * EXTEND_EVERY + 1:g} s of waiting: {messages}"
    # every extension outlasts the gap to the next one several times over
    usec = {int(re.search(r"EXTEND_TIMEOUT_USEC=(\d+)", text).group(1)) for _, text in extends}
    gaps = [b[0] - a[0] for a, b in zip(extends, extends[1:])]
    assert usec == {round(EXTEND_BY * 1e6)} and max(gaps) < EXTEND_BY / 3, (usec, gaps)
    # and nothing was extended before the model was loaded (the first comes as the wait begins)
    assert extends[0][0] > loaded - 1.0, (extends[0][0] - loaded, p.log)
    # the unit's timeout is finite, and the wait's extensions keep ahead of it
    assert EXTEND_EVERY < unit_seconds()


def test_a_start_hung_in_loading_sends_nothing_and_the_timeouts_sigabrt_ends_it_with_exit_1(notify, tmp_path):
    """A bundle.json that never answers a read (a FIFO with no writer: as a stalled SD card)."""
    address, received = notify
    bundle = tmp_path / "stalled"
    bundle.mkdir()
    os.mkfifo(bundle / "bundle.json")
    p = player(bundle, address, tmp_path)
    time.sleep(2 * EXTEND_EVERY + 1)   # longer than the waiting player's gap between extensions
    assert p.proc.poll() is None, p.log
    assert received() == [], "a start hung in loading told systemd it was alive"
    rc, took = p.stop(signal.SIGABRT)   # what TimeoutStartFailureMode=abort sends
    # exit 1 where the player's handler is in place by then (it ends every note on the way out),
    # else killed by the signal: both restarted by Restart=on-failure; never 0 or 2
    assert rc in (1, -signal.SIGABRT) and took < 5, (rc, took, p.log)
    unit = {k: v[-1] for k, v in read_unit(UNIT).items()}
    assert unit["Service.TimeoutStartFailureMode"] == "abort" and unit["Service.Restart"] == "on-failure"
    assert "1" not in unit["Service.RestartPreventExitStatus"].split()
