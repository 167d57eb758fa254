"""systemd/install.sh into a temporary root: a device-only venv (no TensorFlow), idempotent,
an edited config kept, --uninstall leaving nothing behind, and an update without the network.

The live install on Debian (apt's python3-rtmidi seen from the venv, trixie and bookworm) needs
root and a Debian system: scripts/pi-vm.sh --suite trixie|bookworm runs it, booted."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures_appliance import run_install


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
