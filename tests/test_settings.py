"""One set of defaults (playbach/settings.py): the same take settings in every command, and the
docs table rewritten from them."""
import argparse
import inspect

import pytest

from playbach import settings
from playbach.cli import main
from playbach.device import config
from playbach.errors import UserError
from playbach.harness import bench, livebench
from playbach.trainer import generate

# What a take sounds like unless told otherwise, in every command (written out, not read from Settings).
TAKE = {"temperature": 0.9, "top_k": 0, "max_repeat": 64, "program": 6, "bpm": 90.0}


def defaults_of(add_arguments, *argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(list(argv)))


def test_play_generate_and_bench_share_one_default_per_setting(tmp_path):
    empty = tmp_path / "empty.toml"    # not /etc/playbach/config.toml, which may exist here
    empty.write_text("")
    play = config.load(argparse.Namespace(**defaults_of(config.add_arguments, "--config", str(empty))))
    gen = defaults_of(generate.add_arguments, "run", "--out", "x.mid")
    for name, value in TAKE.items():
        assert play[name] == value and gen[name] == value, name
    assert defaults_of(bench.add_arguments, "bundle")["bpm"] == TAKE["bpm"]
    assert inspect.signature(livebench.run_live_bench).parameters["bpm"].default == TAKE["bpm"]
    assert play["seed"] == gen["seed"] == -1


def test_generate_checks_its_shared_settings_only(tmp_path, caplog):
    """--temperature 9 is refused naming the flag (exit 2) before the run is read; generate's own
    --opening (a count of events, not play's opening name) is not checked as the setting."""
    assert main(["generate", str(tmp_path / "no-run"), "--out", "x.mid", "--temperature", "9"]) == 2
    assert "--temperature" in caplog.text
    caplog.clear()
    assert main(["generate", str(tmp_path / "no-run"), "--out", "x.mid", "--opening", "8"]) == 2
    assert "run folder not found" in caplog.text


def test_settings_table_is_rewritten_between_its_markers_only():
    text = f"intro\n{settings.TABLE_BEGIN}\nold table\n{settings.TABLE_END}\nafter\n"
    once = settings.rewrite_table(text, "doc.md")
    assert once.startswith(f"intro\n{settings.TABLE_BEGIN}\n") and once.endswith(f"{settings.TABLE_END}\nafter\n")
    assert "old table" not in once and "| `temperature` / `--temperature` | float | 0.9 | 0 .. 5 |" in once
    assert settings.rewrite_table(once, "doc.md") == once
    with pytest.raises(UserError, match="doc.md: no settings table markers"):
        settings.rewrite_table("no markers", "doc.md")


def test_the_documented_settings_table_is_the_generated_one():
    """A setting added or changed without `python -m playbach.settings --markdown` fails here."""
    for name in settings.DOCS_WITH_TABLE:
        text = (settings.REPO_ROOT / name).read_text()
        assert settings.rewrite_table(text, name) == text, f"{name}: run python -m playbach.settings --markdown"
