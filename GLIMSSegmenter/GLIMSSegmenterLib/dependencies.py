"""Python packages the engine needs inside 3D Slicer: what is missing, and installing it on first use.

Nothing is checked or installed at import time. The widget asks :func:`missingRequirements` when the user first
segments; if something is missing it shows :func:`installPrompt` and, once the user agrees, calls
:func:`installRequirements`. torch comes from the PyTorch extension (``PyTorchUtils`` picks the build for the
computer's GPU); numpy and SimpleITK belong to Slicer and are never reinstalled; the rest is pip-installed with
minimum versions, never pins.
"""

from __future__ import annotations

import enum
import importlib.metadata
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Source",
    "Requirement",
    "RequirementStatus",
    "REQUIREMENTS",
    "DICOM_REQUIREMENTS",
    "installedVersion",
    "versionAtLeast",
    "missingRequirements",
    "installPrompt",
    "installRequirements",
    "DependencyError",
]

logger = logging.getLogger(__name__)


class Source(enum.Enum):
    PIP = "pip"
    PYTORCH_EXTENSION = "the PyTorch extension"
    SLICER = "3D Slicer"


@dataclass(frozen=True)
class Requirement:
    name: str
    """Distribution name (as pip knows it)."""
    minimumVersion: str
    source: Source = Source.PIP

    @property
    def specifier(self) -> str:
        return f"{self.name}>={self.minimumVersion}"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "2.4", Source.PYTORCH_EXTENSION),
    Requirement("numpy", "1.24", Source.SLICER),
    Requirement("SimpleITK", "2.3", Source.SLICER),
    Requirement("safetensors", "0.4"),
    Requirement("jsonschema", "4.0"),
    Requirement("filelock", "3.12"),  # inter-process locks on the user catalog and the case store
    Requirement("nibabel", "5.0"),  # sees what ITK hides in NIfTI files (truncation, NaN, sheared axes)
    Requirement("psutil", "5.9"),  # cancelling kills the engine's process tree
)
"""The engine's dependencies (pyproject.toml, same minimums) plus what this module itself needs."""

DICOM_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("pydicom", "3.0.1"),
    Requirement("highdicom", "0.28"),
)
"""The engine's optional ``dicom`` extra (pyproject.toml): asked for and installed on the first DICOM export."""


class DependencyError(RuntimeError):
    """A requirement cannot be installed from here; the message says what the user should do."""


def installedVersion(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _releaseNumbers(version: str) -> tuple[int, ...]:
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def versionAtLeast(version: str, minimum: str) -> bool:
    """PEP 440 ``version >= minimum`` (via ``packaging`` where available, else on the release numbers).

    Local labels such as ``2.4.0+cu121`` satisfy their release; pre-releases do not.
    """
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        Version = None
    if Version is not None:
        try:
            return Version(version) >= Version(minimum)
        except InvalidVersion:
            pass
    have, need = _releaseNumbers(version), _releaseNumbers(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


@dataclass(frozen=True)
class RequirementStatus:
    requirement: Requirement
    installed: str | None

    @property
    def satisfied(self) -> bool:
        return self.installed is not None and versionAtLeast(self.installed, self.requirement.minimumVersion)

    def describe(self) -> str:
        """E.g. ``safetensors >= 0.4 (not installed; from pip)``."""
        state = "not installed" if self.installed is None else f"{self.installed} installed"
        requirement = self.requirement
        return f"{requirement.name} >= {requirement.minimumVersion} ({state}; from {requirement.source.value})"


def missingRequirements(
    requirements: Sequence[Requirement] = REQUIREMENTS, versionOf: Callable[[str], str | None] = installedVersion
) -> list[RequirementStatus]:
    """The requirements that are not satisfied (empty when everything is ready)."""
    statuses = [RequirementStatus(r, versionOf(r.name)) for r in requirements]
    return [s for s in statuses if not s.satisfied]


def installPrompt(missing: Sequence[RequirementStatus]) -> str:
    """The question shown to the user before anything is installed."""
    lines = ["GLIMS Segmenter needs these Python packages:", ""]
    lines += [f"  - {status.describe()}" for status in missing]
    lines += [
        "",
        "Install them now? This downloads several hundred MB and may take a few minutes;"
        " Slicer may ask to restart afterwards.",
    ]
    return "\n".join(lines)


def installRequirements(
    missing: Sequence[RequirementStatus],
    pipInstall: Callable[[list[str]], None] | None = None,
    installTorch: Callable[[str], None] | None = None,
) -> None:
    """Install the missing requirements (inside Slicer; call only after the user agreed).

    Args:
        missing: from :func:`missingRequirements`.
        pipInstall: installs a list of requirement specifiers; default ``slicer.util.pip_install``.
        installTorch: installs torch given a version requirement such as ``">=2.4"``; default: the PyTorch
            extension's ``PyTorchUtilsLogic.installTorch``.

    Raises:
        DependencyError: a Slicer-owned package is too old, or the PyTorch extension is not installed.
    """
    slicerOwned = [s for s in missing if s.requirement.source is Source.SLICER]
    if slicerOwned:
        raise DependencyError(
            "this Slicer ships " + ", ".join(s.describe() for s in slicerOwned) + ": please use a newer 3D Slicer"
        )
    torch = [s for s in missing if s.requirement.source is Source.PYTORCH_EXTENSION]
    if torch:
        (installTorch or _installTorchWithPyTorchUtils)(f">={torch[0].requirement.minimumVersion}")
    specifiers = [s.requirement.specifier for s in missing if s.requirement.source is Source.PIP]
    if specifiers:
        logger.info("pip install %s", " ".join(specifiers))
        if pipInstall is None:
            import slicer

            pipInstall = slicer.util.pip_install
        pipInstall(specifiers)


def _installTorchWithPyTorchUtils(versionRequirement: str) -> None:
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError(
            "torch is installed by the PyTorch extension: install 'PyTorch' from the Extensions "
            "Manager, restart Slicer, and segment again"
        ) from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=versionRequirement
    )
    if torch is None:
        raise DependencyError("the PyTorch extension could not install torch; see its module for details")
