"""The live fine-tuning chart: training loss and validation Dice per epoch as a small SVG line chart.

Drawn from the rows of ``GLIMSSegmenterLib.trainingplot.TrainingPlot`` (the same table the Slicer module plots).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from GLIMSSegmenterLib.trainingplot import EPOCH

__all__ = ["trainingChartSvg", "SERIES_COLOURS"]

SERIES_COLOURS = {  # columns of GLIMSSegmenterLib.trainingplot.COLUMNS
    "training loss": "#dddddd",
    "Dice TC": "#d9403a",
    "Dice WT": "#4db34d",
    "Dice ET": "#e6bf1a",
    "Dice mean": "#3d6be6",
}

_WIDTH, _HEIGHT, _MARGIN = 320, 180, 30


def trainingChartSvg(rows: Sequence[Mapping[str, float | None]]) -> str:
    """An SVG chart (320x180 px) of the columns in ``SERIES_COLOURS`` against the epoch; "" without rows.

    The y axis runs from 0 to 1 (Dice) or to the largest loss when that is above 1.
    """
    if not rows:
        return ""
    epochs = [row[EPOCH] or 0.0 for row in rows]
    values = [row[c] for row in rows for c in SERIES_COLOURS if row.get(c) is not None]
    top = max([1.0, *values])
    right = max(max(epochs), 1.0)
    plotW, plotH = _WIDTH - 2 * _MARGIN, _HEIGHT - 2 * _MARGIN

    def x(epoch: float) -> float:
        return _MARGIN + plotW * epoch / right

    def y(value: float) -> float:
        return _HEIGHT - _MARGIN - plotH * value / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="sans-serif" font-size="10">',
        f'<rect x="{_MARGIN}" y="{_MARGIN}" width="{plotW}" height="{plotH}" fill="none" stroke="#777"/>',
        f'<text x="{_MARGIN}" y="{_HEIGHT - 8}" fill="#aaa">epoch 0</text>',
        f'<text x="{_WIDTH - _MARGIN}" y="{_HEIGHT - 8}" fill="#aaa" text-anchor="end">{right:g}</text>',
        f'<text x="4" y="{_MARGIN + 4}" fill="#aaa">{top:.2g}</text>',
        f'<text x="4" y="{_HEIGHT - _MARGIN}" fill="#aaa">0</text>',
    ]
    legendX = _MARGIN
    for column, colour in SERIES_COLOURS.items():
        points = [(x(e), y(row[column])) for e, row in zip(epochs, rows, strict=False) if row.get(column) is not None]
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>' for px, py in points]
        label = "loss" if column == "training loss" else column.replace("Dice ", "")
        parts.append(f'<text x="{legendX}" y="18" fill="{colour}">{escape(label)}</text>')
        legendX += 48
    parts.append("</svg>")
    return "".join(parts)
