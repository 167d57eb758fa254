"""The flashed image's boot-time setup (device/firstboot.py): playbach.toml from the boot partition
into /etc/playbach/config.toml by config.toml's own rules, SSH keys, the fresh token.

Real files in a temp folder stand for the card and /etc; the player's own config reader reads what
was copied. systemctl and ssh-keygen are the one thing recorded instead of run (they would change
this machine); the booted image runs them for real (scripts/build-image.sh --boot-test).
"""
from __future__ import annotations

import logging
import os
import stat
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from playbach import settings
from playbach.device import firstboot
from playbach.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = (REPO / "systemd" / "config.toml").read_text()
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv5k7bX0sQ1bWq0m2J0mJv8M3oYV7qK9Yp2bE3cWq1X me@laptop"


@pytest.fixture
def card_etc(tmp_path):
    card, etc, state = tmp_path / "boot", tmp_path / "etc", tmp_path / "state"
    card.mkdir()
    (etc / "playbach").mkdir(parents=True)
    return card, etc / "playbach" / "config.toml", state


def shipped_with(**changes) -> str:
    """The shipped config.toml with keys set (the bundle key pointed at the checkout's bundle)."""
    lines = SHIPPED.replace('bundle = "/opt/playbach/models/default"',
                            f'bundle = "{settings.DEFAULT_BUNDLE}"').splitlines()
    for key, value in changes.items():
        lines = [f"{key} = {value}" if line.startswith(f"{key} = ") else line for line in lines]
        if f"{key} = {value}" not in lines:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_good_file_is_copied_and_the_player_reads_it(card_etc):
    card, config, state = card_etc
    (card / "playbach.toml").write_text(shipped_with(bpm=72))
    assert firstboot.apply_user_config(card, config, state) == "applied"
    assert config.read_text() == (card / "playbach.toml").read_text()
    assert settings.read_file(config)["bpm"] == 72.0
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    assert leftovers(config.parent) == [] and not (card / "playbach-error.txt").exists()


def test_unchanged_file_is_not_copied_again_so_an_edit_on_the_pi_stays(card_etc):
    card, config, state = card_etc
    (card / "playbach.toml").write_text(shipped_with(bpm=72))
    firstboot.apply_user_config(card, config, state)
    config.write_text(shipped_with(bpm=100))   # edited over SSH afterwards
    assert firstboot.apply_user_config(card, config, state) == "unchanged"
    assert settings.read_file(config)["bpm"] == 100.0
    (card / "playbach.toml").write_text(shipped_with(bpm=60))   # edited on the card again
    assert firstboot.apply_user_config(card, config, state) == "applied"
    assert settings.read_file(config)["bpm"] == 60.0


@pytest.mark.parametrize("extra, named", [
    ("bpm = 900\n", ["key 'bpm'", "line"]),
    ("tempo = 90\n", ["unknown key 'tempo'", "line"]),
    ("channel = 'one'\n", ["key 'channel'", "line"]),
    ("pitch_min = 90\npitch_max = 60\n", ["key 'pitch_min'", "line"]),
    ("bpm = = 3\n", ["not valid TOML", "line"]),
])
def test_bad_file_names_file_line_and_key_and_keeps_the_previous_config(card_etc, caplog, extra, named):
    card, config, state = card_etc
    config.write_text(SHIPPED)
    before = config.read_bytes()
    (card / "playbach.toml").write_text("# my settings\n" + extra)
    line = 2
    with caplog.at_level(logging.ERROR):
        assert firstboot.apply_user_config(card, config, state) == "rejected"
    message = caplog.records[-1].getMessage()
    assert str(card / "playbach.toml") in message
    for part in named:
        assert part in message
    assert f"line {line}" in message
    assert config.read_bytes() == before and leftovers(config.parent) == []
    note = (card / "playbach-error.txt").read_text()
    assert str(card / "playbach.toml") in note and "left as it was" in note
    # fixed on the card: applied at the next boot, and the note goes
    (card / "playbach.toml").write_text(shipped_with(bpm=80))
    assert firstboot.apply_user_config(card, config, state) == "applied"
    assert not (card / "playbach-error.txt").exists()


def test_bad_file_without_a_previous_config_leaves_none(card_etc, caplog):
    card, config, state = card_etc
    (card / "playbach.toml").write_text("port = 5\n")
    with caplog.at_level(logging.ERROR):
        assert firstboot.apply_user_config(card, config, state) == "rejected"
    assert "the default config" in caplog.text and "line 1" in caplog.text
    assert not config.exists() and not state.exists()


def test_missing_bundle_is_rejected(card_etc, caplog):
    card, config, state = card_etc
    (card / "playbach.toml").write_text('bpm = 80\nbundle = "/nowhere/bundle"\n')
    assert firstboot.apply_user_config(card, config, state) == "rejected"
    assert "key 'bundle'" in caplog.text and "(line 2)" in caplog.text


def test_not_utf8_and_absent(card_etc):
    card, config, state = card_etc
    assert firstboot.apply_user_config(card, config, state) == "absent"
    (card / "playbach.toml").write_bytes(b"bpm = 80\n# \xff\xfe\n")
    assert firstboot.apply_user_config(card, config, state) == "rejected"
    assert not config.exists()


TOML_ALPHABET = string.ascii_letters + string.digits + " =_.\"'[]#\n-+\\,{}:" + "\t"
FUZZ_LINES = st.lists(st.one_of(
    st.sampled_from([f"{k.name} = " for k in settings.KEYS]).flatmap(
        lambda prefix: st.one_of(st.integers(-300, 70000).map(str), st.floats(allow_nan=False).map(repr),
                                 st.text(TOML_ALPHABET, max_size=12).map(lambda s: prefix + s),
                                 st.sampled_from(['"alsa"', '"D minor"', "true", '""', "1e400"]))
        .map(lambda v: prefix + v if not v.startswith(prefix) else v)),
    st.text(TOML_ALPHABET, max_size=30)), max_size=8)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=FUZZ_LINES)
def test_fuzzed_file_is_either_accepted_whole_or_changes_nothing(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("fuzz")
    card, config, state = root / "boot", root / "etc" / "config.toml", root / "state"
    card.mkdir()
    config.parent.mkdir()
    config.write_text(SHIPPED)
    text = "\n".join(lines) + "\n"
    (card / "playbach.toml").write_text(text)
    result = firstboot.apply_user_config(card, config, state)
    assert result in ("applied", "rejected")
    if result == "applied":
        assert config.read_text() == text
        settings.read_file(config)   # the player's reader accepts what was copied
    else:
        assert config.read_text() == SHIPPED
        assert (card / "playbach-error.txt").read_text().startswith(str(card / "playbach.toml"))
    assert leftovers(config.parent) == []


@hsettings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_line_of_finds_only_an_assignment(text):
    number = firstboot.line_of(text, "bpm")
    if number is not None:
        assert text.splitlines()[number - 1].lstrip().lstrip("\"'").startswith("bpm")


# --- SSH ------------------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        return 0


def test_ssh_key_on_the_card_turns_ssh_on(tmp_path):
    card, home, run = tmp_path / "boot", tmp_path / "root", Recorder()
    card.mkdir()
    (card / "ssh_authorized_keys").write_text(f"# my laptop\n\n{KEY}\n")
    assert firstboot.apply_ssh(card, home, run) == "on"
    keys = home / ".ssh" / "authorized_keys"
    assert keys.read_text() == KEY + "\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    assert ["ssh-keygen", "-A"] in run.calls and ["systemctl", "enable", "--quiet", "ssh.service"] in run.calls


def test_no_key_file_keeps_ssh_off(tmp_path):
    card, run = tmp_path / "boot", Recorder()
    card.mkdir()
    assert firstboot.apply_ssh(card, tmp_path / "root", run) == "off"
    assert run.calls == [firstboot.SSH_OFF]
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("text, line", [
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", 1),
    (f"{KEY}\nssh-ed25519 not!base64\n", 2),
    ("# only a comment\n", None),
])
def test_bad_key_file_is_named_and_ssh_stays_off(tmp_path, caplog, text, line):
    card, home, run = tmp_path / "boot", tmp_path / "root", Recorder()
    card.mkdir()
    (card / "ssh_authorized_keys").write_text(text)
    with caplog.at_level(logging.ERROR):
        assert firstboot.apply_ssh(card, home, run) == "rejected"
    assert str(card / "ssh_authorized_keys") in caplog.text and "SSH stays off" in caplog.text
    if line:
        assert f"line {line} is not an SSH public key" in caplog.text
    assert not (home / ".ssh").exists()
    assert run.calls == [firstboot.SSH_OFF]


@hsettings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_fuzzed_key_file_is_checked_or_refused_with_its_name(text):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-keys-{os.getpid()}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        keys = firstboot.check_ssh_keys(path)
    except UserError as e:
        assert str(path) in str(e)
    else:
        for line in keys.splitlines():
            assert line.split()[0] in firstboot.SSH_KEY_TYPES
    finally:
        path.unlink()


# --- once -----------------------------------------------------------------------------------

def test_token_is_made_once_where_the_page_is_installed(tmp_path):
    etc = tmp_path / "etc"
    (etc / "playbach").mkdir(parents=True)
    assert firstboot.ensure_token(etc) is False          # no control page installed: no token
    (etc / "systemd" / "system").mkdir(parents=True)
    (etc / "systemd" / "system" / "playbach-web.service").write_text("[Unit]\n")
    assert firstboot.ensure_token(etc) is True
    token = etc / "playbach" / "web-token"
    first = token.read_text()
    assert len(first.strip()) >= 40 and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert firstboot.ensure_token(etc) is False and token.read_text() == first


def test_journal_formatter_gives_error_priority():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad %s", ("file",), None)
    assert firstboot.JournalFormatter("%(message)s").format(record) == "<3>bad file"
