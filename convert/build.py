"""`playbach convert RUN [RUN ...] --out models/NAME`: trained runs -> a bundle the Pi plays (playbach/bundle.py).

    1. read and check the run folders (trainer/runfolder.py); several runs of one corpus, split
       and codec become one ensemble model whose distributions are their average (step.py)
    2. rebuild the step and windowed forms with the trained weights (step.py)
    3. convert each requested variant (tflite.py; int8 through int8.py, calibrated on real
       training pieces with the states its step model reaches: calibration.py)
    4. compare every model with Keras on the test pieces -> parity.json (parity.py)
    5. Edge TPU op check, and edgetpu_compiler if installed (edgetpu.py)
    6. bundle.json with a sha256 per file, the run's split (with content fingerprints of the
       pieces trained on) and, for a run on the JSB file, the played model's figure on its valid
       and test splits (playbach/evaluate_bundle.py)

Everything is written into a temporary folder next to --out and renamed at the end, so a failed
conversion leaves an earlier bundle at that path as it was.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from playbach.bundle import (KINDS, VARIANTS, Benchmark, BenchmarkFigure, Bundle, BundleMeta, ModelEntry, Opening,
                             SplitRecord, file_sha256, load_bundle)
from playbach.convert import edgetpu, int8, parity, tflite
from playbach.convert.forms import Forms
from playbach.errors import UserError
from playbach.evaluate_bundle import evaluate_bundle
from playbach.files import publish
from playbach.fingerprint import CONTENT_SCHEME, content_fingerprint
from playbach.jsb import looks_like_jsb
from playbach.memory import weights_from_dict
from playbach.runtime import StepModel
from playbach.trainer.runfolder import TrainedRun, load_run

log = logging.getLogger(__name__)

ALL = [(k, v) for k in KINDS for v in VARIANTS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folder written by `playbach train`; several runs (same corpus, split and "
                             "model inputs, e.g. other --seed) are played as one model, their average")
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. models/default")
    parser.add_argument("--variants", nargs="+", default=["all"], metavar="[KIND:]VARIANT",
                        help="models to build: all, or VARIANT (both kinds) or KIND:VARIANT, with KIND "
                             f"in {KINDS} and VARIANT in {VARIANTS}; e.g. step:int8 windowed:dynamic")
    parser.add_argument("--openings", type=int, default=24,
                        help="held-out openings to store (default 24: a take in a key starts from one of that key's mode whose key is clear)")
    parser.add_argument("--opening-events", type=int, default=32, help="events per opening (default 32)")
    parser.add_argument("--test-pieces", type=int, default=8, help="test pieces for parity (default 8)")


def run(args: argparse.Namespace) -> int:
    from playbach.trainer.grid import is_grid_run
    if any(is_grid_run(r) for r in args.runs):
        from playbach.convert.grid import build_grid_bundle
        if not all(is_grid_run(r) for r in args.runs):
            raise UserError(f"{' '.join(args.runs)}: grid runs and event runs cannot be played as one")
        out = build_grid_bundle(args.runs, args.out, args.openings, args.opening_events)
        log.info("grid bundle written to %s", out)
        return 0
    out = build_bundle(args.runs, args.out, parse_variants(args.variants), openings=args.openings,
                       opening_events=args.opening_events, test_pieces=args.test_pieces)
    meta = load_bundle(out, verify=False).meta
    for entry in meta.models:
        log.info("%-32s %9d bytes", entry.file, entry.bytes)
    for name, verdict in meta.parity["checks"].items():
        log.info("parity %-18s %s", name, verdict)
    log.info("bundle written to %s", out)
    return 0


def parse_variants(tokens: list[str]) -> list[tuple[str, str]]:
    wanted = []
    for token in tokens:
        if token == "all":
            wanted += ALL
            continue
        kind, _, variant = token.rpartition(":")
        kinds = [kind] if kind else list(KINDS)
        if variant not in VARIANTS or any(k not in KINDS for k in kinds):
            raise UserError(f"--variants {token!r}: expected all, VARIANT or KIND:VARIANT "
                            f"(KIND in {KINDS}, VARIANT in {VARIANTS})")
        wanted += [(k, variant) for k in kinds]
    return sorted(set(wanted), key=ALL.index)


def build_bundle(run_paths: str | Path | list[str | Path], out: str | Path, wanted: list[tuple[str, str]] = ALL,
                 openings: int = 24, opening_events: int = 32, test_pieces: int = 8) -> Path:
    """Convert the run (or the runs, as one ensemble) into a bundle at `out` (replaced only once
    the new one is complete)."""
    members = load_members([run_paths] if isinstance(run_paths, (str, Path)) else list(run_paths))
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        work.chmod(0o755)  # mkdtemp makes it private; the player may run as another user
    except OSError as e:
        raise UserError(f"{out}: cannot write the bundle there ({e})") from e
    try:
        _build_into(work, members, wanted, openings, opening_events, test_pieces, out.name).write(work)
        publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def load_members(paths: list[str | Path]) -> list[TrainedRun]:
    """The runs of an ensemble, checked to be playable as one: the same codec, the same model inputs
    and window, and the same split (piece names), so the bundle's split and figures hold for all."""
    members = [load_run(p) for p in paths]
    first = members[0]
    for run in members[1:]:
        config, other = first.config, run.config
        differs = [what for what, same in (
            ("codec (vocabularies)", run.codec == first.codec),
            ("model inputs (voice context)", other.input_names == config.input_names),
            ("window", other.window == config.window),
            ("pitch encoding", (other.relative_pitch, other.duration_given_pitch)
             == (config.relative_pitch, config.duration_given_pitch)),
            ("split", all(sorted(run.pieces.get(s, {})) == sorted(first.pieces.get(s, {}))
                          for s in ("train", "val", "test")))) if not same]
        if differs:
            raise UserError(f"{run.path}: cannot be played with {first.path} as one model: its "
                            f"{', '.join(differs)} differ")
    return members


def _build_into(work: Path, members: list[TrainedRun], wanted, openings, opening_events, test_pieces,
                name: str) -> BundleMeta:
    source = members[0]
    side = "test" if source.pieces.get("test") else "val"
    test_rows = {k: v[:256] for k, v in list(source.rows(side).items())[:test_pieces]}
    if not test_rows:
        raise UserError(f"{source.path / 'events.npz'}: no test/ or val/ pieces to check parity on")
    forms = Forms(members)
    made = _convert_all(work, forms, wanted)
    made.figures.update(parity.measure(work, made.entries, forms, test_rows))
    report = made.parity_report(members, test_rows)
    if ("step", "int8") in made.entries:
        report["edgetpu"] = _edge_tpu(work, made.entries)
    (work / "parity.json").write_text(json.dumps(report, indent=1))

    ensemble = {"members": len(members)} if len(members) > 1 else {}
    meta = BundleMeta(
        name=name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), codec=source.codec,
        model=source.config.to_dict() | ensemble, models=list(made.entries.values()),
        openings=_openings(source, openings, opening_events), report=test_figures(source.report),
        # repeat-memory weights fitted by the trainer (playbach/memory.py) on the first run's
        # model; absent for older runs
        memory=weights_from_dict(source.meta.get("memory")), source=source_record(members),
        parity={"step_vs_keras_max_abs_diff": report["step_vs_keras_max_abs_diff"],
                "pitch_top1_agreement": {k: v.get("pitch_top1_agreement") for k, v in made.figures.items()},
                "checks": report["checks"], "notes": made.notes},
        split=split_record(source))
    # measured on the bundle as built (the played variant, through the device runtime), not on Keras
    meta.benchmark = jsb_benchmark(Bundle(work, meta))
    return meta


def source_record(members: list[TrainedRun]) -> dict:
    """bundle.json's `source`: the run (and an ensemble's every run) with its run.json's sha256."""
    source = members[0]
    record = {"run": str(source.path), "run_json_sha256": file_sha256(source.path / "run.json"),
              "corpus": source.meta.get("corpus")}
    if len(members) > 1:
        record["members"] = [{"run": str(m.path), "run_json_sha256": file_sha256(m.path / "run.json")}
                             for m in members]
    return record


def split_record(source: TrainedRun) -> SplitRecord:
    """The run's split for bundle.json. Piece names and fingerprints come from events.npz (what
    the run really held out and trained on); seed from run.json; holdout, the corpus's sha256 and
    the pieces the trainer dropped from report.json (None / empty for runs older than those)."""
    recorded = source.report.get("split") or {}
    return SplitRecord(
        corpus=str(source.meta.get("corpus") or recorded.get("corpus") or ""),
        corpus_sha256=recorded.get("corpus_sha256"), seed=source.meta.get("seed"),
        holdout=recorded.get("holdout"), test=tuple(source.pieces.get("test", {})),
        valid=tuple(source.pieces.get("val", {})), fingerprint=CONTENT_SCHEME,
        train_fingerprints={n: content_fingerprint(v) for n, v in source.pieces.get("train", {}).items()},
        dropped=recorded.get("dropped_train_pieces") or {}, melody_shared=recorded.get("melody_shared") or {})


def jsb_benchmark(bundle: Bundle, splits: tuple[str, ...] = ("valid", "test")) -> Benchmark | None:
    """The bundle's played step model on the JSB file's valid and test splits
    (playbach/evaluate_bundle.py), when its run trained on that file; None for other corpora.
    The file must be the one the run trained on (same sha256): a figure on other data would not
    be the benchmark's, and a bundle without its figure would be quietly less than it claims."""
    split = bundle.meta.split
    if split is None or not split.corpus or not looks_like_jsb(split.corpus):
        return None
    path = Path(split.corpus)
    if not path.is_file():
        raise UserError(f"{path}: the JSB file this run trained on is needed to measure the bundle on its "
                        f"valid and test splits (convert from the folder the run was trained in)")
    sha256 = file_sha256(path)
    if split.corpus_sha256 and sha256 != split.corpus_sha256:
        raise UserError(f"{path}: sha256 {sha256[:12]}... is not that of the file the run trained on "
                        f"({split.corpus_sha256[:12]}...): the benchmark figure would be measured on other data")
    figures = {}
    for name in splits:
        r = evaluate_bundle(bundle, str(path), name)
        figures[name] = BenchmarkFigure(r["pieces"], r["steps16"], r["notes"], r["nll_per_step16"],
                                        r["nll_per_note"], r["variant"], (r["memory"] or {}).get("nll_per_step16"))
        log.info("benchmark %s (%s): %.3f nats per 16th step, %.3f per note", name, r["variant"],
                 r["nll_per_step16"], r["nll_per_note"])
    return Benchmark(str(path), sha256, "step", figures)


@dataclass
class Conversion:
    """What `_convert_all` wrote into the work folder: the entries by (kind, variant), the figures
    of models that could not be built ({"error": why}; parity adds the others'), notes for
    bundle.json, and the float32 step model through the runtime (always made: it decides the int8
    cell clip and stands in for Keras's own step when float32 is not a wanted variant)."""
    entries: dict[tuple[str, str], ModelEntry] = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    step_float32: StepModel | None = None

    def not_built(self, kind: str, variant: str, error: Exception) -> None:
        text = str(error).strip()
        message = f"{type(error).__name__}: {text.splitlines()[-1][:300] if text else ''}"
        log.warning("%s %s not built: %s", kind, variant, message)
        self.notes.append(f"{kind} {variant} not built: {message}")
        self.figures[f"{kind}_{variant}"] = {"error": message}

    def parity_report(self, members: list[TrainedRun], test_rows: dict[str, np.ndarray]) -> dict:
        """parity.json (before its Edge TPU section), from the figures parity.measure added."""
        figures = self.figures
        step_diff = (figures["step_float32"]["max_abs_diff"] if "step_float32" in figures
                     else parity.reached_diff(self.step_float32, members, test_rows))
        return {"variants": figures, "test_pieces": sorted(test_rows), "notes": self.notes,
                "step_vs_keras_max_abs_diff": step_diff, "checks": parity.summary(figures),
                "targets": {"float32_max_abs_diff": parity.FLOAT_MAX_ABS_DIFF,
                            "int8_pitch_top1_agreement": parity.INT8_PITCH_TOP1}}


def _convert_all(work: Path, forms: Forms, wanted: list[tuple[str, str]]) -> Conversion:
    """Write every wanted model into `work`. A step float32, int8 or any windowed variant that
    fails to convert is noted, not fatal (the windowed int8 calibration is known to crash in TF 2.21)."""
    made = Conversion()
    float32 = made.entries[("step", "float32")] = forms.write(
        work, "step", "float32", tflite.convert(forms.keras("step"), forms.specs("step"), "float32"))
    made.step_float32 = forms.open(work, float32)
    for kind, variant in wanted:
        if (kind, variant) in made.entries:
            continue
        try:
            if variant == "int8":
                converted = int8.convert(kind, forms, work, made.step_float32)
                blob, clip = converted.blob, converted.cell_clip
            else:
                blob, clip = tflite.convert(forms.keras(kind), forms.specs(kind), variant), None
        except Exception as e:
            if kind == "step" and variant != "int8":
                raise
            made.not_built(kind, variant, e)
            continue
        made.entries[(kind, variant)] = replace(forms.write(work, kind, variant, blob), cell_clip=clip)
    if ("step", "float32") not in wanted:
        (work / made.entries.pop(("step", "float32")).file).unlink()
    return made


def _edge_tpu(work: Path, entries: dict) -> dict:
    """Op check of the int8 step model; compile it if edgetpu_compiler exists (adds an entry)."""
    entry = entries[("step", "int8")]
    check = edgetpu.op_check(work / entry.file)
    compiled, check["compiler"] = edgetpu.compile_for_edgetpu(work / entry.file)
    if compiled is not None:
        entries[("step", "int8", "edgetpu")] = replace(entry, file=compiled.name, edgetpu=True,
                                                       sha256=file_sha256(compiled), bytes=compiled.stat().st_size)
    return check


def _openings(source: TrainedRun, count: int, events: int) -> list[Opening]:
    """The first events of held-out pieces (test, then val), as field values, to seed playing."""
    held_out = list(source.pieces.get("test", {}).items()) + list(source.pieces.get("val", {}).items())
    return [Opening(name, values[:events]) for name, values in held_out[:count]]


def test_figures(report: dict) -> dict:
    """The training report's held-out test figures: its 'test' section (the LSTM alone) and, when
    the run has one, 'test_memory' (with the repeat memory the bundle carries)."""
    if isinstance(report.get("test"), dict):
        if isinstance(report.get("test_memory"), dict):
            return {**report["test"], "with_memory": report["test_memory"]}
        return report["test"]
    return {k: v for k, v in report.items() if k.startswith("test")}
