"""`playbach edgetpu BUNDLE`: compile a bundle's int8 step model for a Coral Edge TPU, no retraining.

A bundle already holds the full-integer step model the Edge TPU compiler needs (`step_int8.tflite`),
so a Coral owner runs Coral's own `edgetpu_compiler` on it and the bundle gains one more model
entry, `edgetpu: true`, with its sha256 and size, which the player's `--accelerator auto|edgetpu`
picks up. Nothing here needs TensorFlow: the Pi itself, or any desktop with the compiler, can run it.

The compiler exists only for x86-64 Linux, from Coral's apt repository; without it on PATH the
command says where it comes from and exits 2. The compiled file is placed under a name no current
entry uses and bundle.json is then replaced atomically, so at every moment the folder is a valid
bundle: the old one, or the old one plus the Edge TPU model.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from playbach.bundle import BUNDLE_JSON, Bundle, BundleMeta, ModelEntry, file_sha256, load_bundle
from playbach.errors import UserError
from playbach.files import write_text_atomically

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
COMPILER_SOURCE = "https://coral.ai/docs/edgetpu/compiler/"
COMPILER_HINT = (f"{COMPILER} not on PATH: it comes from Coral's apt repository ({COMPILER_SOURCE}), "
                 f"x86-64 Linux only: add that repository, `apt-get install edgetpu-compiler`, and run again")
COMPILED_NAMES = ("step_int8_edgetpu.tflite", "step_int8_edgetpu.1.tflite")
TFLITE_MAGIC = b"TFL3"   # a .tflite flatbuffer's file identifier, bytes 4..8
TIMEOUT_S = 600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle folder made by `playbach convert`")


def run(args: argparse.Namespace) -> int:
    entry = add_edgetpu_model(Path(args.bundle))
    log.info("%s: %s added (%d bytes, sha256 %s...)", Path(args.bundle) / BUNDLE_JSON, entry.file,
             entry.bytes, entry.sha256[:12])
    return 0


def find_compiler() -> str:
    """The compiler's path; a UserError saying where it comes from when it is not on PATH."""
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise UserError(COMPILER_HINT)
    return compiler


def add_edgetpu_model(folder: Path) -> ModelEntry:
    """Compile the bundle's int8 step model and list it in bundle.json; returns the new entry.
    Any failure (not a bundle, no int8 step model, no compiler, the compiler failing) is a
    UserError and leaves the bundle as it was."""
    bundle = load_bundle(folder)           # the int8 file must be the one bundle.json lists
    source = bundle.model_entry("step", "int8")
    compiler = find_compiler()
    try:
        work = Path(tempfile.mkdtemp(prefix=".edgetpu-", dir=folder))
    except OSError as e:
        raise UserError(f"{folder}: cannot write the Edge TPU model there ({e})") from e
    try:
        compiled = compile_model(compiler, bundle.model_path(source), work)
        return install(bundle, source, compiled)
    except OSError as e:
        raise UserError(f"{folder}: cannot write the Edge TPU model there ({e})") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compile_model(compiler: str, model: Path, out_dir: Path) -> Path:
    """Run the compiler on `model` into `out_dir`; the *_edgetpu.tflite it wrote, checked."""
    try:
        result = subprocess.run([compiler, "-s", "-o", str(out_dir), str(model)], capture_output=True,
                                text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"{compiler}: could not run on {model} ({e})") from e
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    said = (result.stderr.strip() or result.stdout.strip()).splitlines()
    last = f": {said[-1][:300]}" if said else ""
    if result.returncode != 0:
        raise UserError(f"{compiler} failed on {model} (exit {result.returncode}){last}")
    if not compiled.is_file():
        raise UserError(f"{compiler} wrote no {compiled.name} for {model}{last}")
    with open(compiled, "rb") as f:
        if f.read(8)[4:] != TFLITE_MAGIC:
            raise UserError(f"{compiler}: {compiled.name} is not a TFLite model (no {TFLITE_MAGIC.decode()} "
                            f"identifier)")
    log.info("%s", (result.stdout.strip().splitlines() or ["compiled"])[-1])
    return compiled


def install(bundle: Bundle, source: ModelEntry, compiled: Path) -> ModelEntry:
    """Move the compiled model into the bundle under a name no listed file has, then replace
    bundle.json with the new entry in place of any earlier Edge TPU step model, then remove the
    earlier file: a reader finds the old bundle or the new one, never a file that fails its sha256."""
    listed = {m.file for m in bundle.meta.models}
    name = next(n for n in COMPILED_NAMES if n not in listed)
    entry = replace(source, file=name, edgetpu=True, sha256=file_sha256(compiled), bytes=compiled.stat().st_size)
    meta_path = bundle.path / BUNDLE_JSON
    document = json.loads(meta_path.read_text())   # as written: keys this player does not know are kept
    earlier = [m for m in bundle.meta.models if (m.kind, m.variant, m.edgetpu) == ("step", "int8", True)]
    document["models"] = [m for m in document["models"] if m.get("file") not in {e.file for e in earlier}]
    document["models"].append(entry.to_dict())
    BundleMeta.from_dict(document)   # the document stays one this player reads
    target = bundle.path / name
    compiled.chmod(0o644)   # the player may run as another user
    compiled.replace(target)
    try:
        write_text_atomically(meta_path, json.dumps(document, indent=1))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    log_file = compiled.with_suffix(".log")   # the compiler's own report, kept beside the model
    if log_file.is_file():
        log_file.replace(bundle.path / log_file.name)
    for old in earlier:
        if old.file != name:
            (bundle.path / old.file).unlink(missing_ok=True)
    return entry
