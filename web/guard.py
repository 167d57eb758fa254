"""Who may call the API: the token, or a session the login made (web/sessions.py), failed tokens
rate-limited, cross-site POSTs refused, a flood of calls slowed, and only for a Host that
names this machine. An aiohttp middleware; the page itself (GET / and its static files) needs no
token: it holds nothing secret.

A wrong or missing token gets 401 with nothing else said (no hint of what was wrong, no
WWW-Authenticate); FAILS wrong tokens from one address within FAIL_WINDOW seconds and it gets
429 until the window has passed, right token or not, so guessing is slow.
"""
from __future__ import annotations

import hmac
import os
import stat
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from playbach.errors import UserError
from playbach.web.sessions import SESSION_DAYS, Hosts, Sessions, new_salt, read_salt

COOKIE = "playbach_session"
FAILS, FAIL_WINDOW = 5, 60.0
RATE, BURST = 100.0, 200.0        # API calls a second per address (the page polls far less)
PUBLIC = ("/api/login",)          # checks the token itself (and counts its failures)


def read_token(path: str) -> str:
    """The token in `path` (surrounding whitespace dropped); a UserError naming the file when it
    is missing, unreadable, empty, or readable by others."""
    where = f"web_token_file {path}"
    try:
        info = os.stat(path)
        token = Path(path).read_text().strip()
    except FileNotFoundError as e:
        raise UserError(f"{where}: no such file (sudo systemd/install.sh --with-web writes one)") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{where}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{where}: not a regular file")
    if info.st_mode & 0o077 and not path.startswith(os.environ.get("CREDENTIALS_DIRECTORY", "\0")):
        raise UserError(f"{where}: mode {stat.S_IMODE(info.st_mode):o} lets others read it; chmod 600 it")
    if len(token) < 16:
        raise UserError(f"{where}: the token is {'empty' if not token else 'shorter than 16 characters'}")
    return token


class Guard:
    def __init__(self, token: str, session_days: float = SESSION_DAYS, hosts: tuple[str, ...] = (),
                 state_dir: str | None = None):
        self.token, self.days, self.state_dir = token.encode(), session_days, state_dir
        self.sessions = Sessions(self.token, session_days, read_salt(state_dir))
        self.hosts = Hosts(hosts)
        self.fails: dict[str, deque] = defaultdict(deque)
        self.buckets: dict[str, tuple[float, float]] = {}

    def revoke_sessions(self) -> None:
        """Every session made so far ends: the sessions are keyed by a new salt from now on."""
        self.sessions = Sessions(self.token, self.days, new_salt(self.state_dir))

    def token_ok(self, given: str | None) -> bool:
        try:   # a header's bytes that are not UTF-8 reach us as lone surrogates: not the token
            return given is not None and hmac.compare_digest(given.encode(), self.token)
        except UnicodeEncodeError:
            return False

    def locked_out(self, who: str, now: float) -> bool:
        fails = self.fails.get(who)
        while fails and fails[0] < now - FAIL_WINDOW:
            fails.popleft()
        if fails is not None and not fails:
            del self.fails[who]
        return bool(fails) and len(fails) >= FAILS

    def failed(self, who: str, now: float) -> None:
        self.fails[who].append(now)

    def allowed(self, who: str, now: float) -> bool:
        """A token bucket per address: RATE calls a second, BURST at once."""
        level, then = self.buckets.get(who, (BURST, now))
        level = min(BURST, level + (now - then) * RATE)
        if level < 1:
            self.buckets[who] = (level, now)
            return False
        self.buckets[who] = (level - 1, now)
        if len(self.buckets) > 10000:   # many addresses: forget the full buckets
            self.buckets = {k: v for k, v in self.buckets.items() if v[0] < BURST}
        return True

    @staticmethod
    def cross_site(request: web.Request) -> bool:
        """A state-changing call from another site: its Origin is not this host, or the browser
        says so (Sec-Fetch-Site). A call without Origin (curl, a script) is not a browser's."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return True
        origin = request.headers.get("Origin")
        if origin is None:
            return False
        return origin.split("://", 1)[-1].rstrip("/") != request.host

    def who_is_it(self, request: web.Request) -> str:
        """'ok' (the token, or a live session), 'none' given, 'expired' (a session of ours, too
        old: not counted as a failure) or 'wrong'."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return "ok" if self.token_ok(header[7:].strip()) else "wrong"
        cookie = request.cookies.get(COOKIE)
        if cookie is None:
            return "none"
        said = self.sessions.check(cookie, time.time())
        return {"ok": "ok", "expired": "expired"}.get(said, "wrong")

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        local = request.transport.get_extra_info("sockname") if request.transport else None
        if not self.hosts.allows(request.host, local[0] if local else None):
            raise web.HTTPMisdirectedRequest(text=f"this service does not answer to {request.host[:100]!r} "
                                                  "(Host); add the name to web_hosts\n")
        if not request.path.startswith("/api/"):
            return await handler(request)
        who, now = request.remote or "?", time.monotonic()
        if not self.allowed(who, now):
            raise web.HTTPTooManyRequests(text="too many requests\n")
        if request.method == "POST" and self.cross_site(request):
            raise web.HTTPForbidden(text="cross-site request refused\n")
        if self.locked_out(who, now):
            raise web.HTTPTooManyRequests(text="too many failed tokens; wait a minute\n")
        if request.path not in PUBLIC:
            said = self.who_is_it(request)
            if said != "ok":
                if said == "wrong":   # a wrong token counts; none at all (a first visit) does not
                    self.failed(who, now)
                raise web.HTTPUnauthorized(text="401: Unauthorized\n")
        return await handler(request)
