"""What the daemon loads at start: its settings (built-in default < config file
(/etc/playbach/config.toml or --config) < flag) and its take.

What each setting is, its default and what it accepts live in playbach/settings.py, and so does
the order in which the three sources stack; this module gives `playbach play` its flags.
"""
from __future__ import annotations

import argparse
import logging
import time

from playbach import settings
from playbach.device.process import process_age
from playbach.settings import Settings
from playbach.take import Take

log = logging.getLogger("playbach.device.player")   # the start's lines, as the player's


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and one flag per setting; flags default to 'not given' so the file's value is kept."""
    parser.add_argument("--config", help=f"TOML config file (default {settings.DEFAULT_CONFIG} if it exists)")
    settings.add_arguments(parser, keep_unset=True)


def load(args: argparse.Namespace) -> Settings:
    """Defaults, then the config file, then the flags given."""
    return settings.stacked(getattr(args, "config", None), settings.check_arguments(args), "playbach play")


def load_take(s: Settings) -> Take:
    """Take.build, with how a start's time splits, for anyone timing a boot (journald stamps the line too)."""
    imports_done = time.monotonic()   # python, numpy and the player's modules are loaded by now
    imports_took = process_age()
    take = Take.build(s)
    log.info("model %s on %s; started in %.2f s: python and imports %.2f s, runtime and model load %.2f s",
             take.model.name, take.model.backend, process_age(), imports_took, time.monotonic() - imports_done)
    return take
