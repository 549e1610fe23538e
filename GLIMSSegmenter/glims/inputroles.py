"""Which input image is which model input (role): explicit ``ROLE=FILE``, else by file name, else in given order.

A role named explicitly (``-i t1ce=scan2.nii.gz``) wins. The other inputs are matched by the model's name patterns;
two files whose names claim one role are refused rather than guessed. Inputs whose names match nothing fill the
remaining roles in the order given. The same file given twice (also as ``./a`` or through a symbolic link) is
refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from .catalog import ModelSpec, match_inputs
from .errors import InputError

__all__ = ["assign_inputs", "split_role"]

_ROLE = re.compile(r"([A-Za-z0-9_]+)=(.+)", re.DOTALL)


def _short_title(title: str) -> str:
    return title.split(" (")[0]


def split_role(spec: ModelSpec, item: str | os.PathLike) -> tuple[str | None, str]:
    """``ROLE=FILE`` -> (role, FILE) when ROLE is one of the model's input keys and no file has the whole name;
    anything else -> (None, item)."""
    text = os.fspath(item)
    match = _ROLE.fullmatch(text)
    keys = {i.key for i in spec.inputs}
    if match and match.group(1).lower() in keys and not os.path.lexists(text):
        return match.group(1).lower(), match.group(2)
    return None, text


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """The resolved path and, when it exists, the (device, inode) of what it leads to."""
    try:
        stat = os.stat(path)
        inode = (stat.st_dev, stat.st_ino)
    except OSError:
        inode = None
    return os.path.realpath(path), inode


def _refuse_duplicates(paths: Sequence[Path], shown: Sequence[str]) -> None:
    """``shown``: each path as the user gave it (``./a`` stays ``./a``)."""
    seen: dict[object, str] = {}
    for path, text in zip(paths, shown, strict=False):
        resolved, inode = _identity(path)
        for key in (resolved, inode):
            if key is not None and key in seen:
                first = seen[key]
                how = "" if first == text else " (the same file under two names)"
                raise InputError(
                    f"the same image is given twice: {first} and {text}{how}; each model input needs its own image"
                )
        seen[resolved] = text
        if inode is not None:
            seen[inode] = text


def _role_hint(spec: ModelSpec) -> str:
    return "name each input's role: " + " ".join(f"-i {i.key}=FILE" for i in spec.inputs)


def assign_inputs(spec: ModelSpec, items: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """Pair each model input with one file, in the model's input order (see the module docstring).

    Raises:
        InputError: missing or extra inputs, a role named twice, two files claiming one role by name, or the same
            file twice (the message names them).
    """
    given = [split_role(spec, item) for item in items]
    parsed = [(role, Path(text)) for role, text in given]
    paths = [path for _, path in parsed]
    titles = ", ".join(_short_title(i.title) for i in spec.inputs)
    if len(paths) < len(spec.inputs):
        try:
            matched = match_inputs(spec, [str(p) for p in paths])
        except InputError:
            matched = {}
        named = {role for role, _ in parsed if role}
        missing = [_short_title(i.title) for i in spec.inputs if i.key not in matched and i.key not in named]
        hint = f"; missing: {', '.join(missing)}" if len(matched) + len(named) == len(paths) else ""
        raise InputError(f"model {spec.id} needs {len(spec.inputs)} inputs ({titles}); got {len(paths)}{hint}")
    if len(paths) > len(spec.inputs):
        raise InputError(f"model {spec.id} takes {len(spec.inputs)} inputs ({titles}); got {len(paths)} (extra input)")
    _refuse_duplicates(paths, [text for _, text in given])

    chosen: dict[str, Path] = {}
    for role, path in parsed:
        if role is None:
            continue
        if role in chosen:
            raise InputError(f"input {role} is named twice: {chosen[role]} and {path}")
        chosen[role] = path
    unnamed = [path for role, path in parsed if role is None]
    try:
        matched = match_inputs(spec, [str(p) for p in unnamed], strict=True)
    except InputError as err:
        raise InputError(f"{err}; {_role_hint(spec)}") from None
    titles_by_key = {i.key: _short_title(i.title) for i in spec.inputs}
    for key, name in matched.items():
        if key in chosen:
            raise InputError(
                f"{Path(name).name} looks like {titles_by_key[key]} by its name, but {chosen[key]} is given as "
                f"{titles_by_key[key]}; {_role_hint(spec)}"
            )
    by_name = {str(p): p for p in unnamed}
    chosen.update({key: by_name[name] for key, name in matched.items()})
    rest = [p for p in unnamed if p not in chosen.values()]
    for item in spec.inputs:
        if item.key not in chosen:
            chosen[item.key] = rest.pop(0)
    return [(item.key, chosen[item.key]) for item in spec.inputs]
