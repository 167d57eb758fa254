"""What the flashed image does at boot, before the player starts (playbach-firstboot.service).

The image (scripts/build-image.sh, docs/image.md) is a card a person flashes, edits on any computer
and puts in a Pi. At every boot this module reads two files from the FAT boot partition:

    playbach.toml          the player's settings, checked by the same rules as /etc/playbach/config.toml
                           (playbach.settings) and copied over it atomically when it changed on the card;
                           a bad one is named in the journal (file, line, key) and in playbach-error.txt
                           on the card, and the config the player had stays
    ssh_authorized_keys    public keys for root; SSH runs only while this file is on the card

and once, at the first boot: the root partition grows to the card, and the control page gets its
own fresh token (an image holds none, so no two Pis share one).

    python -m playbach.device.firstboot [--boot /boot/firmware] [--etc /etc] [--state DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from playbach import settings
from playbach.errors import UserError
from playbach.files import replace_atomically

USER_CONFIG = "playbach.toml"
SSH_KEYS = "ssh_authorized_keys"
ERROR_NOTE = "playbach-error.txt"
SSH_UNIT = "ssh.service"
# off means both: Debian's openssh-server can also be started by its socket unit
SSH_OFF = ["systemctl", "disable", "--now", "--quiet", SSH_UNIT, "ssh.socket"]
WEB_UNIT = "playbach-web.service"
# key types OpenSSH's sshd accepts in authorized_keys (ssh -Q key), without the certificates
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")

log = logging.getLogger("playbach.firstboot")
Run = Callable[[Sequence[str]], int]


def run(argv: Sequence[str]) -> int:
    """Run a command, its output to the journal; its exit status."""
    return subprocess.run(list(argv), check=False).returncode


def write_private(path: Path, text: str, mode: int) -> None:
    """`text` into `path` with `mode`, atomically and synced: a power cut leaves the old file or the new."""
    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)   # the umask may have taken bits off
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, write)


# --- playbach.toml --------------------------------------------------------------------------

def line_of(text: str, key: str) -> int | None:
    """The line (1-based) where `key` is set in TOML `text`, bare or quoted; None if not found."""
    pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def check_user_config(path: Path) -> str:
    """The text of `path` if the player would accept it as its config.toml, else a UserError naming
    the file, the line and the key. The rules are the config file's own (playbach.settings), plus
    that the bundle it names is there: a Pi with this file must still play."""
    try:
        values = settings.read_file(path)
        merged = {**dataclasses.asdict(settings.DEFAULTS), **values}
        settings.check_together(merged, str(path))
        text = path.read_text(encoding="utf-8")
    except UserError as e:
        raise UserError(with_line(str(e), path)) from e
    except UnicodeDecodeError as e:   # tomllib read it as bytes already; this cannot pass it
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from e
    bundle = Path(values.get("bundle", settings.INSTALLED_BUNDLE))
    if "bundle" in values and not (bundle / "bundle.json").is_file():
        raise UserError(with_line(f"{path}: key 'bundle' = {str(bundle)!r} is not a model bundle "
                                  f"(no bundle.json there)", path, text))
    return text


def with_line(message: str, path: Path, text: str | None = None) -> str:
    """`message` with the line of the key it names, where the file says where that is."""
    named = re.search(r"key '([^']+)'", message)
    if not named:
        return message   # a TOML syntax error names its line itself
    if text is None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return message
    number = line_of(text, named.group(1))
    return message if number is None else f"{message} (line {number})"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apply_user_config(card: Path, config: Path, state: Path) -> str:
    """Copy the card's playbach.toml over `config` when it changed on the card since it was last
    applied (an edit made on the Pi itself stays until the card's file changes again).
    Returns 'applied', 'unchanged', 'absent' or 'rejected'; a rejected file changes nothing but
    the note beside it on the card."""
    source, note, applied = card / USER_CONFIG, card / ERROR_NOTE, state / "playbach.toml.sha256"
    if not source.is_file():
        return "absent"
    try:
        text = check_user_config(source)
    except UserError as e:
        log.error("%s; %s left as it was", e, config if config.exists() else "the default config")
        write_note(note, f"{e}\n\n{config} was left as it was; the player uses it. Fix {USER_CONFIG} and reboot.\n")
        return "rejected"
    note.unlink(missing_ok=True)
    if applied.is_file() and applied.read_text().strip() == digest(text) and config.is_file():
        return "unchanged"
    write_private(config, text, 0o644)
    write_private(applied, digest(text) + "\n", 0o644)
    log.info("%s copied to %s", source, config)
    return "applied"


def write_note(note: Path, text: str) -> None:
    """A note on the card for whoever edits it on a computer; the journal has it too if this fails."""
    try:
        write_private(note, text, 0o644)
    except OSError as e:
        log.warning("cannot write %s (%s)", note, e.strerror)


# --- SSH ------------------------------------------------------------------------------------

def check_ssh_keys(path: Path) -> str:
    """The public keys in `path`, one per line ('#' comments and blank lines allowed), or a
    UserError naming the file and the first line that is not a public key (a private key, say)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read it as text ({e})") from e
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES or not BASE64.match(fields[1]):
            raise UserError(f"{path}: line {number} is not an SSH public key (it takes lines like "
                            f"'ssh-ed25519 AAAA... you@laptop', as in ~/.ssh/id_ed25519.pub)")
        keys.append(line)
    if not keys:
        raise UserError(f"{path}: no public key in it")
    return "\n".join(keys) + "\n"


def apply_ssh(card: Path, root_home: Path, run: Run = run) -> str:
    """SSH on (root, by key only) while the card carries ssh_authorized_keys; off otherwise.
    Returns 'on', 'off' or 'rejected' (a bad key file: SSH off, the keys there before stay)."""
    source = card / SSH_KEYS
    if not source.is_file():
        run(SSH_OFF)
        return "off"
    try:
        keys = check_ssh_keys(source)
    except UserError as e:
        log.error("%s; SSH stays off", e)
        run(SSH_OFF)
        return "rejected"
    write_private(root_home / ".ssh" / "authorized_keys", keys, 0o600)
    os.chmod(root_home / ".ssh", 0o700)
    # the image ships no host keys (each Pi makes its own); -A makes the missing ones only
    run(["ssh-keygen", "-A"])
    run(["systemctl", "enable", "--quiet", SSH_UNIT])
    run(["systemctl", "start", "--no-block", SSH_UNIT])
    log.info("SSH on for root with the keys in %s", source)
    return "on"


# --- once: the token and the root partition -------------------------------------------------

def ensure_token(etc: Path) -> bool:
    """A fresh control-page token where the page is installed and has none; True if one was made."""
    token = etc / "playbach" / "web-token"
    if not (etc / "systemd" / "system" / WEB_UNIT).is_file() or (token.is_file() and token.stat().st_size):
        return False
    write_private(token, secrets.token_urlsafe(32) + "\n", 0o600)
    log.info("wrote a fresh control page token to %s", token)
    return True


def root_partition(sys_block: Path = Path("/sys/dev/block")) -> tuple[str, str, int] | None:
    """(disk, partition, number) of the partition mounted at /, e.g. ('mmcblk0', 'mmcblk0p2', 2);
    None where / is not on a partition (a whole disk, a VM's virtio disk)."""
    dev = os.stat("/").st_dev
    part = (sys_block / f"{os.major(dev)}:{os.minor(dev)}").resolve()
    if not (part / "partition").is_file():
        return None
    return part.parent.name, part.name, int((part / "partition").read_text())


def grow_root(run: Run = run) -> bool:
    """Grow the root partition to the end of the card and its ext4 with it (online); True if grown."""
    found = root_partition()
    if found is None:
        return False
    disk, part, number = found
    block = Path("/sys/class/block")
    start, size = (int((block / part / f).read_text()) for f in ("start", "size"))
    disk_sectors = int((block / disk / "size").read_text())
    if disk_sectors - (start + size) < 2048:   # within 1 MiB of the end already
        return False
    layout = subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-N", str(number), f"/dev/{disk}"],
                            input=",+\n", text=True, capture_output=True, check=False)
    if layout.returncode != 0:
        log.error("sfdisk could not grow /dev/%s: %s", part, layout.stderr.strip())
        return False
    if run(["partx", "-u", "--nr", str(number), f"/dev/{disk}"]) or run(["resize2fs", f"/dev/{part}"]):
        log.error("the partition table of /dev/%s grew but its filesystem did not: run resize2fs /dev/%s",
                  disk, part)
        return False
    log.info("/dev/%s grown to the end of /dev/%s", part, disk)
    return True


# --- the unit's entry point -----------------------------------------------------------------

class JournalFormatter(logging.Formatter):
    """Each line prefixed <N> with its syslog priority, which the journal reads from a unit's output."""
    PRIORITY = {logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m playbach.device.firstboot", description=__doc__.splitlines()[0])
    parser.add_argument("--boot", type=Path, default=Path("/boot/firmware"), help="the FAT boot partition")
    parser.add_argument("--etc", type=Path, default=Path("/etc"))
    parser.add_argument("--state", type=Path, default=Path("/var/lib/playbach-firstboot"))
    parser.add_argument("--root-home", type=Path, default=Path("/root"))
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JournalFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    once = args.state / "first-boot-done"
    if not once.exists():
        grow_root()
        ensure_token(args.etc)
    result = apply_user_config(args.boot, args.etc / "playbach" / "config.toml", args.state)
    ssh = apply_ssh(args.boot, args.root_home)
    if not once.exists():
        write_private(once, "", 0o644)
    log.info("playbach.toml: %s; ssh: %s", result, ssh)
    return 0   # a bad file is reported, never fatal: the player starts with the config it had


if __name__ == "__main__":
    sys.exit(main())
