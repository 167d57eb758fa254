"""Who may import whom, read from the sources (ast), so a wrong import fails here before it ships.

    playbach/ (the core)  imports nothing of trainer, convert, device or harness
    device/  (the daemon) the core only; never TensorFlow, Keras or music21
    trainer/              the core only (never device, convert or harness)
    convert/              the core, and of trainer only what defines a model
    harness/              the core only (the player runs as a subprocess)
    web/                  the core only (the player is reached through its control socket)

Folders map to packages through setup.cfg's package_dir, as they are installed.
"""
import ast
import configparser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = ("trainer", "convert", "device", "harness", "web")
TRAINER_FOR_CONVERT = {"model", "relative", "clipped", "int8_head", "runfolder", "step", "grid"}   # the layers, forms, run folders
DESKTOP_ONLY = {"tensorflow", "keras", "music21", "matplotlib", "tqdm"}


def packages() -> dict[str, Path]:
    """Installed package name -> its folder, from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [line.strip() for line in cfg["options"]["package_dir"].splitlines() if line.strip()]
    return {name.strip(): REPO / folder.strip() for name, folder in (line.split("=") for line in lines)}


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names (top level or in functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "playbach" or node.module in (f"playbach.{s}" for s in STAGES):
                # `from playbach import x`, `from playbach.trainer import x`: x is the module
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def stage_of(module: str) -> str | None:
    """'core', a stage name, or None for a module outside playbach."""
    parts = module.split(".")
    if parts[0] != "playbach":
        return None
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    return "core"


def violations(package: str, folder: Path) -> list[str]:
    own = stage_of(package)
    allowed = {"core": {"core"}, "device": {"core", "device"}, "trainer": {"core", "trainer"},
               "convert": {"core", "convert", "trainer"}, "harness": {"core", "harness"}, "web": {"core", "web"}}[own]
    wrong = []
    for path in sorted(folder.glob("*.py")):
        rel = f"{folder.name}/{path.name}"
        for module in sorted(imported_modules(path)):
            stage = stage_of(module)
            if stage is None:
                if own in ("core", "device", "web") and module.split(".")[0] in DESKTOP_ONLY:
                    wrong.append(f"{rel} imports {module} (desktop only)")
                continue
            if stage not in allowed:
                wrong.append(f"{rel} imports {module}")
            elif own == "convert" and stage == "trainer" and module.count(".") >= 2 \
                    and module.split(".")[2] not in TRAINER_FOR_CONVERT:
                wrong.append(f"{rel} imports {module} (convert uses trainer only for what defines a model)")
    return wrong


@pytest.mark.parametrize("package", ["playbach", *(f"playbach.{s}" for s in STAGES)])
def test_imports_follow_the_layers(package):
    folder = packages()[package]
    assert list(folder.glob("*.py")), f"{folder} has no modules"
    assert violations(package, folder) == []


def write_module(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "m.py").write_text(text)
    return folder


def test_the_check_sees_a_wrong_import(tmp_path):
    """The check itself: a trainer module importing the daemon, a device module importing
    TensorFlow inside a function, and convert reaching into the trainer's training loop."""
    a = write_module(tmp_path / "a", "from playbach.device.player import Player\n")
    b = write_module(tmp_path / "b", "def f():\n    import tensorflow as tf\n")
    c = write_module(tmp_path / "c", "from playbach.trainer import runfolder, train\n")
    assert violations("playbach.trainer", a) == ["a/m.py imports playbach.device.player"]
    assert violations("playbach.device", b) == ["b/m.py imports tensorflow (desktop only)"]
    assert violations("playbach.convert", c) == [
        "c/m.py imports playbach.trainer.train (convert uses trainer only for what defines a model)"]
    assert violations("playbach.device", write_module(tmp_path / "d", "import numpy\nfrom playbach import events\n")) == []


def test_no_test_module_imports_another():
    """What tests share lives in the fixtures_* modules: a test module imported by another runs
    its module-level code twice and ties one file's tests to another's names."""
    tests = REPO / "tests"
    wrong = [f"{path.name} imports {module}" for path in sorted(tests.glob("*.py"))
             for module in sorted(imported_modules(path)) if module.startswith("test_")]
    assert wrong == []
