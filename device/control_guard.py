"""What keeps a hostile or careless local client of the control socket from costing the music
or shutting the page out (device/control.py): which peers are the web service's, how much of
the loop's time control work may take, and bad requests counted and logged, not answered in logs.

The socket is 0660 to the group `control_group`, so any local account in that group can connect.
Such an account is told apart from the web service by the peer's uid (SO_PEERCRED, given by the
kernel, not by the client): `playbach-web.service` runs as a systemd DynamicUser, whose uids come
from systemd's range 61184-65519, which no login account has; root and the player's own user are
trusted too (a desktop run, the tests). Strangers get all slots but TRUSTED_SLOTS.
"""
from __future__ import annotations

import logging
import os
import socket
import struct

log = logging.getLogger(__name__)

DYNAMIC_UIDS = range(61184, 65519 + 1)   # systemd's DynamicUser= uids (systemd.exec(5))
TRUSTED_SLOTS = 2     # slots a stranger never gets: the web's link, and that link again while
#                       the player has not yet seen its old connection close
BAD_IN_A_ROW = 16     # malformed requests in a row, then the client is hung up on
IDLE_SECONDS = 30.0   # a stranger that sent nothing for this long is hung up on (its slot freed)
SHARE = 0.25          # at most this share of the loop's time goes to control work ...
BURST = 0.010         # ... with at most this many seconds of it at once
DEBT = 0.1            # seconds overrun that are paid back (a longer piece, a restart building its
#                       take, keeps the socket quiet DEBT / SHARE seconds at most, not its length / SHARE)
PASS_SECONDS = 0.002  # reading and parsing in one pass stops after this (the rest: next pass)
LOG_EVERY = 1.0       # seconds between log lines about refused requests


def trusted(sock: socket.socket) -> bool:
    """Whether the peer is root, the player's own user, or a systemd DynamicUser (the web service)."""
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return False
    return uid in (0, os.geteuid()) or uid in DYNAMIC_UIDS


class Budget:
    """A bucket of control time: filled at SHARE of the clock, at most BURST; serve() spends it.
    Empty, the loop is told there is no room for control work and sleeps (a flood cannot keep a
    SCHED_FIFO loop from sleeping: RLIMIT_RTTIME would kill it, and the synth and the web need
    the CPU too)."""

    def __init__(self) -> None:
        self.level, self.at = BURST, None

    def left(self, now: float) -> float:
        if self.at is not None and now > self.at:
            self.level = min(BURST, self.level + (now - self.at) * SHARE)
        self.at = now if self.at is None else max(self.at, now)
        return self.level

    def spend(self, seconds: float, now: float) -> None:
        self.left(now)
        self.level = max(self.level - max(seconds, 0.0), -DEBT)


class Refusals:
    """Requests refused as malformed: counted, and logged at most once every LOG_EVERY seconds."""

    def __init__(self) -> None:
        self.count, self.hung_up, self.clients, self.last = 0, 0, set(), ""
        self.since = self.logged_at = float("-inf")

    def note(self, client: int, error: str, now: float) -> None:
        if not self.count:
            self.since = now
        self.count += 1
        self.clients.add(client)
        self.last = error

    def log(self, now: float) -> None:
        if not self.count or now - self.logged_at < LOG_EVERY:
            return
        log.warning("control socket: %d malformed requests refused in %.1f s from %d clients (%d hung "
                    "up on); the last: %s", self.count, now - self.since, len(self.clients), self.hung_up,
                    self.last[:120])
        self.count, self.hung_up, self.clients, self.logged_at = 0, 0, set(), now


class Conn:
    """One client of the control socket: its buffers, and what the guard counts of it."""

    def __init__(self, sock: socket.socket, number: int, trusted: bool, now: float):
        self.sock, self.number, self.trusted = sock, number, trusted
        self.heard = now       # when a line last came (a silent stranger is hung up on)
        self.bad = 0           # malformed requests in a row
        self.inbuf, self.outbuf = bytearray(), bytearray()
        self.pending = 0
        self.subscribed = False
        self.closing = False   # close once the outbuf is written
        self.reading = True    # False while it has more lines parsed-but-unread than a pass takes
