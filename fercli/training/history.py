"""A run's history on disk: ``metrics.csv`` (one row per finished epoch) and ``curves.png``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fercli.fileio import atomic_path, atomic_write_text
from fercli.schema import CURVES_PNG, METRICS_CSV


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out_dir / METRICS_CSV, buf.getvalue())
    plot_curves(history, out_dir / CURVES_PNG)


def plot_curves(history: list[dict[str, Any]], dest: Path) -> None:
    """Accuracy and loss per epoch (train and valid), like the paper's Figs. 8-9."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [r["train_acc"] for r in history], label="train")
    ax1.plot(ep, [r["val_acc"] for r in history], label="valid")
    ax1.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.plot(ep, [r["train_loss"] for r in history], label="train")
    ax2.plot(ep, [r["val_loss"] for r in history], label="valid (single-label part)")
    ax2.set(xlabel="epoch", ylabel="loss", title="loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
