"""Fixtures of the trainer: `tiny_run`, a real run folder trained in seconds.

Six cello-suite movements (symlinked from the shared corpus, never copied into the repo),
the first courante held out as the test piece, a 32-unit LSTM on 16-event windows, 2 epochs,
trained through the real `playbach train` entry point. Other tests (the converter's) read it.
"""
import fcntl
import os
import shutil
import socket
from pathlib import Path
from typing import Callable

import pytest
from needs import CORPUS, REPO, missing

CELLO = CORPUS / "cello-suites"
TINY_PIECES = ("cs1-1pre", "cs1-2all", "cs1-3cou", "cs2-1pre", "cs2-4sar", "cs3-6gig")


def link_pieces(folder: Path, names=TINY_PIECES) -> Path:
    """A corpus folder of symlinks to cello-suite movements."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = CELLO / f"{name}.mid"
        if not source.exists():
            missing(f"cello suite movement {source} not found (set PLAYBACH_CORPUS to the corpus folder)")
        (folder / source.name).symlink_to(source)
    return folder


def link_chorales(folder: Path, count: int) -> Path:
    """A corpus folder of symlinks to the first `count` Bach chorales music21 carries (every
    install of the trainer has them: no shared corpus needed)."""
    from music21 import corpus

    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(corpus.getComposer("bach", fileExtensions=("mxl",)))[:count]:
        (folder / source.name).symlink_to(source)
    return folder


@pytest.fixture(scope="session")
def cello_dir() -> Path:
    if not CELLO.is_dir():
        missing(f"cello suites not found at {CELLO} (set PLAYBACH_CORPUS to the corpus folder)")
    return CELLO


def train_tiny(corpus: Path, out: Path, *extra: str) -> Path:
    """`playbach train` as tiny_run is made (its arguments, then `extra`, which may override
    them), with the corpus parse cache kept beside `out`."""
    from playbach.cli import main

    saved = os.environ.get("PLAYBACH_CACHE")
    os.environ["PLAYBACH_CACHE"] = str(out.parent / "cache")
    try:
        rc = main(["train", "--corpus", str(corpus), "--holdout", "*-3cou*", "--out", str(out),
                   "--units", "32", "--embed", "4", "8", "4", "2", "--window", "16", "--epochs", "2",
                   "--batch", "32", "--seed", "0", "--recurrent-dropout", "0.1", *extra])
    finally:
        if saved is None:
            os.environ.pop("PLAYBACH_CACHE", None)
        else:
            os.environ["PLAYBACH_CACHE"] = saved
    assert rc == 0, f"playbach train exited {rc}"
    return out


def made_once(name: str, tmp_path_factory, make: Callable[[Path], None]) -> Path:
    """The folder `name`, made by `make(folder)` once for every pytest process that shares it: the
    xdist workers of one run, and with PLAYBACH_TEST_SHARED (scripts/test.sh sets a fresh one for
    its two passes) both passes. The first process to get the lock makes it; the others wait and
    read it. A folder left without its `made` mark (a failed make) is made again."""
    shared = os.environ.get("PLAYBACH_TEST_SHARED")
    if shared:
        root = Path(shared)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent   # this run's, shared by its workers
    else:
        root = tmp_path_factory.getbasetemp()
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Path of a finished run folder (model.keras, run.json, events.npz, report.json, ...), made once
    for the whole test run (made_once): tests read it and never change it."""
    def make(folder: Path) -> None:
        train_tiny(link_pieces(folder / "corpus"), folder / "run")

    return made_once("tiny_run", tmp_path_factory, make) / "run"


def free_ports(n: int) -> list[int]:
    """n ports free on 127.0.0.1 now (the OS's choice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_all(procs: dict, logs: dict, timeout: float) -> dict[str, str]:
    """Wait for every process (killing any still running after `timeout` s, or on an error), and
    fail naming each that exited non-zero with the end of its log; each log's text."""
    try:
        codes = {name: p.wait(timeout=timeout) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = {name: Path(logs[name]).read_text() for name in procs}
    failed = {name: texts[name][-3000:] for name, rc in codes.items() if rc != 0}
    assert not failed, f"exit codes {codes}; the failed runs' logs end: {failed}"
    return texts
