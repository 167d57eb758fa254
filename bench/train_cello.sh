#!/usr/bin/env bash
# Benchmark: the cello-suite recipe (recipes/cello.toml: all courantes held out) on seeds 0, 1, 2.
# Each seed also draws other validation pieces, which choose the n-gram's order and stop the
# training, so the three runs show how far the LSTM-vs-n-gram ratio moves. Runs go to
# runs/cello-bench-s<seed> (or $1-s<seed>); figures to bench/results/train_cello.json (or $RESULT).
# Arguments after the prefix go to `playbach train`, e.g. `bash bench/train_cello.sh runs/c --voices on`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
prefix=${1:-runs/cello-bench}
shift $(( $# > 0 ? 1 : 0 ))
result=${RESULT:-bench/results/train_cello.json}
corpus=${CELLO:-../shared/corpus/cello-suites}
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p bench/results
for seed in 0 1 2; do
    rm -rf "$prefix-s$seed"
    .venv/bin/playbach train --recipe recipes/cello.toml --corpus "$corpus" --out "$prefix-s$seed" --seed "$seed" "$@"
done
.venv/bin/python - "$prefix" "$result" "$*" <<'PY'
import json, os, sys
from playbach.files import write_text_atomically
prefix, out, extra = sys.argv[1:]
runs = []
for seed in (0, 1, 2):
    r = json.load(open(f"{prefix}-s{seed}/report.json"))
    lstm, ngram = r["test"], r["baseline"]["ngram"]
    runs.append({"seed": seed, "val_pieces": r["split"]["val_pieces"], "pitch_top1": lstm["pitch_top1"],
                 "pitch_nll": lstm["pitch_nll"], "ngram_pitch_top1": ngram["pitch_top1"],
                 "ngram_pitch_nll": ngram["pitch_nll"], "ngram_pitch_order": ngram["pitch_order"],
                 "ratio": lstm["pitch_top1"] / ngram["pitch_top1"], "epochs": r["time"]["epochs"],
                 "best_epoch": r["training"]["best_epoch"], "train_s": r["time"]["train_s"]})
    print(f"seed {seed}: pitch top-1 {lstm['pitch_top1']:.3f} vs n-gram {ngram['pitch_top1']:.3f} "
          f"(order {ngram['pitch_order']}): {runs[-1]['ratio']:.2f}x")
result = {"benchmark": "train_cello", "extra_args": extra, "cpus": os.cpu_count(), "model": r["model"], "runs": runs}
write_text_atomically(out, json.dumps(result, indent=2))
PY
