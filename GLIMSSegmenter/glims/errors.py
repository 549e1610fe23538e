"""Exceptions of the glims engine and the exit codes the CLI maps them to (the only place these codes live).

Library code raises these and never prints or exits; ``glims.cli`` prints one line per error and exits with the
class's ``exit_code``.
"""

from __future__ import annotations

__all__ = [
    "GlimsError",
    "ConfigError",
    "CatalogError",
    "CheckpointError",
    "InputError",
    "DeviceError",
    "OutputError",
    "Cancelled",
    "RequestError",
    "InternalError",
]


class GlimsError(Exception):
    """Root of every error the engine reports to a user. ``str(err)`` is a complete one-line explanation."""

    exit_code = 1


class ConfigError(GlimsError, ValueError):
    """An option or configuration value is invalid."""

    exit_code = 2


class CatalogError(GlimsError):
    """The model catalog is malformed, or a model id is unknown."""

    exit_code = 2


class CheckpointError(GlimsError):
    """A weights file is unsafe, corrupt, fails its checksum, or does not fit the architecture."""

    exit_code = 4


class InputError(GlimsError):
    """An input image is missing, unreadable, or unsuitable (dimensions, values, geometry)."""

    exit_code = 3


class DeviceError(GlimsError):
    """The requested compute device is unavailable or ran out of memory."""

    exit_code = 5


class OutputError(GlimsError):
    """An output cannot be written."""

    exit_code = 6


class Cancelled(GlimsError):
    """The job was cancelled (signal or cancel token); nothing was written."""

    exit_code = 130


class RequestError(ConfigError):
    """A request to ``glims worker`` is malformed, names a command the worker does not run, or arrives while
    another job runs."""


class InternalError(GlimsError):
    """Not a problem with the input or the options but a fault in glims itself (an unexpected exception); the
    command line reports it in one line, with the traceback under ``--debug``."""

    exit_code = 70

    @classmethod
    def of(cls, err: BaseException, hint: str = "") -> InternalError:
        """The one-line report of an unexpected exception ``err`` (``hint``: where its traceback can be seen)."""
        detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        return cls(f"internal error: {detail}{hint}")
