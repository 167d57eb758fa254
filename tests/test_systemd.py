"""The systemd units and udev rules, as install.sh installs them: verified by systemd itself,
scored by `systemd-analyze security`, and read for the settings the appliance depends on."""
from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
import shutil
import subprocess

import pytest

from fixtures_appliance import read_unit, unit_path, verify_root
from needs import need_program

UNITS = ("playbach.service", "playbach-fluidsynth.service", "playbach-web.service")
# The exposure scores reached (0 = locked down, 10 = wide open); a change that raises one fails here.
EXPOSURE = {"playbach.service": 0.8, "playbach-fluidsynth.service": 1.0, "playbach-web.service": 1.2}
CORAL_IDS = (("1a6e", "089a"), ("18d1", "9302"))


def systemd_analyze(*args: str) -> subprocess.CompletedProcess:
    need_program("systemd-analyze", "systemd")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def test_installed_units_pass_systemd_analyze_verify(installed_root):
    root = verify_root(installed_root)
    done = systemd_analyze("verify", f"--root={root}", *UNITS)
    # verify exits 0 on warnings (an unknown key, a bad value): any output about our units fails too
    assert done.returncode == 0 and "playbach" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_verify_catches_a_missing_program(installed_root, tmp_path):
    """The check above is not vacuous: with the venv gone, verify names the ExecStart program."""
    root = verify_root(installed_root)
    broken = tmp_path / "root"
    shutil.copytree(root / "etc", broken / "etc", symlinks=True)
    shutil.copytree(root / "usr", broken / "usr", symlinks=True)
    done = systemd_analyze("verify", f"--root={broken}", "playbach.service")
    assert done.returncode != 0 and "/opt/playbach/venv/bin/playbach" in done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_at_most_what_was_reached(installed_root, unit):
    done = systemd_analyze("security", "--offline=yes", str(unit_path(installed_root, unit)))
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= EXPOSURE[unit], done.stdout


def test_player_unit_settings(installed_root):
    unit = read_unit(unit_path(installed_root))
    one = {k: v[-1] for k, v in unit.items()}
    assert one["Service.Type"] == "notify" and one["Service.NotifyAccess"] == "main"
    assert int(one["Service.WatchdogSec"]) > 0 and one["Service.Restart"] == "on-failure"
    assert int(one["Unit.StartLimitBurst"]) > 0 and int(one["Unit.StartLimitIntervalSec"]) > 0
    assert "sound.target" in " ".join(unit["Unit.After"]).split()
    assert one["Service.DynamicUser"] == "yes" and "audio" in one["Service.SupplementaryGroups"].split()
    assert set(one["Service.ReadOnlyPaths"].split()) >= {"/opt/playbach", "/etc/playbach"}
    assert "AF_INET" not in one["Service.RestrictAddressFamilies"]
    assert set(unit["Service.DeviceAllow"]) == {"char-alsa rw", "char-usb_device rw"}
    # ExecStart names the venv's program and the config, both of which install.sh put there
    argv = shlex.split(one["Service.ExecStart"])
    assert argv[:2] == ["/opt/playbach/venv/bin/playbach", "play"]
    assert (installed_root / argv[0].lstrip("/")).is_file()
    config_path = argv[argv.index("--config") + 1]
    assert (installed_root / config_path.lstrip("/")).is_file()
    # enabled: install.sh (systemctl --root) made the multi-user.target.wants link
    assert (installed_root / "etc/systemd/system/multi-user.target.wants/playbach.service").is_symlink()


def seconds(value: str) -> float:
    """A systemd time span of plain seconds ('120', '20s'); anything else (infinity) fails."""
    assert re.fullmatch(r"\d+s?", value), f"{value!r} is not a finite number of seconds"
    return float(value.rstrip("s"))


def test_player_start_has_a_finite_timeout_and_a_bounded_stop(installed_root):
    """A start hung in loading is aborted and restarted (tests/test_start_timeout.py has the
    player's side: the extensions while it waits, exit 1 on SIGABRT)."""
    one = {k: v[-1] for k, v in read_unit(unit_path(installed_root)).items()}
    assert 30 <= seconds(one["Service.TimeoutStartSec"]) <= 600
    assert one["Service.TimeoutStartFailureMode"] == "abort"
    assert seconds(one["Service.TimeoutStopSec"]) <= 60
    soft, hard = (seconds(part) for part in one["Service.LimitRTTIME"].split(":"))
    assert 0 < soft < hard < seconds(one["Service.WatchdogSec"])


def test_web_unit_gives_up_as_the_player_does(installed_root):
    web = {k: v[-1] for k, v in read_unit(unit_path(installed_root, "playbach-web.service")).items()}
    player = {k: v[-1] for k, v in read_unit(unit_path(installed_root)).items()}
    assert web["Service.Restart"] == "on-failure"
    for key in ("Unit.StartLimitBurst", "Unit.StartLimitIntervalSec", "Service.RestartPreventExitStatus"):
        assert web.get(key) == player[key], f"{key}: web {web.get(key)!r}, player {player[key]!r}"
    assert player["Service.RestartPreventExitStatus"] == "2"


def test_installed_config_is_valid_and_points_at_the_installed_bundle(installed_root):
    from playbach.device import config

    path = installed_root / "etc" / "playbach" / "config.toml"
    settings = config.load(argparse.Namespace(config=str(path)))
    assert settings.bundle == "/opt/playbach/models/default"
    assert (installed_root / "opt/playbach/models/default/bundle.json").is_file()
    assert settings.midi_api == "alsa"


# --- udev ----------------------------------------------------------------------------------
RULE_KEY = re.compile(r'\s*([A-Z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def parse_rules(text: str) -> list[list[tuple[str, str, str]]]:
    """udev rule lines as (key, operator, value) triples; any line that is not all such
    pairs fails, as udev would reject it."""
    rules = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs, pos = [], 0
        while pos < len(line):
            m = RULE_KEY.match(line, pos)
            assert m, f"70-playbach.rules:{n}: cannot parse at {line[pos:]!r}"
            pairs.append(m.groups())
            pos = m.end()
        rules.append(pairs)
    return rules


def apply_rules(rules, device: dict[str, str]) -> dict[str, list[str]]:
    """What the rules assign to one device (its properties as udev keys, e.g. ATTR{idVendor}):
    the match keys of each rule are compared with globs, as udev does."""
    result: dict[str, list[str]] = {}
    for rule in rules:
        matches = [(k, op, v) for k, op, v in rule if op in ("==", "!=")]
        if all(fnmatch.fnmatch(device.get(k, ""), v) == (op == "==") for k, op, v in matches):
            for k, op, v in rule:
                if op not in ("==", "!="):
                    result.setdefault(k, []).append(v)
    return result


@pytest.fixture(scope="module")
def rules(installed_root):
    path = installed_root / "etc" / "udev" / "rules.d" / "70-playbach.rules"
    if shutil.which("udevadm") and "verify" in subprocess.run(
            ["udevadm", "--help"], capture_output=True, text=True).stdout:
        done = subprocess.run(["udevadm", "verify", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return parse_rules(path.read_text())


@pytest.mark.parametrize("vendor,product", CORAL_IDS)
def test_udev_gives_the_coral_to_the_audio_group_and_starts_the_player(rules, vendor, product):
    """A Coral cannot be plugged in here: the rules are applied to its udev properties."""
    coral = {"SUBSYSTEM": "usb", "ENV{DEVTYPE}": "usb_device",
             "ATTR{idVendor}": vendor, "ATTR{idProduct}": product}
    got = apply_rules(rules, coral)
    assert got["GROUP"] == ["audio"] and got["MODE"] == ["0660"]
    assert "systemd" in got["TAG"] and "playbach.service" in got["ENV{SYSTEMD_WANTS}"]


def test_udev_leaves_other_usb_devices_alone(rules):
    assert apply_rules(rules, {"SUBSYSTEM": "usb", "ENV{DEVTYPE}": "usb_device",
                               "ATTR{idVendor}": "046d", "ATTR{idProduct}": "c52b"}) == {}
    # the Coral's interface (not the device node) is not matched either
    assert apply_rules(rules, {"SUBSYSTEM": "usb", "ENV{DEVTYPE}": "usb_interface",
                               "ATTR{idVendor}": "18d1", "ATTR{idProduct}": "9302"}) == {}


def test_udev_tags_usb_midi_ports_so_plugging_one_starts_the_player(rules):
    usb_midi = {"SUBSYSTEM": "sound", "KERNEL": "midiC1D0", "SUBSYSTEMS": "usb"}
    got = apply_rules(rules, usb_midi)
    assert "systemd" in got["TAG"] and got["ENV{SYSTEMD_WANTS}"] == ["playbach.service"]
    assert apply_rules(rules, {"SUBSYSTEM": "sound", "KERNEL": "pcmC0D0p", "SUBSYSTEMS": "usb"}) == {}


def test_web_unit_reaches_the_player_only_through_its_socket(installed_root):
    """playbach-web.service: the LAN but no devices, the token by LoadCredential, the socket's
    group; the player keeps PrivateNetwork and makes /run/playbach for the socket."""
    web = {k: v[-1] for k, v in read_unit(unit_path(installed_root, "playbach-web.service")).items()}
    player = {k: v[-1] for k, v in read_unit(unit_path(installed_root)).items()}
    assert set(web["Service.RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert web["Service.PrivateDevices"] == "yes" and web["Service.IPAddressDeny"] == "any"
    assert web["Service.LoadCredential"] == "web-token:/etc/playbach/web-token"
    assert "--web-token-file %d/web-token" in web["Service.ExecStart"]
    assert web["Service.SupplementaryGroups"] == "playbach-web"
    assert "playbach-web" in player["Service.SupplementaryGroups"].split()
    assert player["Service.RuntimeDirectory"] == "playbach" and player["Service.PrivateNetwork"] == "yes"
    # installed, not enabled without --with-web
    assert not (installed_root / "etc/systemd/system/multi-user.target.wants/playbach-web.service").exists()
