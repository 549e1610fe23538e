"""Closed planar contours of a 2D pixel mask (marching squares at level 0.5, built from the pixel edges).

The boundary between set and unset pixels is traced along the pixel edges; each contour then joins the midpoints
of consecutive boundary edges (each the point halfway between a set and an unset pixel centre), so a staircase
becomes a straight diagonal and collinear points are dropped. Cutting a corner that way never crosses a pixel
centre, so a point-in-polygon test at the pixel centres with the even-odd rule over all contours of a slice gives
back the mask exactly, holes included (a hole is a contour of its own, running the other way). Where two set
pixels touch only at a corner, they get separate contours. Points are in (column, row) pixel-index units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_contours"]

# Directed edges of a set pixel whose neighbour in that direction is unset, as (corner from, corner to) offsets in
# (row, column) corner coordinates (corner (r, c) is the top-left corner of pixel (r, c)). Going round each pixel
# the same way, inner edges cancel and the boundary links into closed loops.
_EDGES = {
    (-1, 0): ((0, 0), (0, 1)),  # top: left to right
    (0, 1): ((0, 1), (1, 1)),  # right: top to bottom
    (1, 0): ((1, 1), (1, 0)),  # bottom: right to left
    (0, -1): ((1, 0), (0, 0)),  # left: bottom to top
}


def _boundary_edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    padded = np.pad(mask, 1)
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for (dr, dc), ((r0, c0), (r1, c1)) in _EDGES.items():
        neighbour = padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        rows, cols = np.nonzero(mask & ~neighbour)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=False):
            outgoing.setdefault((r + r0, c + c0), []).append((r + r1, c + c1))
    return outgoing


def _turn(incoming: tuple[int, int], start: tuple[int, int], end: tuple[int, int]) -> int:
    """Cross product sign of the incoming direction and the candidate edge (positive: a right turn on screen)."""
    out = (end[0] - start[0], end[1] - start[1])
    return incoming[1] * out[0] - incoming[0] * out[1]


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The closed contours of a boolean (rows, columns) mask.

    Returns:
        One float array (points, 2) of (column, row) pixel-index coordinates per contour, not repeating the first
        point; empty list for an empty mask.
    """
    mask = np.asarray(mask, bool)
    outgoing = _boundary_edges(mask)
    loops = []
    while outgoing:
        start = next(iter(outgoing))
        loop = [start]
        previous, current = start, outgoing[start].pop()
        if not outgoing[start]:
            del outgoing[start]
        while current != start:
            loop.append(current)
            choices = outgoing[current]
            incoming = (current[0] - previous[0], current[1] - previous[1])
            # at a corner shared by two diagonal pixels, turn towards the set pixel: each stays its own loop
            choice = max(choices, key=lambda end: _turn(incoming, current, end)) if len(choices) > 1 else choices[0]
            choices.remove(choice)
            if not choices:
                del outgoing[current]
            previous, current = current, choice
        corners = np.array(loop, float)
        midpoints = (corners + np.roll(corners, -1, axis=0)) / 2
        loops.append(_drop_collinear(midpoints))
    return [loop[:, ::-1] - 0.5 for loop in loops]


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    before = np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0)
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - (points[:, 1] - before[:, 1]) * (
        after[:, 0] - points[:, 0]
    )
    return points[cross != 0]
