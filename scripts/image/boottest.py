"""Boot the image's test card in QEMU's raspi4b machine and write the boot test's JSON.

Run by scripts/image/boottest.sh (which has made the test card, taken the kernel, initrd and device
tree from its FAT partition and bind-mounted them into the QEMU root). The test agent in the card
(boottest-agent.sh) prints `BOOTTEST key=value` lines on the serial console once the player waits
for its synth, then powers the emulated Pi off.

    python3 boottest.py --host-root DIR --card-dir DIR --inside /card --image FILE.img --json OUT ...
    python3 boottest.py --add-xz FILE.img.xz --json OUT      # add image_xz_bytes afterwards
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

MARK = re.compile(r"BOOTTEST (.*)")


def qemu_command(host_root: Path, inside: str, cmdline: str) -> list[str]:
    """QEMU in its trixie root; the Pi 4's PL011 (ttyAMA0) is QEMU's first serial port, its mini
    UART (ttyS1, the header's console on a real Pi) the second: both go to stdout."""
    return ["chroot", str(host_root), "qemu-system-aarch64", "-M", "raspi4b", "-accel", "tcg",
            "-kernel", f"{inside}/vmlinuz", "-initrd", f"{inside}/initrd.img", "-dtb", f"{inside}/board.dtb",
            "-drive", f"file={inside}/card.img,if=sd,format=raw", "-append", cmdline,
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-serial", "null", "-no-reboot"]


def test_cmdline(card_dir: Path) -> str:
    """The image's own cmdline.txt, its consoles replaced by the emulated PL011 (QEMU's first serial),
    so the serial log shows the boot; clk_ignore_unused: the kernel would otherwise read the state
    of clock gates QEMU does not emulate."""
    words = (card_dir / "cmdline.txt").read_text().split()
    kept = [w for w in words if not w.startswith("console=")]
    return " ".join(kept + ["console=ttyAMA0,115200", "clk_ignore_unused"])


def boot(args: argparse.Namespace) -> tuple[dict[str, str], list[str], float, bool]:
    """Run QEMU until the agent's report ends or the timeout; the report, the error lines, the
    wall seconds and whether the report was complete."""
    cmd = qemu_command(args.host_root, args.inside, test_cmdline(args.card_dir))
    log_path = args.json.with_suffix(".serial.log")
    report: dict[str, str] = {}
    errors: list[str] = []
    done = threading.Event()
    start = time.monotonic()
    with open(log_path, "w", errors="replace") as log, \
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as qemu:
        def read() -> None:
            for raw in qemu.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                found = MARK.search(line)
                if not found:
                    continue
                body = found.group(1)
                if body == "end":
                    done.set()
                elif body.startswith("error "):
                    errors.append(body[6:])
                elif "=" in body:
                    key, value = body.split("=", 1)
                    report[key] = value
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        complete = done.wait(args.timeout)
        try:
            qemu.wait(timeout=180 if complete else 1)   # the agent powers off; a stuck one is stopped
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
        reader.join(timeout=10)
    return report, errors, time.monotonic() - start, complete


def figures(args: argparse.Namespace, report: dict[str, str], errors: list[str], wall: float,
            complete: bool) -> dict:
    firstboot = report.get("firstboot", "")
    return {
        "board": "pi4", "machine": "qemu raspi4b (TCG)", "suite": "trixie",
        "image_bytes": args.image.stat().st_size,
        "image_xz_bytes": None,
        "boot_to_player_waiting_s": float(report["waiting_s"]) if report.get("waiting_s") else None,
        "first_boot_config_applied": "playbach.toml: applied" in firstboot and report.get("config_bpm", "").startswith("bpm = 72"),
        "token_created": report.get("token_mode") == "600" and int(report.get("token_chars", "0") or 0) >= 40,
        "hostname": report.get("hostname"),
        "journal_errors": errors,
        "root_grown": int(report.get("root_bytes", "0") or 0) > args.image.stat().st_size,
        "ssh_active": report.get("ssh"),
        "avahi_active": report.get("avahi"),
        "player_state": report.get("player"),
        "web_state": report.get("web"),
        "failed_units": report.get("failed_units", "").split(),
        "report_complete": complete,
        "qemu_wall_s": round(wall, 1),
        "build_seconds": args.build_seconds,
        "cmdline": test_cmdline(args.card_dir),
    }


def passed(result: dict) -> bool:
    return bool(result["report_complete"] and result["first_boot_config_applied"] and result["token_created"]
                and result["hostname"] == "playbach" and result["boot_to_player_waiting_s"] is not None
                and result["root_grown"] and result["ssh_active"] != "active")


def add_xz(xz: Path, json_path: Path) -> int:
    result = json.loads(json_path.read_text())
    result["image_xz_bytes"] = xz.stat().st_size
    write_json(json_path, result)
    print(f"image_xz_bytes={result['image_xz_bytes']}", file=sys.stderr)
    return 0


def write_json(path: Path, result: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-root", type=Path)
    parser.add_argument("--card-dir", type=Path)
    parser.add_argument("--inside", default="/card")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--build-seconds", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--add-xz", type=Path)
    args = parser.parse_args()
    if args.add_xz:
        return add_xz(args.add_xz, args.json)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report, errors, wall, complete = boot(args)
    result = figures(args, report, errors, wall, complete)
    result["passed"] = passed(result)
    write_json(args.json, result)
    print(json.dumps(result, indent=2), file=sys.stderr)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
