"""The daemon's settings: built-in default < config file (/etc/playbach/config.toml or --config) < flag.

What each setting is, its default and what it accepts live in playbach/settings.py, and so does
the order in which the three sources stack; this module only gives `playbach play` its flags.
"""
from __future__ import annotations

import argparse

from playbach import settings
from playbach.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and one flag per setting; flags default to 'not given' so the file's value is kept."""
    parser.add_argument("--config", help=f"TOML config file (default {settings.DEFAULT_CONFIG} if it exists)")
    settings.add_arguments(parser, keep_unset=True)


def load(args: argparse.Namespace) -> Settings:
    """Defaults, then the config file, then the flags given."""
    return settings.stacked(getattr(args, "config", None), settings.check_arguments(args), "playbach play")
