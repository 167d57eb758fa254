"""Live changes that last: what the page or a CC knob changed, kept in the state folder.

`/etc/playbach/config.toml` is the owner's own file and the service cannot write it, so a change
made while playing goes to an overrides file beside the player's other state (a JSON object of
live settings, written whole: a temp file, fsync, rename). At the next start it is read after the
config file and before the flags. Resetting to the config removes it.

A damaged overrides file never stops the music: it is reported (naming the file and the key) and
played without, because the owner did not write it and cannot easily see it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from playbach import settings
from playbach.errors import UserError
from playbach.files import replace_atomically

log = logging.getLogger(__name__)
MAX_BYTES = 64 * 1024      # a few dozen live settings; anything bigger is not ours
WRITE_EVERY = 1.0          # seconds: a knob turned sends many changes; the file is written at most this often


def read_overrides(path: str | Path, current: settings.Settings) -> dict[str, Any]:
    """The live settings kept in `path`, each checked as a live change to `current`; {} when there
    is no file, and {} with a warning naming the file and what is wrong when it cannot be used."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise UserError(f"{path}: over {MAX_BYTES} bytes; not an overrides file")
        try:
            values = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise UserError(f"{path}: not a JSON object of settings ({e.__class__.__name__})") from None
        if not isinstance(values, dict):
            raise UserError(f"{path}: not a JSON object of settings")
        return settings.check_live(values, current, str(path))
    except FileNotFoundError:
        return {}
    except OSError as e:
        log.warning("%s: cannot read the kept live changes (%s); playing the config as it is", path, e.strerror)
    except UserError as e:
        log.warning("%s; playing the config as it is", e)
    return {}


def write_overrides(path: str | Path, values: Mapping[str, Any]) -> None:
    """Write `values` to `path` whole (temp, fsync, rename, fsync of the folder)."""
    path = Path(path)
    text = json.dumps(dict(values), indent=1, sort_keys=True, allow_nan=False) + "\n"

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    replace_atomically(path, write)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class KeptChanges:
    """The live changes of this run, written to `path` at most every WRITE_EVERY seconds.

    `note(changes)` after each applied live change; `flush(now)` from the play loop (cheap when
    nothing is pending); `close()` at exit writes what is pending; `reset()` forgets them all and
    removes the file. A failed write (a full disk, a read-only folder) is logged once and retried
    at the next change: the music goes on."""

    def __init__(self, path: str | Path, kept: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.values: dict[str, Any] = dict(kept or {})
        self.pending = False
        self.written_at = float("-inf")
        self.failing = False

    def note(self, changes: Mapping[str, Any]) -> None:
        self.values.update(changes)
        self.pending = True

    def flush(self, now: float, force: bool = False) -> None:
        if not self.pending or (not force and now - self.written_at < WRITE_EVERY):
            return
        self.written_at, self.pending = now, False
        try:
            write_overrides(self.path, self.values)
            self.failing = False
        except OSError as e:
            if not self.failing:
                log.warning("%s: cannot keep the live changes (%s); they last until the player stops",
                            self.path, e.strerror or e)
            self.failing = True

    def close(self) -> None:
        self.flush(float("inf"), force=True)

    def reset(self) -> None:
        self.values, self.pending = {}, False
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("%s: cannot remove the kept live changes (%s)", self.path, e.strerror)
