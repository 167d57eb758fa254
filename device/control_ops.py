"""What the control socket's requests do, run in the play loop's thread (device/control.py calls
them between notes): status, the live settings and changes to them (and a reset to the config's), pause/play, panic, a restart
with another installed bundle or opening, the take so far, and the stream's frames. They reach the
player only through the Controlled protocol.

Every answer is a dict ({"ok": true, ...} or {"ok": false, "error": "..."}); nothing a client
sends can raise out of here into the loop.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

from playbach import bundle_store, settings as pb_settings, wire
from playbach.device.scheduler import Upcoming
from playbach.device.take_log import TakeLog
from playbach.errors import UserError
from playbach.settings import Settings

log = logging.getLogger(__name__)

TAKE_SECONDS = 600.0      # what `take` gives when it is not told
TAKE_CHUNK = 500          # notes of a take encoded per piece of the loop's work


@dataclass(frozen=True)
class PlayerState:
    """What the ops read of the player at one moment."""
    settings: Settings        # in force: live changes included, bpm the scheduler's
    paused: bool
    port_connected: bool
    model: str
    backend: str
    openings: tuple[str, ...]
    summary: str              # the journal's status line


class Controlled(Protocol):
    """What the control socket may do to the player (device/player.py's Player), and no more."""
    take_log: TakeLog
    programs: list[tuple[int, int]]   # the (wire channel, program) changes sent on each connect

    def state(self) -> PlayerState: ...

    def upcoming(self) -> list[Upcoming]: ...

    def apply(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change live settings (all or none: a UserError naming the key); the live values now."""

    def pause(self, now: float) -> None: ...

    def resume(self, now: float) -> None: ...

    def panic(self) -> None:
        """End every sounding note; safe from any thread."""

    def restart(self, bundle: str | None, opening: str | None) -> None:
        """A new take with the installed bundle in that folder and/or that opening (a
        UserError if it cannot be made; the old take then plays on)."""

    def reset(self) -> dict[str, Any]:
        """Forget the live changes kept across restarts and play the config's values; the live values now."""


class Ops:
    def __init__(self, player: Controlled):
        self.p = player
        self.started = time.monotonic()
        self.shipped, self.user = bundle_store.folders(player.state().settings.bundle)

    @property
    def bundles(self) -> list[str]:
        """Listed anew at each request: a bundle uploaded or copied in plays without a restart."""
        return bundle_store.installed_bundles(self.shipped, self.user)

    def handle(self, message: dict, now: float) -> dict:
        op = message["op"]
        try:
            return getattr(self, "op_" + op)(message, now)
        except UserError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:   # a bug here must not end the take: say it, log it, play on
            log.exception("control: %s failed", op)
            return {"ok": False, "error": f"{op} failed: {type(e).__name__}: {e}"}

    # --- the ops ---------------------------------------------------------------------------
    def op_status(self, _message: dict, now: float) -> dict:
        st = self.p.state()
        s = st.settings
        return {"ok": True, "status": {
            "playing": not st.paused and st.port_connected, "paused": st.paused,
            "port_connected": st.port_connected, "model": st.model, "backend": st.backend,
            "bundle": Path(s.bundle).name, "bundles": self.bundles,
            "opening": s.opening, "openings": list(st.openings),
            "bpm": s.bpm, "temperature": s.temperature, "live": {k: getattr(s, k) for k in pb_settings.LIVE},
            "notes_played": self.p.take_log.notes_played, "uptime": now - self.started, "clock": s.clock,
            "summary": st.summary}}

    def op_settings(self, _message: dict, _now: float) -> dict:
        """The live settings with their range, help and value now (the page's controls)."""
        return {"ok": True, "settings": pb_settings.live_settings(self.p.state().settings)}

    def op_set(self, message: dict, _now: float) -> dict:
        changes = message.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise UserError("set: 'changes' must be a non-empty object of setting: value")
        return {"ok": True, "live": self.p.apply(changes)}

    def op_reset(self, _message: dict, _now: float) -> dict:
        return {"ok": True, "live": self.p.reset()}

    def op_pause(self, _message: dict, now: float) -> dict:
        self.p.pause(now)
        return {"ok": True, "paused": True}

    def op_play(self, _message: dict, now: float) -> dict:
        self.p.resume(now)
        return {"ok": True, "paused": False}

    def op_panic(self, _message: dict, _now: float) -> dict:
        self.p.panic()   # the loop ends every sounding note on the pass this wakes
        return {"ok": True}

    def op_restart(self, message: dict, _now: float) -> dict:
        """A new take: another installed bundle (by folder name) and/or opening (name or index).
        Only an installed bundle (shipped or the user's) can be chosen, never a path from a client."""
        bundle, opening = message.get("bundle"), message.get("opening")
        bundles = self.bundles
        if bundle is not None and bundle not in bundles:
            raise UserError(f"restart: no installed bundle {bundle!r}; installed: {', '.join(bundles)}")
        if opening is not None and not isinstance(opening, str):
            raise UserError("restart: 'opening' must be a string (a name or an index)")
        self.p.restart(None if bundle is None else str(bundle_store.bundle_path(bundle, self.shipped, self.user)),
                       opening)
        s = self.p.state().settings
        return {"ok": True, "bundle": Path(s.bundle).name, "opening": s.opening}

    def take_window(self, message: dict, now: float) -> tuple[dict, list, float]:
        """`take`: the notes that ended in the last `seconds` (default 600), the reply's head and
        the time of the first; device/control.py encodes them a piece at a time, as
        [start s from the first, pitch, seconds, velocity, wire channel 0-15]."""
        seconds = message.get("seconds", TAKE_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 86400:
            raise UserError("take: 'seconds' must be a number in (0, 86400]")
        notes = [(n.on_time, n.pitch, n.off_time - n.on_time, n.velocity, n.channel)
                 for n in self.p.take_log.since(now - seconds)]
        s = self.p.state().settings
        head = {"program": s.program, "channel": s.channel, "programs": [list(c) for c in self.p.programs]}
        return head, notes, notes[0][0] if notes else now

    # --- the stream ------------------------------------------------------------------------
    def frame(self, now: float) -> dict:
        """What sounds and what is scheduled, on the player's monotonic clock: [id, on, off,
        pitch, velocity] per note (off None while unknown). A note that leaves the frames after
        sounding was played; one that leaves before was dropped (pause, panic, live input)."""
        st = self.p.state()
        return {"type": "frame", "now": round(now, 4), "bpm": st.settings.bpm, "paused": st.paused,
                "notes_played": self.p.take_log.notes_played,
                "notes": [[n.note_id, round(n.on, 4), None if n.off is None else round(n.off, 4), n.pitch, n.velocity]
                          for n in self.p.upcoming()]}


class TakeJob:
    """A `take` reply encoded TAKE_CHUNK notes a piece: a whole long take takes longer to encode
    than the room between two notes."""

    def __init__(self, conn: Any, head: dict, notes: list, first: float, extra: dict):
        self.conn, self.head, self.notes, self.first, self.extra = conn, head, notes, first, extra
        self.parts: list[str] = []
        self.at = 0

    def step(self) -> bytes | None:
        """Encode the next piece; the whole reply line once the last is done, else None."""
        first, chunk = self.first, self.notes[self.at:self.at + TAKE_CHUNK]
        self.at += TAKE_CHUNK
        if chunk:
            self.parts.append(json.dumps([[round(t - first, 4), pitch, round(d, 4), v, c] for t, pitch, d, v, c in chunk],
                                         separators=(",", ":"))[1:-1])
        if self.at < len(self.notes):
            return None
        head = wire.encode({"ok": True, **self.extra, "take": self.head})[:-3]   # without '}}\n'
        return b"".join([head, b',"notes":[', ",".join(self.parts).encode(), b"]}}\n"])
