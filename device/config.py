"""The daemon's settings: built-in default < config file (/etc/playbach/config.toml or --config) < flag.

What each setting is, its default and what it accepts live in playbach/settings.py; this module
only knows where the daemon's file is and in which order the three sources stack.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from playbach import settings

DEFAULT_CONFIG = Path("/etc/playbach/config.toml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and one flag per setting; flags default to 'not given' so the file's value is kept."""
    parser.add_argument("--config", help=f"TOML config file (default {DEFAULT_CONFIG} if it exists)")
    settings.add_arguments(parser, keep_unset=True)


def load(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then the flags given: a plain dict keyed by setting name."""
    values = dataclasses.asdict(settings.DEFAULTS)
    path = Path(args.config) if getattr(args, "config", None) else DEFAULT_CONFIG
    if getattr(args, "config", None) or path.exists():
        values.update(settings.read_file(path))
    values.update(settings.check_arguments(args))
    settings.check_together(values, "playbach play")
    return values
