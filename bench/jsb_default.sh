#!/usr/bin/env bash
# Benchmark: today's default configuration on the JSB Chorales benchmark (issue 11 item 3).
# Trains on the file's own train split (validation: its valid split) into runs/jsb (or $1),
# converts the run as models/default is converted, scores the bundle's played model (the variant
# the CPU player picks) on the test and valid splits with `playbach evaluate BUNDLE`, and writes
# bench/results/jsb_default.json: those figures beside the run's own n-gram on the same measure
# (nats per 16th step), the published figures, wall times and the machine's load.
# Another configuration (issue 11 item 4): arguments after the run folder go to `playbach train`,
# and RESULT names the JSON (RESULTS: its folder, default bench/results), e.g.
# `RESULT=jsb_transpose6 bash bench/jsb_default.sh runs/jsb_tr6 --transpose 6 --augment random`.
# BENCH_EVENTS: events timed per model (default 2000; the plumbing test times fewer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/jsb}
shift $(( $# > 0 ? 1 : 0 ))
result=${RESULT:-jsb_default}
results=${RESULTS:-bench/results}
jsb=${JSB:-../shared/corpus/jsb-chorales/Jsb16thSeparated.json}
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$results"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
nice -n 19 .venv/bin/playbach train --corpus "$jsb" --out "$out" --seed 0 "$@"
trained=$(date +%s.%N)
nice -n 19 .venv/bin/playbach convert "$out" --out "$out/bundle" --variants step:int8 step:dynamic windowed:dynamic
for split in test valid; do
    .venv/bin/playbach evaluate "$out/bundle" --corpus "$jsb" --split "$split" --json "$out/evaluate_$split.json"
done
end=$(date +%s.%N)
# the appliance limits (item 6): per-event time of every model, one thread, not niced so it times alone
.venv/bin/playbach bench "$out/bundle" --out "$out/bench.json" --events "${BENCH_EVENTS:-2000}" >/dev/null
.venv/bin/python - "$out" "$start" "$trained" "$end" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$results/$result.json" "$*" <<'PY'
import json, os, sys
from playbach.files import write_text_atomically
out, start, trained, end, before, after, path, extra = sys.argv[1:]
name = os.path.basename(path)[:-len(".json")]
r = json.load(open(os.path.join(out, "report.json")))
bundle = {s: json.load(open(os.path.join(out, f"evaluate_{s}.json"))) for s in ("test", "valid")}
parity = json.load(open(os.path.join(out, "bundle", "parity.json")))
keys = ("variant", "pieces", "steps16", "notes", "nll_per_step16", "nll_per_note", "memory",
        *(f"{f}_{k}" for f in ("onset", "pitch", "duration", "velocity") for k in ("top1", "nll")))
result = {"benchmark": name, "train_args": extra, "corpus": r["corpus"]["source"],
          "train_wall_s": float(trained) - float(start), "total_wall_s": float(end) - float(start),
          "cpus": os.cpu_count(), "loadavg_before": before, "loadavg_after": after,
          "bundle": {s: {k: v[k] for k in keys} for s, v in bundle.items()},
          "run_per_step16": r["per_step16"],       # Keras LSTM and the run's n-gram, same measure
          "run_test": r["test"], "run_baseline_ngram": r["baseline"]["ngram"],
          "ms_per_event": {m["file"]: {"median": m["median_ms"], "p99": m["p99_ms"]}
                           for m in json.load(open(os.path.join(out, "bench.json")))["models"]},
          "parity_pitch_top1": {k: v["pitch_top1_agreement"] for k, v in parity["variants"].items()},
          "edgetpu_op_check": {k: parity.get("edgetpu", {}).get(k) for k in ("unsupported", "maps_fully")},
          "time": r["time"], "best_epoch": r["training"]["best_epoch"], "model": r["model"],
          "published_nll_per_step16": {"note": "4 x nats per voice token, Huang et al. 2019 Table 1, "
                                               "validation split", "coconet": 1.74, "transformer": 1.67,
                                       "music_transformer": 1.34}}
write_text_atomically(path, json.dumps(result, indent=2) + "\n")
print(json.dumps({s: round(v["nll_per_step16"], 3) for s, v in bundle.items()}))
PY
