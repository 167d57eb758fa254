"""The bundles a Pi can play, and a user's bundle installed from an archive.

Two folders hold bundles, each bundle a folder with bundle.json, listed by folder name:
  shipped  the folder of the configured bundle (/opt/playbach/models: install.sh's, read-only)
  user     the state folder's models/ (USER_MODELS, or $PLAYBACH_MODELS where the web service
           sees it elsewhere): the user's own, put there by the page's upload, `playbach push`,
           install.sh --bundle, or a copy (scp, then a checked `playbach push --to FOLDER`)
A shipped name always means the shipped bundle: an upload may not take one, and a user folder
of that name is listed as shadowed. Names starting with '.' are work in progress, never listed.

The archive (what the page uploads and `playbach push` sends): a gzip-compressed tar of one
folder NAME/ with the bundle's files directly in it, as `tar -czf NAME.tar.gz -C PARENT NAME`
makes. NAME (letters, digits, '.', '_', '-'; up to 64) becomes the bundle's name. Only regular
files and that one folder may be in it: a link, device, FIFO, sparse file, a deeper path, '..' or
an absolute path is refused, as is an archive over MAX_ARCHIVE bytes, unpacking to more than
MAX_UNPACKED, or holding more than MAX_MEMBERS entries. The archive is unpacked into a temp
folder inside the user folder (the same file system: the rename is atomic), checked as
load_bundle() checks a bundle (format, schema, codec, every model's size and sha256), made
readable by all and writable by the folder's group (the player, and the next web service, are
other dynamic users), then renamed in. Whatever is refused leaves nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from playbach.bundle import BUNDLE_JSON, load_bundle
from playbach.errors import UserError

SHIPPED = Path("/opt/playbach/models")
USER_MODELS = Path("/var/lib/playbach/models")
ENV = "PLAYBACH_MODELS"              # another user folder (tests, a desktop)
MAX_ARCHIVE = 64 << 20               # bytes uploaded (the shipped bundle packs to ~8 MB)
MAX_UNPACKED = 256 << 20             # bytes of all files unpacked
MAX_MEMBERS = 64                     # entries in the archive (the shipped bundle has 6)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STAGING = ".incoming-"               # the temp folders, removed when done or found stale
CHUNK = 1 << 16


class Refused(UserError):
    """An archive or name not installed, with the HTTP status that says why."""
    status = 400


class TooBig(Refused):
    status = 413


class Taken(Refused):
    status = 409


class NoRoom(Refused):
    status = 507


def user_folder() -> Path:
    """The user's bundles: $PLAYBACH_MODELS if set, else USER_MODELS."""
    return Path(os.environ.get(ENV) or USER_MODELS)


def folders(configured: str | Path) -> tuple[Path, Path]:
    """(shipped, user) for a player configured with the bundle `configured`: the shipped folder
    is that bundle's, unless it is one of the user's (config bundle = /var/lib/playbach/models/NAME)."""
    user = user_folder()
    parent = Path(configured).resolve().parent
    return (SHIPPED if parent == user.resolve() else parent), user


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Refused(f"{name!r} is not a bundle name (letters, digits, '.', '_' and '-', up to 64, "
                      "not starting with '.', '_' or '-')")
    return name


def _bundles_in(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir()
                      if NAME.fullmatch(p.name) and (p / BUNDLE_JSON).is_file())
    except OSError:   # not there (no upload yet) or not readable: none from it
        return []


def installed_bundles(shipped: Path, user: Path) -> list[str]:
    """Every playable name: the shipped bundles, then the user's not shadowed by one (a few
    directory reads, cheap enough for every status request)."""
    first = _bundles_in(Path(shipped))
    if Path(user).resolve() == Path(shipped).resolve():
        return first
    return first + [n for n in _bundles_in(Path(user)) if n not in first]


def bundle_path(name: Any, shipped: Path, user: Path) -> Path:
    """The folder of the installed bundle `name`, shipped first; a UserError listing them when
    there is none (a name from a client is looked up, never used as a path)."""
    for folder in (Path(shipped), Path(user)):
        if isinstance(name, str) and name in _bundles_in(folder):
            return folder / name
    raise UserError(f"no installed bundle {name!r}; installed: {', '.join(installed_bundles(shipped, user))}")


_checked: dict[Path, tuple[tuple, str | None]] = {}   # folder -> (its files' stat, error or None)


def _signature(folder: Path) -> tuple:
    return tuple(sorted((p.name, s.st_size, s.st_mtime_ns) for p in folder.iterdir() for s in [p.stat()]))


def problem(folder: Path) -> str | None:
    """None if load_bundle accepts `folder` (sha256 included), else its message. Remembered
    until a file in it changes: a listing is asked for often, a model is megabytes to hash."""
    try:
        signature = _signature(folder)
    except OSError as e:
        return f"{folder}: cannot read it ({e.strerror or e})"
    if folder in _checked and _checked[folder][0] == signature:
        return _checked[folder][1]
    try:
        load_bundle(folder)
        said = None
    except UserError as e:
        said = str(e)
    _checked[folder] = (signature, said)
    return said


def describe(shipped: Path, user: Path) -> list[dict]:
    """The page's list: every bundle folder of both, with where it is and whether it plays."""
    shipped_names = _bundles_in(Path(shipped))
    rows = []
    for where, folder in (("shipped", Path(shipped)), ("yours", Path(user))):
        if where == "yours" and folder.resolve() == Path(shipped).resolve():
            break
        for name in _bundles_in(folder):
            error = problem(folder / name)
            if where == "yours" and name in shipped_names:
                error = f"{folder / name}: a shipped bundle has this name; rename the folder to play it"
            rows.append({"name": name, "where": where, "ok": error is None, "error": error})
    return rows


# --- installing an archive ------------------------------------------------------------------
@contextlib.contextmanager
def staging(user: Path) -> Iterator[Path]:
    """A fresh temp folder inside `user` (made if missing), removed with all in it at the end."""
    user = Path(user)
    try:
        user.mkdir(parents=True, exist_ok=True)
        _clear_stale(user)
        tmp = Path(tempfile.mkdtemp(prefix=STAGING, dir=user))
    except OSError as e:
        raise NoRoom(f"{user}: cannot store a bundle there ({e.strerror or e})") from e
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clear_stale(user: Path, age: float = 3600.0) -> None:
    """Temp folders left by a power cut (an upload in progress is younger than an hour)."""
    for p in user.glob(STAGING + "*"):
        with contextlib.suppress(OSError):
            if time.time() - p.stat().st_mtime > age:
                shutil.rmtree(p)


@contextlib.contextmanager
def _locked(user: Path) -> Iterator[None]:
    """One rename-in at a time (the web service and a `playbach push` to a folder may race)."""
    fd = os.open(user, os.O_RDONLY | os.O_DIRECTORY)   # the folder itself: no lock file left in it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def install(archive: Path, tmp: Path, shipped: Path, user: Path, replace: bool = False) -> str:
    """Unpack `archive` into `tmp` (a staging() folder of `user`), check it, rename it into
    `user`; its name. Refused (nothing left in `user`) for whatever the module says."""
    size = Path(archive).stat().st_size
    if size > MAX_ARCHIVE:
        raise TooBig(f"the archive is {size} bytes, over the {MAX_ARCHIVE >> 20} MiB cap")
    try:
        name = unpack(Path(archive), tmp)
    except OSError as e:   # ENOSPC, mostly: the partial unpack goes with tmp
        raise NoRoom(f"cannot unpack the archive into {user} ({e.strerror or e})") from e
    folder = tmp / name
    if name in _bundles_in(Path(shipped)):
        raise Taken(f"{name!r} is a shipped bundle's name; rename your bundle's folder")
    try:
        load_bundle(folder)
    except UserError as e:   # say it as the archive's path, not the temp folder's
        raise Refused(f"not a playable bundle: {str(e).replace(str(tmp) + os.sep, '')}") from None
    try:
        _rename_in(folder, Path(user) / name, tmp, replace)
    except OSError as e:
        raise NoRoom(f"{user}: cannot install {name!r} there ({e.strerror or e})") from e
    return name


def _rename_in(folder: Path, dest: Path, tmp: Path, replace: bool) -> None:
    for p in (folder, *folder.iterdir()):
        p.chmod(0o775 if p.is_dir() else 0o664)   # the group may replace it later, everyone may read it
    with _locked(dest.parent):
        if dest.exists() or dest.is_symlink():
            if not replace:
                raise Taken(f"a bundle {dest.name!r} is installed already; ask to replace it (the page's tick "
                            "box, push --replace, ?replace=1)")
            if dest.is_symlink() or not dest.is_dir():
                raise Taken(f"{dest} is not a bundle folder; remove it by hand")
            dest.rename(tmp / ".old")   # goes with tmp; for the moment between, no bundle of that name
        folder.rename(dest)
    _checked.pop(dest, None)


# --- reading an archive -----------------------------------------------------------------------
class _Capped(io.RawIOBase):
    """The decompressed stream, refused past `cap` bytes: a gzip bomb is stopped while it
    inflates, and a tar header claiming a huge extended header is refused before it is read."""

    def __init__(self, raw: BinaryIO, cap: int):
        self.raw, self.cap, self.seen = raw, cap, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or self.seen + n > self.cap + CHUNK:
            n = self.cap + CHUNK - self.seen
        if n <= 0:
            raise TooBig(f"the archive unpacks to more than {MAX_UNPACKED >> 20} MiB")
        data = self.raw.read(n)
        self.seen += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a device",
         tarfile.BLKTYPE: "a device", tarfile.FIFOTYPE: "a FIFO", tarfile.GNUTYPE_SPARSE: "a sparse file",
         tarfile.CONTTYPE: "a contiguous file"}


def member_path(raw: str) -> tuple[str, str | None]:
    """(NAME, None) for the folder's entry, (NAME, FILE) for a file in it; Refused otherwise."""
    name = raw[2:] if raw.startswith("./") else raw
    parts = name.rstrip("/").split("/") if name.rstrip("/") else []
    if name.startswith("/") or "\\" in name or not 1 <= len(parts) <= 2 or \
            not all(NAME.fullmatch(p) for p in parts):
        raise Refused(f"archive entry {raw[:200]!r}: not NAME/FILE (one folder of plain names; no '..', "
                      "no absolute or deeper path)")
    return parts[0], (parts[1] if len(parts) == 2 else None)


def unpack(archive: Path, into: Path) -> str:
    """Write the archive's one folder into `into`, every entry checked first; its NAME."""
    top, total, count = None, 0, 0
    try:
        with gzip.open(archive, "rb") as gz, \
                tarfile.open(fileobj=_Capped(gz, MAX_UNPACKED), mode="r|") as tar:  # type: ignore[arg-type]
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise TooBig(f"the archive has more than {MAX_MEMBERS} entries")
                top = _folder_of(member, top, into)
                if not member.isdir():
                    total += _write(tar, member, into / top, total)
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise Refused(f"not a .tar.gz archive ({type(e).__name__}: {e})") from None
    if top is None:
        raise Refused("the archive is empty")
    return top


def _folder_of(member: tarfile.TarInfo, top: str | None, into: Path) -> str:
    """The archive's one folder, made in `into` at its first entry; every entry checked to be
    the folder itself or a regular file in it."""
    name, file = member_path(member.name)
    kind = KINDS.get(member.type, None if member.isreg() or member.isdir() else "not a file")
    if kind or (file is None) != member.isdir():
        what = kind or ("a folder in the folder" if member.isdir() else "a file outside a folder")
        raise Refused(f"archive entry {member.name!r}: {what}; a bundle archive holds one folder of regular "
                      "files (tar -czf NAME.tar.gz -C PARENT NAME)")
    if top is None:
        top = check_name(name)
        (into / top).mkdir()
    elif name != top:
        raise Refused(f"archive entry {member.name!r}: a second folder (the archive holds one bundle, {top!r})")
    return top


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, folder: Path, total: int) -> int:
    """One regular file of the archive into `folder` (new, never over another); its size."""
    file = member_path(member.name)[1]
    assert file is not None   # _folder_of let only files in the folder through
    if total + member.size > MAX_UNPACKED:
        raise TooBig(f"the archive unpacks to more than {MAX_UNPACKED >> 20} MiB")
    source = tar.extractfile(member)
    assert source is not None   # a regular file always has its data
    written = 0
    try:
        out = open(folder / file, "xb")
    except FileExistsError:
        raise Refused(f"archive entry {member.name!r}: twice in the archive") from None
    with out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            out.write(chunk)
    if written != member.size:
        raise Refused(f"archive entry {member.name!r}: cut short ({written} of {member.size} bytes)")
    return written
