"""The --with-fluidsynth check: no USB synth, FluidSynth plays through snd-aloop, and what
comes out of the loopback's capture side is measured (it must not be silence)."""
from __future__ import annotations

import array
import math
import re
import time
from pathlib import Path

from gadget import MidiGadget
from guest import UNIT, active_state, first_port_line, journal, run, set_config_key, wait_for

SYNTH_UNIT = "playbach-fluidsynth.service"
ENV_FILE = Path("/etc/playbach/fluidsynth.env")
PLAYBACK_PARAMS = Path("/proc/asound/Loopback/pcm0p/sub0/hw_params")
SILENT_DBFS = -70.0
CODE_FILE = Path("/root/playbach/device/__init__.py")
VENV_SITE = Path("/opt/playbach/venv/lib")
FORMATS = {"S16_LE": ("h", 2 ** 15), "S32_LE": ("i", 2 ** 31), "FLOAT_LE": ("f", 1.0)}


def dbfs(raw: bytes, fmt: str) -> tuple[float, float]:
    """RMS and peak level of interleaved samples, in dB relative to full scale."""
    code, full = FORMATS[fmt]
    samples = array.array(code)
    samples.frombytes(raw[: len(raw) - len(raw) % samples.itemsize])
    if not samples:
        return -math.inf, -math.inf
    rms = math.sqrt(sum(float(x) * x for x in samples) / len(samples)) / full
    peak = max(abs(float(x)) for x in samples) / full
    db = lambda v: round(20 * math.log10(v), 1) if v > 0 else -math.inf  # noqa: E731
    return db(rms), db(peak)


def code_update() -> str:
    """A change to the checkout's code, as a `git pull` brings one (the VM has no network)."""
    mark = f"# pi-vm: an update installed offline ({time.time_ns()})"
    with CODE_FILE.open("a") as f:
        f.write(mark + "\n")
    return mark


def update_installed(mark: str) -> bool:
    """Whether the venv's copy of the changed file has the change."""
    copies = list(VENV_SITE.glob("python3*/site-packages/playbach/device/__init__.py"))
    return len(copies) == 1 and mark in copies[0].read_text()


def fluidsynth_check(config: Path, synth: MidiGadget) -> dict:
    # as a Pi user without a hardware synth: unplug it, put `port` back to the shipped "",
    # point FluidSynth at the (loopback) sound card, run the installer with --with-fluidsynth
    run("systemctl", "stop", UNIT, timeout=120)
    synth.remove()
    set_config_key(config, "port", '""')
    ENV_FILE.write_text("AUDIO_DEVICE=hw:Loopback,0\n")
    # and an update of the code with it: install.sh reinstalls playbach with no network
    mark = code_update()
    t = time.monotonic()
    # --with-web too: this Pi has the control page, and install.sh without it would pip-install
    # the venv again without the web extra (the stamp names the extras), which needs the network
    inst = run("bash", "-c", "cd /root/playbach && systemd/install.sh --with-fluidsynth --with-web", timeout=600)
    figures: dict = {"install_rc": inst.returncode, "install_output": (inst.stdout + inst.stderr)[-600:],
                     "offline_update": "(no network)" in inst.stdout and update_installed(mark)}
    # install.sh restarts the player as its last step (--no-block): the player to listen to is
    # the one whose port line comes after install.sh has returned
    installed = time.monotonic()
    figures["synth_active"] = wait_for(lambda: active_state(SYNTH_UNIT) == "active", 120)
    wait_for(lambda: first_port_line(journal("-u", UNIT, "-b"), installed) is not None, 300, 2)
    figures["player_active"] = wait_for(lambda: active_state() == "active", 300, 1)
    port = first_port_line(journal("-u", UNIT, "-b"), installed)
    figures["port_line"] = port and port[1]
    figures["install_to_ready_s"] = round(time.monotonic() - t, 1)
    params = PLAYBACK_PARAMS.read_text() if PLAYBACK_PARAMS.exists() else ""
    fmt = re.search(r"^format: (\S+)", params, re.M)
    rate = re.search(r"^rate: (\d+)", params, re.M)
    channels = re.search(r"^channels: (\d+)", params, re.M)
    if not (fmt and rate and channels):
        figures.update(ok=False, error=f"FluidSynth has no stream open on hw:Loopback,0: {params.strip()!r}")
        return figures
    figures["stream"] = f"{fmt.group(1)} {rate.group(1)} Hz x{channels.group(1)}"
    cap = Path("/tmp/capture.raw")
    rec = run("arecord", "-q", "-D", "hw:Loopback,1,0", "-f", fmt.group(1), "-r", rate.group(1),
              "-c", channels.group(1), "-d", "5", "-t", "raw", str(cap), timeout=60)
    if rec.returncode != 0 or not cap.exists():
        figures.update(ok=False, error=f"arecord failed: {rec.stderr.strip()}")
        return figures
    figures["dbfs"], figures["peak_dbfs"] = dbfs(cap.read_bytes(), fmt.group(1))
    figures["ok"] = (inst.returncode == 0 and figures["offline_update"] and figures["player_active"] and "playbach-synth" in (figures["port_line"] or "")
                     and figures["dbfs"] > SILENT_DBFS)
    return figures


def synth_back(config: Path, synth: MidiGadget) -> None:
    """The USB synth plugged in again and named in `port` (as the image has it), for what comes
    after this check: the power-cut take is heard at the synth."""
    set_config_key(config, "port", '"PiVM Synth"')
    synth.create()
    synth.plug()
