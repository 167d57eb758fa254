#!/usr/bin/env bash
# Benchmark: the shipped default's training, the README's command, from nothing to early stop.
# Trains the JSB benchmark's train split (voice context with chords, more dropout, transposition by up to 6 semitones, a
# fresh key per window each epoch) into runs/default (or $1) and writes
# bench/results/train_default.json with the wall time, the machine's load and the run's figures.
# `playbach convert runs/default --out models/default` then makes the shipped bundle.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/default}
export TF_CPP_MIN_LOG_LEVEL=2
export PLAYBACH_CACHE=$(mktemp -d)          # from nothing: no cached parses
trap 'rm -rf "$PLAYBACH_CACHE"' EXIT
mkdir -p bench/results
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
jsb=${JSB:-../shared/corpus/jsb-chorales/Jsb16thSeparated.json}
.venv/bin/playbach train --corpus "$jsb" --out "$out" --seed 0 --transpose 6 --augment random --epochs 80 --patience 5 \
    --voices chords --dropout 0.35 --recurrent-dropout 0.3 --lr-decay 0.5
end=$(date +%s.%N)
.venv/bin/python - "$out" "$start" "$end" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, os, sys
from playbach.files import write_text_atomically
out, start, end, before, after = sys.argv[1:]
r = json.load(open(os.path.join(out, "report.json")))
result = {"benchmark": "train_default", "wall_s": float(end) - float(start), "limit_s": 1800,
          "cpus": os.cpu_count(), "loadavg_before": before, "loadavg_after": after,
          "time": r["time"], "events": r["corpus"]["events"], "test": r["test"],
          "baseline_ngram": r["baseline"]["ngram"], "per_step16": r.get("per_step16"), "model": r["model"]}
write_text_atomically("bench/results/train_default.json", json.dumps(result, indent=2))
print(json.dumps({k: result[k] for k in ("wall_s", "loadavg_before", "loadavg_after")}))
PY
