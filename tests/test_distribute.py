"""`playbach train --distribute mirrored|multi-worker`: the TF_CONFIG check (fast, fuzzed), and one
tiny model trained on real chorales three ways -- one device, mirrored over two logical CPU devices,
two worker processes on 127.0.0.1 -- whose losses must agree within the seed-to-seed noise."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures_run import free_ports, link_chorales, wait_all
from playbach.cli import main
from playbach.errors import UserError
from playbach.trainer.distribute import Task, check_batch, first_batch, parse_tf_config

# --- TF_CONFIG, checked before anything is read --------------------------------------------------

GOOD = {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}


def test_a_good_tf_config_gives_the_task_and_the_chief():
    task = parse_tf_config(json.dumps(GOOD))
    assert task == Task("worker", 1, GOOD["cluster"]) and not task.chief
    assert parse_tf_config(json.dumps({**GOOD, "task": {"type": "worker", "index": 0}})).chief
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}
    assert not parse_tf_config(json.dumps(with_chief)).chief     # with a chief, worker 0 is a worker
    assert parse_tf_config(json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})).chief


@pytest.mark.parametrize("text, says", [
    (None, "TF_CONFIG is not set"),
    ("  ", "TF_CONFIG is not set"),
    ("{cluster:", "TF_CONFIG is not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": []}, "task": {"type": "worker"}}', '"cluster" "worker" is []'),
    ('{"cluster": {"worker": ["host"]}, "task": {"type": "worker"}}', "entry 0 is 'host'"),
    ('{"cluster": {"worker": ["h:0"]}, "task": {"type": "worker"}}', "port 1-65535"),
    ('{"cluster": {"worker": ["h:1", "h:1"]}, "task": {"type": "worker"}}', "h:1 more than once"),
    ('{"cluster": {"worker": ["h:1"], "ps": ["p:1"]}, "task": {"type": "worker"}}', '"ps" job'),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief"}}', "one chief"),
    ('{"cluster": {"worker": ["h:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief"}}', '"type" is "chief"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}', '"index" is 1, not 0..0'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": true}}', '"index" is true'),
])
def test_a_broken_tf_config_says_what_is_missing(text, says):
    with pytest.raises(UserError) as error:
        parse_tf_config(text)
    assert says in str(error.value) and "--distribute multi-worker" in str(error.value)


def test_multi_worker_without_tf_config_exits_2_before_reading_the_corpus(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "runs" / "mw"
    rc = main(["train", "--corpus", str(tmp_path / "no-such-corpus"), "--out", str(out),
               "--distribute", "multi-worker"])
    assert rc == 2 and "TF_CONFIG is not set" in caplog.text and '"task": {"type": "worker"' in caplog.text
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, says", [
    (["--cpu-devices", "2"], "--cpu-devices 2"),
    (["--distribute", "mirrored", "--cpu-devices", "0"], "--cpu-devices 0"),
    (["--distribute", "multi-worker", "--transpose", "2", "--augment", "random"], "--augment random"),
])
def test_flags_that_cannot_work_exit_2(tmp_path, monkeypatch, caplog, flags, says):
    monkeypatch.setenv("TF_CONFIG", json.dumps(GOOD))
    assert main(["train", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "run"), *flags]) == 2
    assert says in caplog.text and not (tmp_path / "run").exists()


def test_the_global_batch_must_split_evenly():
    assert check_batch(32, 2) == 16 and check_batch(7, 1) == 7
    with pytest.raises(UserError, match="--batch 33 does not split evenly over 2 replicas"):
        check_batch(33, 2)


def test_a_first_batch_smaller_than_the_batch_splits_evenly():
    assert first_batch(100, 32, 2, "validation") == 32     # the global batch when there are enough windows
    assert first_batch(13, 32, 2, "validation") == 12      # 6 + 6, then a last batch of 1
    assert first_batch(13, 32, 4, "validation") == 12 and first_batch(2, 32, 2, "training") == 2
    with pytest.raises(UserError, match="3 validation windows cannot be split over 4 replicas"):
        first_batch(3, 32, 4, "validation")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)
# one change that breaks a good TF_CONFIG, and a value for it
BREAKS = {"port": st.sampled_from([0, 65536, -1, "x"]), "job": st.sampled_from(["ps", "evaluator", ""]),
          "twice": st.just(None), "index": st.integers(-3, -1) | st.integers(6, 99) | st.just(True) | st.text(max_size=2),
          "type": st.sampled_from(["ps", "", None, 0]), "no task": st.just(None), "no cluster": st.just(None)}


@st.composite
def clusters(draw) -> dict:
    """{"chief": [...], "worker": [...]} or {"worker": [...]} of distinct 127.0.0.1 ports."""
    ports = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=6, unique=True))
    addresses = [f"127.0.0.1:{p}" for p in ports]
    if len(addresses) > 1 and draw(st.booleans()):
        return {"chief": addresses[:1], "worker": addresses[1:]}
    return {"worker": addresses}


def broken(config: dict, change: str, value) -> dict:
    cluster, task = config["cluster"], config["task"]
    if change == "port":
        cluster["worker"][-1] = f"127.0.0.1:{value}"
    elif change == "job":
        cluster[value] = ["10.0.0.9:1"]
    elif change == "twice":
        cluster["worker"].append(cluster["worker"][0])
    elif change in ("index", "type"):
        task[change] = value
    else:
        del config[change.split()[1]]
    return config


def _parsed_or_refused(text):
    """parse_tf_config's only outcomes: a Task that is really in the cluster, or a UserError naming TF_CONFIG."""
    try:
        task = parse_tf_config(text)
    except UserError as e:
        assert "TF_CONFIG" in str(e)
        return None
    assert 0 <= task.index < len(task.cluster[task.role]) and set(task.cluster) <= {"chief", "worker"}
    return task


@settings(max_examples=150, deadline=1000)
@given(st.text(max_size=60) | JSON.map(json.dumps))
def test_fuzzed_tf_config_is_a_task_or_a_clear_error(text):
    _parsed_or_refused(text)


@settings(max_examples=150, deadline=1000)
@given(clusters(), st.data())
def test_fuzzed_near_misses_are_refused_and_good_ones_parse(cluster, data):
    role = data.draw(st.sampled_from(sorted(cluster)))
    config = {"cluster": cluster, "task": {"type": role, "index": data.draw(st.integers(0, len(cluster[role]) - 1))}}
    assert _parsed_or_refused(json.dumps(config)) == Task(role, config["task"]["index"], cluster)
    change = data.draw(st.sampled_from(sorted(BREAKS)))
    assert _parsed_or_refused(json.dumps(broken(config, change, data.draw(BREAKS[change])))) is None, change


@settings(max_examples=100, deadline=1000)
@given(clusters())
def test_fuzzed_good_clusters_have_exactly_one_chief(cluster):
    tasks = [parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": role, "index": i}}))
             for role, v in cluster.items() for i in range(len(v))]
    assert sum(t.chief for t in tasks) == 1


# --- one tiny model, three ways --------------------------------------------------------------------

CHORALES = 10
TINY = ["--units", "32", "--embed", "4", "8", "4", "2", "--window", "16", "--epochs", "3", "--batch", "32",
        "--seed", "0", "--workers", "1"]
# The last epoch's losses (nats per event, four heads summed), one device vs two replicas: 4 standard
# deviations of the difference of two runs of this command that differ only in their training
# randomness (initialisation, shuffle, dropout), measured over 10 such runs (docs/trainer.md,
# "Training on several devices"). A global batch that doubled on two replicas halves the steps and
# falls outside the validation tolerance (tried, docs/trainer.md).
VAL_TOLERANCE = 0.25
TRAIN_TOLERANCE = 0.16
# mirrored over 2 devices vs 2 workers: the same batches, splits and seeds, the same sums (an
# all-reduce of two values does not depend on its order): only a broken split can tell them apart
SAME_REPLICAS = 0.01


def _train(cwd: Path, env: dict, *flags: str, log: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "playbach", "train", *TINY, *flags], cwd=cwd, env=env,
                                stdout=f, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory) -> dict:
    """The same `playbach train` as one process, as --distribute mirrored over 2 logical CPU devices,
    and as --distribute multi-worker with two workers on 127.0.0.1, each in its own folder (as on two
    machines), all four processes at once; the corpus is parsed once first, into a shared cache."""
    from playbach.trainer.corpus import load_corpus

    base = tmp_path_factory.mktemp("distribute")
    corpus = link_chorales(base / "corpus", CHORALES)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PLAYBACH_CACHE=str(base / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLAYBACH_CACHE", env["PLAYBACH_CACHE"])
        load_corpus(str(corpus), workers=1, progress=False)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    runs = {"single": base / "single", "mirrored": base / "mirrored", "worker0": base / "worker0",
            "worker1": base / "worker1"}
    common = ["--corpus", str(corpus), "--out", "runs/tiny"]
    procs = {"single": _train(runs["single"], env, *common, log=base / "single.log"),
             "mirrored": _train(runs["mirrored"], env, *common, "--distribute", "mirrored", "--cpu-devices", "2",
                                log=base / "mirrored.log")}
    for i in range(2):
        tmp = runs[f"worker{i}"] / "tmp"
        tmp.mkdir(parents=True)
        worker_env = {**env, "TMPDIR": str(tmp),
                      "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs[f"worker{i}"] = _train(runs[f"worker{i}"], worker_env, *common, "--distribute", "multi-worker",
                                     log=base / f"worker{i}.log")
    logs = wait_all(procs, {name: base / f"{name}.log" for name in procs}, 1500)
    return {"folders": runs, "logs": logs}


def _history(folder: Path) -> dict:
    return json.loads((folder / "runs" / "tiny" / "history.json").read_text())


def _report(folder: Path) -> dict:
    return json.loads((folder / "runs" / "tiny" / "report.json").read_text())


def test_one_device_mirrored_and_two_workers_reach_the_same_loss(distributed_runs):
    folders = distributed_runs["folders"]
    single, mirrored, workers = (_history(folders[n]) for n in ("single", "mirrored", "worker0"))
    assert single["loss"][-1] < single["loss"][0] - 1.0      # it learnt: the comparison means something
    for name, h in (("mirrored", mirrored), ("multi-worker", workers)):
        assert abs(h["val_loss"][-1] - single["val_loss"][-1]) <= VAL_TOLERANCE, (name, h["val_loss"], single["val_loss"])
        assert abs(h["loss"][-1] - single["loss"][-1]) <= TRAIN_TOLERANCE, (name, h["loss"], single["loss"])
    for key in ("loss", "val_loss"):
        assert all(math.isclose(a, b, abs_tol=SAME_REPLICAS) for a, b in zip(mirrored[key], workers[key])), key


def test_batch_is_the_global_batch_on_every_replica_count(distributed_runs):
    folders = distributed_runs["folders"]
    for name, replicas in (("single", 1), ("mirrored", 2), ("worker0", 2)):
        report = _report(folders[name])
        assert report["training"]["replicas"] == replicas and report["training"]["batch"] == 32
        steps = math.ceil(report["split"]["train_windows"] / 32)
        assert _history(folders[name])["steps"] == [steps] * 3, name
    assert "global batch 32: 16 windows on each of 2 replicas" in distributed_runs["logs"]["mirrored"]


def test_only_the_chief_writes_the_run_folder(distributed_runs):
    folders, logs = distributed_runs["folders"], distributed_runs["logs"]
    chief = folders["worker0"] / "runs"
    assert sorted(p.name for p in chief.iterdir()) == ["tiny"]      # no .tiny.tmp left beside it
    for name in ("model.keras", "checkpoint.keras", "run.json", "report.json", "events.npz", "history.json"):
        assert (chief / "tiny" / name).is_file(), name
    assert _report(folders["worker0"])["training"]["distribute"] == "multi-worker"
    assert not (folders["worker1"] / "runs").exists()
    assert list((folders["worker1"] / "tmp").glob("playbach-*")) == []   # its temp run folder is gone
    assert "worker 1 done: the chief writes runs/tiny" in logs["worker1"]
