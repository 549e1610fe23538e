"""A PNG overview of a segmentation: axial, coronal and sagittal slices of each input with the labels overlaid.

Slices go through the centre of the segmented region (or of the image when nothing is segmented) and are shown in
the radiological convention (patient's right on the left; anterior and superior up), from LPS-oriented copies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .catalog import LabelSpec
from .imageio import reorient, resample_to
from .outputs import OutputSet

__all__ = ["render_montage"]


def _views(volume_xyz: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    x, y, z = centre
    axial = volume_xyz[:, :, z].T
    coronal = volume_xyz[:, y, :].T[::-1]
    sagittal = volume_xyz[x, :, :].T[::-1]
    return [axial, coronal, sagittal]


def _window(view: np.ndarray) -> tuple[float, float]:
    values = view[view != 0] if (view != 0).any() else view
    return float(np.percentile(values, 1)), float(np.percentile(values, 99.5))


def render_montage(
    images: Mapping[str, sitk.Image],
    labels: sitk.Image | None,
    segments: Sequence[LabelSpec],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Write the montage PNG (rows: axial, coronal, sagittal; columns: inputs) atomically and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap

    first = reorient(next(iter(images.values())), "LPS")
    arrays = {
        name: sitk.GetArrayFromImage(resample_to(reorient(img, "LPS"), first)).transpose(2, 1, 0)
        for name, img in images.items()
    }
    label_xyz = None
    if labels is not None:
        label_xyz = sitk.GetArrayFromImage(
            resample_to(reorient(labels, "LPS"), first, sitk.sitkNearestNeighbor)
        ).transpose(2, 1, 0)
    shape = next(iter(arrays.values())).shape
    if label_xyz is not None and label_xyz.any():
        centre = [int(round(c.mean())) for c in np.nonzero(label_xyz)]
    else:
        centre = [s // 2 for s in shape]
    spacing = first.GetSpacing()
    aspects = [spacing[1] / spacing[0], spacing[2] / spacing[0], spacing[2] / spacing[1]]

    colours = np.zeros((256, 4))
    for seg in segments:
        colours[seg.value] = (*seg.color_float, 0.45)
    overlay_cmap = ListedColormap(colours)

    names = list(arrays)
    fig, axes = plt.subplots(3, len(names), figsize=(3.2 * len(names), 9.6), squeeze=False)
    for col, name in enumerate(names):
        views = _views(arrays[name], centre)
        label_views = _views(label_xyz, centre) if label_xyz is not None else [None] * 3
        for row, (view, lab) in enumerate(zip(views, label_views, strict=False)):
            ax = axes[row][col]
            lo, hi = _window(view)
            ax.imshow(view, cmap="gray", vmin=lo, vmax=hi, aspect=aspects[row], interpolation="nearest")
            if lab is not None:
                ax.imshow(
                    np.ma.masked_equal(lab, 0),
                    cmap=overlay_cmap,
                    vmin=0,
                    vmax=255,
                    aspect=aspects[row],
                    interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=11)
            if col == 0:
                ax.set_ylabel(["axial", "coronal", "sagittal"][row], fontsize=11)
    handles = [matplotlib.patches.Patch(color=seg.color_float, label=seg.name) for seg in segments]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    with OutputSet() as pending:
        tmp = pending.staged(path)
        fig.savefig(tmp, dpi=80, format="png")
        plt.close(fig)
        pending.commit()
    return Path(path)
