"""The per-epoch training log: ``log.jsonl`` (one JSON object per epoch), ``log.csv`` and ``curves.png``.

The PNG needs matplotlib (optional; without it the PNG is skipped with a warning). All are rewritten atomically
from the full history after each epoch, so they always agree with the resumable state (a resumed run continues the
same files).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..fileio import atomic_write

__all__ = ["write_history", "plot_curves"]

logger = logging.getLogger(__name__)


def write_history(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Write ``log.jsonl``, ``log.csv`` and ``curves.png`` for the epochs so far."""
    with atomic_write(run_dir / "log.jsonl", "w") as handle:
        for row in history:
            handle.write(json.dumps(dict(row)) + "\n")
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    with atomic_write(run_dir / "log.csv", "w") as handle:
        handle.write(text.getvalue())
    if history:
        try:
            plot_curves(history, run_dir / "curves.png")
        except ImportError:  # matplotlib is an optional dependency (the ``plots`` extra)
            logger.warning("matplotlib is not installed: no curves.png (pip install matplotlib)")


def plot_curves(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Training loss and validation Dice per region against the epoch, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    losses = [(row["epoch"], row["train_loss"]) for row in history if row.get("train_loss") is not None]
    figure = Figure(figsize=(9, 3.6), dpi=100)
    ax_loss, ax_dice = figure.subplots(1, 2)
    if losses:
        ax_loss.plot(*zip(*losses, strict=False), color="black", marker=".")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (Dice + CE, deep supervision)")
    ax_loss.grid(alpha=0.3)
    for region, colour in (("TC", "tab:red"), ("WT", "tab:green"), ("ET", "tab:orange"), ("mean", "black")):
        key = f"val_dice_{region}"
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            ax_dice.plot(
                *zip(*points, strict=False),
                color=colour,
                marker=".",
                label=region,
                linestyle="--" if region == "mean" else "-",
            )
    ax_dice.set_ylim(0, 1)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice")
    ax_dice.grid(alpha=0.3)
    if ax_dice.lines:
        ax_dice.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
