"""What the grid tests share: a take of the shipped grid bundle (models/default) on the CPU,
and its next events.
"""
import dataclasses

import numpy as np

from playbach import settings
from playbach.take import Take

GRID_BUNDLE = str(settings.REPO_ROOT / "models" / "default")


def take(**values) -> Take:
    s = dataclasses.replace(settings.DEFAULTS, bundle=GRID_BUNDLE, accelerator="cpu", **values)
    return Take.build(s)


def draw(t: Take, n: int) -> np.ndarray:
    return np.array([t.improviser.next_event() for _ in range(n)])
