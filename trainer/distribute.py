"""`playbach train --distribute mirrored|multi-worker`: which tf.distribute strategy, and TF_CONFIG checked.

    mirrored      one process, one replica per GPU of the machine (MirroredStrategy); on a machine
                  without a GPU, --cpu-devices N splits the CPU into N logical devices instead
    multi-worker  one process per machine, each told the cluster and its own place in it by the
                  TF_CONFIG environment variable (MultiWorkerMirroredStrategy); every worker runs the
                  same command, the chief writes the run folder

`--batch` stays the global batch: each of R replicas gets batch / R windows per step, so a step
averages the gradient over the same number of windows on one device or on many, and the learning
rate, the steps per epoch and the loss curve mean what they mean on one device. To use a bigger
cluster for speed, raise --batch (and, as usual, the learning rate with it).

TF_CONFIG is read and checked here without TensorFlow, before the corpus is parsed, so a missing
or broken one is one line naming what is wrong, exit 2.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from playbach.errors import UserError

MODES = ("mirrored", "multi-worker")
ROLES = ("chief", "worker")   # the jobs a MultiWorkerMirroredStrategy cluster may have
EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
           '"task": {"type": "worker", "index": 0}}\'')


@dataclass(frozen=True)
class Task:
    """This process's place in a multi-worker cluster, as TF_CONFIG gives it."""
    role: str                   # "chief" or "worker"
    index: int
    cluster: dict[str, list[str]]

    @property
    def chief(self) -> bool:
        """The one process that writes the run folder: the "chief" task, or worker 0 when the
        cluster has no chief (TensorFlow's own rule)."""
        return self.role == "chief" or (self.index == 0 and "chief" not in self.cluster)


def _missing(what: str) -> UserError:
    return UserError(f"--distribute multi-worker: TF_CONFIG {what}; every worker runs the same "
                     f"`playbach train` command with its own TF_CONFIG, e.g. {EXAMPLE} on the first "
                     f"machine and index 1 on the second")


def _check_address(role: str, i: int, address) -> str:
    where = f'cluster "{role}" entry {i}'
    if not isinstance(address, str):
        raise _missing(f"{where} is {json.dumps(address)}, not a \"host:port\" string")
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise _missing(f"{where} is {address!r}, not \"host:port\" with a port 1-65535")
    return address


def _read_cluster(config: dict) -> dict[str, list[str]]:
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise _missing('has no "cluster" object (the "host:port" of every worker)')
    for role, addresses in cluster.items():
        if role not in ROLES:
            raise _missing(f'has a "{role}" job in "cluster": multi-worker training has only "chief" '
                           f'and "worker" (no parameter servers or evaluators)')
        if not isinstance(addresses, list) or not addresses:
            raise _missing(f'"cluster" "{role}" is {json.dumps(addresses)}, not a non-empty list of "host:port"')
    if len(cluster.get("chief", [])) > 1:
        raise _missing(f'"cluster" "chief" lists {len(cluster["chief"])} addresses: a cluster has one chief')
    checked = {role: [_check_address(role, i, a) for i, a in enumerate(v)] for role, v in cluster.items()}
    every = [a for v in checked.values() for a in v]
    twice = sorted({a for a in every if every.count(a) > 1})
    if twice:
        raise _missing(f'"cluster" lists {", ".join(twice)} more than once')
    return checked


def parse_tf_config(text: str | None) -> Task:
    """The TF_CONFIG environment variable's text -> this process's Task; UserError naming what is missing."""
    if text is None or not text.strip():
        raise _missing("is not set")
    try:
        config = json.loads(text)
    except ValueError as e:
        raise _missing(f"is not JSON ({e})") from None
    if not isinstance(config, dict):
        raise _missing('is not a JSON object with "cluster" and "task"')
    cluster = _read_cluster(config)
    task = config.get("task")
    if not isinstance(task, dict):
        raise _missing('has no "task" object (this process\'s {"type": ..., "index": ...})')
    role, index = task.get("type"), task.get("index", 0)
    if role not in cluster:
        raise _missing(f'"task" "type" is {json.dumps(role)}, not a job of "cluster" ({", ".join(cluster)})')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[role]):
        raise _missing(f'"task" "index" is {json.dumps(index)}, not 0..{len(cluster[role]) - 1} '
                       f'(the place of this process in "cluster" "{role}")')
    return Task(role, index, cluster)


def check(request, environ) -> Task | None:
    """The request's devices checked together before any work (a trainer.config.Request); this
    process's Task under multi-worker, else None."""
    if request.distribute == "multi-worker" and request.config.transpose and request.config.augment == "random":
        raise UserError("--augment random draws its batches in Python, one stream per process, which the "
                        "workers cannot split: use --augment copies with --distribute multi-worker")
    return check_devices(request.distribute, request.cpu_devices, environ)


def check_devices(mode: str | None, cpu_devices: int, environ) -> Task | None:
    """--distribute and --cpu-devices checked together; this process's Task under multi-worker."""
    if cpu_devices < 1 or (cpu_devices > 1 and mode != "mirrored"):
        raise UserError(f"--cpu-devices {cpu_devices}: a count of 1 or more, and more than 1 only "
                        f"with --distribute mirrored")
    return parse_tf_config(environ.get("TF_CONFIG")) if mode == "multi-worker" else None


# --- TensorFlow's side (imported only when training) ----------------------------------------------

def make_strategy(mode: str, cpu_devices: int = 1):
    """The tf.distribute strategy for `mode`. Call before TensorFlow runs anything: both the
    logical CPU devices and the multi-worker runtime must be set up before it initialises."""
    import tensorflow as tf

    if mode == "multi-worker":
        return _multi_worker_strategy()
    if cpu_devices > 1 or not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.MirroredStrategy()   # every GPU of the machine


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy that reduces what Keras 3's fit asks it to (keras-team/keras#20585):
    the first batch, a dict of per-replica inputs and targets, in one call (to learn its shapes), and
    each step's scalar logs "along axis 0". Across workers the strategy takes one tensor per call and
    a scalar has no axis 0, so: leaf by leaf, and a scalar is averaged over the replicas, as Keras
    does under MirroredStrategy."""
    import tensorflow as tf

    class MultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def leaf(v):
                scalar = self.experimental_local_results(v)[0].shape.rank == 0
                return super(MultiWorker, self).reduce(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(leaf, value)

    return MultiWorker()


def check_batch(batch: int, replicas: int) -> int:
    """Windows per replica per step; UserError if the global --batch does not split evenly."""
    if batch % replicas:
        raise UserError(f"--batch {batch} does not split evenly over {replicas} replicas: it is the "
                        f"global batch, each replica takes batch / {replicas} (use a multiple of {replicas})")
    return batch // replicas


def batches(x: dict, y: dict, batch: int, replicas: int, seed: int | None, what: str):
    """A tf.data pipeline of global batches (shuffled anew each epoch when `seed` is given) that
    tf.distribute splits between replicas. Every worker reads all of it and keeps its share of
    each batch (DATA sharding): the shuffle is seeded, so all workers see the same order."""
    import tensorflow as tf

    windows = len(next(iter(x.values())))
    data = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        data = data.shuffle(windows, seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.batch(first_batch(windows, batch, replicas, what)).with_options(options)


def first_batch(windows: int, batch: int, replicas: int, what: str) -> int:
    """`batch`, or with fewer windows than that, the most that split evenly over the replicas: Keras
    learns the input shapes by reducing the first batch over the replicas, which needs every share of
    it the same size (a last, smaller batch may split unevenly)."""
    if windows >= batch:
        return batch
    if windows < replicas:
        raise UserError(f"{windows} {what} windows cannot be split over {replicas} replicas: use fewer devices "
                        f"or more music")
    return windows - windows % replicas
