"""`playbach bench BUNDLE`: per-event latency of every model in a bundle, JSON out, a README table.

Each model runs through playbach.runtime -- the interpreter, one-hot feeding, int8
(de)quantization and state carrying the Pi uses -- on the bundle's openings, one event per call,
one thread. Edge TPU models are skipped (no Coral here); `--live-seconds` adds the live playing
benchmark (playbach.harness.livebench) under "live". Needs no TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from playbach import settings
from playbach.bundle import load_bundle
from playbach.runtime import interpreter_name, open_model, step_latencies
from playbach.files import write_text_atomically

log = logging.getLogger(__name__)
WARMUP = 20
AIM = 50.0  # int8 step vs float32 windowed, times less per event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder (playbach convert --out)")
    parser.add_argument("--out", default="bench.json", help="JSON to write (default bench.json)")
    parser.add_argument("--events", type=int, default=2000, help="events timed per model (default 2000)")
    parser.add_argument("--live-seconds", type=float, default=0, help="also play live for N seconds")
    parser.add_argument("--port", default=None, help="MIDI output port for the live benchmark")
    settings.add_arguments(parser, ("bpm",))   # the live benchmark's tempo: the player's default
    parser.add_argument("--midi-api", default=None, help="rtmidi API of the live benchmark (e.g. jack)")


def run(args: argparse.Namespace) -> int:
    settings.check_arguments(args, ("bpm",))
    result = bench_bundle(args.bundle, args.events)
    if args.live_seconds:
        from playbach.harness.livebench import run_live_bench  # needs rtmidi and JACK: only when asked

        options = {"midi_api": args.midi_api} if args.midi_api else {}  # else the live bench's default
        result["live"] = run_live_bench(args.bundle, args.live_seconds, args.bpm, args.port, **options)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps(result, indent=1))
    print(markdown_table(result))
    log.info("wrote %s", out)
    return 0


def bench_bundle(path: str | Path, events: int = 2000) -> dict:
    bundle = load_bundle(path)
    rows = []
    for entry in bundle.meta.models:
        if entry.edgetpu:
            log.info("skipping %s: no Edge TPU benchmark here", entry.file)
            continue
        model = open_model(bundle, "cpu", entry.kind, entry.variant)
        step_latencies(model, bundle, WARMUP)
        seconds = step_latencies(model, bundle, events)
        rows.append({"file": entry.file, "kind": entry.kind, "variant": entry.variant,
                     "bytes": entry.bytes, "events": events,
                     "median_ms": float(np.median(seconds) * 1e3),
                     "p99_ms": float(np.percentile(seconds, 99) * 1e3),
                     "mean_ms": float(np.mean(seconds) * 1e3)})
        log.info("%-26s median %.4f ms  p99 %.4f ms", entry.file, rows[-1]["median_ms"], rows[-1]["p99_ms"])
    result = {"bundle": str(path), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {"platform": platform.platform(), "processor": platform.machine(),
                          "python": platform.python_version()},
              "interpreter": interpreter_name(), "threads": 1, "models": rows,
              "bundle_bytes": sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file()),
              "model": bundle.meta.model}
    result["speedup"] = _speedups(rows)
    return result


def _speedups(rows: list[dict]) -> dict:
    by = {(r["kind"], r["variant"]): r["median_ms"] for r in rows}
    out = {}
    windowed = by.get(("windowed", "float32"))
    if windowed:
        for (kind, variant), ms in by.items():
            if kind == "step":
                out[f"step_{variant}_vs_windowed_float32"] = windowed / ms
        if ("step", "int8") in by:
            out["aim_int8_step_vs_windowed_float32"] = AIM
            out["aim_met"] = windowed / by[("step", "int8")] >= AIM
    return out


def markdown_table(result: dict) -> str:
    """The README table: one row per model."""
    windowed = {r["variant"]: r["median_ms"] for r in result["models"] if r["kind"] == "windowed"}
    base = windowed.get("float32")
    lines = ["| model | kind | variant | bytes | median ms/event | p99 ms/event | vs float32 windowed |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in result["models"]:
        ratio = f"{base / r['median_ms']:.1f}x" if base else "-"
        lines.append(f"| {r['file']} | {r['kind']} | {r['variant']} | {r['bytes']:,} | "
                     f"{r['median_ms']:.4f} | {r['p99_ms']:.4f} | {ratio} |")
    lines.append(f"\n{result['machine']['processor']}, {result['interpreter']}, 1 thread, "
                 f"{result['models'][0]['events'] if result['models'] else 0} events per model; "
                 f"bundle {result['bundle_bytes']:,} bytes.")
    return "\n".join(lines)
