"""`playbach edgetpu BUNDLE` (issue 23 item 5): the bundle's int8 step model compiled for a Coral,
listed in bundle.json with its sha256, no TensorFlow; every failure exit 2 with the bundle unchanged.

The real edgetpu_compiler cannot be obtained here (Coral's apt repository, x86-64 only, no network):
every test below puts a STAND-IN on PATH, a shell script that takes the real one's arguments
(`-s -o OUT_DIR MODEL`) and writes OUT_DIR/<stem>_edgetpu.tflite as a copy of the model with a
marker appended, and its own log, as the real one does. The bundle is a copy of the shipped one
(models/events), so none of this trains or converts."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from playbach.bundle import file_sha256, load_bundle
from playbach.cli import main
from playbach.edgetpu_compile import COMPILER_SOURCE, add_edgetpu_model
from playbach.errors import UserError
from playbach.runtime import open_cpu_interpreter, open_model

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "events"
MARK = b"STAND-IN EDGETPU COMPILER"
STAND_IN = """#!/bin/sh
# STAND-IN for Coral's edgetpu_compiler (not obtainable here): a marked copy of the model
while [ $# -gt 1 ]; do case "$1" in -o) out=$2; shift 2;; *) shift;; esac; done
model=$1; stem=$(basename "$model" .tflite)
{body}
"""
MARKED_COPY = f"""cat "$model" > "$out/${{stem}}_edgetpu.tflite"; printf '{MARK.decode()}' >> "$out/${{stem}}_edgetpu.tflite"
echo "stand-in compiled $model" > "$out/${{stem}}_edgetpu.log"; echo "Model compiled successfully (stand-in)."
"""


def snapshot(folder: Path) -> dict:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())}


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A private copy of the shipped bundle (it has a step int8 model and no Edge TPU one)."""
    return Path(shutil.copytree(SHIPPED, tmp_path / "bundle"))


def stand_in(tmp_path: Path, monkeypatch, body: str = MARKED_COPY) -> Path:
    """Put a stand-in edgetpu_compiler running `body` first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    script = folder / "edgetpu_compiler"
    script.write_text(STAND_IN.format(body=body))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return script


def no_compiler(monkeypatch, tmp_path) -> None:
    """PATH with the Python running the tests and nothing else (no edgetpu_compiler)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_the_stand_in_output_is_listed_with_its_sha256(bundle, tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch)
    int8 = load_bundle(bundle).model_entry("step", "int8")
    assert main(["edgetpu", str(bundle)]) == 0
    loaded = load_bundle(bundle)          # verifies every file's size and sha256
    entry = loaded.model_entry("step", "int8", edgetpu=True)
    written = (bundle / entry.file).read_bytes()
    assert written == (bundle / int8.file).read_bytes() + MARK
    assert entry.sha256 == file_sha256(bundle / entry.file) and entry.bytes == len(written)
    assert (entry.inputs, entry.outputs, entry.cell_clip) == (int8.inputs, int8.outputs, int8.cell_clip)
    assert (bundle / "step_int8_edgetpu.log").is_file()
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]   # no temp folder or file left
    # the player picks it: a CPU interpreter stands in for the delegate, as in test_runtime
    model = open_model(loaded, "edgetpu", edgetpu_opener=open_cpu_interpreter)
    assert model.name == entry.file and model.backend == "edgetpu"


def test_a_second_compile_replaces_the_first_entry(bundle, tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch)
    first = add_edgetpu_model(bundle)
    second = add_edgetpu_model(bundle)
    meta = load_bundle(bundle).meta
    assert [m.file for m in meta.models if m.edgetpu] == [second.file] and second.file != first.file
    assert not (bundle / first.file).exists()
    document = json.loads((bundle / "bundle.json").read_text())
    shipped = json.loads((SHIPPED / "bundle.json").read_text())
    assert {k: v for k, v in document.items() if k != "models"} == {k: v for k, v in shipped.items() if k != "models"}


def test_without_the_compiler_one_line_says_where_it_comes_from(bundle, tmp_path, monkeypatch):
    before = snapshot(bundle)
    no_compiler(monkeypatch, tmp_path)
    run = subprocess.run([sys.executable, "-m", "playbach.cli", "edgetpu", str(bundle)], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, PATH=str(tmp_path / "empty-bin")))
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "edgetpu_compiler" in lines[0] and COMPILER_SOURCE in lines[0], run.stderr
    assert "apt" in lines[0] and snapshot(bundle) == before


@pytest.mark.parametrize("body, message", [
    ("echo 'ERROR: unsupported op' >&2; exit 1", "failed .*exit 1.*unsupported op"),
    ("echo compiled", "wrote no step_int8_edgetpu.tflite"),
    ("""printf 'garbage' > "$out/${stem}_edgetpu.tflite\"""", "not a TFLite model"),
])
def test_a_failing_compiler_leaves_the_bundle_as_it_was(bundle, tmp_path, monkeypatch, caplog, body, message):
    stand_in(tmp_path, monkeypatch, body)
    before = snapshot(bundle)
    with pytest.raises(UserError, match=message):
        add_edgetpu_model(bundle)
    assert main(["edgetpu", str(bundle)]) == 2
    assert snapshot(bundle) == before   # no model, no log, no temp folder


def test_not_a_bundle_is_exit_2_naming_it(tmp_path, monkeypatch, caplog):
    stand_in(tmp_path, monkeypatch)
    folder = tmp_path / "photos"
    folder.mkdir()
    assert main(["edgetpu", str(folder)]) == 2
    assert f"{folder / 'bundle.json'}: missing" in caplog.text
    assert main(["edgetpu", str(tmp_path / "nowhere")]) == 2
    assert list(folder.iterdir()) == []


def test_a_bundle_without_an_int8_step_model_is_exit_2(bundle, tmp_path, monkeypatch, caplog):
    stand_in(tmp_path, monkeypatch)
    document = json.loads((bundle / "bundle.json").read_text())
    document["models"] = [m for m in document["models"] if m["variant"] != "int8"]
    (bundle / "bundle.json").write_text(json.dumps(document))
    before = snapshot(bundle)
    assert main(["edgetpu", str(bundle)]) == 2
    assert "no step int8 model in this bundle" in caplog.text and snapshot(bundle) == before


def test_a_corrupt_int8_model_is_not_compiled(bundle, tmp_path, monkeypatch, caplog):
    stand_in(tmp_path, monkeypatch)
    with open(bundle / "step_int8.tflite", "r+b") as f:
        f.seek(1000)
        f.write(b"\xff" * 8)
    before = snapshot(bundle)
    assert main(["edgetpu", str(bundle)]) == 2
    assert "sha256 does not match" in caplog.text and snapshot(bundle) == before
