"""The trainer end to end on real cello-suite files: corpus, split, train, evaluate, generate."""
import json

import numpy as np

from playbach.device.events import FIELDS, Codec


def test_tiny_run_has_the_contracted_files(tiny_run):
    for name in ("model.keras", "checkpoint.keras", "train_state.json", "run.json", "events.npz",
                 "report.json", "curves.png", "history.json"):
        assert (tiny_run / name).is_file(), name
    meta = json.loads((tiny_run / "run.json").read_text())
    assert meta["format"] == 1 and meta["seed"] == 0
    codec = Codec.from_dict(meta["codec"])
    assert tuple(meta["model"]["vocab_sizes"]) == codec.sizes
    with np.load(tiny_run / "events.npz") as data:
        sides = {k.split("/", 1)[0] for k in data.files}
        assert sides == {"train", "val", "test"}
        assert data["test/cs1-3cou"].shape[1] == 4
    assert json.loads((tiny_run / "train_state.json").read_text())["epoch"] == 2
