"""The two forms the converter makes of the runs (trainer/step.py), as TFLite sees them: each
form's inputs (name -> shape, dtype), the roles of its inputs and outputs that bundle.json
records, and its Keras model with the trained weights; and writing one converted model into the
work folder as a bundle entry.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from playbach.bundle import ModelEntry, file_sha256
from playbach.convert import tflite
from playbach.events import FIELDS
from playbach.runtime import StepModel, WindowedModel, open_entry
from playbach.trainer.model import ModelConfig
from playbach.trainer.runfolder import TrainedRun
from playbach.trainer.step import (build_ensemble_step_model, build_ensemble_windowed_model, ensemble_state_sizes,
                                   input_sizes)

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
Spec = dict[str, tuple[tuple[int, ...], str]]


def windowed_specs(cfg: ModelConfig) -> Spec:
    """The windowed model's inputs: N int32 ids per event input (fields, then any voice context)."""
    return {name: ((1, cfg.window), "int32") for name in cfg.input_names}


@dataclass
class Forms:
    """The step and windowed forms of one run or of an ensemble of runs (load_members checked that
    they read the same inputs)."""
    members: list[TrainedRun]
    _models: dict = field(default_factory=dict)

    @property
    def source(self) -> TrainedRun:
        return self.members[0]

    @property
    def configs(self) -> list[ModelConfig]:
        return [m.config for m in self.members]

    @cached_property
    def states(self) -> dict[str, int]:
        """The step form's carried state roles (every member's) and widths."""
        return ensemble_state_sizes(self.configs)

    def specs(self, kind: str) -> Spec:
        cfg = self.source.config
        if kind == "windowed":
            return windowed_specs(cfg)
        return {r: ((1, size), "float32") for r, size in (input_sizes(cfg) | self.states).items()}

    def roles(self, kind: str) -> tuple[list[str], list[str]]:
        """(input roles, output roles) of a form, in the order bundle.json lists them."""
        names = list(self.source.config.input_names)
        if kind == "windowed":
            return names, list(FIELDS)
        return names + list(self.states), list(FIELDS) + list(self.states)

    def keras(self, kind: str) -> keras.Model:
        """The form's Keras model with the trained weights (the members' average for an ensemble)."""
        if kind not in self._models:
            build = build_ensemble_step_model if kind == "step" else build_ensemble_windowed_model
            self._models[kind] = build(self.configs, [m.model for m in self.members])
        return self._models[kind]

    def write(self, work: Path, kind: str, variant: str, blob: bytes, name: str | None = None) -> ModelEntry:
        """`blob` as work/<kind>_<variant>.tflite (or `name`), described as bundle.json lists it."""
        path = work / (name or f"{kind}_{variant}.tflite")
        path.write_bytes(blob)
        inputs, outputs = tflite.io_table(path, *self.roles(kind))
        log.info("%s %s: %d bytes", kind, variant, len(blob))
        return ModelEntry(path.name, kind, variant, file_sha256(path), len(blob), inputs, outputs)

    def open(self, work: Path, entry: ModelEntry) -> StepModel | WindowedModel:
        """A written model through the device runtime, as the Pi plays it."""
        return open_entry(entry, work / entry.file, codec=self.source.codec)
