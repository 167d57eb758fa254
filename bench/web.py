"""The control page's cost to the music (issue 13 item 6), measured.

Two live-bench runs of the same take (harness/livebench.py: a private JACK server, a stamping
receiver, the player at SCHED_FIFO --realtime-priority as the service runs it, onset error net
of the transport's own latency): one with no control socket at all, and one with the socket,
`playbach web` serving it, the page open in headless Chromium (token given, the piano roll
drawing the 10-a-second frames) and /api/status polled --rate times a second. Also the web
service's RSS (VmRSS and its peak VmHWM from /proc at the end of the loaded run).

    python bench/web.py --seconds 60 --out bench/results/web.json
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from playbach.files import write_text_atomically
from playbach.harness.livebench import run_live_bench

REPO = Path(__file__).resolve().parent.parent
PORT = 18731


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def poll(url: str, token: str, rate: float, stop: threading.Event, counts: dict) -> None:
    """GET url `rate` times a second on a fixed grid; counts answers by status."""
    period, next_at = 1.0 / rate, time.monotonic()
    while not stop.is_set():
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                r.read()
                counts[r.status] = counts.get(r.status, 0) + 1
        except Exception as e:   # counted, not fatal: the figure is the player's, the count says what it got
            key = getattr(e, "code", type(e).__name__)
            counts[key] = counts.get(key, 0) + 1
        next_at = max(next_at + period, time.monotonic())   # behind (a slow answer): no catch-up burst
        stop.wait(max(0.0, next_at - time.monotonic()))


def open_page(url: str, token: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=420,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "token").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-go").click()
    return driver


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=str(REPO / "models" / "default"))
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--bpm", type=float, default=120)
    p.add_argument("--rate", type=float, default=50, help="API calls a second while loaded")
    p.add_argument("--realtime-priority", type=int, default=20)
    p.add_argument("--out")
    a = p.parse_args()
    common = dict(seconds=a.seconds, bpm=a.bpm, realtime_priority=a.realtime_priority)
    load_before = os.getloadavg()
    quiet = run_live_bench(a.bundle, **common, extra_args=("--control-socket", ""))
    with tempfile.TemporaryDirectory() as tmp:
        sock, token_file, token = Path(tmp) / "control.sock", Path(tmp) / "token", secrets.token_urlsafe(32)
        token_file.write_text(token)
        token_file.chmod(0o600)
        web = subprocess.Popen([sys.executable, "-m", "playbach.cli", "web", "--listen", f"127.0.0.1:{PORT}",
                                "--control-socket", str(sock), "--web-token-file", str(token_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        driver = open_page(f"http://127.0.0.1:{PORT}/", token)
        stop, counts = threading.Event(), {}
        poller = threading.Thread(target=poll, args=(f"http://127.0.0.1:{PORT}/api/status", token, a.rate, stop,
                                                     counts), daemon=True)
        poller.start()
        try:
            loaded = run_live_bench(a.bundle, **common, extra_args=("--control-socket", str(sock)))
            drawn = int(driver.find_element("id", "roll").get_attribute("data-drawn") or 0)
            rss_kb, peak_kb = proc_kb(web.pid, "VmRSS"), proc_kb(web.pid, "VmHWM")
        finally:
            stop.set()
            poller.join(5)
            driver.quit()
            web.terminate()
            web.wait(10)
    keys = ("notes", "notes_matched", "onset_error_ms", "transport_ms", "onset_beyond_transport_ms", "cpu_percent", "peak_rss_mb")
    result = {
        "what": "live bench without the control socket vs with it, playbach web serving it, the page open in "
                "headless Chromium and /api/status polled", "rate_per_s": a.rate, "seconds": a.seconds,
        "bpm": a.bpm, "realtime_priority": a.realtime_priority, "bundle": a.bundle,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "without": {k: quiet.get(k) for k in keys}, "with": {k: loaded.get(k) for k in keys},
        "api_answers": {str(k): v for k, v in counts.items()}, "page_notes_drawn_at_end": drawn,
        "web_rss_mb": round(rss_kb / 1024, 1), "web_peak_rss_mb": round(peak_kb / 1024, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        write_text_atomically(a.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
