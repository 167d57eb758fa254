"""`playbach web`: the control page and its JSON API, over the player's control socket.

    playbach web --listen HOST:PORT --control-socket PATH --web-token-file FILE
    playbach web --rotate-token      # a new token: every session and the old token end

aiohttp (asyncio): one process, no threads, a page of static files (web/static, no build step,
nothing from a CDN) and the API of docs/control.md. The player is reached only through its
Unix socket (web/link.py); the web service may start before it, lose it and find it again.
Every /api call needs the token (web/guard.py). Bad requests get a 4xx saying what was wrong;
the player checks every value itself (Player.apply()), so a value the page lets through and the
player refuses is a 400 with the player's words.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from playbach import settings, wire
from playbach.errors import UserError
from playbach.files import write_secret_atomically
from playbach.web import bundles
from playbach.web.guard import COOKIE, Guard, read_token
from playbach.web.link import Link, NotPlaying

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 16 * 1024          # bytes of a request body (a settings change is ~20)
MAX_STREAMS = 16              # /api/events clients at once
KEYS = ("control_socket", "web_token_file", "web_session_days", "web_hosts")
SERVICE = "playbach-web.service"
HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"TOML config file (default {settings.DEFAULT_CONFIG} if it exists)")
    parser.add_argument("--listen", "--web-listen", dest="web_listen", default=argparse.SUPPRESS, metavar="HOST:PORT",
                        help=f"address to serve on (config web_listen; default {settings.DEFAULTS.web_listen})")
    settings.add_arguments(parser, KEYS, keep_unset=True)
    parser.add_argument("--rotate-token", action="store_true",
                        help="write a new token to web_token_file (mode 0600) and print it: the old token and every "
                             "page's session stop working (the installed service is restarted to read it)")


def load(args: argparse.Namespace) -> settings.Settings:
    """Defaults < the config file (the player's: one file, unknown keys refused) < flags."""
    flags = settings.check_arguments(args, KEYS)
    if hasattr(args, "web_listen"):
        flags["web_listen"] = settings.BY_NAME["web_listen"].check(args.web_listen, "--listen")
    return settings.stacked(getattr(args, "config", None), flags, "playbach web")


def run(args: argparse.Namespace) -> int:
    s = load(args)
    if getattr(args, "rotate_token", False):
        return rotate_token(s.web_token_file)
    token = read_token(s.web_token_file)
    host, port = settings.host_port(s.web_listen)
    hosts = tuple(h for h in s.web_hosts.split(",") if h.strip())
    state_dir = os.environ.get("STATE_DIRECTORY")   # systemd's StateDirectory: the sessions' salt
    asyncio.run(serve(make_app(s.control_socket, token, s.web_session_days, hosts, state_dir), host, port))
    return 0


def rotate_token(path: str) -> int:
    """A new token in `path` (0600 from its first byte, then renamed over the old): sessions are
    signed with the token (web/sessions.py), so none survives it. The installed service reads
    its copy of the token at start: it is restarted here when it is the installed token."""
    token = secrets.token_urlsafe(32)
    try:
        write_secret_atomically(path, (token + "\n").encode())
    except OSError as e:
        raise UserError(f"web_token_file {path}: cannot write a new token ({e.strerror or e})") from e
    print(f"new token written to {path} (mode 0600); the old one and every session are revoked:\n{token}")
    if path == settings.DEFAULTS.web_token_file and shutil.which("systemctl"):
        done = subprocess.run(["systemctl", "try-restart", SERVICE], capture_output=True, text=True)
        print(f"restarted {SERVICE}" if done.returncode == 0 else
              f"could not restart {SERVICE} ({done.stderr.strip()}); restart it to use the new token")
    else:
        print("restart `playbach web` to use it")
    return 0


async def serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise UserError(f"web_listen {host}:{port}: cannot listen there ({e.strerror or e})") from e
    log.info("control page on http://%s:%d/ (player at %s)", host if ":" not in host else f"[{host}]", port,
             app["link"].path)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def make_app(control_socket: str, token: str, session_days: float = settings.DEFAULTS.web_session_days,
             hosts: tuple[str, ...] = (), state_dir: str | None = None) -> web.Application:
    guard = Guard(token, session_days, hosts, state_dir)
    app = web.Application(middlewares=[guard.middleware], client_max_size=MAX_BODY)
    app["link"], app["guard"], app["streams"] = Link(control_socket), guard, set()

    async def start(app: web.Application) -> None:
        app["link"].start()

    async def stop(app: web.Application) -> None:
        for task in list(app["streams"]):   # the event streams never end by themselves
            task.cancel()
        await app["link"].stop()

    async def headers(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(HEADERS)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.on_response_prepare.append(headers)
    app.router.add_get("/", lambda _r: web.FileResponse(STATIC / "index.html"))
    app.router.add_static("/static/", STATIC)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/sessions/revoke", revoke_sessions)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/settings", live)
    app.router.add_post("/api/settings", change)
    for op in ("pause", "play", "panic", "reset"):   # reset: forget the kept live changes, the config's values
        app.router.add_post(f"/api/{op}", lambda r, op=op: call(r, op))
    app.router.add_post("/api/restart", restart)
    app.router.add_get("/api/take.mid", take)
    app.router.add_get("/api/events", events)
    bundles.add_routes(app)   # /api/bundles: list, upload (web/bundles.py)
    return app


# --- the handlers ------------------------------------------------------------------------------
def fail(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)


async def body(request: web.Request) -> dict:
    """The request's JSON object, or a 400 saying what is wrong with it: the control socket's own
    rules (playbach/wire.py: an object, no NaN, no number beyond a float, nesting bounded), so
    whatever passes here can be sent on to the player."""
    try:
        return wire.decode(await request.read())
    except ValueError as e:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"malformed JSON: {e}"}), content_type="application/json")


async def call(request: web.Request, op: str, timeout: float = 5.0, **args: Any) -> web.Response:
    try:
        reply = await request.app["link"].request(op, timeout=timeout, **args)
    except NotPlaying as e:
        return fail(503, f"not playing: {e}")
    if reply.get("ok"):
        return web.json_response({k: v for k, v in reply.items() if k not in ("ok", "id")})
    error = str(reply.get("error", "refused"))
    return fail(429 if error.startswith("busy") else 400, error)


async def login(request: web.Request) -> web.Response:
    """The page's one question: the token, answered with a session (not the token) in an HttpOnly
    SameSite=Strict cookie that lasts web_session_days."""
    guard: Guard = request.app["guard"]
    given = (await body(request)).get("token")
    if not isinstance(given, str) or not guard.token_ok(given):
        guard.failed(request.remote or "?", asyncio.get_running_loop().time())
        raise web.HTTPUnauthorized(text="401: Unauthorized\n")
    return signed_in(request, web.Response(status=204))


async def revoke_sessions(request: web.Request) -> web.Response:
    """Sign out every other device: every session ends; the page that asked gets a new one."""
    guard: Guard = request.app["guard"]
    guard.revoke_sessions()
    log.warning("web: every page session revoked (asked from %s)", request.remote)
    return signed_in(request, web.json_response({"ok": True}))


def signed_in(request: web.Request, response: web.Response) -> web.Response:
    """`response` with a new session in an HttpOnly SameSite=Strict cookie (web_session_days)."""
    guard: Guard = request.app["guard"]
    response.set_cookie(COOKIE, guard.sessions.new(time.time()), httponly=True, samesite="Strict", path="/",
                        max_age=round(guard.sessions.seconds), secure=request.secure)
    return response


async def status(request: web.Request) -> web.Response:
    try:
        reply = await request.app["link"].request("status")
    except NotPlaying as e:
        return web.json_response({"connected": False, "playing": False, "why": str(e)})
    return web.json_response({"connected": True, **reply.get("status", {})})


async def live(request: web.Request) -> web.Response:
    """The player's live settings (name, type, value, range or choices, help): the page draws one
    control per row, so a setting made live in playbach/settings.py shows up without a page edit."""
    return await call(request, "settings")


async def change(request: web.Request) -> web.Response:
    changes = await body(request)
    if not changes:
        return fail(400, "no settings given: send e.g. {\"bpm\": 120}")
    return await call(request, "set", changes=changes)


async def restart(request: web.Request) -> web.Response:
    wanted = await body(request)
    unknown = set(wanted) - {"bundle", "opening"}
    if unknown or not wanted:
        return fail(400, "restart takes 'bundle' (an installed bundle's name) and/or 'opening'")
    return await call(request, "restart", timeout=30.0, **wanted)


async def take(request: web.Request) -> web.StreamResponse:
    """The last `minutes` (default 10) as a MIDI file, at the times the notes sounded (120 BPM grid)."""
    try:
        minutes = float(request.query.get("minutes", "10"))
        assert 0 < minutes <= 1440
    except (ValueError, AssertionError):
        return fail(400, "minutes must be a number in (0, 1440]")
    try:
        reply = await request.app["link"].request("take", seconds=minutes * 60)
    except NotPlaying as e:
        return fail(503, f"not playing: {e}")
    if not reply.get("ok"):
        return fail(400, str(reply.get("error")))
    data = midi_bytes(reply["take"])
    return web.Response(body=data, content_type="audio/midi",
                        headers={"Content-Disposition": 'attachment; filename="take.mid"'})


def midi_bytes(take: dict) -> bytes:
    from playbach.events import Note
    from playbach.midifile import write_midi

    per_second = 2 * 480   # 120 BPM at 480 ticks a quarter: a tick is about a millisecond
    notes = [Note(round(t * per_second), pitch, max(1, round(d * per_second)), velocity)
             for t, pitch, d, velocity, _ in take["notes"]]
    channels = [channel for *_, channel in take["notes"]]   # each voice on its own, as it sounded
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "take.mid"
        write_midi(notes, path, 480, 120.0, channel=take["channel"] - 1, channels=channels,
                   programs=[tuple(c) for c in take["programs"]])
        return path.read_bytes()


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the player's frames and {"type": "link", "connected": ...}."""
    streams: set = request.app["streams"]
    if len(streams) >= MAX_STREAMS:
        return fail(429, f"{MAX_STREAMS} event streams open already")
    link: Link = request.app["link"]
    queue: asyncio.Queue = asyncio.Queue(maxsize=16)

    def listener(message: dict) -> None:
        with contextlib.suppress(asyncio.QueueFull):   # a slow reader misses frames, never blocks
            queue.put_nowait(message)

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    streams.add(asyncio.current_task())
    link.listen(listener)
    listener({"type": "link", "connected": link.connected})
    try:
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), 15.0)
            except asyncio.TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            await response.write(b"data: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n")
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        link.unlisten(listener)
        streams.discard(asyncio.current_task())
    return response
