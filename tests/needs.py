"""What a test needs from outside the repository (a corpus folder, jackd, fluidsynth, ...).

`missing(what)` is the one way a test gives up for want of such a thing: locally it skips, so a
checkout without the shared corpus or JACK still runs the rest; under CI (`CI=true`) it fails,
because there a skip would pass a run that tested nothing (exit 0 with dozens of skips).
"""
from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing(what: str) -> NoReturn:
    """Skip the test (locally) or fail it (CI=true), saying what is missing and how to get it."""
    if under_ci():
        pytest.fail(f"{what} (CI=true: a missing requirement fails the run instead of skipping)")
    pytest.skip(what)


def need_program(name: str, package: str) -> str:
    """The path of program `name`, or missing() naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found (Debian package {package}; scripts/setup.sh installs it)")
    return path
