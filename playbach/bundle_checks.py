"""The checks of what a bundle.json says, where playbach/bundle.py reads it: a bundle may come
from anyone (a download, a USB stick), so every number is checked finite and in range, a model
file must lie in the bundle folder, and a codec must speak MIDI. Each check raises a ValueError
naming the key; load_bundle() adds the file.
"""
from __future__ import annotations

import math
import reprlib
from pathlib import Path
from typing import Any

import numpy as np

from playbach.events import FIELDS, Codec

DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
# the values a codec's vocabulary and an opening's events may hold, per field
FIELD_RANGES = {"onset": (0, 1 << 20), "pitch": (0, 127), "duration": (0, 1 << 20), "velocity": (0, 127)}
SHAPE_MAX = 1 << 31     # a tensor dimension; -1 is a dynamic one


def show(value: Any) -> str:
    return reprlib.repr(value)


def integer(value: Any, key: str, low: int, high: int) -> int:
    """`value` as an int in [low, high] (a float only when whole); a ValueError naming `key`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key!r} = {show(value)} is not an integer in [{low}, {high}]")
    return value


def number(value: Any, key: str, low: float = -math.inf) -> float:
    """`value` as a finite float from `low` up; a ValueError naming `key`."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
            and value >= low
    except OverflowError:   # an int beyond any float
        ok = False
    if not ok:
        raise ValueError(f"{key!r} = {show(value)} is not a finite number from {low}")
    return float(value)


def file_name(value: Any) -> str:
    """A model's `file`: a plain name in the bundle folder, never a path out of it."""
    if not isinstance(value, str) or Path(value).name != value or value in ("", ".", "..") or "\0" in value:
        raise ValueError(f"'file' = {show(value)} is not a file name in the bundle folder")
    return value


def events(rows: Any, key: str = "events") -> np.ndarray:
    """An opening's (n, 4) field values, each in its field's range."""
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == len(FIELDS) for r in rows):
        raise ValueError(f"{key!r} must be a list of [onset, pitch, duration, velocity] rows")
    return np.array([[integer(v, key, *FIELD_RANGES[f]) for f, v in zip(FIELDS, row)] for row in rows],
                    dtype=np.int64).reshape(-1, len(FIELDS))


def codec(d: Any) -> Codec:
    """The codec, its tick and vocabulary checked (a vocabulary beyond MIDI would play garbage)."""
    if not isinstance(d, dict) or not isinstance(d.get("vocab"), dict):
        raise ValueError("'codec' must be an object with 'ticks_per_quarter' and 'vocab'")
    integer(d.get("ticks_per_quarter"), "ticks_per_quarter", 1, 1 << 16)
    for f in FIELDS:
        values = d["vocab"].get(f)
        if not isinstance(values, list) or not values:
            raise ValueError(f"'vocab' {f!r} must be a non-empty list of integers")
        for v in values:
            integer(v, f"vocab {f}", *FIELD_RANGES[f])
    return Codec.from_dict(d)


def parity(d: Any) -> dict:
    """`parity`, with the figures most_faithful_variant() compares checked."""
    d = dict(d or {})
    agreement = d.get("pitch_top1_agreement", {})
    if not isinstance(agreement, dict):
        raise ValueError("'pitch_top1_agreement' must be an object of model: agreement")
    for name, value in agreement.items():
        if value is not None:
            number(value, f"pitch_top1_agreement {name}")
    return d
