"""Where a case comes from: uploaded files, a folder of the server (``--data``), or the sample cases.

A case is either volume files (one volume each) or one DICOM image series (``.dcm`` files, one volume).

Sample cases: the synthetic demo case (generated on first use, as ``glims demo`` does; known truth, no licence
needed) and, where the project's shared data is present, the real TCGA-FG-6692 case (TCIA TCGA-LGG, CC BY 3.0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from glims.errors import InputError

from .security import DICOM_SUFFIX, IMAGE_SUFFIXES

__all__ = [
    "CaseFiles",
    "SAMPLE_DEMO",
    "SAMPLE_TCGA",
    "sampleCases",
    "sampleGeneration",
    "generatedFiles",
    "prepareSample",
    "dataFolderCases",
    "imageFiles",
    "dicomFiles",
    "volumeName",
    "sharedDataRoot",
]

SAMPLE_DEMO, SAMPLE_TCGA = "synthetic-demo", "tcga-fg-6692"
_DEMO_SEED, _DEMO_PREFIX = 2024, "GLIMS-SYN-DEMO"
_DEMO_MODALITIES = ("flair", "t1ce", "t1", "t2")
_TCGA_FOLDER, _TCGA_NAME = Path("brats") / "tcga_fg_6692", "TCGA-FG-6692"
_TCGA_SUFFIXES = ("_fla_sri24_bet.nii.gz", "_t1c_sri24_bet.nii.gz", "_t1_sri24_bet.nii.gz", "_t2_sri24_bet.nii.gz")
_VOLUME_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s not in (".raw", ".raw.gz"))


@dataclass(frozen=True)
class CaseFiles:
    """A case to load: an id for the page, a title and its image files (the slices of one series when ``dicom``)."""

    caseId: str
    title: str
    files: tuple[Path, ...] = ()
    dicom: bool = False


def sharedDataRoot() -> Path | None:
    """The project's shared real data: ``$GLIMS_SHARED_DATA``, else ``shared/data`` beside the checkout."""
    from GLIMSSegmenterLib.engine import MODULE_DIR

    candidate = os.environ.get("GLIMS_SHARED_DATA") or MODULE_DIR.parent.parent / "shared" / "data"
    return Path(candidate) if Path(candidate).is_dir() else None


def sampleCases() -> list[CaseFiles]:
    """The sample cases offered here (files not yet known for the synthetic one: it is made on first use)."""
    cases = [CaseFiles(SAMPLE_DEMO, "Synthetic brain MRI (generated, with known truth)")]
    root = sharedDataRoot()
    if root is not None and (root / _TCGA_FOLDER).is_dir():
        files = tuple(root / _TCGA_FOLDER / f"{_TCGA_NAME}{s}" for s in _TCGA_SUFFIXES)
        if all(f.is_file() for f in files):
            cases.append(CaseFiles(SAMPLE_TCGA, "TCGA-FG-6692 brain MRI (TCIA TCGA-LGG, CC BY 3.0)", files))
    return cases


def sampleGeneration(caseId: str, folder: Path, demoSize: int) -> tuple[CaseFiles, list[str] | None]:
    """A sample case, and the engine command that must write its files into ``folder`` first (None: none needed).

    The synthetic case is made by ``glims synth`` in a child process, as every engine job is: torch stays out
    of the web server's memory and the page stays responsive meanwhile.

    Args:
        caseId: one of :func:`sampleCases`' ids.
        folder: where the synthetic case is written (the session folder).
        demoSize: edge of the synthetic cube in voxels (1 mm).

    Raises:
        InputError: unknown sample.
    """
    from GLIMSSegmenterLib.engine import engineCommand

    for case in sampleCases():
        if case.caseId != caseId:
            continue
        if case.files:
            return case, None
        command = engineCommand(
            [
                "synth",
                "--out",
                str(folder),
                "--n",
                "1",
                "--seed",
                str(_DEMO_SEED),
                "--shape",
                *[str(demoSize)] * 3,
                "--prefix",
                _DEMO_PREFIX,
                "--progress",
                "none",
            ]
        )
        return case, command
    raise InputError(f"no sample case {caseId!r}")


def generatedFiles(case: CaseFiles, folder: Path) -> CaseFiles:
    """The synthetic case's four volumes in ``folder``, in the BraTS input order (FLAIR, T1ce, T1, T2)."""
    found = []
    for modality in _DEMO_MODALITIES:
        matches = sorted(folder.glob(f"{_DEMO_PREFIX}-*/*_{modality}.nii.gz"))
        if not matches:
            raise InputError(f"the synthetic case has no {modality} volume in {folder}")
        found.append(matches[0])
    return CaseFiles(case.caseId, case.title, tuple(found))


def prepareSample(caseId: str, folder: Path, demoSize: int) -> CaseFiles:
    """:func:`sampleGeneration` and its command run to the end (blocking; scripts and tests)."""
    import subprocess

    from GLIMSSegmenterLib.engine import engineEnvironment

    case, command = sampleGeneration(caseId, folder, demoSize)
    if command is None:
        return case
    done = subprocess.run(command, env=engineEnvironment(), capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"the synthetic case could not be generated: {done.stderr.strip()[-300:]}")
    return generatedFiles(case, folder)


def imageFiles(folder: Path) -> list[Path]:
    """The volume files directly in ``folder`` (label maps named ``*seg*`` or ``*label*`` left out), sorted."""
    found = []
    for path in sorted(folder.iterdir()):
        lower = path.name.lower()
        if path.is_file() and lower.endswith(_VOLUME_SUFFIXES) and not any(w in lower for w in ("seg", "label")):
            found.append(path)
    return found


def dicomFiles(folder: Path) -> list[Path]:
    """The DICOM files (``*.dcm``) directly in ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(DICOM_SUFFIX))


def dataFolderCases(dataFolder: Path | None) -> list[CaseFiles]:
    """Cases in the server's data folder: the folder itself and each subfolder that holds volume files, and each
    folder down to two levels below it that holds a DICOM series (e.g. ``case/dicom/*.dcm``)."""
    if dataFolder is None or not dataFolder.is_dir():
        return []
    cases = []
    subfolders = sorted(p for p in dataFolder.iterdir() if p.is_dir())
    for folder in [dataFolder, *subfolders]:
        files = imageFiles(folder)
        if files:
            name = folder.name if folder != dataFolder else f"{folder.name} (top level)"
            cases.append(CaseFiles(f"data:{len(cases)}", name, tuple(files)))
    for folder in [dataFolder, *[p for s in subfolders for p in (s, *sorted(q for q in s.iterdir() if q.is_dir()))]]:
        files = dicomFiles(folder)
        if files:
            name = folder.relative_to(dataFolder).as_posix() if folder != dataFolder else folder.name
            cases.append(CaseFiles(f"data:{len(cases)}", f"{name} (DICOM series)", tuple(files), dicom=True))
    return cases


def volumeName(path: Path) -> str:
    """The node name of a volume file: its name without the image extension (what input matching reads)."""
    lower = path.name.lower()
    for suffix in _VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem
