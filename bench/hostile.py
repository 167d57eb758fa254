"""A hostile load on the real player (issue 22 item 2): JSON to bench/results/hostile.json.

    python bench/hostile.py [--bundle models/default] [--seconds 10] [--out bench/results/hostile.json]

What each window loads and what is measured: playbach/harness/hostile.py (harness/ in the repo).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from playbach.files import write_text_atomically
from playbach.harness.hostile import KINDS, run

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=REPO / "models" / "default")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each window")
    p.add_argument("--gap", type=float, default=3.0, help="quiet seconds between windows")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"windows after the quiet one (of {','.join(KINDS)})")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hostile.json")
    a = p.parse_args(argv)
    kinds = tuple(a.kinds.split(","))
    if not set(kinds) <= set(KINDS):
        p.error(f"--kinds: unknown {sorted(set(kinds) - set(KINDS))}; known: {','.join(KINDS)}")
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(a.bundle, Path(tmp), a.seconds, a.gap, kinds)
    result = {"what": "issue 22 item 2: a hostile load on the real player (bench/hostile.py)",
              "cpus": os.cpu_count(), "load_average": {"before": before, "after": os.getloadavg()}, **result}
    print(json.dumps(result, indent=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(a.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
