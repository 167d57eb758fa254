"""The training config: every choice `playbach train` makes about *what* is trained, typed and
checked in one place. Three sources, each over the one before: the defaults here, a recipe file
(`--recipe FILE`, TOML, e.g. recipes/default.toml: the shipped model's), the flags given on the
command line. A recipe's keys are the flags' long names with `_` for `-` (`recurrent_dropout =
0.3` is `--recurrent-dropout 0.3`); where and how to train (--corpus, --out, --resume, --workers,
--distribute, --cpu-devices) stay on the command line.

A recipe with an unknown key, a value of the wrong type or out of range, or that is not TOML is a
UserError naming the file and the key (exit 2), before any corpus is read.
"""
from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from playbach.events import FIELDS, Codec
from playbach.errors import UserError
from playbach.trainer.model import ModelConfig
from playbach.voices import LEVELS

_MODEL = ModelConfig(vocab_sizes=(1, 1, 1, 1))   # the model defaults, below as flag values
MONITORS = ("val_loss",) + tuple(f"val_{f}_loss" for f in FIELDS)
PITCHES, DURATIONS, AUGMENTS = ("relative", "absolute"), ("given-pitch", "alone"), ("copies", "random")
MAX_RECIPE_BYTES = 1 << 16


@dataclass(frozen=True)
class TrainingConfig:
    """What one run trains: the model's shape and inputs, the split, the optimisation and the
    augmentation. `model_config` turns it into the ModelConfig the run records."""
    holdout: str | None = None          # glob of test piece names (None: a seeded 10 %)
    seed: int = 0
    epochs: int = 30                    # the most; early stopping ends sooner
    units: tuple[int, ...] = _MODEL.units
    embed: tuple[int, int, int, int] = _MODEL.embed_dims
    window: int = _MODEL.window
    stride: int = 0                     # 0: window // 2
    batch: int = 64
    lr: float = _MODEL.learning_rate
    dropout: float = _MODEL.dropout
    recurrent_dropout: float = _MODEL.recurrent_dropout
    pitch: str = "relative" if _MODEL.relative_pitch else "absolute"
    interval_dims: int = _MODEL.interval_dims
    cell_clip: float = _MODEL.cell_clip or 0.0   # 0: the cell state is not clipped
    voices: str = list(LEVELS)[_MODEL.voices]
    duration: str = "given-pitch" if _MODEL.duration_given_pitch else "alone"
    patience: int = 3
    lr_decay: float = 0.0
    monitor: str = "val_loss"
    transpose: int = 0
    augment: str = "copies"

    @property
    def window_stride(self) -> int:
        return self.stride or max(1, self.window // 2)

    def model_config(self, codec: Codec) -> ModelConfig:
        relative = self.pitch == "relative"
        return ModelConfig(vocab_sizes=codec.sizes, embed_dims=self.embed, units=self.units, dropout=self.dropout,
                           recurrent_dropout=self.recurrent_dropout, window=self.window, learning_rate=self.lr,
                           relative_pitch=relative, pitch_values=tuple(codec.vocab["pitch"]) if relative else (),
                           interval_dims=self.interval_dims, voices=LEVELS_INDEX[self.voices],
                           duration_given_pitch=self.duration == "given-pitch", cell_clip=self.cell_clip or None)

    def combination_error(self) -> str | None:
        """Why these values cannot train together (as the flags would say it), or None."""
        if self.voices != "off" and self.pitch != "relative":
            return f"--voices {self.voices} needs --pitch relative (or --voices off)"
        if self.duration == "given-pitch" and self.pitch != "relative":
            return "--duration given-pitch needs --pitch relative (or --duration alone)"
        return None


LEVELS_INDEX = {name: i for i, name in enumerate(LEVELS)}


# --- the checks, one per key --------------------------------------------------------------------

def integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer in [{low}, {high}]")
        return value
    return check


def number(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
            and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
        if not ok:
            raise ValueError(f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
        return float(value)
    return check


def integers(low: int, high: int, least: int, most: int) -> Callable[[Any], tuple[int, ...]]:
    one = integer(low, high)

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not least <= len(value) <= most:
            raise ValueError(f"a list of {least}{'' if least == most else f' to {most}'} integers in [{low}, {high}]")
        try:
            return tuple(one(v) for v in value)
        except ValueError:
            raise ValueError(f"a list of integers in [{low}, {high}]") from None
    return check


def choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise ValueError(f"one of {', '.join(map(repr, options))}")
        return value
    return check


def text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 1000 or "\0" in value:
        raise ValueError("a non-empty string")
    return value


FRACTION = number(0.0, 1.0, high_open=True)
CHECKS: dict[str, Callable[[Any], Any]] = {
    "holdout": text, "seed": integer(0, 2**32 - 1), "epochs": integer(1, 100_000),
    "units": integers(1, 8192, 1, 8), "embed": integers(1, 4096, 4, 4), "window": integer(2, 1 << 16),
    "stride": integer(0, 1 << 16), "batch": integer(1, 1 << 20), "lr": number(0.0, 10.0, low_open=True),
    "dropout": FRACTION, "recurrent_dropout": FRACTION, "pitch": choice(*PITCHES),
    "interval_dims": integer(1, 4096), "cell_clip": number(0.0, 1000.0), "voices": choice(*LEVELS),
    "duration": choice(*DURATIONS),
    "patience": integer(0, 10_000), "lr_decay": FRACTION, "monitor": choice(*MONITORS),
    "transpose": integer(0, 48), "augment": choice(*AUGMENTS),
}
assert set(CHECKS) == {f.name for f in fields(TrainingConfig)}


# --- the three sources ----------------------------------------------------------------------------

def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file's values, each checked; a UserError naming the file (and the key) otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot read the recipe ({e.strerror or e})") from e
    if len(raw) > MAX_RECIPE_BYTES:
        raise UserError(f"{path}: over {MAX_RECIPE_BYTES} bytes; not a recipe")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        raise UserError(f"{path}: not a TOML recipe ({e})") from e
    values = {}
    for key, value in document.items():
        if key not in CHECKS:
            raise UserError(f"{path}: unknown key {key!r} (a recipe takes: {', '.join(CHECKS)})")
        values[key] = checked(key, value, f"{path}: key {key!r}")
    return values


def checked(key: str, value: Any, where: str) -> Any:
    try:
        return CHECKS[key](value)
    except ValueError as e:
        raise UserError(f"{where} = {_show(value)} is not {e}") from None


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def resolve(recipe: str | Path | None, flags: dict[str, Any]) -> TrainingConfig:
    """The defaults, then the recipe's values, then the flags given (None: not given), each checked;
    a UserError naming the file and key, or the flag, for a bad one or a bad combination."""
    values = read_recipe(recipe) if recipe else {}
    for key, value in flags.items():
        if value is not None:
            values[key] = checked(key, value, f"--{key.replace('_', '-')}")
    config = replace(TrainingConfig(), **values)
    problem = config.combination_error()
    if problem:
        raise UserError(f"{recipe}: {problem}" if recipe else problem)
    return config


@dataclass(frozen=True)
class Request:
    """What `playbach train` was asked: what to train (config) and where and how (the rest)."""
    config: TrainingConfig
    out: Path
    corpus: str | None = None
    recipe: str | None = None
    resume: str | None = None
    workers: int = 2
    distribute: str | None = None
    cpu_devices: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Request":
        config = resolve(args.recipe, {key: getattr(args, key, None) for key in CHECKS})
        return cls(config, Path(args.out), args.corpus, args.recipe, args.resume, args.workers, args.distribute,
                   args.cpu_devices)
