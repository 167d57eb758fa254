"""The page's sessions and the names the service answers to.

A session is what the page's cookie holds after a login: a random id, when it expires, and an
HMAC of both keyed by the token and a salt -- never the token itself. No session is stored, so
one outlives a restart. Every session ends at once when either changes: a new token (`playbach
web --rotate-token`), or a new salt ("Sign out other devices" on the page). The salt is kept in
the service's state folder (systemd's StateDirectory, $STATE_DIRECTORY), so a revocation outlives
a restart too; without one (a desktop run) it lasts until `playbach web` stops.

The Host header must name this machine: its hostname, hostname.local, localhost, the address
the request came in on, or a name in `web_hosts` ('*': any). A page on another site that rebinds
its own name to the Pi's address sends its own name as Host, and is refused before any token
or failed-token count is looked at.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
from pathlib import Path
from typing import Iterable

from playbach.files import write_secret_atomically

log = logging.getLogger(__name__)
SESSION_DAYS = 30.0
SALT_BYTES = 32
SALT_FILE = "sessions-salt"


class Sessions:
    def __init__(self, token: bytes, days: float = SESSION_DAYS, salt: bytes = b""):
        self.key = hmac.new(token, b"playbach-web sessions" + salt, hashlib.sha256).digest()
        self.seconds = days * 86400.0

    def _mac(self, sid: str, expires: int) -> str:
        return hmac.new(self.key, f"{sid}.{expires}".encode(), hashlib.sha256).hexdigest()

    def new(self, now: float) -> str:
        """A cookie value for a new session from `now` (wall-clock seconds)."""
        sid, expires = secrets.token_urlsafe(18), int(now + self.seconds)
        return f"{sid}.{expires}.{self._mac(sid, expires)}"

    def check(self, value: str, now: float) -> str:
        """'ok', 'expired' (made by us, too old) or 'forged' (not made with this token)."""
        sid, _, rest = value.partition(".")
        expires, _, mac = rest.partition(".")
        if not (expires.isascii() and expires.isdigit() and len(expires) < 16 and mac.isascii()):
            return "forged"
        if not hmac.compare_digest(mac.encode(), self._mac(sid, int(expires)).encode()):
            return "forged"
        return "ok" if now < int(expires) else "expired"


def read_salt(folder: str | None) -> bytes:
    """The salt kept in `folder` (made there when there is none). A salt file that is not one, or
    a folder it cannot be read from, is logged and replaced: every session ends, the safe side."""
    if folder is None:
        return b""
    path = Path(folder) / SALT_FILE
    try:
        salt = path.read_bytes()
        if len(salt) == SALT_BYTES:
            return salt
        log.warning("%s: %d bytes, not a salt of %d; every page session ends", path, len(salt), SALT_BYTES)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("%s: cannot read it (%s); every page session ends", path, e.strerror or e)
    return new_salt(folder)


def new_salt(folder: str | None) -> bytes:
    """A fresh salt, written whole to `folder` when there is one (logged if it cannot be: then it
    holds until the service stops)."""
    salt = secrets.token_bytes(SALT_BYTES)
    if folder is not None:
        try:
            write_secret_atomically(Path(folder) / SALT_FILE, salt)
        except OSError as e:
            log.warning("%s: cannot keep the sessions' salt (%s); a revocation lasts until the service stops",
                        folder, e.strerror or e)
    return salt


def host_name(header: str) -> str:
    """A Host header's name without its port, lower case: '[::1]:8080' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, colon, port = header.rpartition(":")
    return name.rstrip(".") if colon and port.isdigit() and ":" not in name else header.rstrip(".")


class Hosts:
    """The names this service answers to."""

    def __init__(self, extra: Iterable[str] = ()):
        extra = {h.strip().lower().rstrip(".") for h in extra if h.strip()}
        self.any = "*" in extra
        me = socket.gethostname().lower()
        self.names = {"localhost", "127.0.0.1", "::1", me, f"{me}.local", *extra}

    def allows(self, header: str, local_address: str | None) -> bool:
        """Whether `header` names this machine; `local_address`: where the request came in."""
        if self.any:
            return True
        name = host_name(header)
        if name in self.names or name == (local_address or "").lower():
            return True
        # the address it came in on, written another way (::ffff:192.168.1.2 for 192.168.1.2)
        ip = _plain(name)
        return ip is not None and local_address is not None and ip == _plain(local_address)


def _plain(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip
