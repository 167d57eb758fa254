"""Your model onto the Pi (issue 23 item 3), end to end: a real player (models/default) playing into
a stamping JACK receiver, `playbach web` in front of it, both told the user folder by
$PLAYBACH_MODELS as the service would be; a bundle uploaded in headless Chromium, pushed with
`playbach push` (a subprocess, as a desktop runs it), copied in as scp would; a switch to it
without restarting either service, and its notes at the receiver. Every refusal says why and
leaves the user folder as it was, the music playing on."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from archives import entry, everything_in, folder_entries, tar_gz
from fixtures_player import wait_until
from fixtures_web import Rig

pytestmark = pytest.mark.midi
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rig(jack_server, tmp_path_factory):
    pytest.importorskip("aiohttp")
    folder = tmp_path_factory.mktemp("bundles")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PLAYBACH_MODELS", str(folder / "state" / "models"))   # the player and the web inherit it
        rig = Rig(jack_server, folder)
        rig.user = folder / "state" / "models"
        yield rig
        rig.close()


@pytest.fixture(scope="module")
def mine(tmp_path_factory) -> Path:
    """A user's bundle folder: the shipped bundle's files under another name."""
    return Path(shutil.copytree(REPO / "models" / "default", tmp_path_factory.mktemp("src") / "mine"))


def push(rig: Rig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "playbach.cli", "push", *args], capture_output=True, text=True,
                          timeout=120)


def playing_on(rig: Rig, seconds: float = 2.0) -> None:
    """The player is the one started, and notes keep arriving at the receiver."""
    since = time.monotonic()
    time.sleep(seconds)
    assert rig.player.poll() is None and len(rig.note_ons(since)) >= 2


def switch(rig: Rig, name: str) -> None:
    """POST /api/restart with `name`; then the status names it and its notes reach the receiver."""
    pid = rig.player.pid
    got, answer, _ = rig.api("POST", "/api/restart", {"bundle": name})
    assert got == 200 and answer["bundle"] == name, answer
    switched = time.monotonic()
    assert rig.api("GET", "/api/status")[1]["bundle"] == name
    wait_until(lambda: len(rig.note_ons(switched)) >= 4, 20, f"notes from {name}")
    assert rig.player.pid == pid and rig.player.poll() is None   # no service restarted


def test_push_from_the_cli_installs_it_and_the_page_lists_it(rig, mine):
    done = push(rig, str(mine), "--to", rig.url, "--token-file", str(rig.token_file))
    assert done.returncode == 0, done.stderr
    assert "installed 'mine'" in done.stdout
    assert everything_in(rig.user) == sorted(["mine"] + [f"mine/{f.name}" for f in mine.iterdir()])
    got, listing, _ = rig.api("GET", "/api/bundles")
    assert got == 200 and listing["playing"] == "default"
    assert listing["bundles"] == [{"name": "default", "where": "shipped", "ok": True, "error": None},
                                  {"name": "events", "where": "shipped", "ok": True, "error": None},
                                  {"name": "mine", "where": "yours", "ok": True, "error": None}]


def test_a_switch_to_the_pushed_bundle_plays_it_without_a_restart(rig):
    assert "mine" in rig.api("GET", "/api/status")[1]["bundles"]
    switch(rig, "mine")
    switch(rig, "default")


def test_push_refusals_exit_2_with_the_reason_and_leave_nothing(rig, mine, tmp_path):
    before = everything_in(rig.user)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("x" * 40)
    wrong.chmod(0o600)
    broken = Path(shutil.copytree(mine, tmp_path / "broken"))
    (broken / "grid0_dynamic.tflite").write_bytes(b"\0" * (mine / "grid0_dynamic.tflite").stat().st_size)
    linked = tmp_path / "linked.tar.gz"
    linked.write_bytes(tar_gz(folder_entries(mine, "linked") + [entry("linked/x", kind=tarfile.SYMTYPE, link="/etc/passwd")]))
    loose = tmp_path / "loose-token"
    loose.write_text(rig.token)
    loose.chmod(0o644)
    for args, says in [
        ((str(mine), "--to", rig.url, "--token-file", str(wrong)), "401: the token was not accepted"),
        ((str(mine), "--to", rig.url, "--token-file", str(loose)), "mode 644 lets others read it"),
        ((str(mine), "--to", rig.url, "--token-file", str(rig.token_file)), "'mine' is installed already"),
        ((str(broken), "--to", rig.url, "--token-file", str(rig.token_file)), f"{broken}/grid0_dynamic.tflite: sha256"),
        ((str(linked), "--to", rig.url, "--token-file", str(rig.token_file)), "'linked/x': a symbolic link"),
        ((str(mine), "--name", "default", "--to", rig.url, "--token-file", str(rig.token_file)),
         "409: 'default' is a shipped bundle's name"),
        ((str(mine), "--name", "../up", "--to", rig.url, "--token-file", str(rig.token_file)), "not a bundle name"),
    ]:
        done = push(rig, *args)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert everything_in(rig.user) == before
    playing_on(rig)


@pytest.mark.parametrize("body, headers, token, status, says", [
    (b"", {}, "", 400, "no archive"),
    (b"not gzip at all", {}, "", 400, "not a .tar.gz archive"),
    (b"x" * 100, {"Content-Length": str(65 << 20)}, "", 413, "over the 64 MiB cap"),
    (b"x" * 100, {}, "wrong-token-long-enough", 401, ""),
    (b"x" * 100, {}, None, 401, ""),
    (b"x" * 100, {"Origin": "http://evil.example"}, "", 403, "cross-site"),
])
def test_bad_uploads_get_a_4xx_with_the_reason(rig, body, headers, token, status, says):
    before = everything_in(rig.user)
    try:
        got, answer, _ = rig.api("POST", "/api/bundles", body, token=token,
                                 headers={"Content-Type": "application/gzip", **headers})
    except ConnectionError:   # refused before the whole body was sent: the Content-Length case
        got, answer = 413, {"error": "over the 64 MiB cap"}
    assert got == status and says in str(answer)
    rig.api("GET", "/api/status")   # the guard's count of wrong tokens stays below its limit
    assert everything_in(rig.user) == before
    assert rig.player.poll() is None and rig.web.poll() is None


def login(rig: Rig, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(rig.url + "/")
    wait_until(lambda: browser.find_element(By.ID, "token").is_displayed(), what="the token form")
    browser.find_element(By.ID, "token").send_keys(rig.token)
    browser.find_element(By.ID, "login-go").click()
    wait_until(lambda: browser.find_element(By.ID, "state").text == "playing", 20, "playing")


def upload(browser, archive: Path, says: str) -> str:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "upload").send_keys(str(archive))
    browser.find_element(By.ID, "upload-go").click()
    return wait_until(lambda: says in browser.find_element(By.ID, "upload-msg").text and
                      browser.find_element(By.ID, "upload-msg").text, 60, f"the page to say {says!r}")


def test_an_upload_in_chromium_installs_it_and_lists_it(rig, browser, mine, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    login(rig, browser)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(tar_gz([entry("../../evil", b"x")]))
    said = upload(browser, bad, "not installed")
    assert "'../../evil': not NAME/FILE" in said and "paged" not in everything_in(rig.user)
    good = tmp_path / "paged.tar.gz"
    good.write_bytes(tar_gz(folder_entries(mine, "paged")))
    assert "installed paged" in upload(browser, good, "installed")
    assert (rig.user / "paged" / "bundle.json").is_file()
    options = [o.text for o in Select(browser.find_element(By.ID, "bundle")).options]
    assert options[0] == "default" and "paged (yours)" in options
    items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#bundle-list li")]
    assert items[0] == "default (shipped)" and "paged (yours)" in items
    playing_on(rig)


def test_the_page_switches_to_the_uploaded_bundle(rig, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    login(rig, browser)
    wait_until(lambda: "paged" in [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "bundle")).options],
               10, "the bundle list")
    Select(browser.find_element(By.ID, "bundle")).select_by_value("paged")
    browser.find_element(By.ID, "restart").click()
    wait_until(lambda: rig.api("GET", "/api/status")[1]["bundle"] == "paged", 30, "the switch to 'paged'")
    switched = time.monotonic()
    wait_until(lambda: len(rig.note_ons(switched)) >= 4, 20, "notes from 'paged'")
    switch(rig, "default")


def test_a_copy_by_scp_is_listed_and_a_broken_one_says_why(rig, mine):
    shutil.copytree(mine, rig.user / ".copied.part")        # what `scp -r` writes, hidden until renamed
    (rig.user / ".copied.part").rename(rig.user / "copied")
    broken = Path(shutil.copytree(mine, rig.user / "half"))
    (broken / "grid0_dynamic.tflite").write_bytes(b"cut")    # a copy that stopped early
    rows = {r["name"]: r for r in rig.api("GET", "/api/bundles")[1]["bundles"]}
    assert rows["copied"] == {"name": "copied", "where": "yours", "ok": True, "error": None}
    assert not rows["half"]["ok"] and "grid0_dynamic.tflite: 3 bytes, bundle.json says" in rows["half"]["error"]


def test_a_switch_to_a_copy_by_scp_plays_it_and_a_broken_one_is_refused(rig):
    switch(rig, "copied")
    got, answer, _ = rig.api("POST", "/api/restart", {"bundle": "half"})
    assert got == 400 and "grid0_dynamic.tflite" in answer["error"]
    assert rig.api("GET", "/api/status")[1]["bundle"] == "copied"
    playing_on(rig)
    switch(rig, "default")
