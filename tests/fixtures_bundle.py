"""Fixtures of the converter: `tiny_bundle`, a real bundle converted from the trainer's `tiny_run`.

Only the models the tests need are built (step float32 + int8, windowed float32) to keep the
session fast, and once for a whole test run (fixtures_run.made_once); tests that change a bundle
copy it first (`bundle_copy`).
"""
import shutil
from pathlib import Path

import pytest
from fixtures_run import made_once

TINY_BUNDLE_MODELS = [("step", "float32"), ("step", "int8"), ("windowed", "float32")]


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """Path of a bundle folder (bundle.json, parity.json, step_float32/step_int8/windowed_float32)."""
    from playbach.convert.build import build_bundle

    base = made_once("tiny_bundle", tmp_path_factory,
                     lambda folder: build_bundle(tiny_run, folder / "bundle", TINY_BUNDLE_MODELS, openings=4))
    return base / "bundle"


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of tiny_bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
