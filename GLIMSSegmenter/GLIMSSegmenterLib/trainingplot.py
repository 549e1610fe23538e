"""The live plot of a fine-tuning run: training loss and validation Dice per epoch, as Slicer plot nodes.

A ``vtkMRMLTableNode`` holds one row per finished epoch (row 0: the starting weights' validation Dice, before any
training) and a ``vtkMRMLPlotChartNode`` draws its columns as ``vtkMRMLPlotSeriesNode`` lines against the epoch.
In Slicer the widget shows the chart in the layout's plot view; the nodes are ordinary scene nodes (they can be
saved with the scene, and the table can be exported as CSV from the Tables module).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import slicer
import vtk

__all__ = ["TrainingPlot", "COLUMNS", "isEpochSummary"]

EPOCH, LOSS = "epoch", "training loss"
REGIONS = ("TC", "WT", "ET")
COLUMNS = (EPOCH, LOSS, *(f"Dice {r}" for r in REGIONS), "Dice mean")
"""Table columns: epoch, mean training loss of the epoch, validation Dice per BraTS region and their mean."""

_SERIES = (
    # column, colour (RGB 0-1), line style
    (LOSS, (0.15, 0.15, 0.15), "LineStyleSolid"),
    ("Dice TC", (0.85, 0.25, 0.2), "LineStyleDash"),
    ("Dice WT", (0.3, 0.7, 0.3), "LineStyleDash"),
    ("Dice ET", (0.9, 0.75, 0.1), "LineStyleDash"),
    ("Dice mean", (0.2, 0.4, 0.9), "LineStyleSolid"),
)


def isEpochSummary(event) -> bool:
    """Whether a fine-tuning progress event closes an epoch (or reports the starting weights, epoch 0).

    Per-step events carry ``lr``; epoch summaries carry ``eta_s`` (and ``val_dice`` when validated); the starting
    weights' event is epoch 0 with ``val_dice``.
    """
    data = event.data or {}
    if event.stage != "train" or "epoch" not in data:
        return False
    return "eta_s" in data or (int(data["epoch"]) == 0 and "val_dice" in data)


class TrainingPlot:
    """Table, series and chart nodes of one fine-tuning run, added to ``scene``.

    Args:
        scene: the MRML scene.
        name: base name of the nodes (made unique), e.g. ``Fine-tuning glims-brats-site``.
    """

    def __init__(self, scene, name: str) -> None:
        self.scene = scene
        name = scene.GenerateUniqueName(name)
        self.tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        table = self.tableNode.GetTable()
        for column in COLUMNS:
            array = vtk.vtkDoubleArray()
            array.SetName(column)
            table.AddColumn(array)
        self.chartNode = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        self.chartNode.SetTitle(name)
        self.chartNode.SetXAxisTitle("epoch")
        self.chartNode.SetYAxisTitle("loss / validation Dice")
        self.seriesNodes = []
        for column, colour, style in _SERIES:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            series.SetAndObserveTableNodeID(self.tableNode.GetID())
            series.SetXColumnName(EPOCH)
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetLineStyle(getattr(slicer.vtkMRMLPlotSeriesNode, style))
            series.SetColor(*colour)
            self.chartNode.AddAndObservePlotSeriesNodeID(series.GetID())
            self.seriesNodes.append(series)

    def addEpoch(self, epoch: int, loss: float | None = None, dice: Mapping[str, float] | None = None) -> None:
        """Append one row; a missing loss (epoch 0) or Dice (epoch not validated) is NaN, which is not drawn."""
        dice = dice or {}
        regional = [dice.get(r) for r in REGIONS]
        known = [v for v in regional if v is not None]
        mean = sum(known) / len(known) if len(known) == len(REGIONS) else None
        values = (epoch, loss, *regional, mean)
        table = self.tableNode.GetTable()
        for column, value in zip(COLUMNS, values, strict=False):
            table.GetColumnByName(column).InsertNextValue(math.nan if value is None else float(value))
        table.Modified()
        self.tableNode.Modified()

    def addFromProgress(self, event) -> bool:
        """Append a row when ``event`` is an epoch summary (:func:`isEpochSummary`); True if one was added."""
        if not isEpochSummary(event):
            return False
        data = event.data
        self.addEpoch(int(data["epoch"]), data.get("loss"), data.get("val_dice"))
        return True

    def rows(self) -> list[dict[str, float | None]]:
        """The table as {column: value} per row (None where NaN)."""
        table = self.tableNode.GetTable()
        result = []
        for row in range(table.GetNumberOfRows()):
            values = {}
            for column in COLUMNS:
                value = table.GetColumnByName(column).GetValue(row)
                values[column] = None if math.isnan(value) else value
            result.append(values)
        return result

    def removeNodes(self) -> None:
        """Take the chart, its series and the table out of the scene."""
        for node in [self.chartNode, *self.seriesNodes, self.tableNode]:
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)
