#!/usr/bin/env bash
# Benchmark: how closely the full-int8 step model (what a Coral runs) chooses as the trained
# network does, for runs trained with `playbach train`'s defaults on another corpus than the
# shipped model's: the cello suites, all courantes held out, seeds 0, 1, 2. Each run is converted
# (step float32 and int8) and its parity figures kept. Runs go to runs/int8-cello-s<seed> (or
# $1-s<seed>), figures to bench/results/int8_cello.json (or $RESULT). Arguments after the prefix
# go to `playbach train`, e.g. `bash bench/int8_cello.sh runs/free --cell-clip 0` (no clip).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
prefix=${1:-runs/int8-cello}
shift $(( $# > 0 ? 1 : 0 ))
result=${RESULT:-bench/results/int8_cello.json}
corpus=${CELLO:-../shared/corpus/cello-suites}
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p bench/results
for seed in 0 1 2; do
    rm -rf "$prefix-s$seed" "$prefix-s$seed.bundle"
    .venv/bin/playbach train --corpus "$corpus" --holdout '*-3cou*' --out "$prefix-s$seed" --seed "$seed" "$@"
    .venv/bin/playbach convert "$prefix-s$seed" --out "$prefix-s$seed.bundle" --variants step:float32 step:int8
done
.venv/bin/python - "$prefix" "$result" "$*" <<'PY'
import json, os, sys
from playbach.files import write_text_atomically
prefix, out, extra = sys.argv[1:]
runs = []
for seed in (0, 1, 2):
    report = json.load(open(f"{prefix}-s{seed}/report.json"))
    parity = json.load(open(f"{prefix}-s{seed}.bundle/parity.json"))["variants"]["step_int8"]
    runs.append({"seed": seed, "int8_pitch_top1_agreement": parity["pitch_top1_agreement"],
                 "positions": parity["positions"], "int8_mean_kl": parity["mean_kl"],
                 "test_pitch_nll": report["test"]["pitch_nll"], "test_pitch_top1": report["test"]["pitch_top1"],
                 "epochs": report["time"]["epochs"]})
    print(f"seed {seed}: int8 pitch top-1 agreement {runs[-1]['int8_pitch_top1_agreement']:.4f} "
          f"(test pitch NLL {runs[-1]['test_pitch_nll']:.3f})")
model = json.load(open(f"{prefix}-s0/run.json"))["model"]
result = {"benchmark": "int8_cello", "extra_args": extra, "cpus": os.cpu_count(), "cell_clip": model.get("cell_clip"),
          "lowest_agreement": min(r["int8_pitch_top1_agreement"] for r in runs), "runs": runs}
write_text_atomically(out, json.dumps(result, indent=2))
PY
