"""What a test needs from outside the repository (a corpus folder, jackd, fluidsynth, ...).

`missing(what)` is the one way a test gives up for want of such a thing: locally it skips, so a
checkout without the shared corpus or JACK still runs the rest; under CI (`CI=true`) it fails,
because there a skip would pass a run that tested nothing (exit 0 with dozens of skips).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
# The corpus folder the repository sits beside (../shared/corpus); PLAYBACH_CORPUS overrides it.
CORPUS = Path(os.environ.get("PLAYBACH_CORPUS") or REPO.parent / "shared" / "corpus")
JSB = CORPUS / "jsb-chorales" / "Jsb16thSeparated.json"
DEFAULT = REPO / "models" / "default"
EVENTS = REPO / "models" / "events"     # the event model that was the default: planning, int8, a windowed fallback


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


def jsb_file() -> Path:
    """The JSB Chorales benchmark file of the shared corpus, or missing()."""
    if not JSB.is_file():
        missing(f"JSB chorales not found at {JSB} (set PLAYBACH_CORPUS to the corpus folder)")
    return JSB


def write_jsb(path: Path, document) -> Path:
    """A JSB-format file of the test's own making."""
    path.write_text(json.dumps(document))
    return path
