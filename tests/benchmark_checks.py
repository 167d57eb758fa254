"""What a bundle trained on the JSB benchmark must show: its split recorded in full, no held-out
chorale among what it trained on (by note content, not by name), and its figures through the
variant the CPU player picks. Checked on the shipped default and on a tiny bundle the tests build,
so the checks are known to pass on a bundle made by today's converter."""
from __future__ import annotations

import math
from pathlib import Path

from playbach.bundle import SplitRecord, file_sha256, load_bundle
from playbach.fingerprint import CONTENT_SCHEME, content_fingerprint
from playbach.grid import is_grid
from playbach.jsb import read_jsb


def assert_measured_on_unseen_pieces(folder: Path, path: Path) -> SplitRecord:
    """The checks of a bundle trained on JSB file `path` (also run on a tiny bundle built by the
    tests, so they are known to pass on a bundle made by today's converter)."""
    meta = load_bundle(folder, verify=False).meta
    split, benchmark = meta.split, meta.benchmark
    assert split is not None and benchmark is not None, "bundle.json lacks its split or its benchmark figure"
    pieces = read_jsb(path)
    # the split is the file's own, and recorded in full
    assert split.holdout is None and isinstance(split.seed, int)
    assert split.corpus_sha256 == file_sha256(path) == benchmark.corpus_sha256
    assert list(split.test) == [p.name for p in pieces["test"]]
    assert list(split.valid) == [p.name for p in pieces["valid"]]
    # what it trained on: train pieces only, and none of them a held-out piece by note content
    assert split.fingerprint == CONTENT_SCHEME and split.train_fingerprints
    assert all(name.startswith("train/") for name in split.train_fingerprints)
    trained = {fp: name for name, fp in split.train_fingerprints.items()}
    seen = {p.name: trained[fp] for side in ("valid", "test") for p in pieces[side]
            if (fp := content_fingerprint(p.events)) in trained}
    assert not seen, f"{folder} trained on held-out chorales (held-out piece: train piece): {seen}"
    # its figure on both held-out splits, through the variant the CPU player picks
    bundle = load_bundle(folder, verify=False)
    played = bundle.meta.models[0].variant if is_grid(bundle) else bundle.most_faithful_variant("step")
    for side in ("valid", "test"):
        figure = benchmark.splits[side]
        assert figure.pieces == len(pieces[side]) and figure.steps16 == sum(p.steps16 for p in pieces[side])
        assert figure.variant == played and math.isfinite(figure.nll_per_step16) and figure.nll_per_step16 > 0
    return split
