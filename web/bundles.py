"""The page's bundles: GET /api/bundles lists them, POST /api/bundles installs one.

    GET  /api/bundles                 {"bundles": [{name, where: shipped|yours, ok, error}], "playing": NAME}
    POST /api/bundles[?replace=1]     the body: a bundle archive (.tar.gz, playbach/bundle_store.py)
                                      201 {"installed": NAME, "bundles": [...]}; 4xx {"error": why}

The page's upload and `playbach push` send the same request. The body is streamed to a temp
folder inside the user folder, never held in memory (the service has a 200 MB ceiling), and
refused past MAX_ARCHIVE; unpacking and hashing run in a thread so the page stays live. The
switch is the player's `restart` with the name (web/server.py's /api/restart), no service restart.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from playbach import bundle_store, settings
from playbach.bundle_store import MAX_ARCHIVE, NoRoom, Refused, TooBig
from playbach.web.link import NotPlaying

FOLDERS = web.AppKey("bundle_folders", tuple)   # (shipped, user)


def add_routes(app: web.Application, shipped: Path | None = None, user: Path | None = None) -> None:
    """The routes; the folders default to those of a player of the default bundle (bundle_store.folders)."""
    default_shipped, default_user = bundle_store.folders(settings.DEFAULTS.bundle)
    app[FOLDERS] = (Path(shipped or default_shipped), Path(user or default_user))
    app.router.add_get("/api/bundles", listing)
    app.router.add_post("/api/bundles", upload)


def _error(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)


async def listing(request: web.Request) -> web.Response:
    shipped, user = request.app[FOLDERS]
    rows = await asyncio.get_running_loop().run_in_executor(None, bundle_store.describe, shipped, user)
    try:
        playing = (await request.app["link"].request("status")).get("status", {}).get("bundle")
    except NotPlaying:
        playing = None
    return web.json_response({"bundles": rows, "playing": playing})


async def upload(request: web.Request) -> web.Response:
    shipped, user = request.app[FOLDERS]
    replace = request.query.get("replace", "") in ("1", "true", "yes")
    if request.content_length is not None and request.content_length > MAX_ARCHIVE:
        return _error(413, f"the archive is {request.content_length} bytes, over the {MAX_ARCHIVE >> 20} MiB cap")
    loop = asyncio.get_running_loop()
    try:
        with bundle_store.staging(user) as tmp:
            archive = tmp / "upload.tar.gz"
            await _receive(request, archive)
            name = await loop.run_in_executor(None, bundle_store.install, archive, tmp, shipped, user, replace)
        rows = await loop.run_in_executor(None, bundle_store.describe, shipped, user)
    except Refused as e:
        return _error(e.status, str(e))
    return web.json_response({"installed": name, "bundles": rows}, status=201)


async def _receive(request: web.Request, archive: Path) -> None:
    """The body into `archive`, refused once past MAX_ARCHIVE (whatever Content-Length said)."""
    total = 0
    try:
        with open(archive, "xb") as out:
            async for chunk in request.content.iter_chunked(bundle_store.CHUNK):
                total += len(chunk)
                if total > MAX_ARCHIVE:
                    raise TooBig(f"the archive is over the {MAX_ARCHIVE >> 20} MiB cap")
                out.write(chunk)
    except OSError as e:   # the disk is full: what was written goes with the temp folder
        raise NoRoom(f"{archive.parent.parent}: no room for the archive ({e.strerror or e})") from e
    if total == 0:
        raise Refused("no archive in the request's body (send the .tar.gz as the body)")
