"""Shared fixtures (a tiny trained run, a tiny bundle, real JACK/FluidSynth, an installed
appliance) and the test tiers.

Tiers: `pytest -m "not slow"` is the edit-test loop: no training, no conversion, no pip install,
no jackd or FluidSynth. A test is slow when it is marked so, marked `midi`, or uses a fixture that
does one of those things (SLOW_FIXTURES): the marks follow from what a test uses, so they cannot
drift. A test left in the fast tier that trains, converts, or starts jackd, fluidsynth, pip or
install.sh anyway fails, naming what it started.
"""
from __future__ import annotations

import os
import subprocess

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["fixtures_run", "fixtures_bundle", "fixtures_midi", "fixtures_player", "fixtures_appliance",
                  "fixtures_web"]

# fixtures that train, convert, pip-install or start jackd/FluidSynth (directly or through another)
SLOW_FIXTURES = {"tiny_run", "tiny_bundle", "bundle_copy", "play_bundle", "installed_root",
                 "jack_server", "fluidsynth", "receiver", "distributed_runs"}
SLOW_PROGRAMS = {"jackd", "fluidsynth", "install.sh"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.get_closest_marker("midi") or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _refuse(what: str):
    def refused(*args, **kwargs):
        pytest.fail(f"a test not marked slow {what}: mark it slow (pytest.mark.slow) or use a slow fixture")
    return refused


class _FastTierPopen(subprocess.Popen):
    """subprocess.Popen that refuses the slow programs (subprocess.run goes through it too)."""

    def __init__(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        names = [os.path.basename(str(a)) for a in argv]
        started = SLOW_PROGRAMS.intersection(names) or ({"pip install"} if {"pip", "install"} <= set(names) else set())
        if started:
            _refuse(f"starts {', '.join(sorted(started))}")()
        super().__init__(args, *rest, **kwargs)


@pytest.fixture(autouse=True)
def _fast_tier_guard(request, monkeypatch):
    if request.node.get_closest_marker("slow"):
        yield
        return
    from playbach.convert import build
    from playbach.trainer import train

    monkeypatch.setattr(subprocess, "Popen", _FastTierPopen)
    monkeypatch.setattr(train, "fit", _refuse("trains a model"))
    monkeypatch.setattr(build, "_convert_all", _refuse("converts a model"))
    yield
