"""Live changes that last: what the page or a CC knob changed, kept in the state folder.

`/etc/playbach/config.toml` is the owner's own file and the service cannot write it, so a change
made while playing goes to an overrides file beside the player's other state (a JSON object of
live settings, written whole: a temp file, fsync, rename). At the next start it is read after the
config file and before the flags. Resetting to the config removes it.

A damaged overrides file never stops the music: it is reported (naming the file and the key) and
played without, because the owner did not write it and cannot easily see it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from playbach import settings
from playbach.errors import UserError
from playbach.files import fsync_path, replace_atomically

log = logging.getLogger(__name__)
T = TypeVar("T")
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
    fsync_path(path.parent)   # the new name is on the disk too


def at_start(base: settings.Settings, flags: Mapping[str, Any]) -> tuple[settings.Settings, KeptChanges | None]:
    """The settings to start with: `base` (defaults < config < flags) with the kept live changes
    of `base.overrides` laid under the flags given (a flag always wins), and the KeptChanges that
    keep noting them; (base, None) when there is no overrides file setting."""
    if not base.overrides:
        return base, None
    kept = read_overrides(base.overrides, base)
    under_flags = {k: v for k, v in kept.items() if k not in flags}
    s = dataclasses.replace(base, **under_flags) if under_flags else base
    try:
        settings.check_together(s, base.overrides)
    except UserError as e:   # a kept pitch_min above a pitch_max flag: the flag's own rules win
        log.warning("%s; playing the config as it is", e)
        s = base
    if under_flags and s is not base:
        log.info("%s: kept live changes: %s", base.overrides,
                 " ".join(f"{k}={v}" for k, v in sorted(under_flags.items())))
    return s, KeptChanges(base.overrides, kept)


def build(load: Callable[[settings.Settings], T], s: settings.Settings, base: settings.Settings) -> T:
    """load(s), the take with the kept live changes; load(base) if they cannot be played (a kept
    pitch range another bundle lacks): a file the owner never wrote must not stop the music."""
    try:
        return load(s)
    except UserError as e:
        if s is base:
            raise
        log.warning("%s: the kept live changes cannot be played (%s); playing the config as it is", base.overrides, e)
        return load(base)


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
