"""The documents generated from data stay what the data gives: docs/results.md and the README's
headline table from bench/results/*.json (bench/report.py), so no figure there is typed by hand
or left stale."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from needs import REPO


def test_results_page_is_what_the_results_files_give():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("page, line", [
    ("docs/results.md", 'OUT = REPO / "docs" / "results.md"'),
    ("README.md", 'README = REPO / "README.md"'),
])
def test_the_check_fails_on_a_figure_typed_over(tmp_path, page, line):
    """The check itself can fail: a copy of the generator pointed at a copy of the page (the
    results page, the README's headline table) with one figure changed."""
    script = (REPO / "bench" / "report.py").read_text()
    typed = tmp_path / Path(page).name
    typed.write_text((REPO / page).read_text().replace("| 1.856 |", "| 1.855 |", 1))
    assert line in script
    name = line.split(" = ")[0]
    copy = tmp_path / "report.py"
    copy.write_text(script.replace(line, f"{name} = __import__('pathlib').Path({str(typed)!r})")
                    .replace('REPO = Path(__file__).resolve().parent.parent', f"REPO = Path({str(REPO)!r})"))
    done = subprocess.run([sys.executable, str(copy), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"{typed.name} is not what bench/results gives" in done.stderr
