"""Checks that what should last does, and what should fail fails cleanly (issues 10, 22 and 23).

`bad_config_check`     an unknown key in config.toml: the journal names file and key, the player's
                       unit ends failed (no restart loop), the fix plays (bad_config_failed_cleanly)
`hung_start_check`     the player stops dead while it loads (SIGSTOP before READY=1): systemd's
                       finite start timeout aborts it and the restart plays (hung_start_recovered)
`web_bad_config_check` an unknown key in config.toml: playbach-web exits 2, the journal names
                       file and key, systemd leaves it failed (no restart loop), the fix answers
                       again (web_bad_config_failed_cleanly)
`set_settings`, `settings_survive_reboot_check`
                       before the reboot the page sets key and tempo; after it, the first notes
                       at the synth are in that key (Krumhansl-Schmuckler, in the product venv)
                       and on that tempo's grid (settings_survive_reboot)
`power_cut_prepare`, `power_cut`, `power_cut_check`
                       a take recorded in segments, the power pulled mid-take (SysRq reset, no
                       sync), and after the next boot every segment written before is whole
                       (take_segments_after_power_cut)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from clock import TIMING_PLAN
from guest import OVERRIDES, UNIT, active_state, entry_mono, journal, main_pid, message, run, set_config_key, show, wait_for
from web import WEB_UNIT, _poll, _token, api, answering, chord_onsets, onset_grid, ticks_per_quarter

CONFIG = Path("/etc/playbach/config.toml")
VENV_PYTHON = "/opt/playbach/venv/bin/python"
SET_KEY, SET_BPM, CONFIG_BPM = "D minor", 150.0, 90.0
FIRST_NOTES_SECONDS = 15.0     # the first notes after the reboot that are judged
GRID_TOLERANCE = 0.025         # s: tight enough that a 90 BPM take cannot fit a 150 BPM grid
NOTE_TIMEOUT = 300             # s: the slowest start seen under TCG is well under this
START_TIMEOUT = 120 + 20 + 60  # TimeoutStartSec, then TimeoutStopSec, then slack
TAKES = Path("/var/lib/playbach/takes")   # a record folder in the player's state
SEGMENT_MINUTES = 0.25         # 15 s a segment, so a short take writes a few (the recorder's GRACE is 30 s)
CUT_AFTER_SECONDS = 100        # of play before the cut: the segments that ended by 70 s are on disk
SEGMENTS_BEFORE_CUT = 2        # ... at least this many (waited for: an emulated CPU plays behind the wall clock)
SEGMENTS_WAIT = 300            # seconds at most, after CUT_AFTER_SECONDS


def bad_config_check(recorder) -> dict:
    """An unknown key: the journal names file and key, the unit ends failed, a fix plays again."""
    good = CONFIG.read_text()
    CONFIG.write_text(good + "tempo = 100\n")
    t = time.monotonic()
    run("systemctl", "restart", "--no-block", UNIT)
    # failed, and still failed a restart delay later (RestartPreventExitStatus=2: no retry;
    # without it systemd 252 retries up to the start limit, then logs "Start request
    # repeated too quickly" and keeps the last result, exit-code)
    def gave_up() -> bool:
        return active_state() == "failed" and not wait_for(lambda: active_state() != "failed", 7, 0.5)
    limit = wait_for(gave_up, 300, 1)
    t_failed = time.monotonic() - 7
    state = show(UNIT)
    entries = journal("-u", UNIT, "-b")
    starts = [e for e in entries if message(e).startswith("Starting playbach") and entry_mono(e) > t]
    named = [e for e in entries if "unknown key 'tempo'" in (m := e.get("MESSAGE", "")) and str(CONFIG) in m]
    fails = [int(e["__MONOTONIC_TIMESTAMP"]) / 1e6 for e in named]
    fails = [f for f in fails if f > t]
    CONFIG.write_text(good)
    run("systemctl", "reset-failed", UNIT)
    run("systemctl", "start", "--no-block", UNIT)
    t_fixed = time.monotonic()
    note = recorder.wait_note_after(t_fixed, NOTE_TIMEOUT)
    gaps = [round(b - a, 1) for a, b in zip(fails, fails[1:])]
    return {"ok": limit and bool(fails) and note is not None, "stayed_failed": limit,
            "result": state.get("Result"), "active_state": state.get("ActiveState"),
            "failures_logged": len(fails), "starts": len(starts), "journal_line": named[-1]["MESSAGE"] if named else None,
            "seconds_between_failures": gaps, "to_failed_s": round(t_failed - t, 1),
            "fixed_to_note_s": note and round(note - t_fixed, 2)}


def _stopped_while_loading(timeout: float = 120) -> int | None:
    """Restart the player and SIGSTOP it once it runs but before it is ready; its pid."""
    run_restart = run("systemctl", "restart", "--no-block", UNIT)
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
        run("systemctl", "restart", "--no-block", WEB_UNIT)
        failed = wait_for(lambda: active_state(WEB_UNIT) == "failed", 120, 0.5)
        stayed = failed and not wait_for(lambda: active_state(WEB_UNIT) != "failed", 12, 0.5)  # > RestartSec
        state = show(WEB_UNIT, "ActiveState", "Result", "ExecMainStatus")
        entries = [e for e in journal("-u", WEB_UNIT, "-b") if int(e["__MONOTONIC_TIMESTAMP"]) / 1e6 > t]
        named = [message(e) for e in entries if "unknown key 'tempo'" in message(e) and str(CONFIG) in message(e)]
        starts = [e for e in entries if message(e).startswith("Starting")]
    finally:
        CONFIG.write_text(good)
    run("systemctl", "reset-failed", WEB_UNIT)
    run("systemctl", "start", WEB_UNIT)
    back = wait_for(answering, 120, 0.5)
    return {"ok": bool(stayed and named and state.get("ExecMainStatus") == "2" and back),
            "stayed_failed": stayed, "exit_status": state.get("ExecMainStatus"), "result": state.get("Result"),
            "starts": len(starts), "journal_line": named[-1] if named else None, "fixed_answers": back}


def set_settings() -> dict:
    """Boot 1, before the reboot: key and tempo from the page; the overrides file holds them."""
    token = _token()
    # as a person would: once the page says the player is there (a check before may have restarted
    # it, and the page's link to it comes back some seconds after its first note)
    ready, _ = _poll(token, lambda s: s.get("connected") is True and s.get("playing") is True, 60, 0.5)
    # planning off too (a setting that must survive as well): the tempo is judged by the onsets'
    # grid, and with 8 continuations a beat the emulated player falls behind it (clock.TIMING_PLAN)
    code, answer = api("POST", "/api/settings", token, {"key": SET_KEY, "bpm": SET_BPM, "plan": TIMING_PLAN})
    kept = wait_for(lambda: OVERRIDES.exists() and _held(json.loads(OVERRIDES.read_text())), 10, 0.2)
    return {"ok": code == 200 and kept, "status": code, "live": answer.get("live"), "overrides_written": kept,
            "page_said_playing": ready is not None}


def _held(overrides: dict) -> bool:
    return (overrides.get("key") == SET_KEY and float(overrides.get("bpm", 0)) == SET_BPM
            and overrides.get("plan") == TIMING_PLAN)


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
                       and status.get("bpm") == SET_BPM
                       and (status.get("live") or {}).get("plan") == TIMING_PLAN),
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


def power_cut_prepare(recorder) -> dict:
    """Boot 2, last: a take into a record folder of short segments, played long enough that some
    are written; the segments there just before the power goes."""
    set_config_key(CONFIG, "record", f'"{TAKES}"')
    set_config_key(CONFIG, "record_minutes", str(SEGMENT_MINUTES))
    run("systemctl", "restart", UNIT, timeout=300)
    t = time.monotonic()
    first = recorder.wait_note_after(t, 300)
    time.sleep(CUT_AFTER_SECONDS)
    deadline = time.monotonic() + SEGMENTS_WAIT
    while len(list(TAKES.glob("*.mid"))) < SEGMENTS_BEFORE_CUT and time.monotonic() < deadline:
        time.sleep(1.0)
    segments = {p.name: p.stat().st_size for p in sorted(TAKES.glob("*.mid"))}
    return {"ok": first is not None, "restart_to_note_s": first and round(first - t, 1),
            "played_s": first and round(time.monotonic() - first, 1), "segments_before_cut": segments}


def power_cut() -> None:
    """The plug pulled: an immediate reset, nothing synced or unmounted (magic SysRq 'b')."""
    Path("/proc/sys/kernel/sysrq").write_text("1\n")
    Path("/proc/sysrq-trigger").write_text("b\n")


def power_cut_check(recorder, before: dict) -> dict:
    """Boot 3: every segment that was on disk before the cut is there and whole (a MIDI file
    that parses, with notes); no half-written file was left under a segment's name; it plays."""
    note = recorder.wait_note_after(0.0, NOTE_TIMEOUT)
    present = sorted(p for p in TAKES.iterdir()) if TAKES.is_dir() else []
    segments = [p for p in present if p.suffix == ".mid"]
    code = ("import json,sys,mido\nout={}\nfor p in sys.argv[1:]:\n try: out[p]=sum(m.type=='note_on' and m.velocity>0 "
            "for t in mido.MidiFile(p).tracks for m in t)\n except Exception as e: out[p]=repr(e)\nprint(json.dumps(out))")
    parsed = subprocess.run([VENV_PYTHON, "-c", code, *map(str, segments)], capture_output=True, text=True, timeout=300)
    notes = json.loads(parsed.stdout or "{}")
    whole = {Path(p).name: n for p, n in notes.items() if isinstance(n, int) and n > 0}
    kept = before.get("segments_before_cut", {})
    lost = sorted(name for name in kept if name not in whole)
    return {"ok": bool(before.get("ok") and len(kept) >= SEGMENTS_BEFORE_CUT and not lost and len(whole) == len(segments)
                       and note is not None), "plays_after_cut_mono": note,
            "segments_before_cut": len(kept), "segments_after": len(segments), "whole": len(whole),
            "lost_of_those_before": lost, "not_whole": {Path(p).name: n for p, n in notes.items() if Path(p).name not in whole},
            "other_files": [p.name for p in present if p.suffix != ".mid"], "notes_per_segment": whole,
            "played_before_cut_s": before.get("played_s")}
