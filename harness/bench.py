"""`playbach bench BUNDLE`: per-event latency of every model in a bundle, JSON out, a README table.

Each model runs through playbach.runtime -- the interpreter, one-hot feeding, int8
(de)quantization and state carrying the Pi uses -- on the bundle's openings, one event per call,
one thread. Edge TPU models are skipped (no Coral here); `--live-seconds` adds the live playing
benchmark (playbach.harness.livebench) under "live". Under "per_note", the model work per emitted
note of the player's own Improviser (its default settings) with planning on and off: planning draws
several continuations of each beat, so a note costs several model steps. Needs no TensorFlow.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from playbach import settings
from playbach.bundle import load_bundle
from playbach.grid import is_grid, open_grid, rows_of_events, tokens_of
from playbach.runtime import interpreter_name, open_model, step_latencies
from playbach.files import write_text_atomically

log = logging.getLogger(__name__)
WARMUP = 20
AIM = 50.0  # int8 step vs float32 windowed, times less per event
AIM_MS_PER_NOTE = 2.0   # model work per emitted note with planning on, one thread


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder (playbach convert --out)")
    parser.add_argument("--out", default="bench.json", help="JSON to write (default bench.json)")
    parser.add_argument("--events", type=int, default=2000, help="events timed per model (default 2000)")
    parser.add_argument("--per-note-events", type=int, default=1000,
                        help="notes the Improviser draws for the per-note figure (default 1000; 0 = skip)")
    parser.add_argument("--per-note-after", type=int, default=0,
                        help="notes drawn (untimed) before the per-note figure's, e.g. 3000: a take hours long "
                             "has a full repeat memory (default 0: timed from the opening)")
    parser.add_argument("--live-seconds", type=float, default=0, help="also play live for N seconds")
    parser.add_argument("--port", default=None, help="MIDI output port for the live benchmark")
    settings.add_arguments(parser, ("bpm",))   # the live benchmark's tempo: the player's default
    parser.add_argument("--midi-api", default=None, help="rtmidi API of the live benchmark (e.g. jack)")


def run(args: argparse.Namespace) -> int:
    settings.check_arguments(args, ("bpm",))
    result = bench_bundle(args.bundle, args.events)
    if args.per_note_events > 0:
        result["per_note"] = per_note(args.bundle, args.per_note_events, after=args.per_note_after)
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
    if is_grid(bundle):
        rows = [grid_row(bundle, events)]
    else:
        rows = []
        for entry in bundle.meta.models:
            if entry.edgetpu:
                log.info("skipping %s: no Edge TPU benchmark here", entry.file)
                continue
            model = open_model(bundle, "cpu", entry.kind, entry.variant)
            step_latencies(model, bundle, WARMUP)
            rows.append(latency_row(entry.file, entry.kind, entry.variant, entry.bytes,
                                    step_latencies(model, bundle, events)))
    for row in rows:
        log.info("%-26s median %.4f ms  p99 %.4f ms", row["file"], row["median_ms"], row["p99_ms"])
    result = {"bundle": str(path), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {"platform": platform.platform(), "processor": platform.machine(),
                          "python": platform.python_version()},
              "interpreter": interpreter_name(), "threads": 1, "models": rows,
              "bundle_bytes": sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file()),
              "model": bundle.meta.model}
    result["speedup"] = _speedups(rows)
    return result


def latency_row(file: str, kind: str, variant: str, size: int, seconds: np.ndarray) -> dict:
    """One model's row of the table: its median, p99 and mean per call, in ms."""
    return {"file": file, "kind": kind, "variant": variant, "bytes": size, "events": len(seconds),
            "median_ms": float(np.median(seconds) * 1e3), "p99_ms": float(np.percentile(seconds, 99) * 1e3),
            "mean_ms": float(np.mean(seconds) * 1e3)}


def grid_row(bundle, positions: int) -> dict:
    """A grid bundle's step models played as one, timed per position (four a 16th: one a voice),
    fed its openings' rows."""
    model = open_grid(bundle)
    rows = rows_of_events(np.concatenate(bundle.openings), bundle.codec.ticks_per_quarter)
    _, *features = tokens_of(rows)
    seconds = np.empty(positions + WARMUP)
    for i in range(positions + WARMUP):
        start = time.perf_counter()
        model.step([f[i % len(f)] for f in features])
        seconds[i] = time.perf_counter() - start
    return latency_row(model.name, "grid", "dynamic", sum(e.bytes for e in model.entries), seconds[WARMUP:])


def per_note(path: str | Path, events: int, seed: int = 0, after: int = 0) -> dict:
    """Seconds of Improviser work per emitted note (model steps, sampling, planning) over `events`
    notes after the opening and `after` more, with the default settings, planning off and on
    (settings.DEFAULTS.plan): the mean wall and CPU time per note, and the slowest single call (the
    most one loop pass waits)."""
    from playbach.take import make_improviser, open_take_model

    bundle, out = load_bundle(path), {}
    for plan in (0, settings.DEFAULTS.plan):
        s = dataclasses.replace(settings.DEFAULTS, accelerator="cpu", seed=seed, plan=plan)
        improviser = make_improviser(bundle, open_take_model(bundle, s), s)
        for _ in range(len(improviser.pending) + WARMUP + after):
            improviser.next_event()
        calls = np.empty(events)
        cpu = time.process_time()
        for i in range(events):
            start = time.perf_counter()
            improviser.next_event()
            calls[i] = time.perf_counter() - start
        cpu = time.process_time() - cpu   # this process's CPU time alone: less swayed by a busy machine
        out[f"plan={plan}"] = {"plan": plan, "notes": events, "ms_per_note": float(calls.mean() * 1e3),
                               "cpu_ms_per_note": 1e3 * cpu / events,
                               "slowest_call_ms": float(calls.max() * 1e3),
                               "p99_call_ms": float(np.percentile(calls, 99) * 1e3)}
        log.info("per note, plan %d: %.3f ms (slowest call %.2f ms)", plan, out[f"plan={plan}"]["ms_per_note"],
                 out[f"plan={plan}"]["slowest_call_ms"])
    out["aim_ms_per_note"] = AIM_MS_PER_NOTE
    out["after"] = after
    return out


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
