"""curves.png: loss and accuracy per head, train vs validation, one column per head."""
from __future__ import annotations

from pathlib import Path

from playbach.events import FIELDS


def save_curves(history: dict[str, list[float]], png_path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 6), sharex=True)
    for col, f in enumerate(FIELDS):
        for row, (metric, label) in enumerate(((f"{f}_loss", "loss (nats/event)"),
                                               (f"{f}_sparse_categorical_accuracy", "top-1 accuracy"))):
            ax = axes[row, col]
            for prefix, style in (("", "-"), ("val_", "--")):
                values = history.get(prefix + metric)
                if values:
                    epochs = range(1, len(values) + 1)
                    ax.plot(epochs, values, style, label="validation" if prefix else "train")
            ax.set_title(f"{f}: {label}")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("epoch")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
