"""A trained run folder (as trainer/train.py writes it), read and checked: for `evaluate`, `generate` and `convert`.

Every problem with the folder -- a missing file, unreadable JSON, a model whose vocabularies are
not the run's codec -- is a UserError naming the file, so those commands exit 2 with a message
instead of a traceback half-way through.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from playbach.events import FIELDS, Codec
from playbach.errors import UserError
from playbach.trainer.dataset import model_rows
from playbach.trainer.model import ModelConfig, load_keras_model

RUN_FILES = ("model.keras", "run.json", "events.npz")
SPLITS = ("train", "val", "test")
# What a run.json without a field meant: the model as it was trained before the field existed.
BEFORE_FIELD = {"recurrent_dropout": 0.0, "relative_pitch": False, "voices": 0, "duration_given_pitch": False,
                "cell_clip": None}


def model_config(model: dict) -> ModelConfig:
    """run.json's "model" entry as a ModelConfig; a field missing from an older run gets the value
    that run was trained with (BEFORE_FIELD), not today's training default."""
    return ModelConfig.from_dict({**BEFORE_FIELD, **model})


@dataclass
class TrainedRun:
    path: Path
    config: ModelConfig
    codec: Codec
    meta: dict                                   # run.json
    pieces: dict[str, dict[str, np.ndarray]]     # split -> piece name -> (n, 4) field values
    report: dict = field(default_factory=dict)
    _model: object = None

    @property
    def model(self):
        """The trained Keras model (windowed training form), loaded on first use."""
        if self._model is None:
            try:
                self._model = load_keras_model(self.path / "model.keras")
            except Exception as e:
                raise UserError(f"{self.path / 'model.keras'}: cannot load the Keras model ({e})") from e
            self._check_model_matches_codec(self._model)
        return self._model

    def _check_model_matches_codec(self, model) -> None:
        for name, size in zip(FIELDS, self.codec.sizes):
            try:
                rows = model.get_layer(f"embed_{name}").get_weights()[0].shape[0]
                cols = model.get_layer(f"head_{name}").get_weights()[-1].shape[0]   # its output bias
            except ValueError as e:
                raise UserError(f"{self.path / 'model.keras'}: not a playbach model ({e})") from e
            if rows != size or cols != size:
                raise UserError(f"{self.path / 'model.keras'}: field {name!r} has {rows} tokens but the "
                                f"codec in {self.path / 'run.json'} has {size}: model and codec don't match")

    def sides(self) -> dict[str, dict[str, np.ndarray]]:
        """Field values per piece of every split, an empty dict for a split the run lacks."""
        return {split: self.pieces.get(split, {}) for split in SPLITS}

    def ids(self, split: str) -> dict[str, np.ndarray]:
        """Token ids (n, 4) of every piece of one split."""
        return {name: self.codec.encode(ev) for name, ev in self.pieces.get(split, {}).items()}

    def rows(self, split: str) -> dict[str, np.ndarray]:
        """The id rows the Keras model reads (with the voice context if it has voices), per piece."""
        return {name: model_rows(self.codec, ev, self.config.voices) for name, ev in self.pieces.get(split, {}).items()}


def load_run(path: str | Path) -> TrainedRun:
    """Read and check a run folder; the Keras model itself is loaded lazily (it needs TensorFlow)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: run folder not found")
    for name in RUN_FILES:
        if not (path / name).is_file():
            raise UserError(f"{path / name}: missing from the run folder (is it a finished `playbach train` run?)")
    meta = _read_json(path / "run.json")
    try:
        config = model_config(meta["model"])
        codec = Codec.from_dict(meta["codec"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / 'run.json'}: bad or missing 'model'/'codec' entry ({e})") from e
    if tuple(config.vocab_sizes) != codec.sizes:
        raise UserError(f"{path / 'run.json'}: model vocab_sizes {list(config.vocab_sizes)} don't match "
                        f"the codec's vocabularies {list(codec.sizes)}")
    if config.relative_pitch and list(config.pitch_values) != [int(v) for v in codec.vocab["pitch"]]:
        raise UserError(f"{path / 'run.json'}: model pitch_values {list(config.pitch_values)} are not the "
                        f"codec's pitch vocabulary {list(codec.vocab['pitch'])} (relative pitch reads "
                        f"intervals from them)")
    pieces = _read_pieces(path / "events.npz")
    report_path = path / "report.json"
    report = _read_json(report_path) if report_path.is_file() else {}
    return TrainedRun(path, config, codec, meta, pieces, report)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _read_pieces(path: Path) -> dict[str, dict[str, np.ndarray]]:
    pieces: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(path) as npz:
            for key in npz.files:
                split, _, name = key.partition("/")
                events = np.asarray(npz[key], dtype=np.int64)
                if events.ndim != 2 or events.shape[1] != 4:
                    raise ValueError(f"key {key!r} has shape {events.shape}, expected (n, 4)")
                pieces.setdefault(split, {})[name] = events
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable events archive ({e})") from e
    if not pieces.get("train"):
        raise UserError(f"{path}: holds no 'train/<piece>' arrays")
    return pieces
