"""systemd's sd_notify without libsystemd: datagrams to the socket named in NOTIFY_SOCKET.

READY=1 when the first note is scheduled, WATCHDOG=1 at half of WATCHDOG_USEC, STATUS=... .
Outside systemd (no NOTIFY_SOCKET) every call does nothing.

The start has a finite timeout (playbach.service's TimeoutStartSec=): it is what catches a start
hung in loading (hashing the bundle, opening the model, a Coral's firmware upload), since
systemd's watchdog only runs after READY=1. Waiting for the synth may last forever, so while the
player waits (the only time it pets the watchdog before READY=1) `watchdog()` also sends
EXTEND_TIMEOUT_USEC: alive and waiting is not hung.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

EXTEND_EVERY = 5.0   # seconds between start-timeout extensions while waiting before READY=1
EXTEND_BY = 30.0     # each extension: systemd gives up only after several sends went missing


class Notifier:
    def __init__(self, environ: dict | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self.address = address or None
        self.sock = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        pid = env.get("WATCHDOG_PID")
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval = usec / 2e6 if usec > 0 and for_us else None
        self.last_watchdog = float("-inf")
        self.last_extend = float("-inf")
        self.ready_sent = False

    def send(self, text: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(text.encode(), self.address)
        except OSError as e:  # systemd gone or socket full: never fatal for the music
            log.debug("sd_notify %r failed: %s", text, e)

    def ready(self, status: str) -> None:
        if not self.ready_sent:
            self.send(f"READY=1\nSTATUS={status}")
            self.ready_sent = True

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self, now: float) -> None:
        """Call from the loop and while waiting; pets the watchdog when half its interval has
        passed, and before READY=1 extends the start timeout every EXTEND_EVERY seconds."""
        lines = []
        if self.watchdog_interval is not None and now - self.last_watchdog >= self.watchdog_interval:
            lines.append("WATCHDOG=1")
            self.last_watchdog = now
        if not self.ready_sent and now - self.last_extend >= EXTEND_EVERY:
            lines.append(f"EXTEND_TIMEOUT_USEC={round(EXTEND_BY * 1e6)}")
            self.last_extend = now
        if lines:
            self.send("\n".join(lines))

    def stopping(self) -> None:
        self.send("STOPPING=1")
