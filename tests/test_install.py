"""systemd/install.sh into a temporary root: a device-only venv (no TensorFlow) at pinned
versions, idempotent, an edited config kept, a user's bundle kept beside the shipped one, the venv
swapped in whole (a kill mid-update leaves one that runs), readable under root's umask 077, the
token's mode fixed, --uninstall leaving nothing behind, and an update without the network.

The live install on Debian (apt's python3-rtmidi seen from the venv, trixie and bookworm) needs
root and a Debian system: scripts/pi-vm.sh --suite trixie|bookworm runs it, booted."""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fixtures_appliance import INSTALL_SH, REPO, SHIPPED_BUNDLE, run_install
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = REPO / "systemd" / "constraints.txt"


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> its content hash, link target or 'dir' (and its mode)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                seen[rel] = f"dir {path.stat().st_mode:o}"
            else:
                seen[rel] = f"{path.stat().st_mode:o} " + hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def copy_of(installed_root: Path, tmp_path: Path) -> Path:
    """A private copy of the session's install (not its verify helpers under usr/)."""
    root = tmp_path / "root"
    shutil.copytree(installed_root, root, symlinks=True, ignore=lambda d, names:
                    ["usr"] if Path(d) == installed_root else [])
    return root


def test_venv_holds_the_device_extra_and_no_tensorflow(installed_root):
    python = installed_root / "opt/playbach/venv/bin/python"
    probe = ("import importlib.util as u\n"
             "for m in ('tensorflow', 'keras', 'music21', 'matplotlib'):\n"
             "    assert u.find_spec(m) is None, m + ' is installed'\n"
             "import numpy, mido, rtmidi, ai_edge_litert\n"
             "import playbach.device.player, playbach.runtime\n"
             "print(playbach.device.player.__file__)\n")
    done = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # a real copy in the venv, not a link back to this checkout
    assert done.stdout.startswith(str(installed_root / "opt/playbach/venv/lib"))


def test_the_pi_gets_only_what_runs_there_and_a_desktop_command_says_so(installed_root):
    """The trainer and the converter (desktop, TensorFlow) are not installed on the Pi; asked for,
    `playbach train` says it is a desktop command and exits 2 (not a traceback)."""
    venv = installed_root / "opt/playbach/venv"
    found = subprocess.run([str(venv / "bin/python"), "-I", "-c",
                            "import importlib.util as u\n"
                            "print([m for m in ('playbach.trainer', 'playbach.convert', 'playbach.device', "
                            "'playbach.harness', 'playbach.web') if u.find_spec(m)])"],
                           capture_output=True, text=True, timeout=60)
    assert found.stdout.strip() == "['playbach.device', 'playbach.harness', 'playbach.web']", found.stderr
    for command in ("train", "convert"):
        done = subprocess.run([str(venv / "bin/playbach"), command, "--help"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and "a desktop command, not installed here" in done.stderr, done.stderr


def test_bundle_and_config_are_installed_readable(installed_root, appliance_bundle):
    bundle = installed_root / "opt/playbach/models/default"
    assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in Path(appliance_bundle).iterdir())
    for path in [bundle, *bundle.rglob("*"), installed_root / "etc/playbach/config.toml"]:
        assert path.stat().st_mode & 0o004, f"{path} is not world-readable (the DynamicUser reads it)"


def test_install_twice_changes_nothing_keeps_an_edited_config_and_uninstall_removes_all(
        installed_root, appliance_bundle, tmp_path):
    root = copy_of(installed_root, tmp_path)   # a fresh pip run is what the session fixture did
    before = snapshot(root)

    again = run_install(root, bundle=appliance_bundle)
    assert again.returncode == 0, again.stderr
    assert "venv up to date" in again.stdout
    assert snapshot(root) == before

    config = root / "etc/playbach/config.toml"
    edited = config.read_text().replace('port = ""', 'port = "my synth"')
    config.write_text(edited)
    again = run_install(root, bundle=appliance_bundle)
    assert again.returncode == 0, again.stderr
    assert config.read_text() == edited, "install.sh overwrote an edited config"
    assert (root / "etc/playbach/config.toml.dist").is_file()

    gone = run_install(root, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not root.exists() or list(root.iterdir()) == [], sorted(snapshot(root))
    gone = run_install(root, "--uninstall")   # and again: nothing to do, no error
    assert gone.returncode == 0, gone.stderr


@pytest.mark.slow   # it refuses before pip, but runs install.sh, which the fast tier never does
def test_install_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    done = run_install(tmp_path / "root", bundle=tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path}: not a model bundle" in done.stderr
    assert not (tmp_path / "root" / "opt").exists()


def test_with_web_writes_a_private_token_once_and_enables_the_page(installed_root, appliance_bundle, tmp_path):
    root = copy_of(installed_root, tmp_path)
    done = run_install(root, "--with-web", bundle=appliance_bundle)   # pip adds the web extra
    assert done.returncode == 0, done.stderr
    token = root / "etc/playbach/web-token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
    token.chmod(0o644)   # a copy by hand, an editor: the next run makes it private again
    assert run_install(root, bundle=appliance_bundle).returncode == 0
    assert token.stat().st_mode & 0o777 == 0o600, "a rerun left the token readable by all"
    assert "control page: http://" in done.stdout and "web-token" in done.stdout
    assert (root / "etc/systemd/system/multi-user.target.wants/playbach-web.service").is_symlink()
    probe = "import aiohttp, playbach.web.server; print(playbach.web.server.STATIC / 'index.html')"
    found = subprocess.run([str(root / "opt/playbach/venv/bin/python"), "-I", "-c", probe],
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and Path(found.stdout.strip()).is_file(), found.stderr
    first = token.read_text()
    assert run_install(root, "--with-web", bundle=appliance_bundle).returncode == 0
    assert token.read_text() == first, "a reinstall replaced the token"
    # run again to update, without the flag: the page stays, and the venv is not rebuilt (no pip)
    again = run_install(root, bundle=appliance_bundle)
    assert again.returncode == 0, again.stderr
    assert "venv up to date" in again.stdout and "installing the device extra" not in again.stdout
    assert token.read_text() == first
    assert (root / "etc/systemd/system/multi-user.target.wants/playbach-web.service").is_symlink()


@pytest.fixture
def offline(monkeypatch):
    """pip with no way to fetch anything: an index nothing listens on, no config files (this
    machine's may name local wheel folders), no find-links from the environment."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)


def test_a_staging_venv_does_not_see_the_host_packages(installed_root):
    # the Debian packages a live install relies on are the Pi's, not this machine's
    cfg = (installed_root / "opt/playbach/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg, cfg


def test_an_update_of_the_code_installs_without_the_network(installed_root, appliance_bundle, tmp_path, offline):
    root = copy_of(installed_root, tmp_path)
    stamp = root / "opt/playbach/venv/.playbach-source"
    # the stamp is the hash of the code install.sh last installed: another one is what an
    # updated checkout (git pull, then no network) looks like to install.sh
    stale = "0" * 64 + " device\n"
    stamp.write_text(stale)
    done = run_install(root, bundle=appliance_bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(no network)" in done.stdout and "installing the device extra" not in done.stdout, done.stdout
    assert stamp.read_text() != stale and re.fullmatch(r"[0-9a-f]{64} device\n", stamp.read_text())
    runs = subprocess.run([str(root / "opt/playbach/venv/bin/playbach"), "play", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert runs.returncode == 0, runs.stderr


def test_a_new_dependency_without_the_network_fails_clearly_and_changes_nothing(
        installed_root, appliance_bundle, tmp_path, offline):
    root = copy_of(installed_root, tmp_path)
    before = snapshot(root)
    # --with-web needs aiohttp, which the venv does not hold: only PyPI has it
    done = run_install(root, "--with-web", bundle=appliance_bundle)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs PyPI" in done.stderr and str(root / "opt/playbach/venv") in done.stderr, done.stderr
    assert snapshot(root) == before


# --- pinned dependencies --------------------------------------------------------------------
def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every line must be NAME==VERSION."""
    found = {}
    for n, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][0-9A-Za-z.+-]*)", line)
            assert m, f"constraints.txt:{n}: not NAME==VERSION: {line!r}"
            found[canonicalize_name(m.group(1))] = m.group(2)
    return found


def test_every_requirement_the_pi_installs_is_pinned_within_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in ("device", "web"):   # what install.sh installs (never trainer or dev)
        lines += cfg["options.extras_require"][extra].splitlines()
    pinned = pins()
    for line in filter(None, (ln.strip() for ln in lines)):
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pinned, f"setup.cfg requires {line!r}; systemd/constraints.txt does not pin it"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"systemd/constraints.txt pins {name}=={pinned[name]}, outside setup.cfg's {line!r}"


def test_the_installed_venv_holds_only_pinned_versions(installed_root):
    listing = ("import importlib.metadata as m, json\n"
               "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    done = subprocess.run([str(installed_root / "opt/playbach/venv/bin/python"), "-I", "-c", listing],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    installed = {canonicalize_name(k): v for k, v in json.loads(done.stdout).items()}
    tools = {"pip", "setuptools", "wheel", "playbach"}
    pinned = pins()
    wrong = {k: (v, pinned.get(k)) for k, v in installed.items() if k not in tools and pinned.get(k) != v}
    assert not wrong, f"installed (version, pin) not as systemd/constraints.txt says: {wrong}"


# --- bundles ----------------------------------------------------------------------------------
def sha_of_tree(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_a_users_bundle_goes_beside_the_shipped_one_and_a_later_run_keeps_both(installed_root, tmp_path):
    root = copy_of(installed_root, tmp_path)
    shipped = root / "opt/playbach/models/default"
    shipped_sha = sha_of_tree(shipped)
    mine = tmp_path / "my-cello"
    shutil.copytree(SHIPPED_BUNDLE, mine)
    done = run_install(root, bundle=mine)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/var/lib/playbach/models/my-cello" in done.stdout
    kept = root / "var/lib/playbach/models/my-cello"
    assert sha_of_tree(kept) == sha_of_tree(mine) and sha_of_tree(shipped) == shipped_sha
    # the state folder as systemd makes it for a DynamicUser; the bundle readable by any user
    assert os.readlink(root / "var/lib/playbach") == "private/playbach"
    for path in [kept, *kept.rglob("*")]:
        assert path.stat().st_mode & 0o004, f"{path} is not world-readable"
    # the documented update, without --bundle: the user's bundle stays, the default stays shipped
    again = run_install(root)
    assert again.returncode == 0, again.stderr
    assert sha_of_tree(kept) == sha_of_tree(mine) and sha_of_tree(shipped) == shipped_sha
    assert not list(root.rglob(".new")), "a staging folder was left behind"


def test_a_bundle_named_default_or_failing_its_checks_is_refused_and_nothing_changes(installed_root, tmp_path):
    root = copy_of(installed_root, tmp_path)
    before = snapshot(root)
    named_default = tmp_path / "x" / "default"
    shutil.copytree(SHIPPED_BUNDLE, named_default)
    done = run_install(root, bundle=named_default)
    assert done.returncode == 2 and "give your folder another name" in done.stderr, done.stderr
    corrupt = tmp_path / "corrupt"
    shutil.copytree(SHIPPED_BUNDLE, corrupt)
    model = next(corrupt.glob("*.tflite"))
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")   # same size, another sha256
    done = run_install(root, bundle=corrupt)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sha256" in done.stderr and model.name in done.stderr, done.stderr
    # (the venv is left out: other work on the checkout meanwhile is an update install.sh makes)
    def outside_the_venv(seen: dict) -> dict:
        return {k: v for k, v in seen.items() if not k.startswith("opt/playbach/venv/")}
    assert outside_the_venv(snapshot(root)) == outside_the_venv(before)


# --- umask and the atomic venv --------------------------------------------------------------
def test_an_update_under_umask_077_leaves_everything_readable(installed_root, appliance_bundle, tmp_path, offline):
    root = copy_of(installed_root, tmp_path)
    (root / "opt/playbach/venv/.playbach-source").write_text("0" * 64 + " device\n")   # an update
    mine = tmp_path / "mine"
    shutil.copytree(SHIPPED_BUNDLE, mine)
    done = subprocess.run(["bash", "-c", 'umask 077 && exec bash "$@"', "-", str(INSTALL_SH),
                           "--prefix", str(root), "--bundle", str(mine)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    private = root / "var/lib/private"   # 0700 by systemd's design: the service reaches it by its own mount
    unreadable = [str(p) for p in root.rglob("*") if p != private and not p.is_symlink()
                  and not p.stat().st_mode & 0o004]
    assert not unreadable, f"not world-readable after install.sh under umask 077: {unreadable[:10]}"


def kill_install_when(root: Path, bundle: Path, ready) -> None:
    """Run install.sh and SIGKILL it (and its pip) as soon as `ready()`."""
    proc = subprocess.Popen(["bash", str(INSTALL_SH), "--prefix", str(root), "--bundle", str(bundle)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "install.sh ended before the moment to kill it"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("moment", ["building", "built"])
def test_a_kill_mid_update_leaves_a_venv_that_runs_and_the_next_run_finishes(
        installed_root, appliance_bundle, tmp_path, offline, moment):
    """A power cut, as far as a test can make one: the venv in use is never written in place."""
    root = copy_of(installed_root, tmp_path)
    venv = root / "opt/playbach/venv"
    stamp = venv / ".playbach-source"
    stale = "0" * 64 + " device\n"
    stamp.write_text(stale)
    staged = root / "opt/playbach/.new/venv"

    def ready() -> bool:   # copying the venv in use; or pip done and checked, about to swap
        if moment == "building":
            return (staged / "bin").exists()
        try:
            return (staged / ".playbach-source").read_text() not in ("", stale)
        except OSError:
            return False
    kill_install_when(root, appliance_bundle, ready)
    runs = subprocess.run([str(venv / "bin/playbach"), "play", "--help"], capture_output=True, text=True, timeout=120)
    assert runs.returncode == 0, runs.stderr
    if moment == "building":
        assert stamp.read_text() == stale, "the venv in use was changed before the swap"
    done = run_install(root, bundle=appliance_bundle)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stamp.read_text() != stale and not (root / "opt/playbach/.new").exists()
    runs = subprocess.run([str(venv / "bin/playbach"), "play", "--help"], capture_output=True, text=True, timeout=120)
    assert runs.returncode == 0, runs.stderr
