"""systemd's sd_notify without libsystemd: datagrams to the socket named in NOTIFY_SOCKET.

READY=1 when the first note is scheduled, WATCHDOG=1 at half of WATCHDOG_USEC, STATUS=... .
Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


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
        """Call from the loop; pets the watchdog when half its interval has passed."""
        if self.watchdog_interval is not None and now - self.last_watchdog >= self.watchdog_interval:
            self.send("WATCHDOG=1")
            self.last_watchdog = now

    def stopping(self) -> None:
        self.send("STOPPING=1")
