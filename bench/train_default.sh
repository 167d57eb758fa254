#!/usr/bin/env bash
# Benchmark: the shipped default's training, the README's commands, from nothing to early stop.
# The default is two runs of one recipe (recipes/default.toml) on the JSB benchmark's train split,
# seeds 0 and 1, into runs/default and runs/default-s1
# (or $1 and $1-s1), trained one after the other. Writes bench/results/train_default.json with the
# wall time of both, the machine's load and each run's figures.
# `playbach convert runs/default runs/default-s1 --out models/default` then makes the shipped
# bundle: one model, the two runs' average.
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
for seed in 0 1; do
    run=$out; [ "$seed" = 0 ] || run=$out-s$seed
    .venv/bin/playbach train --recipe recipes/default.toml --corpus "$jsb" --out "$run" --seed "$seed"
done
end=$(date +%s.%N)
.venv/bin/python - "$out" "$start" "$end" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, os, sys
from playbach.files import write_text_atomically
out, start, end, before, after = sys.argv[1:]
runs = []
for path in (out, out + "-s1"):
    r = json.load(open(os.path.join(path, "report.json")))
    runs.append({"run": path, "time": r["time"], "best_epoch": r["training"]["best_epoch"], "test": r["test"],
                 "per_step16": r.get("per_step16")})
result = {"benchmark": "train_default", "wall_s": float(end) - float(start), "limit_s": 1800,
          "cpus": os.cpu_count(), "loadavg_before": before, "loadavg_after": after,
          "events": r["corpus"]["events"], "baseline_ngram": r["baseline"]["ngram"], "model": r["model"],
          "runs": runs}
write_text_atomically("bench/results/train_default.json", json.dumps(result, indent=2))
print(json.dumps({k: result[k] for k in ("wall_s", "loadavg_before", "loadavg_after")}))
PY
