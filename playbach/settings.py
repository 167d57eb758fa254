"""One set of defaults: every setting of a take, with its type, default, allowed values and help.

`Settings` is a frozen dataclass: a take's settings are one value, and a live change makes a new
one (dataclasses.replace). It is the one place a default lives (the steering defaults it reads
from playbach/steering.Steering, which the Improviser holds), and each setting says there once
whether a running take may change it and which CC knob turns it: LIVE, KNOBS, the live check
(check_live) and the list a control page draws (live_settings) follow from that. It drives the
flags of `playbach play` (all of them) and the shared ones of `playbach generate` and the live
bench, the TOML config file the daemon and `playbach web` read (unknown key, wrong type, out of
range: a UserError naming the file and the key), and the config table in docs/device.md:

    python -m playbach.settings_table --markdown     # rewrites the table between the marker comments
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from playbach import wire
from playbach.bundle import KINDS, VARIANTS
from playbach.errors import UserError
from playbach.keys import ACCEPTS as KEY_NAMES, MODES, SPELLING, parse_key
from playbach.steering import Steering

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = Path("/etc/playbach/config.toml")   # read by `playbach play` and `playbach web`
INSTALLED_BUNDLE = Path("/opt/playbach/models/default")
# The checkout's shipped bundle (editable install, demo, tests), else where install.sh puts it.
DEFAULT_BUNDLE = next((p for p in (REPO_ROOT / "models" / "default", INSTALLED_BUNDLE)
                       if (p / "bundle.json").is_file()), INSTALLED_BUNDLE)


@dataclass(frozen=True)
class Knob:
    """A CC that sets a setting live: the setting naming the CC number (`cc`), the setting it sets
    (`name`), and the values CC 0 and CC 127 mean (linear between; rounded for an int setting), or
    `choices`: CC 0 .. 127 split into len(choices) equal bands, one value each."""
    cc: str
    name: str
    low: float
    high: float
    choices: tuple = ()

    def value(self, cc_value: int) -> Any:
        if self.choices:
            return self.choices[min(len(self.choices) - 1, cc_value * len(self.choices) // 128)]
        v = self.low + (self.high - self.low) * cc_value / 127
        return round(v) if BY_NAME[self.name].type is int else float(v)


def knob(cc: str, low: float, high: float, choices: tuple = ()) -> Knob:
    """The knob of a live setting; its `name` is the field's (KNOBS fills it in)."""
    return Knob(cc, "", low, high, choices)


def setting(default: Any, help: str, choices: tuple | None = None, low: float | None = None,
            high: float | None = None, shown: str | None = None, rule: Callable[[Any], bool] | None = None,
            accepts: str | None = None, live: bool = False, cc: Knob | None = None) -> Any:
    """A Settings field: its default and what it accepts (`low`/`high` are inclusive bounds;
    `shown` is the default as the docs print it, where the real one depends on the machine;
    `rule` a further test of the value, `accepts` what it accepts in words for the messages);
    `live`: a running take changes it without a restart; `cc`: the knob that turns it (live too)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "low": low, "high": high, "shown": shown, "rule": rule,
        "accepts": accepts, "live": live or cc is not None, "knob": cc})


# The 24 keys a CC chooses among, in this order (CC value v -> KEY_CHOICES[v * 24 // 128]).
KEY_CHOICES = tuple(f"{tonic} {mode}" for tonic in SPELLING for mode in MODES)


def _is_key_name(text: str) -> bool:
    try:
        parse_key(text)
    except ValueError:
        return False
    return True


def _is_host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536)


def host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' (a web_listen value, already checked) as (host, port); [::1]:80 -> ('::1', 80)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    """The settings of a take, with their defaults; `playbach play` takes every one."""
    bundle: str = setting(str(DEFAULT_BUNDLE), "bundle folder made by `playbach convert` (default: the "
                          "checkout's models/default, else /opt/playbach/models/default)", shown="models/default")
    model_kind: str = setting("step", "step model (state carried) or windowed fallback", KINDS)
    variant: str = setting("auto", "model variant in the bundle; auto = int8 on an Edge TPU, else the most "
                           "faithful (parity)", ("auto", *VARIANTS))
    accelerator: str = setting("auto", "auto tries the Edge TPU and keeps the faster", ("auto", "cpu", "edgetpu"))
    midi_api: str = setting("alsa", "MIDI system (rtmidi API)", ("alsa", "jack"))
    port: str = setting("", "output port: a substring of its name; '' = the first port")
    virtual_port: str = setting("", "create a virtual output port of this name instead of --port")
    channel: int = setting(1, "MIDI channel (voices = one)", low=1, high=16)
    program: int = setting(-1, "General MIDI program 0-127 sent when the synth is found (6 = harpsichord); -1 = "
                           "none, the default: a synth keeps the sound its owner chose (a synth that is not "
                           "General MIDI would jump to another patch); the demo and the FluidSynth set-up ask 6",
                           low=-1, high=127)
    voices: str = setting("one", "one: every note on `channel`; four: each voice of the chorale (soprano, alto, "
                          "tenor, bass, as the model's voice context counts them) on its own of `channels`",
                          ("one", "four"))
    channels: tuple[int, ...] = setting((1, 2, 3, 4), "the channels of soprano, alto, tenor and bass "
                                        "(voices = four); flag: comma-separated", low=1, high=16,
                                        rule=lambda v: len(v) == 4, accepts="a list of 4 ints in [1, 16]")
    programs: tuple[int, ...] = setting((), "one program per voice channel, sent when the synth is found "
                                        "(voices = four; -1 = leave that channel's sound); [] = `program` "
                                        "on every channel used; flag: comma-separated", low=-1, high=127,
                                        rule=lambda v: len(v) in (0, 4),
                                        accepts="[] or a list of 4 ints in [-1, 127]")
    thru: bool = setting(False, "pass what arrives on input_port to the output, as a sound module does (never "
                         "our own notes coming back, nor clock, transport or SysEx)")
    velocity_scale: float = setting(1.0, "multiply every velocity (clipped to 1..127)", low=0.0, high=4.0)
    bpm: float = setting(90.0, "tempo in quarter notes per minute", low=10.0, high=400.0,
                         cc=knob("cc_tempo", 40.0, 200.0))
    temperature: float = setting(Steering.temperature, "sampling temperature (0 = always the likeliest); of pitch and velocity "
                                 "when rhythm_temperature is set", low=0.0, high=5.0,
                                 cc=knob("cc_temperature", 0.1, 2.0))
    rhythm_temperature: float = setting(Steering.rhythm_temperature, "sampling temperature of onset and duration (-1 = the same as "
                                        "temperature)", low=-1.0, high=5.0, rule=lambda v: v == -1 or v >= 0,
                                        accepts="-1 (the same as temperature) or a float in [0, 5]",
                                        cc=knob("cc_rhythm_temperature", 0.1, 2.0))
    key: str = setting("", "key to play in, e.g. 'D minor' ('' = the opening's own): the take starts there "
                       "(its opening moved); changed live, what follows is transposed there; the model may "
                       "modulate", rule=_is_key_name, accepts=KEY_NAMES,
                       cc=knob("cc_key", 0, 23, KEY_CHOICES))
    pitch_min: int = setting(Steering.pitch_min, "lowest pitch (MIDI note) the model may choose", low=0, high=127,
                             cc=knob("cc_pitch_min", 0, 127))
    pitch_max: int = setting(Steering.pitch_max, "highest pitch (MIDI note) the model may choose", low=0,
                             high=127, cc=knob("cc_pitch_max", 0, 127))
    density: float = setting(Steering.density, "notes per quarter to aim at, by reweighting the onset head "
                             "(0 = the model's own)", low=0.0, high=16.0, cc=knob("cc_density", 0.0, 4.0))
    top_k: int = setting(Steering.top_k, "sample from the k likeliest tokens only (0 = all)", low=0, high=100000,
                         live=True)
    plan: int = setting(Steering.plan, "planning: candidates for the next beat drawn from the model's state, one "
                        "kept by the model's own likelihood of their pitches (0 = off: one note at a time; "
                        "the event model was measured at 8)", low=0, high=64,
                        cc=knob("cc_plan", 0, 16))
    max_repeat: int = setting(64, "repeat memory: longest run of events a take copies from its own past "
                              "(0 = memory off)", low=0, high=100000)
    seed: int = setting(-1, "random seed for a reproducible take (-1 = random)", low=-1, high=2**32 - 1)
    seconds: float = setting(0.0, "stop after this many seconds (0 = play until stopped)", low=0.0, high=1e9)
    record: str = setting("", "where the take is written: a .mid file, whole at the end; a folder, as it is played, "
                          "a file every record_minutes (a power cut loses at most the one being played)")
    record_minutes: float = setting(5.0, "minutes of music in each file of a record folder", low=0.1, high=1440.0)
    opening: str = setting("", "start from this bundle opening (piece name or index; '' = random)")
    seed_midi: str = setting("", "start from the notes of this MIDI file instead of an opening")
    input_port: str = setting("", "live input port (substring): call and response, CC control; CC 120/123 = panic")
    clock: str = setting("internal", "tempo and start/stop: internal (our own), follow (the MIDI clock on "
                         "clock_port), send (our MIDI clock to the output port)", ("internal", "follow", "send"))
    clock_port: str = setting("", "input port (substring) whose MIDI clock clock = follow follows; may be "
                              "input_port; '' = the first")
    live_gap: float = setting(1.0, "seconds of silence after which the model answers the player", low=0.1, high=30.0)
    cc_temperature: int = setting(1, "CC number that sets the temperature live (-1 = off)", low=-1, high=127)
    cc_tempo: int = setting(2, "CC number that sets the tempo live (-1 = off)", low=-1, high=127)
    cc_rhythm_temperature: int = setting(16, "CC number that sets rhythm_temperature live (-1 = off)",
                                         low=-1, high=127)
    cc_density: int = setting(17, "CC number that sets density live (-1 = off)", low=-1, high=127)
    cc_pitch_min: int = setting(18, "CC number that sets pitch_min live (-1 = off)", low=-1, high=127)
    cc_pitch_max: int = setting(19, "CC number that sets pitch_max live (-1 = off)", low=-1, high=127)
    cc_plan: int = setting(-1, "CC number that sets plan live (CC 0 = off .. 127 = 16 candidates; -1 = off)",
                           low=-1, high=127)
    cc_key: int = setting(-1, "CC number that sets the key live: CC value v -> the (v * 24 // 128)th of C major, "
                          "C minor, C# major, ... B minor (-1 = off)", low=-1, high=127)
    lookahead: float = setting(0.5, "seconds of music generated ahead of the clock", low=0.05, high=10.0)
    realtime_priority: int = setting(0, "run the play loop at this SCHED_FIFO priority (0 = normal scheduling)",
                                     low=0, high=99)
    retry_seconds: float = setting(1.0, "how often to look for a missing port", low=0.05, high=60.0)
    stats: str = setting("", "write per-note timing statistics (JSON) here at the end (for the live bench)")
    control_socket: str = setting(wire.DEFAULT_SOCKET, "the player's control socket (docs/control.md); "
                                  "'' = none; the default is skipped when its folder is missing")
    control_group: str = setting("playbach-web", "group given the control socket (mode 0660) where it exists "
                                 "and the player is in it; else the socket is 0600")
    overrides: str = setting("", "file that keeps the live changes made while playing (the page, a CC knob) "
                             "across restarts: read after the config file and before the flags, written as "
                             "they change; the page's reset removes it ('' = changes last until the player "
                             "stops; the service keeps them in /var/lib/playbach/overrides.json)")
    web_listen: str = setting("127.0.0.1:8080", "HOST:PORT `playbach web` serves the control page on",
                              rule=lambda v: _is_host_port(v), accepts="HOST:PORT, e.g. '0.0.0.0:8080'")
    web_token_file: str = setting("/etc/playbach/web-token", "file holding the control page's token "
                                  "(`playbach web`; the Pi's install.sh writes one, mode 0600)")
    web_session_days: float = setting(30.0, "days a login on the control page lasts (`playbach web`; "
                                      "a new token, from its rotate-token flag, ends every one)", low=0.001, high=3650.0)
    web_hosts: str = setting("", "names the control page answers to besides the Pi's hostname, hostname.local, "
                             "its addresses and localhost: comma-separated (a reverse proxy's name); '*' = any")
    log_level: str = setting("info", "logging level", ("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class Setting:
    """One Settings field as the flags, the config file, the docs and the live path see it."""
    name: str
    type: type                       # str, int, float or bool
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    shown: str | None = None
    rule: Callable[[Any], bool] | None = None
    accepts_text: str | None = None
    live: bool = False
    knob: Knob | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def accepts(self) -> str:
        """What the key takes, in words, for error messages."""
        if self.accepts_text:
            return self.accepts_text
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None or self.high is not None:
            return f"{self.type.__name__} in [{self.low}, {self.high}]"
        return self.type.__name__

    def check(self, value: Any, where: str) -> Any:
        """The value converted to the key's type, or a UserError naming the key."""
        if self.type is tuple:
            return self._check_list(value, where)
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True   # TOML `bpm = 90` means 90.0
        if self.type is float and ok and not math.isfinite(value):
            ok = False   # NaN passes every comparison: `bpm = nan` would play nothing, forever
        if not ok or (self.choices and value not in self.choices) or \
                (self.low is not None and value < self.low) or (self.high is not None and value > self.high) or \
                (self.rule is not None and not self.rule(value)):
            raise UserError(f"{where}: key '{self.name}' = {value!r} is not allowed; it takes {self.accepts()}")
        return value

    def _check_list(self, value: Any, where: str) -> tuple:
        """A list of ints (TOML array, or a flag's comma-separated text), each in [low, high]."""
        given = value
        if isinstance(value, str):
            try:
                value = [int(v) for v in value.split(",")] if value.strip() else []
            except ValueError:
                value = [value]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                      and self.low <= v <= self.high for v in value)
        if not ok or (self.rule is not None and not self.rule(tuple(value))):
            raise UserError(f"{where}: key '{self.name}' = {given!r} is not allowed; it takes {self.accepts()}")
        return tuple(value)


def _setting_type(hint: Any) -> type:
    """str, int, float, bool, or tuple for a list of ints."""
    return tuple if typing.get_origin(hint) is tuple else hint


_TYPES = typing.get_type_hints(Settings)   # the annotations are strings here (from __future__)
KEYS = tuple(Setting(f.name, _setting_type(_TYPES[f.name]), f.default, **{("accepts_text" if m == "accepts" else m): v
                                                         for m, v in f.metadata.items()})
             for f in dataclasses.fields(Settings))
BY_NAME = {k.name: k for k in KEYS}
DEFAULTS = Settings()


LIVE = tuple(k.name for k in KEYS if k.live)   # what a running take changes (CC knobs, the control path)
# The CC map (README "Steering"): the knob of each live setting that has one; the live input reads it.
KNOBS = tuple(dataclasses.replace(k.knob, name=k.name) for k in KEYS if k.knob is not None)


def check_together(values: Mapping[str, Any] | Settings, where: str) -> None:
    """The rules between keys: pitch_min <= pitch_max (a range against the bundle's pitches is
    checked when the bundle is loaded: playbach.steering.pitch_mask), one setting per CC number."""
    if isinstance(values, Settings):
        values = vars(values)
    if values["pitch_min"] > values["pitch_max"]:
        raise UserError(f"{where}: key 'pitch_min' = {values['pitch_min']} is above 'pitch_max' = "
                        f"{values['pitch_max']}; pitch_min takes an int in [0, pitch_max]")
    taken: dict[int, str] = {}
    for knob in KNOBS:
        number = values.get(knob.cc, -1)
        if number >= 0 and number in taken:
            raise UserError(f"{where}: key '{knob.cc}' = {number} is also '{taken[number]}'; "
                            f"each CC number turns one setting (-1 = off)")
        taken[number] = knob.cc


def check_live(changes: Mapping[str, Any], current: Settings, where: str = "live") -> dict[str, Any]:
    """`changes` to a running take, each checked by its setting's rules and all together with the
    rest of `current`: the checked values, or a UserError naming the key (nothing is changed)."""
    checked = {}
    for name, value in changes.items():
        if name not in LIVE:
            what = "cannot change while playing" if name in BY_NAME else "is not a setting"
            raise UserError(f"{where}: key '{name}' {what}; live keys: {', '.join(LIVE)}")
        checked[name] = BY_NAME[name].check(value, where)
    check_together(dataclasses.replace(current, **checked), where)
    return checked


def live_settings(current: Settings = DEFAULTS) -> list[dict[str, Any]]:
    """The live settings as plain JSON-able data, for a page to draw its controls from: name,
    type, value now, default, range or choices, help, and the CC number that turns it (-1 = none)."""
    rows = []
    for k in (BY_NAME[name] for name in LIVE):
        choices = k.choices or (k.knob.choices if k.knob is not None else None)
        rows.append({"name": k.name, "type": k.type.__name__, "value": getattr(current, k.name),
                     "default": k.default, "low": k.low, "high": k.high,
                     "choices": list(choices) if choices else None, "accepts": k.accepts(), "help": k.help,
                     "cc": getattr(current, k.knob.cc) if k.knob is not None else -1})
    return rows


def stacked(config: str | None, flags: Mapping[str, Any], where: str) -> Settings:
    """Defaults, then the config file (`config`, else DEFAULT_CONFIG if it exists), then `flags`
    (already checked), checked together: the settings of one command."""
    values = vars(DEFAULTS).copy()
    path = Path(config) if config else DEFAULT_CONFIG
    if config or path.exists():
        values.update(read_file(path))
    values.update(flags)
    check_together(values, where)
    return Settings(**values)


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None,
                  keep_unset: bool = False) -> None:
    """One flag per setting (all, or `names`), help and default from Settings.

    keep_unset: the flag's default is 'not given' (absent from the namespace), so a value from
    a config file below it survives; check_arguments() or load() then check what was given."""
    for key in (BY_NAME[n] for n in names) if names is not None else KEYS:
        kw: dict[str, Any] = {"dest": key.name, "default": argparse.SUPPRESS if keep_unset else key.default,
                              "help": f"{key.help} (default {key.shown or repr(key.default)})"}
        if key.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif key.type is tuple:   # text here; check_arguments() reads the list and names the flag
            kw["metavar"] = "N,N,N,N"
        else:
            kw["type"] = key.type
            kw["metavar"] = key.name.upper()
            if key.choices:
                kw["choices"] = key.choices
        parser.add_argument(key.flag, **kw)


def check_arguments(args: argparse.Namespace, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The settings given as flags (all, or `names`: a command may have its own flag of a
    setting's name, as generate's --opening), checked by their rules (a UserError naming the flag)."""
    keys = [BY_NAME[n] for n in names] if names is not None else KEYS
    return {k.name: k.check(getattr(args, k.name), k.flag) for k in keys if hasattr(args, k.name)}


def read_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file, checked: unknown keys, wrong types and values out of range
    are UserErrors naming the file and the key. A [play] table is read if there is one, so one
    file can hold several commands' settings."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise UserError(f"{path}: cannot read config file ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); TOML files are UTF-8") from e
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from e
    except RecursionError:
        raise UserError(f"{path}: not valid TOML (nested too deeply)") from None
    data = data["play"] if isinstance(data.get("play"), dict) else data
    values = {}
    for name, value in data.items():
        key = BY_NAME.get(name)
        if key is None:
            raise UserError(f"{path}: unknown key '{name}'; known keys: {', '.join(BY_NAME)}")
        values[name] = key.check(value, str(path))
    return values
