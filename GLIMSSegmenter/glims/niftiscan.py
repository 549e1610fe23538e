"""What a NIfTI file really holds, seen before ITK reads it: ITK zero-fills a file shorter than its header declares,
reads NaN and infinite voxels as 0 and silently straightens a sheared (non-orthogonal) sform.

One streaming pass over the (decompressed) file: the header is parsed with ``nibabel``, the voxel bytes are counted
against the header's dimensions and data type, and floating-point voxels are checked for NaN/Inf chunk by chunk (the
file is never held in memory as a whole). A ``.nii.gz`` whose compressed stream is cut short is reported as such.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["NiftiScan", "is_nifti", "scan_nifti", "SHEAR_TOLERANCE"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
CHUNK_BYTES = 1 << 22
SHEAR_TOLERANCE = 1e-3
"""Largest |cos| between two voxel axes still taken as perpendicular (about 0.06 degrees): float32 rounding in
real scanners' headers stays far below it, a tilted-gantry or hand-made sheared grid far above."""


@dataclass(frozen=True)
class NiftiScan:
    """Facts about a NIfTI file's voxel data."""

    declared_bytes: int
    held_bytes: int
    non_finite: int


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _header(head: bytes):
    """The NIfTI-1 or NIfTI-2 header at the start of ``head``, or None when it is neither."""
    import io

    from nibabel.nifti1 import Nifti1Header
    from nibabel.nifti2 import Nifti2Header
    from nibabel.spatialimages import HeaderDataError

    for kind in (Nifti1Header, Nifti2Header):
        if kind.may_contain_header(head[: kind.template_dtype.itemsize]):
            try:
                return kind.from_fileobj(io.BytesIO(head), check=False)
            except (HeaderDataError, ValueError, EOFError):
                return None
    return None


def axis_angles(columns: np.ndarray) -> list[float]:
    """Angles in degrees between each pair of the three voxel axes (columns of a 3x3 matrix, any length)."""
    unit = columns / np.linalg.norm(columns, axis=0, keepdims=True)
    cosines = [float(unit[:, i] @ unit[:, j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    return [float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))) for c in cosines]


def is_sheared(columns: np.ndarray) -> bool:
    """True when two of the voxel axes (columns) are not perpendicular, or an axis has no length."""
    norms = np.linalg.norm(columns, axis=0)
    if not np.all(np.isfinite(columns)) or np.any(norms == 0):
        return True
    unit = columns / norms
    return bool(np.abs(unit.T @ unit - np.eye(3)).max() > SHEAR_TOLERANCE)


def _check_sform(header, label: str) -> None:
    """ITK uses the sform when its code is set and straightens it when sheared: refuse that instead."""
    affine, code = header.get_sform(coded=True)
    if not code or affine is None:
        return
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    if is_sheared(columns):
        angles = ", ".join(f"{a:.1f}" for a in axis_angles(columns)) if np.all(np.isfinite(columns)) else "undefined"
        raise InputError(
            f"{label}: its voxel axes (NIfTI sform) are not perpendicular (angles {angles} degrees, not 90: a sheared grid, "
            "e.g. from a tilted CT gantry); readers would straighten it silently and move the anatomy. Resample it "
            "onto an orthogonal grid first"
        )


def scan_nifti(path: Path, label: str) -> NiftiScan | None:
    """Scan a ``.nii``/``.nii.gz`` file; None when its header is not NIfTI (the image reader then reports it).

    Raises:
        InputError: the compressed stream is truncated or corrupt; the file holds fewer (or more) voxel bytes than
            its header declares; voxels are NaN or infinite; the sform is sheared.
    """
    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as stream:
            head = stream.read(540)
            header = _header(head)
            if header is None:
                while stream.read(CHUNK_BYTES):  # still check the compressed stream
                    pass
                return None
            _check_sform(header, label)
            scan = _scan_voxels(stream, head, header)
    except (OSError, EOFError, zlib.error) as err:
        if not compressed:
            raise InputError(f"{label}: cannot read {path.name}: {err}") from None
        raise InputError(f"{label}: cannot read {path.name}: the compressed file is truncated or corrupt ({err})") from None
    _judge(scan, header, label, path.name)
    return scan


def _judge(scan: NiftiScan, header, label: str, name: str) -> None:
    size = "x".join(str(n) for n in header.get_data_shape())
    if scan.held_bytes < scan.declared_bytes:
        raise InputError(
            f"{label}: {name} is truncated: its header declares {size} voxels of {header.get_data_dtype().name} "
            f"({scan.declared_bytes} bytes) but the file holds {scan.held_bytes} bytes of them"
        )
    if scan.held_bytes > scan.declared_bytes:
        raise InputError(
            f"{label}: {name} holds {scan.held_bytes - scan.declared_bytes} bytes more voxel data than its header "
            f"declares ({size} voxels of {header.get_data_dtype().name}): the header's size or data type is wrong"
        )
    if scan.non_finite:
        raise InputError(f"{label}: {scan.non_finite} voxels are NaN or infinite")


def _scan_voxels(stream, head: bytes, header) -> NiftiScan:
    dtype = header.get_data_dtype()
    shape = header.get_data_shape()
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    offset = int(header.get_data_offset())
    floating = dtype.kind in "fc"
    leftover = head[offset:] if offset < len(head) else b""
    if offset > len(head):
        skipped = len(stream.read(offset - len(head)))
        if skipped < offset - len(head):
            return NiftiScan(declared, 0, 0)
    held, non_finite, carry = 0, 0, b""
    chunk = leftover
    while True:
        if chunk:
            if held < declared and floating:
                usable = carry + chunk[: max(0, declared - held)]
                whole = len(usable) - len(usable) % dtype.itemsize
                non_finite += int((~np.isfinite(np.frombuffer(usable[:whole], dtype=dtype))).sum())
                carry = usable[whole:]
            held += len(chunk)
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            break
    return NiftiScan(declared, held, non_finite)
