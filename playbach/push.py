"""`playbach push BUNDLE --to URL --token-file F`: a bundle onto the Pi, by the page's endpoint.

    playbach push runs/mine/bundle --to http://playbach.local:8080 --token-file ~/.playbach-token
    playbach push mine.tar.gz --to http://playbach.local:8080 --token-file F --replace
    sudo playbach push ~/mine --to /var/lib/playbach/models        # on the Pi, after an scp

BUNDLE is a bundle folder (checked here first, packed as NAME.tar.gz, NAME the folder's name or
--name) or such an archive. To a URL it is POSTed to /api/bundles with the token (what the
page's upload sends); to a folder it is installed there by the same code the web service runs.
Either way the Pi checks it as load_bundle does and renames it in whole, or refuses it: exit 2
with the Pi's reason. Standard library only, so any Python 3.11 with playbach installed pushes.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from playbach import bundle_store
from playbach.bundle import load_bundle
from playbach.errors import UserError

TIMEOUT = 300.0   # seconds: an 8 MB bundle over slow Wi-Fi, unpacked and hashed on a Pi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="a bundle folder (bundle.json and its models) or a "
                        "bundle archive (.tar.gz of one such folder)")
    parser.add_argument("--to", required=True, metavar="URL_OR_FOLDER",
                        help="the Pi's page (http://playbach.local:8080), or a models folder on this machine")
    parser.add_argument("--token-file", metavar="FILE", help="file holding the page's token (mode 0600); "
                        "needed for a URL")
    parser.add_argument("--name", help="the bundle's name on the Pi (default: the folder's name)")
    parser.add_argument("--replace", action="store_true", help="overwrite a bundle of yours with that name")


def run(args: argparse.Namespace) -> int:
    to_url = args.to.startswith(("http://", "https://"))
    token = read_token(args.token_file) if to_url else None
    with tempfile.TemporaryDirectory(prefix="playbach-push-") as work:
        archive = pack_or_take(Path(args.bundle), args.name, Path(work))
        if archive.stat().st_size > bundle_store.MAX_ARCHIVE:
            raise UserError(f"{args.bundle}: packs to {archive.stat().st_size} bytes, over the Pi's "
                            f"{bundle_store.MAX_ARCHIVE >> 20} MiB cap")
        if to_url:
            assert token is not None
            name = send(archive, args.to.rstrip("/"), token, args.replace)
        else:
            name = install_here(archive, Path(args.to), args.replace)
    print(f"installed {name!r} on {args.to}: choose it on the page's bundle list (no restart needed)")
    return 0


def read_token(path: str | None) -> str:
    """The token in `path`, refused when others may read it (as the web service refuses its own)."""
    if not path:
        raise UserError("--token-file: needed to push to a URL (the token is in /etc/playbach/web-token on the Pi)")
    try:
        mode = os.stat(path).st_mode
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--token-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    if mode & 0o077:
        raise UserError(f"--token-file {path}: mode {stat.S_IMODE(mode):o} lets others read it; chmod 600 it")
    if not token:
        raise UserError(f"--token-file {path}: empty")
    return token


def pack_or_take(bundle: Path, name: str | None, work: Path) -> Path:
    """The archive to send: `bundle` itself if it is a file, else the folder checked and packed."""
    if bundle.is_file():
        if name:
            raise UserError(f"--name: {bundle} is an archive already; its folder's name is the bundle's")
        return bundle
    load_bundle(bundle)   # refused here, with the file named, rather than after the upload
    name = bundle_store.check_name(name or bundle.resolve().name)
    archive = work / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz", dereference=True) as tar:
        for file in sorted(bundle.iterdir()):
            if file.is_file() and not file.name.startswith("."):
                tar.add(file, arcname=f"{name}/{file.name}", filter=_plain)
    return archive


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """No owner names or ids of this machine's in the archive."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def send(archive: Path, url: str, token: str, replace: bool) -> str:
    """POST the archive to URL/api/bundles; the name the Pi installed it as, or a UserError with its reason."""
    where = f"{url}/api/bundles" + ("?replace=1" if replace else "")
    with open(archive, "rb") as body:
        request = urllib.request.Request(where, data=body, method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/gzip",
            "Content-Length": str(archive.stat().st_size)})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                return str(json.loads(reply.read())["installed"])
        except urllib.error.HTTPError as e:
            raise UserError(f"{where}: {e.code}: {_reason(e)}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"{url}: cannot reach it ({getattr(e, 'reason', None) or e})") from None
        except (ValueError, KeyError) as e:
            raise UserError(f"{where}: not playbach's answer ({e})") from None


def _reason(error: urllib.error.HTTPError) -> str:
    if error.code == 401:
        return "the token was not accepted (check --token-file against /etc/playbach/web-token on the Pi)"
    raw = error.read()
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip()[:300] or error.reason


def install_here(archive: Path, user: Path, replace: bool) -> str:
    """The web service's install, into a models folder on this machine (the scp way's last step)."""
    with bundle_store.staging(user) as tmp:
        return bundle_store.install(archive, tmp, bundle_store.SHIPPED, user, replace)
