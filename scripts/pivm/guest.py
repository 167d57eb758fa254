"""Small helpers the in-guest agent uses: the console markers, systemd, the journal, results.

Markers are single lines `PIVM <name> <json>` written straight to the serial console
(/dev/ttyAMA0), which the host driver reads and timestamps on its own clock. Every marker
carries the guest's CLOCK_MONOTONIC (`mono`), so the host can map guest times (systemd's
*TimestampMonotonic, the journal's __MONOTONIC_TIMESTAMP, the recorder's) onto its clock.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

STATE = Path("/var/lib/pivm")
RESULTS = STATE / "results.json"
UNIT = "playbach.service"
OVERRIDES = Path("/var/lib/playbach/overrides.json")   # the unit's --overrides: live changes kept


class Console:
    def __init__(self) -> None:
        try:
            self.tty = open("/dev/ttyAMA0", "w", buffering=1)
        except OSError:
            self.tty = open("/dev/console", "w", buffering=1)
        self.log = open(STATE / "agent.log", "a", buffering=1)

    def mark(self, name: str, **data) -> None:
        data["mono"] = round(time.monotonic(), 3)
        line = f"PIVM {name} {json.dumps(data, separators=(',', ':'))}"
        # a leading newline: the kernel or systemd may have left a partial line on the console
        self.tty.write("\r\n" + line + "\r\n")
        self.log.write(line + "\n")


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command's result; a timeout is an error result (exit 124), never a hang."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {timeout} s")


def show(unit: str = UNIT, *props: str) -> dict[str, str]:
    """`systemctl show` of a unit (or of the manager, unit=""), as a dict."""
    names = ",".join(props or ("ActiveState", "SubState", "MainPID", "Result", "NRestarts"))
    cmd = ["systemctl", "show", "-p", names] + ([unit] if unit else [])
    out = run(*cmd).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def active_state(unit: str = UNIT) -> str:
    return show(unit, "ActiveState").get("ActiveState", "")


def main_pid(unit: str = UNIT) -> int:
    return int(show(unit, "MainPID").get("MainPID", "0") or 0)


def mono_prop(unit: str, prop: str) -> float | None:
    """A systemd *TimestampMonotonic property in seconds (None when unset)."""
    value = int(show(unit, prop).get(prop, "0") or 0)
    return value / 1e6 if value else None


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def journal(*args: str) -> list[dict]:
    """Journal entries as dicts (`journalctl -o json`), e.g. journal("-u", UNIT, "-b")."""
    out = run("journalctl", "--no-pager", "-o", "json", *args, timeout=180).stdout
    entries = []
    for line in out.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def message(entry: dict) -> str:
    msg = entry.get("MESSAGE", "")
    return msg if isinstance(msg, str) else bytes(msg).decode("utf-8", "replace")


def entry_mono(entry: dict) -> float:
    return int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6


def first_message(entries: list[dict], text: str, after: float = 0.0) -> tuple[float, str] | None:
    """(monotonic time, message) of the first entry after `after` whose message contains `text`."""
    for e in entries:
        if text in message(e) and entry_mono(e) > after:
            return entry_mono(e), message(e)
    return None


def first_port_line(entries: list[dict], after: float) -> tuple[float, str] | None:
    """The player's "port ... open" line (its wording has changed: both are accepted)."""
    for text in ("playing to port", "output port"):
        found = first_message(entries, text, after)
        if found:
            return found
    return None


def load_results() -> dict:
    try:
        return json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {"checks": {}}


def save_results(results: dict) -> None:
    tmp = RESULTS.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, RESULTS)


def edit_config(path: Path, values: dict[str, str]) -> str:
    """A user's edits to a config (each key set to its TOML text); the file as it was, to put back."""
    before = path.read_text()
    for key, value in values.items():
        set_config_key(path, key, value)
    return before


def set_config_key(path: Path, key: str, value: str) -> None:
    """Set `key = value` in a TOML file of top-level keys, as a user editing it would."""
    lines = path.read_text().splitlines()
    new = [f"{key} = {value}" if line.split("=")[0].strip() == key else line for line in lines]
    if new == lines and not any(line.split("=")[0].strip() == key for line in lines):
        new.append(f"{key} = {value}")
    path.write_text("\n".join(new) + "\n")
