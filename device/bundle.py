"""Reading a bundle folder (contract (2)) on the Pi: bundle.json, checked file by file.

Nothing here needs TensorFlow: a bundle is JSON plus .tflite files. Any problem -- no folder, bad
JSON, an unknown format, a model file missing or not matching its sha256 -- is a UserError naming
the file, so the daemon refuses to start with a message instead of playing garbage.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from playbach.device.events import Codec
from playbach.device.memory import weights_from_dict
from playbach.errors import UserError

FORMAT = 1
BUNDLE_JSON = "bundle.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    path: Path
    meta: dict
    codec: Codec
    openings: list[np.ndarray]
    memory: np.ndarray | None = None   # repeat-memory weights (device/memory.py), None if not shipped

    def model_entry(self, kind: str = "step", variant: str = "int8", edgetpu: bool = False) -> dict:
        """The bundle.json row of one model; UserError listing what the bundle has if it's absent."""
        for entry in self.meta["models"]:
            if (entry["kind"], entry["variant"], bool(entry.get("edgetpu"))) == (kind, variant, edgetpu):
                return entry
        have = [describe(e) for e in self.meta["models"]]
        raise UserError(f"{self.path / BUNDLE_JSON}: no {kind} {variant}{' edgetpu' if edgetpu else ''} "
                        f"model in this bundle (it has: {', '.join(have) or 'none'})")

    def variants(self, kind: str) -> list[str]:
        """The CPU variants of one kind of model this bundle has, in bundle.json's order."""
        return [e["variant"] for e in self.meta["models"] if e["kind"] == kind and not e.get("edgetpu")]

    def most_faithful_variant(self, kind: str) -> str:
        """The CPU variant of `kind` closest to the Keras model by the bundle's parity figures
        (pitch top-1 agreement); bundle.json's order breaks ties and stands in for missing figures."""
        have = self.variants(kind)
        if not have:
            raise UserError(f"{self.path / BUNDLE_JSON}: no {kind} model in this bundle")
        agreement = self.meta.get("parity", {}).get("pitch_top1_agreement", {})
        return max(have, key=lambda v: (agreement.get(f"{kind}_{v}") or 0.0, -have.index(v)))

    def model_path(self, entry: dict) -> Path:
        return self.path / entry["file"]


def describe(entry: dict) -> str:
    return f"{entry['kind']} {entry['variant']}{' edgetpu' if entry.get('edgetpu') else ''}"


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read bundle.json and (with `verify`) check every model file's size and sha256."""
    path = Path(path)
    meta_path = path / BUNDLE_JSON
    if not path.is_dir():
        raise UserError(f"{path}: bundle folder not found")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{meta_path}: missing (is {path} a bundle made by `playbach convert`?)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{meta_path}: not readable JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{meta_path}: unknown bundle format {found!r} (this player reads format {FORMAT})")
    try:
        codec = Codec.from_dict(meta["codec"])
        models = meta["models"]
        openings = [np.asarray(o["events"], dtype=np.int64).reshape(-1, 4) for o in meta.get("openings", [])]
        for entry in models:
            entry["file"], entry["kind"], entry["variant"], entry["sha256"]  # noqa: B018 (required keys)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{meta_path}: bad or missing entry ({e!r})") from e
    try:
        memory = weights_from_dict(meta.get("memory"))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{meta_path}: bad \"memory\" entry ({e})") from e
    if verify:
        for entry in models:
            _verify_file(path / entry["file"], entry)
    return Bundle(path, meta, codec, openings, memory)


def _verify_file(file: Path, entry: dict) -> None:
    if not file.is_file():
        raise UserError(f"{file}: listed in {BUNDLE_JSON} but missing")
    if "bytes" in entry and file.stat().st_size != entry["bytes"]:
        raise UserError(f"{file}: {file.stat().st_size} bytes, {BUNDLE_JSON} says {entry['bytes']} (corrupt copy?)")
    if file_sha256(file) != entry["sha256"]:
        raise UserError(f"{file}: sha256 does not match {BUNDLE_JSON} (corrupt or replaced file)")
