"""Bundle archives for the tests of playbach/bundle_store.py, playbach push and /api/bundles:
a small real bundle (the shipped bundle.json with one small model file of the right size and
sha256: load_bundle() checks no more of a model than that), and tar.gz archives built entry by
entry, so any header a stranger could send (a link, a device, '..') can be made."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED_JSON = json.loads((REPO / "models" / "events" / "bundle.json").read_text())
MODEL = "step_int8.tflite"


def small_bundle(folder: Path, model: bytes = b"not really a model " * 50) -> Path:
    """A bundle folder load_bundle() accepts: the shipped bundle.json listing one model, `model`."""
    folder.mkdir(parents=True)
    entry = next(m for m in SHIPPED_JSON["models"] if m["file"] == MODEL)
    entry = {**entry, "bytes": len(model), "sha256": hashlib.sha256(model).hexdigest()}
    (folder / "bundle.json").write_text(json.dumps({**SHIPPED_JSON, "models": [entry]}))
    (folder / MODEL).write_bytes(model)
    return folder


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "", size: int | None = None,
          mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    info.size = len(data) if size is None else size
    return info, data


def folder_entries(folder: Path, name: str | None = None) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The entries of `folder` packed as NAME/ (the folder's entry first, then each file)."""
    name = name or folder.name
    return [entry(name, kind=tarfile.DIRTYPE, mode=0o755)] + \
        [entry(f"{name}/{f.name}", f.read_bytes()) for f in sorted(folder.iterdir())]


def tar_gz(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() and info.size == len(data) else None)
    return gzip.compress(raw.getvalue(), compresslevel=1)


def everything_in(folder: Path) -> list[str]:
    """Every path under `folder`, hidden ones too (what a refusal must not leave behind)."""
    if not folder.exists():
        return []
    return sorted(str(Path(root, n).relative_to(folder)) for root, dirs, files in os.walk(folder) for n in dirs + files)
