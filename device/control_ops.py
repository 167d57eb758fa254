"""What the control socket's requests do, run in the play loop's thread (device/control.py calls
them between notes): status, live settings through Player.apply(), pause/play, panic, a restart with
another installed bundle or opening, the take so far, and the stream's frames.

Every answer is a dict ({"ok": true, ...} or {"ok": false, "error": "..."}); nothing a client
sends can raise out of here into the loop.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from playbach import wire
from playbach.device.scheduler import NOTE_OFF, NOTE_ON
from playbach.errors import UserError

log = logging.getLogger(__name__)

TAKE_NOTES = 20000        # notes kept for `take` (about 80 minutes at 4 notes a second)
TAKE_SECONDS = 600.0      # what `take` gives when it is not told
START_DELAY = 0.05        # as the player's: from a restart to its first note
TAKE_CHUNK = 500          # notes of a take encoded per piece of the loop's work


class Ops:
    def __init__(self, player: Any):
        self.p = player
        self.started = time.monotonic()
        self.take: deque = deque(maxlen=TAKE_NOTES)   # (on time, pitch, seconds, velocity)
        self.bundles = installed_bundles(player.s["bundle"])
        self.seen = 0   # notes of scheduler.played already in the take

    # --- each pass -------------------------------------------------------------------------
    def collect(self, now: float) -> None:
        """Move the notes that ended into the take (the scheduler keeps them only while asked)."""
        sched = self.p.scheduler
        sched.keep_played = True
        if len(sched.played) <= self.seen:
            return
        per_tick = sched.seconds_per_tick
        self.take.extend((n.on_time, n.pitch, n.duration * per_tick, n.velocity) for n in sched.played[self.seen:])
        if self.p.s["record"] or self.p.s["stats"]:
            self.seen = len(sched.played)   # --record and --stats read the whole list at the end
        else:
            sched.played.clear()            # hours of notes would add up

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
        p = self.p
        imp = p.improviser
        return {"ok": True, "status": {
            "playing": not p.paused and p.output.connected, "paused": p.paused,
            "port_connected": p.output.connected,
            "model": p.model.name, "backend": p.model.backend,
            "bundle": Path(p.s["bundle"]).name, "bundles": self.bundles,
            "opening": p.s["opening"], "openings": list(p.bundle.opening_names),
            "bpm": p.scheduler.bpm, "temperature": imp.temperature, "live": p.in_force(),
            "notes_played": p.notes_played, "uptime": now - self.started, "clock": p.s["clock"],
            "summary": p.status()}}

    def op_set(self, message: dict, _now: float) -> dict:
        changes = message.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise UserError("set: 'changes' must be a non-empty object of setting: value")
        return {"ok": True, "live": self.p.apply(changes)}

    def op_pause(self, _message: dict, now: float) -> dict:
        p = self.p
        if not p.paused:
            p.paused = True   # the loop generates nothing while paused (Player._room_to_generate)
            p.output.send(p.scheduler.stop(now))
            log.info("control: paused")
        return {"ok": True, "paused": True}

    def op_play(self, _message: dict, now: float) -> dict:
        p = self.p
        if p.paused:
            p.scheduler.restart_at(now + START_DELAY)
            p.paused = False
            log.info("control: playing")
        return {"ok": True, "paused": False}

    def op_panic(self, _message: dict, _now: float) -> dict:
        self.p.panic()   # the loop ends every sounding note on the pass this wakes
        return {"ok": True}

    def op_restart(self, message: dict, now: float) -> dict:
        """A new take: another installed bundle (by folder name) and/or opening (name or index).
        Only the bundles beside the configured one can be chosen, never a path from a client."""
        p = self.p
        bundle, opening = message.get("bundle"), message.get("opening")
        if bundle is not None and bundle not in self.bundles:
            raise UserError(f"restart: no installed bundle {bundle!r}; installed: {', '.join(self.bundles)}")
        if opening is not None and not isinstance(opening, str):
            raise UserError("restart: 'opening' must be a string (a name or an index)")
        saved = dict(p.s), p.bundle, p.model, p.improviser
        p.output.send(p.scheduler.stop(now))
        if bundle is not None:
            p.s["bundle"] = str(Path(p.s["bundle"]).parent / bundle)
        if opening is not None:
            p.s["opening"], p.s["seed_midi"] = opening, ""
        try:
            p.load()   # a second or so without notes: "may restart the take"
        except Exception as e:   # a broken bundle or a wrong opening: the old take plays on
            p.s.clear()
            p.s.update(saved[0])
            p.bundle, p.model, p.improviser = saved[1:]
            p.scheduler.restart_at(time.monotonic() + START_DELAY)
            raise UserError(f"restart: {e}") from e
        p.scheduler.ticks_per_quarter = p.bundle.codec.ticks_per_quarter
        p.scheduler.restart_at(time.monotonic() + START_DELAY)
        log.info("control: restarted with %s", p.status())
        return {"ok": True, "bundle": Path(p.s["bundle"]).name, "opening": p.s["opening"]}

    def take_window(self, message: dict, now: float) -> tuple[dict, list, float]:
        """`take`: the notes that ended in the last `seconds` (default 600), the reply's head and
        the time of the first; device/control.py encodes them a piece at a time, as
        [start s from the first, pitch, seconds, velocity]."""
        seconds = message.get("seconds", TAKE_SECONDS)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 86400:
            raise UserError("take: 'seconds' must be a number in (0, 86400]")
        since = now - seconds
        notes = [n for n in self.take if n[0] >= since]
        return ({"program": self.p.s["program"], "channel": self.p.s["channel"]}, notes,
                notes[0][0] if notes else now)

    # --- the stream ------------------------------------------------------------------------
    def frame(self, now: float) -> dict:
        """What sounds and what is scheduled, on the player's monotonic clock: [id, on, off,
        pitch, velocity] per note (off None while unknown). A note that leaves the frames after
        sounding was played; one that leaves before was dropped (pause, panic, live input)."""
        sched = self.p.scheduler
        offs = {entry[5]: entry[0] for entry in sched.queue if entry[1] == NOTE_OFF}
        notes = [(nid, start, offs.get(nid), pitch, vel) for pitch, (nid, start, vel) in sched.sounding.items()]
        notes += [(e[5], e[0], offs.get(e[5]), e[3], e[4]) for e in sched.queue if e[1] == NOTE_ON]
        return {"type": "frame", "now": round(now, 4), "bpm": sched.bpm, "paused": self.p.paused,
                "notes_played": self.p.notes_played,
                "notes": [[nid, round(sched.time_of(on), 4), None if off is None else round(sched.time_of(off), 4),
                           pitch, vel] for nid, on, off, pitch, vel in notes]}


class TakeJob:
    """A `take` reply encoded TAKE_CHUNK notes a piece: 20,000 notes take ~40 ms to encode on
    the build machine (more on a Pi), longer than the room between two notes."""

    def __init__(self, conn: Any, head: dict, notes: list, first: float, extra: dict):
        self.conn, self.head, self.notes, self.first, self.extra = conn, head, notes, first, extra
        self.parts: list[str] = []
        self.at = 0

    def step(self) -> bytes | None:
        """Encode the next piece; the whole reply line once the last is done, else None."""
        first, chunk = self.first, self.notes[self.at:self.at + TAKE_CHUNK]
        self.at += TAKE_CHUNK
        if chunk:
            self.parts.append(json.dumps([[round(t - first, 4), pitch, round(d, 4), v] for t, pitch, d, v in chunk],
                                         separators=(",", ":"))[1:-1])
        if self.at < len(self.notes):
            return None
        head = wire.encode({"ok": True, **self.extra, "take": self.head})[:-3]   # without '}}\n'
        return b"".join([head, b',"notes":[', ",".join(self.parts).encode(), b"]}}\n"])



def installed_bundles(bundle: str) -> list[str]:
    """The bundle folders beside the configured one (/opt/playbach/models/*), by name."""
    folder = Path(bundle).resolve().parent
    try:
        return sorted(p.name for p in folder.iterdir() if (p / "bundle.json").is_file())
    except OSError:
        return [Path(bundle).name]
