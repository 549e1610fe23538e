"""Reading the JSON files glims keeps (user catalog, case records, run records): one line for any damage.

A file that is unreadable, not UTF-8 or not JSON raises the caller's ``GlimsError`` class with a message naming
the file and what is wrong with it, never a traceback. Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import GlimsError

__all__ = ["read_json"]


def read_json(path: str | os.PathLike, what: str, error: type[GlimsError]) -> Any:
    """The JSON document in ``path``.

    Args:
        what: the file's role for the message, e.g. ``"model catalog"``.
        error: the ``GlimsError`` subclass to raise.

    Raises:
        error: the file cannot be read, is not UTF-8 text or is not valid JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise error(
            f"{what} {path} is not UTF-8 text (byte {err.start}); restore it from a backup or remove it"
        ) from None
    except json.JSONDecodeError as err:
        raise error(f"{what} {path} is not valid JSON: {err}") from None
    except OSError as err:
        raise error(f"cannot read the {what} {path}: {err.strerror or err}") from None
