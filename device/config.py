"""The player's settings: one table of keys drives both the TOML file and the command-line flags.

Precedence: built-in default < config file (/etc/playbach/config.toml or --config) < flag.
A key in the file that is unknown, of the wrong type or outside its allowed values raises a
UserError naming the key and what it accepts; the flags are checked by the same rules.
"""
from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playbach.errors import UserError

DEFAULT_CONFIG = Path("/etc/playbach/config.toml")
REPO_ROOT = Path(__file__).resolve().parent.parent
# The checkout's shipped bundle (editable install, demo, tests), else where install.sh puts it.
INSTALLED_BUNDLE = Path("/opt/playbach/models/default")
DEFAULT_BUNDLE = next((p for p in (REPO_ROOT / "models" / "default", INSTALLED_BUNDLE)
                       if (p / "bundle.json").is_file()), INSTALLED_BUNDLE)


@dataclass(frozen=True)
class Key:
    name: str
    type: type                       # str, int, float or bool
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None         # inclusive bounds for numbers
    high: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def accepts(self) -> str:
        """What the key takes, in words, for error messages."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None or self.high is not None:
            return f"{self.type.__name__} in [{self.low}, {self.high}]"
        return self.type.__name__

    def check(self, value: Any, where: str) -> Any:
        """The value converted to the key's type, or a UserError naming the key."""
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok or (self.choices and value not in self.choices) or \
                (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise UserError(f"{where}: key '{self.name}' = {value!r} is not allowed; it takes {self.accepts()}")
        return value


KEYS = (
    Key("bundle", str, str(DEFAULT_BUNDLE), "bundle folder made by `playbach convert` (default: the "
        "checkout's models/default, else /opt/playbach/models/default)"),
    Key("model_kind", str, "step", "step model (state carried) or windowed fallback", ("step", "windowed")),
    Key("variant", str, "auto", "model variant in the bundle; auto = int8 on an Edge TPU, else the most "
        "faithful (parity)", ("auto", "int8", "float16", "dynamic", "float32")),
    Key("accelerator", str, "auto", "auto tries the Edge TPU and keeps the faster", ("auto", "cpu", "edgetpu")),
    Key("midi_api", str, "alsa", "MIDI system (rtmidi API)", ("alsa", "jack")),
    Key("port", str, "", "output port: a substring of its name; '' = the first port"),
    Key("virtual_port", str, "", "create a virtual output port of this name instead of --port"),
    Key("channel", int, 1, "MIDI channel", low=1, high=16),
    Key("program", int, 6, "GM program 0-127 sent at start (6 = harpsichord); -1 = none", low=-1, high=127),
    Key("velocity_scale", float, 1.0, "multiply every velocity (clipped to 1..127)", low=0.0, high=4.0),
    Key("bpm", float, 90.0, "tempo in quarter notes per minute", low=10.0, high=400.0),
    Key("temperature", float, 0.9, "sampling temperature (0 = always the likeliest)", low=0.0, high=5.0),
    Key("top_k", int, 0, "sample from the k likeliest tokens only (0 = all)", low=0, high=100000),
    Key("max_repeat", int, 64, "repeat memory: longest run of events a take copies from its own past "
        "(0 = memory off)", low=0, high=100000),
    Key("seed", int, -1, "random seed for a reproducible take (-1 = random)", low=-1, high=2**32 - 1),
    Key("seconds", float, 0.0, "stop after this many seconds (0 = play until stopped)", low=0.0, high=1e9),
    Key("record", str, "", "write what was played to this MIDI file at the end"),
    Key("opening", str, "", "start from this bundle opening (piece name or index; '' = random)"),
    Key("seed_midi", str, "", "start from the notes of this MIDI file instead of an opening"),
    Key("input_port", str, "", "live input port (substring): call and response, CC control"),
    Key("live_gap", float, 1.0, "seconds of silence after which the model answers the player", low=0.1, high=30.0),
    Key("cc_temperature", int, 1, "CC number that sets the temperature live (-1 = off)", low=-1, high=127),
    Key("cc_tempo", int, 2, "CC number that sets the tempo live (-1 = off)", low=-1, high=127),
    Key("lookahead", float, 0.5, "seconds of music generated ahead of the clock", low=0.05, high=10.0),
    Key("realtime_priority", int, 0, "run the play loop at this SCHED_FIFO priority (0 = normal scheduling)",
        low=0, high=99),
    Key("retry_seconds", float, 1.0, "how often to look for a missing port", low=0.05, high=60.0),
    Key("stats", str, "", "write per-note timing statistics (JSON) here at the end (for the live bench)"),
    Key("log_level", str, "info", "logging level", ("debug", "info", "warning", "error")),
)
BY_NAME = {k.name: k for k in KEYS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per key. Flags default to 'not given' so the file's value is kept."""
    parser.add_argument("--config", help=f"TOML config file (default {DEFAULT_CONFIG} if it exists)")
    for key in KEYS:
        kw: dict[str, Any] = {"dest": key.name, "default": argparse.SUPPRESS,
                              "help": f"{key.help} (default {key.default!r})"}
        if key.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = key.type
            kw["metavar"] = key.name.upper()
            if key.choices:
                kw["choices"] = key.choices
        parser.add_argument(key.flag, **kw)


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read config file ({e.strerror})") from e
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from e
    # a [play] table is accepted so one file can hold several commands' settings
    return data.get("play", data) if isinstance(data.get("play"), dict) else data


def load(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then the flags given: a plain dict keyed by key name."""
    settings = {k.name: k.default for k in KEYS}
    path = Path(args.config) if getattr(args, "config", None) else DEFAULT_CONFIG
    if getattr(args, "config", None) or path.exists():
        for name, value in read_toml(path).items():
            key = BY_NAME.get(name)
            if key is None:
                raise UserError(f"{path}: unknown key '{name}'; known keys: {', '.join(BY_NAME)}")
            settings[name] = key.check(value, str(path))
    for key in KEYS:
        if hasattr(args, key.name):
            settings[key.name] = key.check(getattr(args, key.name), key.flag)
    return settings


def reference_table() -> str:
    """The keys as a Markdown table (docs/device.md is generated from this)."""
    rows = ["| key / flag | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for k in KEYS:
        allowed = ", ".join(map(str, k.choices)) if k.choices else (
            f"{k.low:.10g} .. {k.high:.10g}" if k.low is not None else "")
        default = "models/default" if k.name == "bundle" else repr(k.default)
        rows.append(f"| `{k.name}` / `{k.flag}` | {k.type.__name__} | {default} | {allowed} | {k.help} |")
    return "\n".join(rows)
