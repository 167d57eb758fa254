"""The control page's cost to the music (issue 13 item 6), measured.

Three live-bench runs of the same take (harness/livebench.py: a private JACK server, a stamping
receiver, the player at SCHED_FIFO --realtime-priority as the service runs it, onset error net
of the transport's own latency): one with no control socket at all; one with the socket,
`playbach web` serving it, the page open in headless Chromium (token given, the piano roll
drawing the 10-a-second frames; what it shows is sampled every 2 s) and /api/status polled
--rate times a second over kept-alive connections (the calls answered during that take, their
rate and latency, are in the result); and one with that same load but a player without the
socket (what the load costs by itself). Also the web service's RSS (VmRSS and its peak VmHWM
from /proc at the end of the loaded run).

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
from pathlib import Path

from playbach.files import write_text_atomically
from playbach.harness.livebench import run_live_bench

REPO = Path(__file__).resolve().parent.parent
PORT = 18731
IN_FLIGHT = 8   # poller calls at once at most (the web service answers 100 a second per address)


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def poll(url: str, token: str, rate: float, stop: threading.Event, answers: list) -> None:
    """GET url `rate` times a second on a fixed grid, over kept-alive connections (one aiohttp
    ClientSession: a new connection per call from Python managed only ~18 a second here); a call
    is started on time even while others are answered (at most IN_FLIGHT). `answers` gets
    (monotonic time answered, status or error name, seconds taken)."""
    import asyncio

    import aiohttp

    async def one(session: aiohttp.ClientSession) -> None:
        began = time.monotonic()
        try:
            async with session.get(url) as r:
                await r.read()
                status: int | str = r.status
        except Exception as e:   # counted, not fatal: the figure is the player's, the count says what it got
            status = type(e).__name__
        answers.append((time.monotonic(), status, time.monotonic() - began))

    async def grid() -> None:
        period, calls = 1.0 / rate, set()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                         timeout=aiohttp.ClientTimeout(total=2)) as session:
            next_at = time.monotonic()
            while not stop.is_set():
                if len(calls) < IN_FLIGHT:
                    task = asyncio.create_task(one(session))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
                next_at = max(next_at + period, time.monotonic() - period)   # behind: no catch-up burst
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(grid())


def in_window(answers: list, start: float, end: float) -> dict:
    """The calls answered while the loaded take played: how many a second, by status, latency."""
    got = [(status, took) for at, status, took in answers if start <= at <= end]
    counts: dict[str, int] = {}
    for status, _ in got:
        counts[str(status)] = counts.get(str(status), 0) + 1
    took = sorted(t * 1e3 for _, t in got)
    pick = (lambda q: round(took[min(len(took) - 1, int(q * len(took)))], 2)) if took else (lambda q: None)
    return {"calls_per_s": round(len(got) / (end - start), 1), "by_status": counts,
            "latency_ms": {"median": pick(0.5), "p99": pick(0.99), "max": round(took[-1], 2) if took else None}}


def watch_page(driver, stop: threading.Event, drawn: list) -> None:
    """The notes the page's piano roll shows (data-drawn), every 2 s: that it draws the stream."""
    while not stop.wait(2.0):
        try:
            drawn.append(int(driver.find_element("id", "roll").get_attribute("data-drawn") or 0))
        except Exception:   # the driver closing under us at the end
            return


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
        stop, answers = threading.Event(), []
        poller = threading.Thread(target=poll, args=(f"http://127.0.0.1:{PORT}/api/status", token, a.rate, stop,
                                                     answers), daemon=True)
        poller.start()
        drawn: list[int] = []
        watching = threading.Event()
        watcher = threading.Thread(target=watch_page, args=(driver, watching, drawn), daemon=True)
        try:
            load_loaded = os.getloadavg()
            began = time.monotonic()
            watcher.start()
            loaded = run_live_bench(a.bundle, **common, extra_args=("--control-socket", str(sock)))
            ended = time.monotonic()
            watching.set()
            rss_kb, peak_kb = proc_kb(web.pid, "VmRSS"), proc_kb(web.pid, "VmHWM")
            # the same load (web, page, poller) with a player that has no socket: what the load
            # itself costs the notes, apart from the control path (the page says 'not playing')
            load_same = os.getloadavg()
            same = run_live_bench(a.bundle, **common, extra_args=("--control-socket", ""))
        finally:
            stop.set()
            watching.set()
            poller.join(5)
            watcher.join(5)
            driver.quit()
            web.terminate()
            web.wait(10)
    keys = ("notes", "notes_matched", "onset_error_ms", "transport_ms", "onset_beyond_transport_ms", "cpu_percent", "peak_rss_mb")
    result = {
        "what": "live bench without the control socket vs with it, playbach web serving it, the page open in "
                "headless Chromium and /api/status polled", "rate_per_s": a.rate, "seconds": a.seconds,
        "bpm": a.bpm, "realtime_priority": a.realtime_priority, "bundle": a.bundle,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_before_loaded_run": [round(x, 2) for x in load_loaded],
        "load_average_before_same_load_run": [round(x, 2) for x in load_same],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "without": {k: quiet.get(k) for k in keys}, "with": {k: loaded.get(k) for k in keys},
        "same_load_without_socket": {k: same.get(k) for k in keys},
        "api_status_polled": in_window(answers, began, ended),
        "page_notes_drawn_every_2s": drawn,
        "web_rss_mb": round(rss_kb / 1024, 1), "web_peak_rss_mb": round(peak_kb / 1024, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        write_text_atomically(a.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
