"""`playbach evaluate BUNDLE --corpus FILE_OR_DIR`: a bundle's played model scored, no TensorFlow.

The model is the one the Pi plays (the step model of the variant `auto` picks on the CPU, or
--variant), opened through the device runtime and fed one event at a time from the start of each
piece, state carried, as the player feeds it. Every event of a piece is scored on every head: the
model's distribution after event t-1 scores event t; the first event, which nothing precedes,
is scored as uniform over each head's vocabulary (an upper bound: log of the vocabulary sizes,
the same for every piece). A piece's NLL is the sum over its events and heads, so

    nll_per_step16 = sum of the pieces' NLL / sum of their 16th steps    (the JSB benchmark's measure)
    nll_per_note   = the same sum / the notes (events)

Scored on the model's own distributions, without the sampler's temperature, top-k or sounding-
pitch mask; the "memory" section adds the bundle's repeat memory as the player mixes it in.
A pitch outside the bundle's vocabulary stops the evaluation naming the piece and the pitch (no
piece is skipped); an onset, duration or velocity the codec lacks is encoded as its nearest value,
as the player would, and counted in "nearest_values".
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from playbach.bundle import Bundle, load_bundle
from playbach.errors import UserError
from playbach.events import FIELDS, Codec, merge_overlaps, notes_to_events, quantize_notes
from playbach.heads import given_pitch
from playbach.files import write_text_atomically
from playbach.grid import is_grid, nll_per_step, open_grid
from playbach.jsb import GRID, looks_like_jsb, read_jsb, read_rows, steps16, voice_notes
from playbach.memory import RepeatMemory
from playbach.settings import DEFAULTS

log = logging.getLogger(__name__)
FLOOR = 1e-12          # as the trainer's scores: a zero probability costs 27.6 nats, not infinity

Piece = tuple[str, np.ndarray, float]   # name, events (field values on the codec's grid), 16th steps


def add_arguments(parser) -> None:
    parser.add_argument("bundle", help="bundle folder (holds bundle.json); a run folder is evaluated by the trainer")
    parser.add_argument("--corpus", required=True,
                        help="Jsb16thSeparated.json (or its folder), or a folder of .mid/.midi pieces")
    parser.add_argument("--split", help="split of the JSON file to score: test (default), valid or train")
    parser.add_argument("--json", help="write the figures here (atomically)")
    parser.add_argument("--variant", default="auto",
                        help="model variant (float32, float16, dynamic, int8; auto: the one the CPU player picks)")
    parser.add_argument("--kind", default="step", choices=["step", "windowed"], help="which model form")


def read_pieces(corpus: str, split: str | None, codec: Codec) -> tuple[str, list[Piece]]:
    """(what was read, pieces on the codec's grid) from a JSB JSON file or folder, or MIDI files."""
    path = Path(corpus)
    if path.is_dir():
        jsons = sorted(path.glob("*.json"))
        midis = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
        if len(jsons) == 1:
            path = jsons[0]
        elif midis and not jsons:
            if split:
                raise UserError(f"{path}: a folder of MIDI files has no splits; leave out --split {split}")
            return str(path), [_midi_piece(p, path, codec) for p in midis]
        else:
            raise UserError(f"{path}: expected one JSB .json file or .mid/.midi files in it "
                            f"(found {len(jsons)} .json, {len(midis)} MIDI)")
    split = split or "test"
    tpq = codec.ticks_per_quarter
    if tpq % GRID:
        raise UserError(f"{path}: the bundle's grid ({tpq} ticks per quarter) cannot hold the file's 16th notes")
    pieces = []
    for p in read_jsb(path, (split,))[split]:
        events = p.events.copy()
        events[:, [0, 2]] *= tpq // GRID
        pieces.append((p.name, events, float(p.steps16)))
    return f"{path}:{split}", pieces


def _midi_piece(file: Path, root: Path, codec: Codec) -> Piece:
    from playbach.midifile import read_midi   # mido: only this path needs it

    try:
        raw = read_midi(file)
    except ValueError as e:
        raise UserError(f"{file}: {e}") from e
    if not raw:
        raise UserError(f"{file}: no notes")
    notes, _ = merge_overlaps(quantize_notes(raw, codec.ticks_per_quarter)[0])
    events = notes_to_events(notes)
    return file.relative_to(root).as_posix(), events, steps16(events, codec.ticks_per_quarter)


def encode(codec: Codec, name: str, events: np.ndarray, nearest: dict[str, int]) -> np.ndarray:
    """Token ids of a piece; UserError for a pitch the codec lacks, other misses counted in `nearest`."""
    pitches = set(codec.vocab["pitch"])
    outside = sorted({int(p) for p in events[:, 1]} - pitches)
    if outside:
        raise UserError(f"piece {name}: pitch {outside[0]} is outside the bundle's pitch vocabulary "
                        f"({min(pitches)}..{max(pitches)}; all outside: {outside})")
    for j, f in enumerate(FIELDS):
        known = set(codec.vocab[f])
        nearest[f] += int(sum(int(v) not in known for v in events[:, j]))
    return codec.encode(events)


class Tally:
    """Summed NLL and top-1 hits per head over scored events."""

    def __init__(self) -> None:
        self.nll, self.hits, self.events = np.zeros(4), np.zeros(4), 0

    def add(self, probs: list[np.ndarray], ids: np.ndarray) -> None:
        for j, p in enumerate(probs):
            self.nll[j] -= math.log(max(float(p[ids[j]]), FLOOR))
            self.hits[j] += int(np.argmax(p)) == ids[j]
        self.events += 1

    def figures(self, first_nll: float, pieces: int, steps: float, notes: int) -> dict:
        total = float(self.nll.sum()) + first_nll * pieces
        out = {"nll": total, "nll_per_step16": total / steps, "nll_per_note": total / notes}
        for j, f in enumerate(FIELDS):
            out[f"{f}_nll"] = float(self.nll[j] / max(self.events, 1))
            out[f"{f}_top1"] = float(self.hits[j] / max(self.events, 1))
        return out


def score(model, codec: Codec, pieces: list[Piece], memory_weights: np.ndarray | None) -> dict:
    """The figures of `model` (a runtime StepModel or WindowedModel) on `pieces`, alone and with memory."""
    nearest = {f: 0 for f in FIELDS}
    encoded = [encode(codec, name, events, nearest) for name, events, _ in pieces]
    alone, mixed = Tally(), Tally()
    memory = RepeatMemory(memory_weights, max_repeat=DEFAULTS.max_repeat)
    started = time.perf_counter()
    for ids in encoded:
        model.reset()
        memory.reset()
        probs = None
        for event in ids:
            if probs is not None:
                probs = given_pitch(probs, event[1])   # the duration of a note of this pitch
                alone.add(probs, event)
                mixed.add(memory.mix(probs), event)
            memory.observe(event)
            probs = model.step(event)
    seconds = time.perf_counter() - started
    notes = int(sum(len(i) for i in encoded))
    steps = float(sum(s for _, _, s in pieces))
    first = float(sum(math.log(n) for n in codec.sizes))
    result = {"pieces": len(pieces), "steps16": steps, "notes": notes, "scored_events": alone.events,
              **alone.figures(first, len(pieces), steps, notes),
              "first_event_nll": first, "nearest_values": nearest,
              "memory": (mixed.figures(first, len(pieces), steps, notes) if memory_weights is not None else None),
              "memory_max_repeat": DEFAULTS.max_repeat,
              "seconds": seconds, "ms_per_event": 1e3 * seconds / max(notes, 1)}
    return result


def evaluate_bundle(bundle: Bundle, corpus: str, split: str | None, variant: str = "auto",
                    kind: str = "step") -> dict:
    from playbach.runtime import open_model   # the TFLite interpreter: loaded only when scoring

    if is_grid(bundle):
        return evaluate_grid(bundle, corpus, split)
    source, pieces = read_pieces(corpus, split, bundle.codec)
    model = open_model(bundle, "cpu", kind, variant)
    result = score(model, bundle.codec, pieces, bundle.memory)
    return {"bundle": str(bundle.path), "corpus": source, "split": split or ("test" if ":" in source else None),
            "variant": model.entry.variant, "kind": model.entry.kind, "model_file": model.entry.file,
            "backend": model.backend, **result}


def evaluate_grid(bundle: Bundle, corpus: str, split: str | None) -> dict:
    """A grid bundle's played models on the JSB file's chorales: nats per 16th step, each row
    scored voice by voice from the start of each chorale (playbach/grid.py)."""
    split = split or "test"
    path = Path(corpus)
    found = sorted(path.glob("*.json")) if path.is_dir() else [path]   # a folder: its one .json, as read_pieces
    if len(found) != 1 or not looks_like_jsb(found[0]):
        raise UserError(f"{corpus}: a grid bundle is scored on the JSB file (Jsb16thSeparated.json), its own form")
    path = found[0]
    pieces = [np.asarray(rows) for _, rows in read_rows(path, (split,))[split]]
    model, started = open_grid(bundle), time.perf_counter()
    nll = nll_per_step(model, pieces)
    steps, notes = sum(len(r) for r in pieces), sum(len(voice_notes(r.tolist())) for r in pieces)
    seconds = time.perf_counter() - started
    return {"bundle": str(bundle.path), "corpus": f"{path}:{split}", "split": split, "variant": "dynamic",
            "kind": "grid", "model_file": model.name, "backend": model.backend, "pieces": len(pieces),
            "steps16": float(steps), "notes": notes, "nll": nll * steps, "nll_per_step16": nll,
            "nll_per_note": nll * steps / notes, "memory": None, "seconds": seconds}


def format_summary(r: dict) -> str:
    if r["kind"] == "grid":
        return (f"{r['bundle']} (grid {r['variant']}) on {r['corpus']}: {r['pieces']} pieces, {r['notes']} notes, "
                f"{r['steps16']:.0f} 16th steps\nnll_per_step16 {r['nll_per_step16']:.3f}  "
                f"nll_per_note {r['nll_per_note']:.3f}")
    lines = [f"{r['bundle']} ({r['kind']} {r['variant']}) on {r['corpus']}: {r['pieces']} pieces, "
             f"{r['notes']} notes, {r['steps16']:.0f} 16th steps",
             f"nll_per_step16 {r['nll_per_step16']:.3f}  nll_per_note {r['nll_per_note']:.3f}"
             + (f"  (with memory {r['memory']['nll_per_step16']:.3f} / {r['memory']['nll_per_note']:.3f})"
                if r["memory"] else "")]
    lines += [f"  {f:<9} top-1 {r[f + '_top1']:.3f}  nll {r[f + '_nll']:.3f}" for f in FIELDS]
    return "\n".join(lines)


def run(args) -> int:
    result = evaluate_bundle(load_bundle(args.bundle), args.corpus, args.split, args.variant, args.kind)
    print(format_summary(result))
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=2) + "\n")
        log.info("figures written to %s", args.json)
    return 0
