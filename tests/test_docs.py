"""The documents generated from data stay what the data gives: docs/results.md and the README's
headline table from bench/results/*.json (bench/report.py), so no figure there is typed by hand
or left stale."""
from __future__ import annotations

import subprocess
import sys

from needs import REPO


def test_results_page_is_what_the_results_files_give():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_results_page_check_fails_on_a_stale_page(tmp_path):
    """The check itself can fail: a copy of the generator pointed at a page with one figure changed."""
    script = (REPO / "bench" / "report.py").read_text()
    page = tmp_path / "results.md"
    page.write_text((REPO / "docs" / "results.md").read_text().replace("| 1.856 |", "| 1.855 |", 1))
    copy = tmp_path / "report.py"
    copy.write_text(script.replace('OUT = REPO / "docs" / "results.md"', f"OUT = __import__('pathlib').Path({str(page)!r})")
                    .replace('REPO = Path(__file__).resolve().parent.parent', f"REPO = Path({str(REPO)!r})"))
    done = subprocess.run([sys.executable, str(copy), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not what bench/results gives" in done.stderr


def test_readme_headline_check_fails_on_a_typed_figure(tmp_path):
    """The README's headline table is checked too: a copy with one figure typed over fails."""
    script = (REPO / "bench" / "report.py").read_text()
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text().replace("| 1.856 |", "| 1.855 |", 1))
    copy = tmp_path / "report.py"
    copy.write_text(script.replace('README = REPO / "README.md"', f"README = __import__('pathlib').Path({str(readme)!r})")
                    .replace('REPO = Path(__file__).resolve().parent.parent', f"REPO = Path({str(REPO)!r})"))
    done = subprocess.run([sys.executable, str(copy), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "README.md is not what bench/results gives" in done.stderr
