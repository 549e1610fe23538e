"""What an image file really holds, seen before ITK reads it.

ITK zero-fills a NIfTI file shorter than its header declares, reads NaN and infinite NIfTI voxels as 0, silently
straightens a sheared (non-orthogonal) NIfTI sform, and reports a short NRRD or MetaImage file with messages that do
not say so ("File cannot be read"). ``scan_image_file`` makes one streaming pass over the file (decompressing where
the format compresses): it parses the header (NIfTI with ``nibabel``; NRRD and MetaImage headers are text), counts
the voxel bytes against the header's sizes and data type, and checks floating-point NIfTI voxels for NaN/Inf chunk by
chunk, so the file is never held in memory as a whole. Formats or layouts it does not know (DICOM, a NRRD "LIST" of
files, data at the end of a file) are left to ITK.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np

from .errors import InputError

if TYPE_CHECKING:  # nibabel is imported when a NIfTI file is scanned
    from nibabel.nifti1 import Nifti1Header

__all__ = ["scan_image_file", "is_sheared", "sheared_message", "SHEAR_TOLERANCE"]

CHUNK_BYTES = 1 << 22
HEADER_LIMIT_BYTES = 1 << 16
SHEAR_TOLERANCE = 1e-3
"""Largest |cos| between two voxel axes still taken as perpendicular (about 0.06 degrees): float32 rounding in
real scanners' headers stays far below it, a tilted-gantry or hand-made sheared grid far above."""

_NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), "i1"),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), "i2"),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), "u2"),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), "i4"),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    **dict.fromkeys(
        ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t"), "i8"
    ),
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), "u8"),
    "float": "f4",
    "double": "f8",
}
_META_TYPES = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}


@dataclass(frozen=True)
class VoxelData:
    """Where a file's voxel data lies and what its header declares about it."""

    file: Path
    offset: int
    """Bytes to skip in ``file`` before the data (or before its compressed stream)."""
    compression: str
    """``none``, ``gzip`` (gzip stream) or ``zlib`` (zlib stream)."""
    skip: int
    """Bytes to skip in the decompressed data before the voxels."""
    sizes: tuple[int, ...]
    dtype: np.dtype

    @property
    def declared_bytes(self) -> int:
        return int(np.prod(self.sizes, dtype=np.int64)) * self.dtype.itemsize


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


def sheared_message(label: str, columns: np.ndarray, where: str = "") -> str:
    """The one-line refusal of a sheared grid (shared by the header scan and the check of ITK's direction)."""
    angles = ", ".join(f"{a:.1f}" for a in axis_angles(columns)) if np.all(np.isfinite(columns)) else "undefined"
    return (
        f"{label}: its voxel axes{where} are not perpendicular (angles {angles} degrees, not 90: a sheared grid, "
        "e.g. from a tilted CT gantry); resample it onto an orthogonal grid first"
    )


# ------------------------------------------------------------------------------------------------------ NIfTI


def _nifti_header(head: bytes) -> Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header at the start of ``head``, or None when it is neither."""
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


def _nifti_data(path: Path, label: str) -> VoxelData | None:
    """NIfTI: also refuses a sheared sform (ITK uses the sform when its code is set, and straightens it)."""
    compressed = path.name.lower().endswith(".gz")
    with _opened(path, 0, "gzip" if compressed else "none") as stream:
        header = _nifti_header(stream.read(540))
    if header is None:
        return None
    affine, code = header.get_sform(coded=True)
    if code and affine is not None and is_sheared(np.asarray(affine, dtype=np.float64)[:3, :3]):
        raise InputError(sheared_message(label, np.asarray(affine, dtype=np.float64)[:3, :3], " (NIfTI sform)"))
    return VoxelData(
        path,
        0,
        "gzip" if compressed else "none",
        int(header.get_data_offset()),
        tuple(int(n) for n in header.get_data_shape()),
        header.get_data_dtype(),
    )


# ------------------------------------------------------------------------------------------ NRRD, MetaImage


def _text_header(handle: BinaryIO, separator: str, last_key: str | None) -> dict[str, str]:
    """``key<separator>value`` lines up to a blank line (NRRD) or up to ``last_key`` (MetaImage); keys lower-case."""
    fields: dict[str, str] = {}
    while handle.tell() < HEADER_LIMIT_BYTES:
        line = handle.readline(HEADER_LIMIT_BYTES)
        text = line.decode("latin-1").rstrip("\r\n")
        if not line or (last_key is None and not text):
            break
        key, sep, value = text.partition(separator)
        if text.startswith("#") or not sep or value.startswith("="):
            continue
        fields[key.strip().lower()] = value.strip()
        if last_key is not None and key.strip().lower() == last_key:
            break
    return fields


def _detached(path: Path, name: str) -> Path | None:
    """A single detached data file named in a header (None for lists and numbered patterns)."""
    if not name or name.upper().startswith("LIST") or len(name.split()) > 1 or "%" in name:
        return None
    return path.parent / name


def _nrrd_data(path: Path) -> VoxelData | None:
    with open(path, "rb") as handle:
        if not handle.readline(64).startswith(b"NRRD000"):
            return None
        fields = _text_header(handle, ":", None)
        header_end = handle.tell()
    encoding = fields.get("encoding", "").lower()
    kind = _NRRD_TYPES.get(fields.get("type", "").lower())
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
    lines = int(fields.get("line skip", fields.get("lineskip", "0")) or 0)
    if encoding not in ("raw", "gzip", "gz") or kind is None or skip < 0 or lines or "sizes" not in fields:
        return None
    dtype = np.dtype(("<" if fields.get("endian", "little") == "little" else ">") + kind)
    name = fields.get("data file", fields.get("datafile", ""))
    target = _detached(path, name) if name else path
    if target is None:
        return None
    offset = 0 if name else header_end
    sizes = tuple(int(n) for n in fields["sizes"].split())
    if encoding == "raw":
        return VoxelData(target, offset + skip, "none", 0, sizes, dtype)
    return VoxelData(target, offset, "gzip", skip, sizes, dtype)


def _metaimage_data(path: Path) -> VoxelData | None:
    with open(path, "rb") as handle:
        fields = _text_header(handle, "=", "elementdatafile")
        header_end = handle.tell()
    kind = _META_TYPES.get(fields.get("elementtype", ""))
    name = fields.get("elementdatafile", "")
    if kind is None or "dimsize" not in fields or not name:
        return None
    big = fields.get("elementbyteordermsb", fields.get("binarydatabyteordermsb", "False")).lower() == "true"
    dtype = np.dtype((">" if big else "<") + kind)
    channels = int(fields.get("elementnumberofchannels", "1"))
    sizes = (*(int(n) for n in fields["dimsize"].split()), *((channels,) if channels != 1 else ()))
    compression = "zlib" if fields.get("compresseddata", "False").lower() == "true" else "none"
    if name.upper() == "LOCAL":
        return VoxelData(path, header_end, compression, 0, sizes, dtype)
    target, header_size = _detached(path, name), int(fields.get("headersize", "0"))
    if target is None or header_size < 0:
        return None
    return VoxelData(target, header_size, compression, 0, sizes, dtype)


# ---------------------------------------------------------------------------------------------- the pass


class _Readable(Protocol):
    """What the scans read bytes from: a file, a gzip stream or a ``_ZlibReader``."""

    def read(self, size: int = -1, /) -> bytes: ...


class _ZlibReader(io.RawIOBase):
    """A zlib stream (MetaImage ``CompressedData``) read as a file of its decompressed bytes."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw, self._inflate = raw, zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while True:
            block = self._raw.read(CHUNK_BYTES)
            if not block:
                if not self._inflate.eof:
                    raise EOFError("the compressed stream ended before its end marker")
                return self._inflate.flush()
            out = self._inflate.decompress(block)
            if out or self._inflate.eof:
                return out


class _opened:
    """The (decompressed) bytes of ``path`` from ``offset``, as a context manager."""

    def __init__(self, path: Path, offset: int, compression: str) -> None:
        self.path, self.offset, self.compression = path, offset, compression

    def __enter__(self) -> _Readable:
        self._raw = open(self.path, "rb")
        self._raw.seek(self.offset)
        if self.compression == "gzip":
            return gzip.GzipFile(fileobj=self._raw, mode="rb")
        if self.compression == "zlib":
            return _ZlibReader(self._raw)
        return self._raw

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


def _chunks(stream: _Readable) -> Iterator[bytes]:
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _count(data: VoxelData, check_values: bool) -> tuple[int, int]:
    """(voxel bytes held after the skip, NaN/Inf voxels among the declared ones) in one pass."""
    declared, itemsize = data.declared_bytes, data.dtype.itemsize
    held, non_finite, carry, to_skip = 0, 0, b"", data.skip
    with _opened(data.file, data.offset, data.compression) as stream:
        for chunk in _chunks(stream):
            if to_skip:
                dropped = min(to_skip, len(chunk))
                chunk, to_skip = chunk[dropped:], to_skip - dropped
            if check_values and held < declared:
                usable = carry + chunk[: declared - held]
                whole = len(usable) - len(usable) % itemsize
                non_finite += int((~np.isfinite(np.frombuffer(usable[:whole], dtype=data.dtype))).sum())
                carry = usable[whole:]
            held += len(chunk)
    return held, non_finite


def scan_image_file(path: Path, label: str) -> None:
    """Check that a NIfTI, NRRD or MetaImage file holds the voxels its header declares (and, for NIfTI, that none is
    NaN or infinite and the sform is not sheared); other ``.gz`` files are checked to decompress completely.

    Raises:
        InputError: truncated or corrupt compressed data; fewer (or more) voxel bytes than declared; NaN/Inf; a
            sheared NIfTI sform.
    """
    lower = path.name.lower()
    try:
        if lower.endswith((".nii", ".nii.gz")):
            data, nifti = _nifti_data(path, label), True
        elif lower.endswith((".nrrd", ".nhdr")):
            data, nifti = _nrrd_data(path), False
        elif lower.endswith((".mha", ".mhd")):
            data, nifti = _metaimage_data(path), False
        else:
            data, nifti = None, False
        if data is None:
            if lower.endswith(".gz"):
                _count(VoxelData(path, 0, "gzip", 0, (0,), np.dtype("u1")), False)
            return
        if not data.file.is_file():
            raise InputError(f"{label}: the data file {data.file.name} named in {path.name}'s header is missing")
        held, non_finite = _count(data, nifti and data.dtype.kind in "fc")
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(
            f"{label}: cannot read {path.name}: the compressed file is truncated or corrupt ({err})"
        ) from None
    except OSError as err:
        raise InputError(f"{label}: cannot read {path.name}: {err.strerror or err}") from None
    except ValueError as err:  # a header field that is not a number
        raise InputError(f"{label}: cannot read {path.name}: its header is malformed ({err})") from None
    _judge(data, held, non_finite, label, path.name)


def _judge(data: VoxelData, held: int, non_finite: int, label: str, name: str) -> None:
    size = "x".join(str(n) for n in data.sizes)
    declared = f"{size} voxels of {data.dtype.name} ({data.declared_bytes} bytes)"
    if held < data.declared_bytes:
        raise InputError(
            f"{label}: {name} is truncated: its header declares {declared} but the file holds {held} bytes of them"
        )
    if held > data.declared_bytes:
        raise InputError(
            f"{label}: {name} holds {held - data.declared_bytes} bytes more voxel data than its header "
            f"declares ({declared}): the header's size or data type is wrong"
        )
    if non_finite:
        raise InputError(f"{label}: {non_finite} voxels are NaN or infinite")
