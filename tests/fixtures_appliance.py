"""Fixtures of the appliance: playbach installed by systemd/install.sh into a temporary root.

`appliance_bundle`  the bundle to install: $PLAYBACH_APPLIANCE_BUNDLE, else the shipped
                    models/default, else the converter's tiny bundle
`installed_root`    a folder holding what install.sh puts in / (opt/playbach with its venv,
                    etc/playbach, etc/systemd/system, etc/udev/rules.d), installed once per session
                    because the venv is a real `pip install .[device]` (about 20 s)

The test files import these names; the install itself is cached in this module, so it runs once
however many test files (or conftest's pytest_plugins) bring the fixtures in.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from needs import need_program

REPO = Path(__file__).resolve().parent.parent
INSTALL_SH = REPO / "systemd" / "install.sh"
SHIPPED_BUNDLE = REPO / "models" / "default"
_installed: dict[str, Path] = {}


def run_install(root: Path, *args: str, bundle: Path | None = None) -> subprocess.CompletedProcess:
    """systemd/install.sh --prefix ROOT ...; the output is kept for the assertion message."""
    cmd = ["bash", str(INSTALL_SH), "--prefix", str(root)]
    if bundle is not None:
        cmd += ["--bundle", str(bundle)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600)


def unit_path(root: Path, unit: str = "playbach.service") -> Path:
    return root / "etc" / "systemd" / "system" / unit


def read_unit(path: Path) -> dict[str, list[str]]:
    """A unit file as {"Section.Key": [values...]}: keys repeat, lines continue with a backslash."""
    values: dict[str, list[str]] = {}
    section, pending = "", ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def verify_root(root: Path) -> Path:
    """`systemd-analyze verify --root` needs the stock units (sysinit.target, ...) and the
    ExecStart programs inside the root: a copy of the host's /usr/lib/systemd/system and of
    /usr/bin/fluidsynth, added next to what install.sh wrote (install.sh never touches /usr)."""
    stock = root / "usr" / "lib" / "systemd" / "system"
    if not stock.exists():
        shutil.copytree("/usr/lib/systemd/system", stock, symlinks=True)
        (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(need_program("fluidsynth", "fluidsynth"), root / "usr" / "bin" / "fluidsynth")
    return root


@pytest.fixture(scope="session")
def appliance_bundle(request) -> Path:
    if os.environ.get("PLAYBACH_APPLIANCE_BUNDLE"):   # try another bundle: any folder with bundle.json
        return Path(os.environ["PLAYBACH_APPLIANCE_BUNDLE"])
    if (SHIPPED_BUNDLE / "bundle.json").exists():
        return SHIPPED_BUNDLE
    return Path(request.getfixturevalue("tiny_bundle"))


@pytest.fixture(scope="session")
def installed_root(tmp_path_factory, appliance_bundle) -> Path:
    if "root" not in _installed:
        root = tmp_path_factory.mktemp("appliance") / "root"
        done = run_install(root, bundle=appliance_bundle)
        assert done.returncode == 0, f"install.sh failed:\n{done.stdout}\n{done.stderr}"
        _installed["root"] = root
    return _installed["root"]
