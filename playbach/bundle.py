"""The bundle: the folder that travels from the desktop to the Pi, and its bundle.json schema.

A bundle is .tflite files plus bundle.json (format FORMAT). The schema is written here once:
`BundleMeta` is the whole document, `ModelEntry` one model file, `Tensor` one of its inputs or
outputs with its `Quantization`. `playbach convert` builds a BundleMeta and calls `write`; the
player reads it back with `load_bundle`. The on-disk JSON is flat (a tensor row is {role, name,
shape, dtype, scale, zero_point}) so bundles made before these classes existed still load.

Formats this player reads (READS):
    1   the models, codec, openings, held-out report, parity, repeat memory.
    2   adds `split` (SplitRecord: the run's test and validation piece names, seed, holdout,
        corpus path and sha256, and the content fingerprints of the pieces the model trained on,
        so anyone can measure a bundle on pieces it never saw and check that it never saw them)
        and `benchmark` (Benchmark: the played variant's NLL on the JSB valid and test splits, for
        a run trained on the JSB file). Format 2 is also the first whose step models may take the
        voice-context inputs the runtime computes (roles slot, voice_interval, voice_pitch,
        next_slot, next_position: playbach/voices.py); a format 1 bundle never has them.
A format 1 bundle still plays (split and benchmark are None); any other format is refused.

Nothing here needs TensorFlow. Any problem -- no folder, bad JSON, an unknown format, a model
file missing or not matching its sha256 -- is a UserError naming the file, so the daemon refuses
to start with a message instead of playing garbage.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from playbach.bundle_checks import DTYPES, SHAPE_MAX, show, codec, events, file_name, integer, number, parity
from playbach.errors import UserError
from playbach.events import Codec
from playbach.memory import weights_from_dict, weights_to_dict
from playbach.wire import depth

FORMAT = 2                  # what `playbach convert` writes
READS = (1, 2)              # what load_bundle accepts
BUNDLE_JSON = "bundle.json"
KINDS = ("step", "windowed")                          # one event in, state carried | the last N events in
MODEL_KINDS = (*KINDS, "grid")                        # and a grid model's step (playbach/grid.py)
VARIANTS = ("float32", "float16", "dynamic", "int8")  # see convert/tflite.py for what each one is
MAX_DEPTH = 32          # nesting of bundle.json (a format 2 bundle has 5 levels)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Quantization:
    """real value = (code - zero_point) * scale; scale 0 means the tensor is not quantized."""
    scale: float = 0.0
    zero_point: int = 0


@dataclass(frozen=True)
class Tensor:
    """One input or output of a model file: its role (onset, ..., h0, c0, prev_pitch), the
    interpreter's tensor name, shape and dtype."""
    role: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization = Quantization()

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8") and self.quantization.scale > 0

    def to_dict(self) -> dict:
        return {"role": self.role, "name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.quantization.scale, "zero_point": self.quantization.zero_point}

    @classmethod
    def from_dict(cls, d: dict) -> "Tensor":
        if d["dtype"] not in DTYPES:
            raise ValueError(f"'dtype' = {show(d['dtype'])} is not one of {DTYPES}")
        return cls(str(d["role"]), str(d["name"]), tuple(integer(s, "shape", -1, SHAPE_MAX) for s in d["shape"]),
                   d["dtype"], Quantization(number(d.get("scale", 0.0), "scale", 0.0),
                                            integer(d.get("zero_point", 0), "zero_point", -SHAPE_MAX, SHAPE_MAX)))


@dataclass(frozen=True)
class ModelEntry:
    """One model file of the bundle. cell_clip: the |c| bound an int8 step model was made with."""
    file: str
    kind: str
    variant: str
    sha256: str
    bytes: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    edgetpu: bool = False
    cell_clip: float | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.variant}{' edgetpu' if self.edgetpu else ''}"

    def to_dict(self) -> dict:
        d = {"file": self.file, "kind": self.kind, "variant": self.variant, "edgetpu": self.edgetpu,
             "sha256": self.sha256, "bytes": self.bytes, "inputs": [t.to_dict() for t in self.inputs],
             "outputs": [t.to_dict() for t in self.outputs]}
        if self.cell_clip is not None:
            d["cell_clip"] = self.cell_clip
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelEntry":
        if d["kind"] not in MODEL_KINDS or d["variant"] not in VARIANTS:
            raise ValueError(f"model {d['file']!r}: kind {d['kind']!r} / variant {d['variant']!r} not in "
                             f"{MODEL_KINDS} / {VARIANTS}")
        clip = d.get("cell_clip")
        return cls(file_name(d["file"]), d["kind"], d["variant"], str(d["sha256"]),
                   integer(d.get("bytes", -1), "bytes", -1, 1 << 40),
                   tuple(Tensor.from_dict(t) for t in d.get("inputs", [])),
                   tuple(Tensor.from_dict(t) for t in d.get("outputs", [])),
                   bool(d.get("edgetpu", False)), None if clip is None else number(clip, "cell_clip", 0.0))


@dataclass
class Opening:
    """The first events (field values, (n, 4)) of a held-out piece, to start playing from."""
    piece: str
    events: np.ndarray


@dataclass(frozen=True)
class SplitRecord:
    """The run's split: which pieces the model was measured on and which it trained on.
    `train_fingerprints` are playbach/fingerprint.py content fingerprints (scheme `fingerprint`) of
    the pieces actually trained on, so a test can prove no held-out piece is among them by note
    content, not by name. `dropped`: train pieces the trainer left out because a held-out piece
    has their notes; `melody_shared`: train pieces kept that only share a held-out piece's top line."""
    corpus: str
    corpus_sha256: str | None
    seed: int | None
    holdout: str | None
    test: tuple[str, ...]
    valid: tuple[str, ...]
    fingerprint: str
    train_fingerprints: dict[str, str]          # piece trained on -> its fingerprint (no transposed copies)
    dropped: dict = field(default_factory=dict)
    melody_shared: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"corpus": self.corpus, "corpus_sha256": self.corpus_sha256, "seed": self.seed,
                "holdout": self.holdout, "test": list(self.test), "valid": list(self.valid),
                "fingerprint": self.fingerprint, "train_fingerprints": self.train_fingerprints,
                "dropped": self.dropped, "melody_shared": self.melody_shared}

    @classmethod
    def from_dict(cls, d: dict) -> "SplitRecord":
        seed = d.get("seed")
        return cls(str(d["corpus"]), d.get("corpus_sha256"), None if seed is None else integer(seed, "seed", 0, 1 << 64),
                   d.get("holdout"),
                   tuple(map(str, d["test"])), tuple(map(str, d["valid"])), str(d["fingerprint"]),
                   {str(k): str(v) for k, v in d["train_fingerprints"].items()}, dict(d.get("dropped") or {}),
                   dict(d.get("melody_shared") or {}))


@dataclass(frozen=True)
class BenchmarkFigure:
    """`playbach evaluate BUNDLE` on one split (playbach/evaluate_bundle.py): NLL of every head of
    every event, per 16th step (the JSB benchmark's measure) and per note; memory_* with the
    repeat memory mixed in as the player does, None without one."""
    pieces: int
    steps16: float
    notes: int
    nll_per_step16: float
    nll_per_note: float
    variant: str
    memory_nll_per_step16: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "BenchmarkFigure":
        memory = d.get("memory_nll_per_step16")
        return cls(integer(d["pieces"], "pieces", 0, 1 << 40), number(d["steps16"], "steps16"),
                   integer(d["notes"], "notes", 0, 1 << 40), number(d["nll_per_step16"], "nll_per_step16"),
                   number(d["nll_per_note"], "nll_per_note"), str(d["variant"]),
                   None if memory is None else number(memory, "memory_nll_per_step16"))


@dataclass(frozen=True)
class Benchmark:
    """The bundle's figures on the JSB benchmark, per split name ("valid", "test")."""
    corpus: str
    corpus_sha256: str
    kind: str
    splits: dict[str, BenchmarkFigure]

    def to_dict(self) -> dict:
        return {"corpus": self.corpus, "corpus_sha256": self.corpus_sha256, "kind": self.kind,
                "splits": {k: vars(v) for k, v in self.splits.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Benchmark":
        return cls(str(d["corpus"]), str(d["corpus_sha256"]), str(d["kind"]),
                   {str(k): BenchmarkFigure.from_dict(v) for k, v in d["splits"].items()})


@dataclass
class BundleMeta:
    """bundle.json. `model` is the trainer's ModelConfig as a dict, `report` its held-out test
    figures, `parity` how closely each model follows Keras, `source` the run it came from."""
    name: str
    created: str
    codec: Codec
    model: dict
    models: list[ModelEntry]
    openings: list[Opening] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)
    memory: np.ndarray | None = None   # repeat-memory weights (playbach/memory.py), None if not shipped
    split: SplitRecord | None = None   # format 2 on; None for a format 1 bundle
    benchmark: Benchmark | None = None  # only for a run trained on the JSB file
    format: int = FORMAT

    def to_dict(self) -> dict:
        d = {"format": self.format, "name": self.name, "created": self.created, "codec": self.codec.to_dict(),
             "model": self.model, "models": [m.to_dict() for m in self.models],
             "openings": [{"piece": o.piece, "events": np.asarray(o.events).tolist()} for o in self.openings],
             "report": self.report}
        if self.memory is not None:
            d["memory"] = weights_to_dict(self.memory)
        if self.split is not None:
            d["split"] = self.split.to_dict()
        if self.benchmark is not None:
            d["benchmark"] = self.benchmark.to_dict()
        return d | {"source": self.source, "parity": self.parity}

    @classmethod
    def from_dict(cls, d: dict) -> "BundleMeta":
        """Raises KeyError, TypeError or ValueError on a bad document (load_bundle names the file)."""
        openings = [Opening(str(o.get("piece", i)), events(o["events"])) for i, o in enumerate(d.get("openings", []))]
        return cls(name=str(d.get("name", "")), created=str(d.get("created", "")),
                   codec=codec(d["codec"]), model=dict(d.get("model") or {}),
                   models=[ModelEntry.from_dict(m) for m in d["models"]], openings=openings,
                   report=d.get("report") or {}, source=d.get("source") or {}, parity=parity(d.get("parity")),
                   memory=weights_from_dict(d.get("memory")),
                   split=SplitRecord.from_dict(d["split"]) if d.get("split") else None,
                   benchmark=Benchmark.from_dict(d["benchmark"]) if d.get("benchmark") else None,
                   format=int(d["format"]))

    def write(self, folder: Path) -> Path:
        path = Path(folder) / BUNDLE_JSON
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


@dataclass
class Bundle:
    """A bundle folder, read and checked."""
    path: Path
    meta: BundleMeta

    @property
    def codec(self) -> Codec:
        return self.meta.codec

    @property
    def openings(self) -> list[np.ndarray]:
        return [o.events for o in self.meta.openings]

    @property
    def opening_names(self) -> list[str]:
        return [o.piece for o in self.meta.openings]

    @property
    def memory(self) -> np.ndarray | None:
        return self.meta.memory

    def model_entry(self, kind: str = "step", variant: str = "int8", edgetpu: bool = False) -> ModelEntry:
        """The entry of one model; UserError listing what the bundle has if it's absent."""
        for entry in self.meta.models:
            if (entry.kind, entry.variant, entry.edgetpu) == (kind, variant, edgetpu):
                return entry
        have = [e.describe() for e in self.meta.models]
        raise UserError(f"{self.path / BUNDLE_JSON}: no {kind} {variant}{' edgetpu' if edgetpu else ''} "
                        f"model in this bundle (it has: {', '.join(have) or 'none'})")

    def variants(self, kind: str) -> list[str]:
        """The CPU variants of one kind of model this bundle has, in bundle.json's order."""
        return [e.variant for e in self.meta.models if e.kind == kind and not e.edgetpu]

    def most_faithful_variant(self, kind: str) -> str:
        """The CPU variant of `kind` closest to the Keras model by the bundle's parity figures
        (pitch top-1 agreement); bundle.json's order breaks ties and stands in for missing figures."""
        have = self.variants(kind)
        if not have:
            raise UserError(f"{self.path / BUNDLE_JSON}: no {kind} model in this bundle")
        agreement = self.meta.parity.get("pitch_top1_agreement", {})
        return max(have, key=lambda v: (agreement.get(f"{kind}_{v}") or 0.0, -have.index(v)))

    def model_path(self, entry: ModelEntry) -> Path:
        return self.path / entry.file


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read bundle.json and (with `verify`) check every model file's size and sha256."""
    path = Path(path)
    meta_path = path / BUNDLE_JSON
    if not path.is_dir():
        raise UserError(f"{path}: bundle folder not found")
    try:
        document = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{meta_path}: missing (is {path} a bundle made by `playbach convert`?)") from None
    except (OSError, ValueError) as e:   # UnicodeDecodeError is a ValueError
        raise UserError(f"{meta_path}: not readable JSON ({e})") from e
    except RecursionError:
        document = None
    if document is None or depth(document) > MAX_DEPTH:
        raise UserError(f"{meta_path}: nested deeper than {MAX_DEPTH} levels; not a bundle.json")
    found = document.get("format") if isinstance(document, dict) else None
    if found not in READS or isinstance(found, bool):
        raise UserError(f"{meta_path}: unknown bundle format {found!r} (this player reads formats "
                        f"{', '.join(map(str, READS))})")
    try:
        weights = weights_from_dict(document.get("memory"))
        if weights is not None and not np.isfinite(weights).all():
            raise ValueError("'weights' must be finite")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{meta_path}: bad \"memory\" entry ({e})") from e
    try:
        meta = BundleMeta.from_dict(document)
    except KeyError as e:
        raise UserError(f"{meta_path}: missing key {e}") from e
    except (TypeError, ValueError, AttributeError, OverflowError) as e:   # a value of the wrong kind
        raise UserError(f"{meta_path}: bad entry: {e}") from e
    if verify:
        for entry in meta.models:
            _verify_file(path / entry.file, entry)
    return Bundle(path, meta)


def _verify_file(file: Path, entry: ModelEntry) -> None:
    if not file.is_file():
        raise UserError(f"{file}: listed in {BUNDLE_JSON} but missing")
    if entry.bytes >= 0 and file.stat().st_size != entry.bytes:
        raise UserError(f"{file}: {file.stat().st_size} bytes, {BUNDLE_JSON} says {entry.bytes} (corrupt copy?)")
    if file_sha256(file) != entry.sha256:
        raise UserError(f"{file}: sha256 does not match {BUNDLE_JSON} (corrupt or replaced file)")
