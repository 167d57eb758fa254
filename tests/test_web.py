"""The control page (issue 13): a real headless Chromium on the page, the JSON API's answers to
every bad input, the control socket's limits, and the player playing on through all of it,
checked at a real JACK MIDI receiver.

The tempo check reads the receiver: models/default's grid is 4 ticks a quarter, so at 40 BPM
every onset distance is a multiple of 375 ms; at 120 BPM the take has 125 and 250 ms distances,
which are not (the check fails if the tempo control did nothing).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from fixtures_midi import assert_no_stuck_notes
from fixtures_player import wait_until
from fixtures_web import BPM, free_port, note_ons

pytestmark = pytest.mark.midi
TICKS_PER_QUARTER = 4


def gaps(onsets: list[float]) -> list[float]:
    """Distances between successive onsets, chords (under 30 ms apart) counted once."""
    return [b - a for a, b in zip(onsets, onsets[1:]) if b - a > 0.03]


def on_grid(distances: list[float], bpm: float, tolerance: float = 0.06) -> float:
    """The share of distances within `tolerance` of a multiple of a 16th at `bpm` (a note made late
    by the busy test machine, the player not realtime here, is off it: a share, not all)."""
    tick = 60.0 / (bpm * TICKS_PER_QUARTER)
    return sum(abs(d / tick - round(d / tick)) * tick < tolerance for d in distances) / max(1, len(distances))


def test_page_in_chromium_shows_notes_and_its_tempo_control_changes_the_spacing(web_rig, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(web_rig.url + "/")
    wait_until(lambda: browser.find_element(By.ID, "token").is_displayed(), what="the token form")
    browser.find_element(By.ID, "token").send_keys(web_rig.token)
    browser.find_element(By.ID, "login-go").click()
    # notes appear in the piano roll (the page counts the played notes it drew)
    wait_until(lambda: int(browser.find_element(By.ID, "roll").get_attribute("data-drawn")) >= 4, 20, "notes drawn")
    wait_until(lambda: browser.find_element(By.ID, "model").text.endswith(".tflite"), what="the model's name")
    cookie = browser.get_cookie("playbach_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and web_rig.token not in cookie["value"]
    before = time.monotonic()
    time.sleep(4)
    fast = gaps(web_rig.note_ons(before))
    # the tempo's number box (drawn from the player's live settings), 40 typed: the page POSTs {"bpm": 40}
    wait_until(lambda: browser.find_elements(By.ID, "set-bpm"), 10, "the tempo control")
    box = browser.find_element(By.ID, "set-bpm")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("40", Keys.ENTER)
    wait_until(lambda: web_rig.api("GET", "/api/status")[1]["bpm"] == 40.0, 10, "the tempo to reach the player")
    changed = time.monotonic()
    wait_until(lambda: browser.find_element(By.ID, "bpm").text == "40 BPM", 5, "the page to show 40 BPM")
    browser.set_window_size(412, 1960)   # the README's: the phone's width, down to the last steering control
    browser.save_screenshot(os.environ.get("PLAYBACH_SCREENSHOT") or str(tmp_path / "page.png"))
    time.sleep(7)
    slow = gaps(web_rig.note_ons(changed + 1.0))
    web_rig.api("POST", "/api/settings", {"bpm": BPM})
    assert len(fast) >= 5 and len(slow) >= 4, (fast, slow)
    assert on_grid(slow, 40.0) >= 0.75, f"at 40 BPM onsets should be 375 ms apart or multiples: {slow}"
    assert on_grid(fast, 40.0) < 0.5, f"at 120 BPM the take had shorter distances: {fast}"
    # a 16th is 375 ms at 40 BPM; the take's own rhythm varies, so the medians only roughly follow 3x
    assert min(slow) > 0.33 and sorted(slow)[len(slow) // 2] > 1.3 * sorted(fast)[len(fast) // 2], (fast, slow)


def session_of_another_device(url: str, token: str) -> str:
    """A session cookie as a second phone would get it: its own login."""
    import urllib.request

    login = urllib.request.Request(url + "/api/login", json.dumps({"token": token}).encode(),
                                   {"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=10) as r:
        return r.headers["Set-Cookie"].split(";")[0]


def status_with_cookie(url: str, cookie: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/api/status", headers={"Cookie": cookie}),
                                    timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_sign_out_other_devices_on_the_page(web_rig, browser):
    """The page's Access button: the other device's session is refused, this page plays on."""
    from selenium.webdriver.common.by import By

    other = session_of_another_device(web_rig.url, web_rig.token)
    assert status_with_cookie(web_rig.url, other) == 200
    browser.get(web_rig.url + "/")
    wait_until(lambda: browser.find_element(By.ID, "token").is_displayed(), what="the token form")
    browser.find_element(By.ID, "token").send_keys(web_rig.token)
    browser.find_element(By.ID, "login-go").click()
    wait_until(lambda: browser.find_element(By.ID, "main").is_displayed(), what="the page after login")
    browser.find_element(By.ID, "signout-others").click()
    wait_until(lambda: "signed out" in browser.find_element(By.ID, "access-msg").text, 10, "the page to say so")
    assert status_with_cookie(web_rig.url, other) == 401
    browser.find_element(By.ID, "pause").click()   # this page's own session still steers the player
    wait_until(lambda: web_rig.api("GET", "/api/status")[1]["paused"], 10, "the pause to reach the player")
    browser.find_element(By.ID, "play").click()
    wait_until(lambda: not web_rig.api("GET", "/api/status")[1]["paused"], 10, "play again")
    assert browser.find_element(By.ID, "main").is_displayed()


def test_without_the_token_the_page_controls_nothing(web_rig, browser):
    from selenium.webdriver.common.by import By

    browser.get(web_rig.url + "/")
    wait_until(lambda: browser.find_element(By.ID, "token").is_displayed(), what="the token form")
    assert not browser.find_element(By.ID, "main").is_displayed()
    statuses = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const post = (path, body) => fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify(body)}).then(r => r.status);
        Promise.all([post("/api/settings", {bpm: 40}), post("/api/pause", {}), post("/api/panic", {})]).then(done);
    """)
    assert statuses == [401, 401, 401]
    since = time.monotonic()
    time.sleep(3)
    played = gaps(web_rig.note_ons(since))
    assert len(played) >= 5 and on_grid(played, 40.0) < 0.5, "the music paused or slowed without a token"
    assert web_rig.api("GET", "/api/status")[1]["bpm"] == BPM


@pytest.mark.parametrize("method, path, body, headers, status, says", [
    ("POST", "/api/settings", b"{bpm: 1", {}, 400, "malformed JSON"),
    ("POST", "/api/settings", b"[1, 2]", {}, 400, "JSON object"),
    ("POST", "/api/settings", b"{}", {}, 400, "no settings"),
    ("POST", "/api/settings", {"bpm": 1000}, {}, 400, "'bpm' = 1000.0 is not allowed"),
    ("POST", "/api/settings", {"bpm": "fast"}, {}, 400, "'bpm'"),
    ("POST", "/api/settings", {"temperature": -1}, {}, 400, "'temperature'"),
    ("POST", "/api/settings", {"pitch_min": 90, "pitch_max": 40}, {}, 400, "pitch_min"),
    ("POST", "/api/settings", {"tempo": 100}, {}, 400, "is not a setting"),
    ("POST", "/api/settings", {"bundle": "/tmp"}, {}, 400, "cannot change while playing"),
    ("POST", "/api/settings", b'{"bpm": NaN}', {}, 400, "NaN is not a JSON number"),
    ("POST", "/api/settings", b"x" * 100_000, {}, 413, ""),
    ("POST", "/api/restart", {"bundle": "../../etc"}, {}, 400, "no installed bundle"),
    ("POST", "/api/restart", {"path": "/tmp"}, {}, 400, "restart takes"),
    ("GET", "/api/take.mid?minutes=abc", None, {}, 400, "minutes"),
    ("GET", "/api/take.mid?minutes=-1", None, {}, 400, "minutes"),
    ("GET", "/api/pause", None, {}, 405, ""),
    ("GET", "/api/restart", None, {}, 405, ""),
    ("POST", "/api/pause", b"", {"Origin": "http://evil.example"}, 403, "cross-site"),
    ("POST", "/api/settings", {"bpm": 60}, {"Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
])
def test_bad_requests_get_a_clear_4xx_and_change_nothing(web_rig, method, path, body, headers, status, says):
    got, answer, _ = web_rig.api(method, path, body, headers=headers)
    assert got == status, answer
    assert says in (json.dumps(answer) if isinstance(answer, dict) else answer.decode(errors="replace"))
    assert web_rig.api("GET", "/api/status")[1]["bpm"] == BPM
    assert web_rig.player.poll() is None


@pytest.mark.parametrize("token", [None, "wrong-token-but-long-enough", ""])
def test_a_missing_or_wrong_token_gets_401_and_no_hint(web_rig, token):
    headers = {"Cookie": "playbach_session=nope"} if token == "" else {}
    got, answer, response_headers = web_rig.api("GET", "/api/status", token=None if token == "" else token,
                                                headers=headers)
    assert got == 401 and answer == b"401: Unauthorized\n"
    assert "WWW-Authenticate" not in response_headers


def test_the_api_works_with_the_token_and_the_take_is_a_midi_file(web_rig):
    got, status, _ = web_rig.api("GET", "/api/status")
    assert got == 200 and status["connected"] and status["playing"] and status["notes_played"] > 0
    assert {"model", "backend", "bpm", "temperature", "notes_played", "uptime"} <= set(status)
    got, answer, _ = web_rig.api("POST", "/api/settings", {"temperature": 0.5})
    assert got == 200 and answer["live"]["temperature"] == 0.5
    got, take, headers = web_rig.api("GET", "/api/take.mid?minutes=5")
    assert got == 200 and take[:4] == b"MThd" and headers["Content-Type"] == "audio/midi"
    pause_at = time.monotonic()
    assert web_rig.api("POST", "/api/pause")[0] == 200
    time.sleep(1.5)
    assert web_rig.note_ons(pause_at + 0.2) == [], "notes while paused"
    assert web_rig.api("POST", "/api/play")[0] == 200
    # the music resumes (its next note may be a long one's end away, and a loaded machine slower)
    wait_until(lambda: web_rig.note_ons(pause_at + 1.6), timeout=10, what="notes after play")
    assert web_rig.api("POST", "/api/panic")[0] == 200


def test_a_flood_gets_429s_while_the_music_goes_on(web_rig):
    from concurrent.futures import ThreadPoolExecutor

    since = time.monotonic()
    with ThreadPoolExecutor(32) as pool:   # 1000 calls from 32 threads at once
        codes = list(pool.map(lambda _: web_rig.api("GET", "/api/status")[0], range(1000)))
    # 429 once a client passes 100 calls a second (a burst of 200); here the 2 busy cores may not
    # reach that rate: every call is answered, with 200 or 429, and the take goes on
    assert set(codes) <= {200, 429} and len(codes) == 1000, {c: codes.count(c) for c in set(codes)}
    # the take goes on (waited for: the player answers at once now, so the flood may last < 0.5 s)
    wait_until(lambda: len(gaps(web_rig.note_ons(since))) >= 3, 5, "three chords after the flood")
    assert web_rig.player.poll() is None
    time.sleep(2.0)   # the bucket refills
    assert web_rig.api("GET", "/api/status")[0] == 200


def test_wrong_tokens_are_rate_limited(web_rig):
    port = free_port()
    web = web_rig.start_web(port)   # its own service: the lockout must not shut the other tests out
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(web_rig, url), 20, "the second web service")
        codes = [web_rig.api("POST", "/api/login", {"token": f"guess-{i}"}, token=None, url=url)[0] for i in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        assert web_rig.api("GET", "/api/status", url=url)[0] == 429, "the right token too, until the minute passes"
    finally:
        web.terminate()
        web.wait(10)


def _answers(rig, url: str) -> bool:
    try:
        return rig.api("GET", "/api/status", url=url)[0] == 200
    except OSError:
        return False


def test_control_socket_limits(web_rig):
    """Straight at the player's socket: a malformed line, an over-long one, too many clients."""
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(str(web_rig.sock))
        return s

    with connect() as s:
        s.sendall(b"{nope\n" + b'{"op":"fly"}\n' + b'{"op":"status","id":7}\n')
        lines = _lines(s, 3)
        assert "not JSON" in lines[0]["error"] and "unknown op" in lines[1]["error"]
        assert lines[2]["ok"] and lines[2]["id"] == 7
        s.sendall(b"x" * 10000)
        assert "longer than" in _lines(s, 1)[0]["error"] and s.recv(10) == b""
    held, refused = [], None   # the web service holds one: at most 7 more are served
    try:
        for _ in range(9):
            s = connect()
            s.settimeout(0.5)
            try:
                refused = json.loads(s.recv(4096).split(b"\n")[0])
                s.close()
                break
            except TimeoutError:
                held.append(s)
        assert refused is not None and "busy" in refused["error"] and len(held) <= 7, (refused, len(held))
    finally:
        for s in held:
            s.close()
    assert web_rig.player.poll() is None


def _lines(s: socket.socket, n: int) -> list[dict]:
    data = b""
    while data.count(b"\n") < n:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    return [json.loads(line) for line in data.split(b"\n")[:n]]


def test_start_errors_name_what_is_wrong(web_rig, tmp_path):
    def web(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "playbach.cli", "web", "--control-socket", str(web_rig.sock),
                               *args], capture_output=True, text=True, timeout=60)

    done = web("--web-token-file", str(tmp_path / "none"), "--listen", "127.0.0.1:1")
    assert done.returncode == 2 and f"web_token_file {tmp_path / 'none'}: no such file" in done.stderr
    loose = tmp_path / "loose"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    done = web("--web-token-file", str(loose))
    assert done.returncode == 2 and "lets others read it" in done.stderr
    done = web("--web-token-file", str(web_rig.token_file), "--listen", f"127.0.0.1:{web_rig.port}")
    assert done.returncode == 2 and f"web_listen 127.0.0.1:{web_rig.port}: cannot listen there" in done.stderr
    bad = subprocess.run([sys.executable, "-m", "playbach.cli", "play", "--bundle", "models/default", "--midi-api",
                          "jack", "--accelerator", "cpu", "--control-socket", str(tmp_path / "no" / "c.sock")],
                         env=web_rig.server.env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"control_socket {tmp_path / 'no' / 'c.sock'}: folder" in bad.stderr


def test_a_player_waiting_for_its_synth_answers_and_keeps_what_was_set(web_rig, tmp_path):
    """A Pi powered on before its synth: the player answers its socket at once while it waits
    (not playing, no port), takes a tempo then, and plays at that tempo once the synth is there."""
    from playbach.harness import jack

    sock, name = tmp_path / "c.sock", f"late-synth-{os.getpid()}"
    log = open(tmp_path / "player.log", "w")
    player = subprocess.Popen([sys.executable, "-m", "playbach.cli", "play", "--bundle", "models/default",
                               "--midi-api", "jack", "--port", name, "--accelerator", "cpu", "--seed", "1",
                               "--bpm", "120", "--control-socket", str(sock)],
                              env=web_rig.server.env(), stdout=log, stderr=subprocess.STDOUT)
    synth = None
    try:
        wait_until(lambda: "no MIDI output port" in (tmp_path / "player.log").read_text(), 90, "the player to wait")
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(5)
        client.connect(str(sock))
        asked = time.monotonic()
        client.sendall(b'{"op":"status","id":1}\n{"op":"set","id":2,"changes":{"bpm":40}}\n')
        status, changed = _lines(client, 2)
        assert time.monotonic() - asked < 2.0
        assert status["status"]["playing"] is False and status["status"]["port_connected"] is False
        assert changed["ok"] and changed["live"]["bpm"] == 40.0
        client.close()
        synth = jack.Receiver(client=name)
        wait_until(lambda: len(note_ons(synth)) >= 12, 60, "12 notes at the late synth")
        distances = gaps(note_ons(synth))
        assert on_grid(distances, 40.0) >= 0.75, f"the take should be at 40 BPM: {distances}"
    finally:
        jack.stop_process(player)
        log.close()
        if synth is not None:
            assert_no_stuck_notes(synth.taken())
            synth.close()


def test_losing_the_player_shows_not_playing_and_reconnects(web_rig, browser):
    """Last in the module: it restarts the player. The web service lives on and finds it again."""
    from selenium.webdriver.common.by import By

    browser.get(web_rig.url + "/")
    browser.find_element(By.ID, "token").send_keys(web_rig.token)
    browser.find_element(By.ID, "login-go").click()
    wait_until(lambda: browser.find_element(By.ID, "state").text == "playing", 10, "playing")
    web_rig.stop_player()
    assert_no_stuck_notes(web_rig.receiver.taken())
    wait_until(lambda: browser.find_element(By.ID, "state").text == "not playing", 10, "not playing")
    got, status, _ = web_rig.api("GET", "/api/status")
    assert got == 200 and status == {"connected": False, "playing": False, "why": status["why"]}
    assert web_rig.api("POST", "/api/settings", {"bpm": 100})[0] == 503
    web_rig.start_player()
    wait_until(lambda: browser.find_element(By.ID, "state").text == "playing", 60, "playing again")
    assert web_rig.web.poll() is None
