"""The JSON that scripts/pi-vm.sh writes: the agent's figures, put on the host's clock, as checks.

Guest times are CLOCK_MONOTONIC of the boot they were taken in; `offsets[boot - 1]` turns
them into seconds since qemu started (the host timestamps each console marker on arrival).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recorder import balance, read_log   # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# (key, check, how the check's figures give the key's value)
HEADLINE = {
    "stop_notes_ended": ("stop", lambda c: c.get("ok")),
    "kill9_restart_to_note_s": ("kill9", lambda c: c.get("to_note_s")),
    "watchdog_restart_to_note_s": ("watchdog", lambda c: c.get("to_note_s")),
    "unplug_cycles": ("unplug", lambda c: c.get("cycles")),
    "unplug_resumed": ("unplug", lambda c: c.get("resumed")),
    "unplug_note_on_before_all_notes_off": ("unplug", lambda c: c.get("note_on_before_all_off")),
    "reboot_plays": ("reboot", lambda c: c.get("ok")),
    "bad_config_failed_cleanly": ("bad_config", lambda c: c.get("ok")),
    "fluidsynth_audio_dbfs": ("fluidsynth", lambda c: c.get("dbfs")),
    "install_offline_update": ("fluidsynth", lambda c: c.get("offline_update")),
    "security_exposure": ("security", lambda c: c.get("exposure")),
    "udev_plug_starts_service": ("udev_plug", lambda c: c.get("ok")),
    "udev_coral_group_mode": ("udev_coral", lambda c: c.get("group") and f"{c.get('group')} {c.get('mode')}"),
    "web_page_and_auth": ("web", lambda c: c.get("page") and
                          f"GET / {c['page'].get('status')}, no token {c.get('no_token_status')}, "
                          f"wrong token {c.get('wrong_token_status')}, login {c.get('login_status')}, "
                          f"cookie {c.get('cookie_status')}"),
    "web_tempo_measured_bpm": ("web", lambda c: c.get("tempo") and
                               [c["tempo"]["onsets_before"].get("measured_bpm"),
                                c["tempo"]["onsets_after"].get("measured_bpm")]),
    "web_tempo_onsets_on_grid": ("web", lambda c: c.get("tempo") and c["tempo"]["onsets_after"].get("on_grid")),
    "web_player_killed_to_not_connected_s": ("web_player_killed", lambda c: c.get("to_not_connected_s")),
    "web_player_killed_to_playing_s": ("web_player_killed", lambda c: c.get("to_playing_s")),
    "web_no_synth_answers": ("web_no_synth", lambda c: c.get("ok")),
    "web_security_exposure": ("security", lambda c: (c.get("web") or {}).get("exposure")),
    # issue 24: the player following the synth's MIDI clock, onsets on the clock source's grid
    "clock_follow_p99_ms": ("clock_follow", lambda c: c.get("p99_beyond_transport_ms")),
    "clock_follow_notes_on_grid": ("clock_follow", lambda c: c.get("notes_on_grid")),
    "clock_follow_due_on_grid": ("clock_follow", lambda c: c.get("due_on_grid")),
    "clock_follow_sent_after_due_p99_ms": ("clock_follow", lambda c: c.get("sent_after_due_p99_ms")),
    # issues 22 and 23: a hung start recovered, a bad config failing cleanly, settings that last
    "hung_start_recovered": ("hung_start", lambda c: c.get("ok")),
    "web_bad_config_failed_cleanly": ("web_bad_config", lambda c: c.get("ok")),
    "settings_survive_reboot": ("settings_survive_reboot", lambda c: c.get("ok")),
    "four_voices_on_their_channels": ("four_voices", lambda c: c.get("ok")),
    "take_segments_after_power_cut": ("power_cut", lambda c: c.get("ok")),
}
ORDER = ["boot", "web", "stop", "kill9", "watchdog", "web_player_killed", "unplug", "udev_plug", "udev_coral",
         "bad_config", "web_no_synth", "security", "clock_follow", "hung_start", "web_bad_config", "four_voices",
         "reboot", "settings_survive_reboot", "fluidsynth", "power_cut", "notes", "journal"]


def r2(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def boot_split(boot: dict, offset: float) -> tuple[dict, float | None, float | None]:
    """boot_to_ready_s, boot_to_first_note_s and how the time splits (all from qemu's start)."""
    host = lambda mono: None if mono is None else mono + offset   # noqa: E731
    marks = [("kernel_and_initrd", boot.get("userspace_start_mono")),
             ("systemd_to_player_start", boot.get("playbach_exec_mono")),
             ("python_imports_and_config", boot.get("imports_done_mono")),
             ("model_load", boot.get("model_loaded_mono")),
             ("waiting_for_port", boot.get("port_opened_mono")),
             ("port_to_first_note", boot.get("first_note_mono"))]
    split, previous = {"qemu_to_kernel": r2(offset)}, offset
    for name, mono in marks:
        if mono is None:
            split[name] = None
            continue
        split[name] = r2(host(mono) - previous)
        previous = host(mono)
    split["note"] = ("kernel_and_initrd: guest monotonic time when systemd started; python_imports_and_config: "
                     "from ExecMainStart to the end of the player's imports (its 'started in' line says how long the model load took); "
                     "model_load: to its 'model ... on ...' line; "
                     "waiting_for_port: to 'playing to port'")
    if boot.get("systemd_finish_mono"):
        split["systemd_boot_finished_at"] = r2(host(boot["systemd_finish_mono"]))
    return split, r2(host(boot.get("ready_mono"))), r2(host(boot.get("first_note_mono")))


def image_build(args: argparse.Namespace) -> dict:
    """What build.sh recorded about the image (suite, the venv's Python, rtmidi's origin, sizes)."""
    try:
        return json.loads(Path(args.image, "build.json").read_text())
    except (OSError, ValueError):
        return {}


def environment(args: argparse.Namespace) -> dict:
    qemu = subprocess.run(["qemu-system-aarch64", "--version"], capture_output=True, text=True).stdout
    return {"emulated": "qemu-system-aarch64 -M virt -cpu cortex-a72 (the Pi 4's core), TCG, 2 vCPUs, 1.5 GB; "
                        "an upper bound for a Pi 4, not its speed",
            "qemu": qemu.splitlines()[0] if qemu else None, "host_cpus": os.cpu_count(),
            "host_machine": platform.machine(), "host_load_avg": [round(x, 2) for x in os.getloadavg()],
            "image": Path(args.image).name, "image_build": image_build(args) or None}


def build_report(results: dict, offsets: list[float], markers: list, args: argparse.Namespace,
                 serial_log: Path, guest_dir: Path, failed_step: str | None) -> dict:
    checks: dict = dict(results.get("checks", {}))
    r: dict = {"what": "issues 10, 20 and 24: the appliance booted in an emulated Raspberry Pi 4 (scripts/pi-vm.sh)",
               "suite": args.suite, "python": image_build(args).get("python"), "checks_asked": args.checks}
    if "boot" in checks and offsets:
        split, r["boot_to_ready_s"], r["boot_to_first_note_s"] = boot_split(checks["boot"], offsets[0])
        r["boot_split_s"] = split
        checks["boot"]["boot_to_ready_s"] = r["boot_to_ready_s"]
        checks["boot"]["boot_to_first_note_s"] = r["boot_to_first_note_s"]
    if "web" in checks and offsets:
        web = checks["web"]   # power-on to the unit active and to the page answering, on the host's clock
        for key, mono in (("boot_to_web_active_s", web.get("active_mono")),
                          ("boot_to_web_answering_s", web.get("answering_mono"))):
            r[key] = checks["web"][key] = r2(mono + offsets[0]) if mono is not None else None
    if "reboot" in checks and len(offsets) > 1:
        note = checks["reboot"].get("first_note_mono")
        r["reboot_to_first_note_s"] = r2(note)   # guest monotonic: from the second kernel's start
    # notes at the synth over the whole run, per boot (a reboot or the power cut ends one stream):
    # the synth heard every boot the agent came up in
    synth = results.get("synth", {})
    if (guest_dir / "midi.log").exists():
        r["midi_log_events"] = len(read_log(guest_dir / "midi.log"))
    r["notes_received"] = sum(b.get("note_ons", 0) for b in synth.values())
    r["stuck_notes"] = sum(len(b.get("stuck", [])) for b in synth.values())
    checks["notes"] = {"ok": r["notes_received"] > 0 and r["stuck_notes"] == 0 and len(synth) == len(offsets),
                       "boots": len(offsets), "per_boot": synth}
    for key, (name, get) in HEADLINE.items():
        r[key] = get(checks[name]) if name in checks else None
    tracebacks = results.get("tracebacks_in_journal")
    r["tracebacks_in_journal"] = tracebacks
    checks["journal"] = {"ok": tracebacks == 0, "tracebacks": tracebacks, "lines": results.get("tracebacks_lines")}
    # a check the image cannot have (pi-vm.sh --from-image: a card without FluidSynth) is named
    # with the reason, and is neither passed nor failed
    not_applicable = dict(image_build(args).get("not_applicable", {}))
    if args.checks != "all":   # --checks: the ones not asked for are neither passed nor failed either
        asked = set(args.checks.split(","))
        not_applicable |= {name: "not asked for (--checks)" for name in ORDER if name not in asked | set(checks)}
    for name in ORDER:
        checks.setdefault(name, {"ok": None, "not_applicable": not_applicable[name]} if name in not_applicable
                          else {"ok": False, "error": "not run"})
    r["checks"] = {name: checks[name] for name in ORDER} | {k: v for k, v in checks.items() if k not in ORDER}
    r["check_ok"] = {name: bool(c.get("ok")) for name, c in r["checks"].items() if name not in not_applicable}
    r["not_applicable"] = sorted(not_applicable)
    r["failed"] = [name for name, ok in r["check_ok"].items() if not ok]
    r["failed_step"] = failed_step
    r["ok"] = not r["failed"] and failed_step is None
    r["seconds"] = {"build": args.build_seconds,
                    "run": r2(markers[-1][0]) if markers else None}
    r["serial_log"] = os.path.relpath(serial_log, REPO) if serial_log.is_relative_to(REPO) else str(serial_log)
    r["guest_files"] = os.path.relpath(guest_dir, REPO)
    r["environment"] = environment(args)
    return r


if __name__ == "__main__":   # recount a run's notes from its recorder log: report.py midi.log
    b = balance(read_log(sys.argv[1]))
    print({"note_ons": b.note_ons, "stuck": b.stuck()})
