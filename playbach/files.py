"""Writing a file or a folder so that no reader ever sees half of it: a temp beside it, then rename."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp path in the same folder, then rename it over `path`.

    If `write` fails, the temp file is removed and any earlier `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_secret_atomically(path: str | Path, data: bytes) -> None:
    """`data` to `path`, readable by its owner only from its first byte (0600), fsynced, then
    renamed over the old file: a token or a key is never seen half-written or by others."""
    def write(tmp: Path) -> None:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(path, write)


def publish(work: Path, out: Path) -> None:
    """Replace the folder `out` with the finished folder `work` beside it (a run, a bundle): the old
    one is kept until the rename worked, so a reader finds the old folder or the new, never half."""
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        out.replace(old)
    work.replace(out)
    if old.exists():
        shutil.rmtree(old)


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
