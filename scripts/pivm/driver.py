"""Host side of scripts/pi-vm.sh: boot the image in qemu, follow the serial console, write the JSON.

Stdlib only (the host's python3). qemu's serial console is a pipe; every line is timestamped on
the host's monotonic clock and kept in the serial log beside the JSON. The in-guest agent
(agent.py) prints `PIVM <name> <json>` marker lines; this driver only watches them, bounds every
wait, maps guest times onto its own clock, and turns the agent's figures into the report. qemu
is killed by pid on every way out (a Python `finally`, SIGTERM/SIGINT included).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"PIVM (\S+) (\{.*\})")
BOOT_TIMEOUT = 400        # s from qemu's start to the agent's first marker, each boot
QEMU_EXIT_TIMEOUT = 120   # s from the agent's "done" to qemu's exit (poweroff)
GUEST_FILES = ("results.json", "journal.txt", "midi.log", "agent.log", "agent-errors.txt", "clock-take.json")
# The agent, written into each run's copy of the disk (not built into the image: changing a
# check does not rebuild it), with the list of checks to run when --checks names some.
AGENT_FILES = ("agent.py", "guest.py", "gadget.py", "recorder.py", "fluid.py", "web.py", "clock.py",
               "clockmeasure.py", "lasting.py", "voices.py")
AGENT_DIR = "/opt/pivm"


class StepFailed(Exception):
    """A step that is not one of the checks (boot, install) failed: nothing to measure after it."""


class Console(threading.Thread):
    """Reads qemu's serial output line by line; markers go to a queue, everything to the log."""

    def __init__(self, stream, log_path: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.t0 = stream, t0
        self.log = open(log_path, "w", buffering=1)
        self.markers: queue.Queue = queue.Queue()
        self.panic = False

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            t = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            self.log.write(f"[{t - self.t0:9.3f}] {line}\n")
            self.panic = self.panic or "Kernel panic" in line
            m = MARKER.search(line)
            if m:
                try:
                    self.markers.put((t, m.group(1), json.loads(m.group(2))))
                except ValueError:
                    self.log.write(f"[{t - self.t0:9.3f}] (driver: unreadable marker)\n")
        self.markers.put((time.monotonic(), "eof", {}))


def qemu_command(image: Path, disk: Path, boot: Path | None = None) -> list[str]:
    """The root first (the kernel's /dev/vda); a card's FAT partition, where there is one, second."""
    drives = [disk] + ([boot] if boot else [])
    return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-accel", "tcg,thread=multi",
            "-smp", "2", "-m", "1536", "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
            "-append", "root=/dev/vda rw console=ttyAMA0 quiet loglevel=3 panic=10",
            *[a for d in drives for a in ("-drive", f"file={d},format=raw,if=virtio,cache=unsafe")],
            "-device", "virtio-rng-pci", "-nic", "none", "-display", "none", "-monitor", "none",
            "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]


def debugfs_write(disk: Path, commands: list[str]) -> subprocess.CompletedProcess:
    """Commands run by debugfs on the (not running) ext4 image, which it may change; no mount."""
    script = "\n".join(commands) + "\n"
    return subprocess.run(["debugfs", "-w", "-f", "-", str(disk)], input=script,
                          capture_output=True, text=True, timeout=120)


def debugfs_cat(disk: Path, path: str) -> str:
    """A file's bytes in the image, as text (-R: nothing but the file on stdout)."""
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(disk)], capture_output=True, text=True,
                          timeout=120).stdout


def inject_agent(disk: Path, checks: str, work: Path) -> None:
    """Write the agent's files (and its check list) into /opt/pivm of the disk copy, root-owned
    0644, and read each back: a run never tests an agent other than this checkout's."""
    here = Path(__file__).parent
    files = {name: here / name for name in AGENT_FILES}
    listing = work / "checks"
    listing.write_text(checks + "\n")
    files["checks"] = listing
    commands = [f"cd {AGENT_DIR}"]
    for name, src in files.items():
        commands += [f"rm {name}", f"write {src} {name}", f"sif {name} mode 0100644", f"sif {name} uid 0",
                     f"sif {name} gid 0"]
    debugfs_write(disk, commands)
    for name, src in files.items():
        if debugfs_cat(disk, f"{AGENT_DIR}/{name}") != src.read_text():
            raise StepFailed(f"setup: could not write {AGENT_DIR}/{name} into {disk} with debugfs")


def extract(disk: Path, dest: Path) -> None:
    """Copy the agent's files out of the (powered-off) ext4 image; no mount needed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in GUEST_FILES:
        subprocess.run(["debugfs", "-R", f"dump /var/lib/pivm/{name} {dest / name}", str(disk)],
                       capture_output=True, timeout=120)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.image = Path(args.image)
        self.out = Path(args.json)
        self.serial_log = self.out.with_suffix(".serial.log")
        self.work = REPO / f".cache/pi-vm/run-{args.suite}"
        self.markers: list[tuple[float, str, dict]] = []   # (host seconds since qemu start, name, data)
        self.current = "boot"                              # the step or check under way
        self.proc: subprocess.Popen | None = None

    def boot(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.disk = self.work / "disk.img"
        # a copy per run: the cached image stays as built (sparse: a few seconds)
        subprocess.run(["cp", "--sparse=always", str(self.image / "disk.img"), str(self.disk)], check=True)
        boot = None
        if (self.image / "boot.img").exists():   # pi-vm.sh --from-image: the card's FAT, a copy too
            boot = self.work / "boot.img"
            subprocess.run(["cp", "--sparse=always", str(self.image / "boot.img"), str(boot)], check=True)
        inject_agent(self.disk, self.args.checks, self.work)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(qemu_command(self.image, self.disk, boot), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.console = Console(self.proc.stdout, self.serial_log, self.t0)
        self.console.start()

    def follow(self) -> None:
        """Markers until the agent's "done"; every wait bounded, every failure named."""
        deadline = self.t0 + self.args.timeout
        boot_deadline = self.t0 + BOOT_TIMEOUT
        while True:
            limit = min(deadline, boot_deadline)
            try:
                t, name, data = self.console.markers.get(timeout=max(0.1, limit - time.monotonic()))
            except queue.Empty:
                if time.monotonic() >= boot_deadline:
                    why = "a kernel panic" if self.console.panic else f"no agent within {BOOT_TIMEOUT} s"
                    raise StepFailed(f"boot: {why} (after '{self.current}')")
                raise StepFailed(f"{self.current}: the run took longer than {self.args.timeout} s")
            if name == "eof":
                raise StepFailed(f"{self.current}: qemu exited (status {self.proc.wait()}) before the agent finished")
            if time.monotonic() > deadline:   # markers still coming, but the run is over its time
                raise StepFailed(f"{self.current}: the run took longer than {self.args.timeout} s")
            self.markers.append((t - self.t0, name, data))
            print(f"[pi-vm {t - self.t0:7.1f} s] {name} {summary(data)}", file=sys.stderr)
            if name == "agent":
                boot_deadline = float("inf")
                self.current = f"boot {data.get('boot')}"
            elif name == "check-start":
                self.current = f"check {data['check']}"
            elif name == "reboot":
                boot_deadline = time.monotonic() + BOOT_TIMEOUT
                self.current = "reboot"
            elif name == "agent-crashed":
                raise StepFailed(f"{self.current}: the in-guest agent crashed: {data.get('error')}")
            elif name == "done":
                break
        if not wait_exit(self.proc, QEMU_EXIT_TIMEOUT):
            print("pi-vm: the guest did not power off; killing qemu", file=sys.stderr)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # --- the report ------------------------------------------------------------------------
    def offsets(self) -> list[float]:
        """Host-minus-guest clock offset for each boot (the smallest: serial latency only adds)."""
        per_boot: list[float] = []
        for t, name, data in self.markers:
            if name == "agent":
                per_boot.append(float("inf"))
            if per_boot and "mono" in data:
                per_boot[-1] = min(per_boot[-1], t - data["mono"])
        return per_boot

    def report(self, failed_step: str | None) -> dict:
        guest_dir = self.work / "guest"
        results: dict = {"checks": {}}
        if self.proc is not None:
            extract(self.disk, guest_dir)
            try:
                results = json.loads((guest_dir / "results.json").read_text())
            except (OSError, ValueError):
                results = next((d for _, n, d in self.markers if n == "result"), results)
        from report import build_report
        return build_report(results, self.offsets(), self.markers, self.args, self.serial_log, guest_dir,
                            failed_step)


def wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def summary(data: dict) -> str:
    keep = {k: v for k, v in data.items() if k in ("check", "name", "ok", "cycle", "resume_s", "boot", "error")}
    return json.dumps(keep) if keep else ""


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, help="the image's Debian suite (trixie, bookworm)")
    ap.add_argument("--image", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--timeout", type=float, default=2400)
    ap.add_argument("--build-seconds", type=float, default=0)
    ap.add_argument("--checks", default="all", help="comma-separated checks to run (iteration); default all")
    ap.add_argument("--keep", action="store_true", help="keep .cache/pi-vm/run-SUITE (the disk copy) afterwards")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    run = Run(args)
    def on_term(*_args) -> None:
        raise KeyboardInterrupt   # the same way out as Ctrl-C: qemu killed, the report written
    signal.signal(signal.SIGTERM, on_term)
    failed_step = None
    try:
        run.boot()
        run.follow()
    except StepFailed as e:
        failed_step = str(e)
    except KeyboardInterrupt:
        failed_step = f"{run.current}: interrupted"
    finally:
        run.stop()
    report = run.report(failed_step)
    write_atomically(run.out, json.dumps(report, indent=2) + "\n")
    if not args.keep:
        for name in ("disk.img", "boot.img"):
            (run.work / name).unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in report.items() if k not in ("checks", "boot_split_s", "environment")}, indent=1),
          file=sys.stderr)
    if failed_step:
        print(f"pi-vm.sh: FAILED: {failed_step}; serial log: {run.serial_log}", file=sys.stderr)
        return 2
    if not report["ok"]:
        print(f"pi-vm.sh: FAILED: check(s) {', '.join(report['failed'])}; details in {run.out}, "
              f"serial log {run.serial_log}", file=sys.stderr)
        return 1
    print(f"pi-vm.sh: all checks passed ({run.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
