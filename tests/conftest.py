"""Shared fixtures, one module per owner: a tiny trained run, a tiny bundle, real JACK/FluidSynth."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["fixtures_run", "fixtures_bundle", "fixtures_midi", "fixtures_appliance"]
