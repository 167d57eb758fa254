"""What scripts/aarch64.sh asks the Python inside the arm64 root (and, for comparison, the host's).

    python probe.py facts                          machine, interpreter and package versions
    python probe.py steps BUNDLE [STEPS]           ms per model.step, every CPU step variant
    python probe.py take TAKE.mid STATS.json DUMP  what the player recorded, timed and sent

Each prints one JSON object. Only the device extra is used here (numpy, mido, rtmidi, a TFLite
interpreter), so the probe also proves nothing heavier is needed on the Pi.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import sys

import numpy as np


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def ms(seconds) -> dict:
    """Median, 90th percentile and max of a list of seconds, in milliseconds."""
    x = np.asarray(seconds, dtype=float) * 1e3
    if not len(x):
        return {"n": 0}
    return {"n": int(len(x)), "median_ms": round(float(np.median(x)), 3),
            "p90_ms": round(float(np.percentile(x, 90)), 3), "max_ms": round(float(x.max()), 3)}


def facts() -> dict:
    import rtmidi

    from playbach.runtime import interpreter_name

    interpreter = interpreter_name()
    return {
        "uname_m": os.uname().machine,
        "platform_machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "interpreter": interpreter,
        "interpreter_version": version({"ai_edge_litert": "ai-edge-litert",
                                        "tflite_runtime": "tflite-runtime"}.get(interpreter, interpreter)),
        "numpy": version("numpy"), "mido": version("mido"), "python_rtmidi": version("python-rtmidi"),
        "rtmidi_apis": [rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()],
        # the device extra must not drag these in
        "tensorflow_installed": importlib.util.find_spec("tensorflow") is not None,
        "music21_installed": importlib.util.find_spec("music21") is not None,
    }


def steps(bundle_path: str, count: int = 300) -> dict:
    """Per-event inference (one model.step) for each CPU step model of the bundle."""
    from playbach.bundle import load_bundle
    from playbach.runtime import open_model, step_latencies

    bundle = load_bundle(bundle_path)
    out = {}
    for entry in bundle.meta.models:
        if entry.kind != "step" or entry.edgetpu:
            continue
        model = open_model(bundle, "cpu", "step", entry.variant)
        step_latencies(model, bundle, 20)  # warm-up: first calls allocate
        out[entry.variant] = ms(step_latencies(model, bundle, count))
    return {"bundle": bundle.meta.name, "units": bundle.meta.model.get("units"),
            "steps": count, "step_ms": out}


NOTE_ON = re.compile(r"note on .*velocity\s+([1-9]\d*)")  # jack_midi_dump's line for a sounding note_on


def take(take_mid: str, stats_json: str, dump_log: str) -> dict:
    """The recorded take, the player's own per-event timings, and what reached the JACK receiver."""
    from playbach.midifile import read_midi

    notes = read_midi(take_mid)
    with open(stats_json) as f:
        stats = json.load(f)
    with open(dump_log, errors="replace") as f:
        received = sum(1 for line in f if NOTE_ON.search(line))
    pitches = [n[1] for n in notes]
    return {
        "notes_recorded": len(notes),
        "pitch_range": [min(pitches), max(pitches)] if pitches else None,
        "quarters": round(max((n[0] + n[2] for n in notes), default=0.0), 3),
        "first_pitches": pitches[:16],
        "note_ons_received_over_jack": received,
        "model": stats.get("model"), "backend": stats.get("backend"),
        # Player.run() to the first note: bundle check, model open, priming on the opening
        "ready_s": round(stats["play_start"] - stats["process_start"], 3),
        # one generated event = model step + sampling, as timed by the player itself
        "event_ms": ms(stats.get("inference_seconds", [])),
    }


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    if command == "facts":
        result = facts()
    elif command == "steps":
        result = steps(rest[0], int(rest[1]) if len(rest) > 1 else 300)
    elif command == "take":
        result = take(*rest)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
