"""Sample cases in Slicer's *Sample Data* module: a synthetic brain-tumour case, and a real one where it is.

Nothing is downloaded. The synthetic case (four MRI sequences of a BraTS-like brain with a tumour) is made on this
computer by the engine's ``glims synth`` the first time it is asked for, and kept in the user folder
(``$GLIMS_HOME/sample_data``). The real case (TCGA-FG-6692 of TCIA TCGA-LGG, CC BY 3.0) is offered only when the
project's shared data folder is there (``$GLIMS_SHARED_DATA``, or ``shared/data`` beside the checkout).

Registration needs Slicer's SampleData module; without it (e.g. the ``slicer-core`` wheel) nothing is registered
and the cases can still be loaded with :func:`loadSampleCase`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .engine import MODULE_DIR, engineCommand, engineEnvironment
from .process import EngineProcess, ProcessState

__all__ = [
    "SAMPLE_CATEGORY",
    "SampleCase",
    "SampleDataError",
    "sampleFolder",
    "syntheticCase",
    "sharedDataRoot",
    "realCase",
    "sampleCases",
    "prepareSampleCase",
    "loadSampleCase",
    "registerSampleData",
]

logger = logging.getLogger(__name__)

SAMPLE_CATEGORY = "GLIMS Segmenter"
"""The section of the Sample Data module that lists the cases."""

SYNTHETIC_SEED = 2024
"""Seed of the synthetic case (the same brain as ``glims demo``'s default seed)."""

SYNTHETIC_PREFIX = "GLIMS-SAMPLE"
INPUT_SUFFIXES = ("flair", "t1ce", "t1", "t2")
"""``glims synth`` file suffixes, in the brain-tumour models' input order."""

THUMBNAIL = MODULE_DIR / "Resources" / "Icons" / "GLIMSSegmenter.png"


class SampleDataError(RuntimeError):
    """A sample case could not be made or loaded; the message says why in one line."""


@dataclass(frozen=True)
class SampleCase:
    """A case the Sample Data module offers: its files in the brain-tumour models' input order."""

    name: str
    """Sample Data's name for it, also its button text (unique among all modules' samples)."""
    files: tuple[Path, ...]
    generate: Mapping[str, object] | None = None
    """``glims synth`` settings (``seed``, ``shape``, ``spacing``) when the files are made on demand, else None."""

    @property
    def nodeNames(self) -> tuple[str, ...]:
        """Volume names in the scene: the file names without extension (the models match inputs by them)."""
        return tuple(path.name.split(".")[0] for path in self.files)


def sampleFolder(glimsHome: str | os.PathLike | None = None) -> Path:
    """Where generated sample cases are kept (not created here)."""
    from glims.paths import user_home

    return user_home(glimsHome) / "sample_data"


def syntheticCase(
    glimsHome: str | os.PathLike | None = None,
    seed: int = SYNTHETIC_SEED,
    shape: tuple[int, int, int] = (128, 128, 128),
    spacing: float = 1.0,
) -> SampleCase:
    """The synthetic case (files made by :func:`prepareSampleCase` when missing)."""
    caseId = f"{SYNTHETIC_PREFIX}-{seed}-0000"  # glims synth names case i of a dataset PREFIX-SEED-i
    folder = sampleFolder(glimsHome) / caseId
    return SampleCase(
        name="GLIMS synthetic brain tumour",
        files=tuple(folder / f"{caseId}_{suffix}.nii.gz" for suffix in INPUT_SUFFIXES),
        generate={"seed": seed, "shape": tuple(shape), "spacing": float(spacing)},
    )


def sharedDataRoot(environ: Mapping[str, str] | None = None) -> Path | None:
    """The project's shared real data: ``$GLIMS_SHARED_DATA``, else ``shared/data`` beside the checkout."""
    from glims.commands.demo import REAL_CASE

    environ = os.environ if environ is None else environ
    for candidate in (environ.get("GLIMS_SHARED_DATA"), MODULE_DIR.parent.parent / "shared" / "data"):
        if candidate and (Path(candidate) / REAL_CASE[0]).is_dir():
            return Path(candidate)
    return None


def realCase(dataRoot: str | os.PathLike | None = None) -> SampleCase | None:
    """The real TCGA-FG-6692 case of the shared data (``dataRoot``, default :func:`sharedDataRoot`), or None."""
    from glims.commands.demo import REAL_CASE, REAL_INPUTS

    root = Path(dataRoot) if dataRoot is not None else sharedDataRoot()
    if root is None:
        return None
    folder, name = root / REAL_CASE[0], REAL_CASE[1]
    files = tuple(folder / f"{name}{suffix}" for suffix in REAL_INPUTS)
    if not all(path.is_file() for path in files):
        return None
    return SampleCase(name=f"{name} brain tumour (TCIA)", files=files)


def sampleCases(
    glimsHome: str | os.PathLike | None = None, dataRoot: str | os.PathLike | None = None
) -> list[SampleCase]:
    """The synthetic case, and the real one when the shared data is there."""
    real = realCase(dataRoot)
    return [syntheticCase(glimsHome)] + ([real] if real is not None else [])


def prepareSampleCase(case: SampleCase, python: str | None = None, env: Mapping[str, str] | None = None) -> SampleCase:
    """Make a generated case's files if they are not there yet (``glims synth`` in the engine's Python; seconds).

    The case appears whole or not at all: it is written to a temporary folder beside its place, then moved.

    Raises:
        SampleDataError: the engine failed (e.g. its Python packages are not installed yet), or a file is missing.
    """
    missing = [path for path in case.files if not path.is_file()]
    if not missing:
        return case
    if case.generate is None:
        raise SampleDataError(f"the sample case {case.name} is missing {missing[0]}")
    target = case.files[0].parent
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synth-", dir=target.parent))
    try:
        settings = case.generate
        arguments = [
            "synth",
            "--out",
            str(staging),
            "--n",
            "1",
            "--seed",
            str(settings["seed"]),
            "--shape",
            *[str(s) for s in settings["shape"]],
            "--spacing",
            str(settings["spacing"]),
            "--prefix",
            SYNTHETIC_PREFIX,
            "--progress",
            "json",
        ]
        process = EngineProcess(engineCommand(arguments, python), env=engineEnvironment(env))
        process.start()
        outcome = process.wait()
        if outcome.state is not ProcessState.SUCCEEDED:
            raise SampleDataError(f"could not make the synthetic sample case: {outcome.errorMessage}")
        made = staging / target.name
        if not all((made / path.name).is_file() for path in case.files):
            raise SampleDataError(f"glims synth did not write the expected files into {made}")
        if target.exists():  # an incomplete earlier case of ours: replaced
            shutil.rmtree(target)
        os.replace(made, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return case


def loadSampleCase(case: SampleCase) -> list:
    """Load the case's volumes into the scene (named after their files, so the models' inputs match them).

    Raises:
        SampleDataError: a file is missing or could not be read (nothing of the case stays in the scene then).
    """
    import slicer

    volumesLogic = slicer.modules.volumes.logic()
    nodes = []
    try:
        for path, nodeName in zip(case.files, case.nodeNames, strict=False):
            node = volumesLogic.AddArchetypeVolume(str(path), nodeName) if path.is_file() else None
            if node is None:
                raise SampleDataError(f"could not load {path} of the sample case {case.name}")
            nodes.append(node)
    except SampleDataError:
        for node in nodes:
            slicer.mrmlScene.RemoveNode(node)
        raise
    return nodes


def registerSampleData(cases: list[SampleCase], load: Callable[[SampleCase], object]) -> bool:
    """Add ``cases`` to the Sample Data module, in the ``GLIMS Segmenter`` section.

    Args:
        cases: what to offer (see :func:`sampleCases`).
        load: called with the case when its button is clicked (e.g. prepare, then load, showing errors).

    Returns:
        False when there is no Sample Data module (e.g. the slicer-core wheel); nothing is registered then.
    """
    try:
        import SampleData
    except ImportError:
        logger.info("no Sample Data module: the GLIMS sample cases are not registered")
        return False
    for case in cases:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=SAMPLE_CATEGORY,
            sampleName=case.name,
            uris=[path.as_uri() for path in case.files],
            fileNames=[path.name for path in case.files],
            nodeNames=list(case.nodeNames),
            loadFileTypes=["VolumeFile"] * len(case.files),
            thumbnailFileName=str(THUMBNAIL),
            customDownloader=lambda source, case=case: load(case),
        )
    return True
