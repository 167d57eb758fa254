"""Checks that what should last does, and what should fail fails cleanly (issues 22 and 23).

`hung_start_check`     the player stops dead while it loads (SIGSTOP before READY=1): systemd's
                       finite start timeout aborts it and the restart plays (hung_start_recovered)
`web_bad_config_check` an unknown key in config.toml: playbach-web exits 2, the journal names
                       file and key, systemd leaves it failed (no restart loop), the fix answers
                       again (web_bad_config_failed_cleanly)
`set_settings`, `settings_survive_reboot_check`
                       before the reboot the page sets key and tempo; after it, the first notes
                       at the synth are in that key (Krumhansl-Schmuckler, in the product venv)
                       and on that tempo's grid (settings_survive_reboot)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from guest import UNIT, active_state, journal, main_pid, message, show, wait_for
from web import WEB_UNIT, _poll, _token, api, answering, chord_onsets, onset_grid, ticks_per_quarter

CONFIG = Path("/etc/playbach/config.toml")
OVERRIDES = Path("/var/lib/playbach/overrides.json")   # the unit's --overrides
VENV_PYTHON = "/opt/playbach/venv/bin/python"
SET_KEY, SET_BPM, CONFIG_BPM = "D minor", 150.0, 90.0
FIRST_NOTES_SECONDS = 15.0     # the first notes after the reboot that are judged
GRID_TOLERANCE = 0.025         # s: tight enough that a 90 BPM take cannot fit a 150 BPM grid
START_TIMEOUT = 120 + 20 + 60  # TimeoutStartSec, then TimeoutStopSec, then slack


def _stopped_while_loading(timeout: float = 120) -> int | None:
    """Restart the player and SIGSTOP it once it runs but before it is ready; its pid."""
    run_restart = subprocess.run(["systemctl", "restart", "--no-block", UNIT], capture_output=True)
    if run_restart.returncode != 0:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, pid = show(UNIT).get("ActiveState"), main_pid()
        if state == "activating" and pid:
            time.sleep(2)                  # inside the imports or the model load
            os.kill(pid, signal.SIGSTOP)
            return pid
        time.sleep(0.1)
    return None


def hung_start_check(recorder) -> dict:
    """A player that hangs while loading is aborted by the start timeout and restarted."""
    t = time.monotonic()
    pid = _stopped_while_loading()
    if pid is None:
        return {"ok": False, "error": "the player never reached 'activating' with a pid"}
    restarted = wait_for(lambda: main_pid() not in (0, pid), START_TIMEOUT, 1)
    t_restart = time.monotonic()
    note = recorder.wait_note_after(t_restart, 300) if restarted else None
    lines = [message(e) for e in journal("-u", UNIT, "-b") if "timed out" in message(e).lower()]
    return {"ok": bool(restarted and note is not None and lines), "stopped_pid": pid, "new_pid": main_pid(),
            "to_restart_s": round(t_restart - t, 1), "to_note_s": note and round(note - t, 1),
            "timeout_line": lines[-1] if lines else None}


def web_bad_config_check() -> dict:
    """An unknown key: the web unit exits 2 and stays failed; fixed, it answers again."""
    good = CONFIG.read_text()
    CONFIG.write_text(good + "tempo = 100\n")
    t = time.monotonic()
    try:
        subprocess.run(["systemctl", "restart", "--no-block", WEB_UNIT], capture_output=True)
        failed = wait_for(lambda: active_state(WEB_UNIT) == "failed", 120, 0.5)
        stayed = failed and not wait_for(lambda: active_state(WEB_UNIT) != "failed", 12, 0.5)  # > RestartSec
        state = show(WEB_UNIT)
        entries = [e for e in journal("-u", WEB_UNIT, "-b") if int(e["__MONOTONIC_TIMESTAMP"]) / 1e6 > t]
        named = [message(e) for e in entries if "unknown key 'tempo'" in message(e) and str(CONFIG) in message(e)]
        starts = [e for e in entries if message(e).startswith("Started") or message(e).startswith("Starting")]
    finally:
        CONFIG.write_text(good)
    subprocess.run(["systemctl", "reset-failed", WEB_UNIT], capture_output=True)
    subprocess.run(["systemctl", "start", WEB_UNIT], capture_output=True)
    back = wait_for(answering, 120, 0.5)
    return {"ok": bool(stayed and named and state.get("ExecMainStatus") == "2" and back),
            "stayed_failed": stayed, "exit_status": state.get("ExecMainStatus"), "result": state.get("Result"),
            "starts": len(starts), "journal_line": named[-1] if named else None, "fixed_answers": back}


def set_settings() -> dict:
    """Boot 1, before the reboot: key and tempo from the page; the overrides file holds them."""
    token = _token()
    code, answer = api("POST", "/api/settings", token, {"key": SET_KEY, "bpm": SET_BPM})
    kept = wait_for(lambda: OVERRIDES.exists() and _held(json.loads(OVERRIDES.read_text())), 10, 0.2)
    return {"ok": code == 200 and kept, "status": code, "live": answer.get("live"), "overrides_written": kept}


def _held(overrides: dict) -> bool:
    return overrides.get("key") == SET_KEY and float(overrides.get("bpm", 0)) == SET_BPM


def settings_survive_reboot_check(recorder, set_before: dict) -> dict:
    """Boot 2: the first notes are in the key and at the tempo set before the reboot."""
    first = recorder.wait_note_after(0.0, 300)
    if first is None:
        return {"ok": False, "error": "no note after the reboot"}
    time.sleep(max(0.0, first + FIRST_NOTES_SECONDS - time.monotonic()))
    events = [e for e in recorder.snapshot() if first <= e.t <= first + FIRST_NOTES_SECONDS]
    notes = [(e.t, e.a) for e in events if e.kind == "note_on"]
    key = _key_of([p for _, p in notes])
    tpq = ticks_per_quarter()
    onsets = chord_onsets(events, first, first + FIRST_NOTES_SECONDS)
    at_set = onset_grid(onsets, SET_BPM, tpq, GRID_TOLERANCE)
    at_config = onset_grid(onsets, CONFIG_BPM, tpq, GRID_TOLERANCE)
    _, status = _poll(_token(), lambda s: s.get("playing") is True, 60, 0.5)
    reset = api("POST", "/api/reset", _token())[0]   # back to the config for the checks after
    return {"ok": bool(set_before.get("ok") and key == SET_KEY and at_set["on_grid"] >= 0.6 and at_set["on_grid"] > at_config["on_grid"]
                       and status.get("bpm") == SET_BPM),
            "set_before_reboot": set_before, "notes": len(notes), "key_heard": key, "key_set": SET_KEY, "status_bpm": status.get("bpm"),
            "on_set_grid": at_set, "on_config_grid": at_config, "reset_status": reset}


def _key_of(pitches: list[int]) -> str | None:
    """Krumhansl-Schmuckler key of the pitches, by the product's own playbach.keys."""
    if not pitches:
        return None
    code = "import json,sys; from playbach.keys import find_key; print(find_key(json.load(sys.stdin)))"
    out = subprocess.run([VENV_PYTHON, "-c", code], input=json.dumps(pitches), capture_output=True, text=True,
                         timeout=120)
    return out.stdout.strip() or None
