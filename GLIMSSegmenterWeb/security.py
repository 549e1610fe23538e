"""Who may use the page and what may be uploaded.

* The server binds 127.0.0.1 by default. Bound to any other address it requires an access token: a random one is
  made at start and printed in the URL (as notebook servers do). The first request carries it as ``?token=``; the
  server answers with a cookie, and every later request (the page's files and its websocket) must carry one of
  the two. Anything else gets ``403``.
* Uploads: image files only (volumes, or the ``.dcm`` slices of one DICOM series; by name and by a readable image
  header), at most a total size per load.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from pathlib import Path, PurePosixPath, PureWindowsPath

from glims.errors import InputError

__all__ = [
    "LOCAL_HOSTS",
    "IMAGE_SUFFIXES",
    "DICOM_SUFFIX",
    "isLocalHost",
    "newAccessToken",
    "tokenMiddleware",
    "safeUploadName",
    "checkImageFile",
    "DEFAULT_UPLOAD_LIMIT_MB",
]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Addresses only this computer can reach: no token needed."""

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".raw", ".raw.gz")
"""File types accepted as upload (volumes; ``.nhdr``/``.mhd`` come with their data file)."""

DICOM_SUFFIX = ".dcm"
"""DICOM files accepted as upload: the slices of one image series, read as one volume."""

DEFAULT_UPLOAD_LIMIT_MB = 2048
"""Total size of one upload, in MB (a four-sequence brain MRI is about 30-120 MB)."""

TOKEN_COOKIE = "glims_web_token"


def isLocalHost(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (no other computer can connect)."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def newAccessToken() -> str:
    """A random URL-safe token (192 bits)."""
    return secrets.token_urlsafe(24)


def tokenMiddleware(token: str):
    """An aiohttp middleware that lets through only requests that carry ``token`` (query or cookie)."""
    from aiohttp import web

    def matches(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), token.encode())

    @web.middleware
    async def requireToken(request, handler):
        fromQuery = request.query.get("token")
        if not (matches(fromQuery) or matches(request.cookies.get(TOKEN_COOKIE))):
            return web.Response(
                status=403,
                text="GLIMS Segmenter: open the URL with the access token printed "
                "when the server started (…/index.html?token=…)\n",
            )
        response = await handler(request)
        if matches(fromQuery) and isinstance(response, web.StreamResponse) and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return requireToken


def safeUploadName(name: str) -> str:
    """The file name of an upload, without any folder part; raises InputError for names that are not images.

    Browsers send folder uploads as ``folder/sub/file``: only the last part is kept, so no upload name can reach
    outside the upload folder.
    """
    base = PureWindowsPath(PurePosixPath(str(name)).name).name.strip()
    if not base or base in (".", "..") or base.startswith("."):
        raise InputError(f"invalid upload file name {name!r}")
    if not base.lower().endswith((*IMAGE_SUFFIXES, DICOM_SUFFIX)):
        raise InputError(f"'{base}' is not an image file this page reads ({', '.join(IMAGE_SUFFIXES)}, {DICOM_SUFFIX})")
    return base


def checkImageFile(path: Path) -> None:
    """Raise InputError unless ``path`` has a readable image header (NIfTI, NRRD, MetaImage, DICOM)."""
    if path.name.lower().endswith((".raw", ".raw.gz")):
        return  # the data file of a .nhdr/.mhd header
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"'{path.name}' is not a readable image file") from None
