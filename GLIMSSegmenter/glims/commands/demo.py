"""``glims demo``: the embedded default job — no download and no files of the user needed.

Generates a synthetic BraTS-like case (known truth), segments it with the bundled default model, writes the
Slicer segmentation, the JSON report and a PNG montage, and prints Dice and timings. Where the project's shared
real data is present (``--real-data``, ``$GLIMS_SHARED_DATA`` or ``../shared/data``), it also segments the real
TCGA-FG-6692 case (TCIA TCGA-LGG, CC BY 3.0) and scores it against its silver (algorithm-fusion) labels.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "run the built-in demo: synthetic (and, if present, real) brain MRI segmented by the bundled model"
PROGRESS = True

REAL_CASE = ("brats/tcga_fg_6692", "TCGA-FG-6692", "_fusion_simple_silver.nii.gz", "brats2017")
REAL_INPUTS = ("_fla_sri24_bet.nii.gz", "_t1c_sri24_bet.nii.gz", "_t1_sri24_bet.nii.gz", "_t2_sri24_bet.nii.gz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("-m", "--model", help="model (default: the catalog's default BraTS model)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the synthetic case")
    parser.add_argument(
        "--size",
        type=int,
        nargs=3,
        default=(128, 128, 128),
        metavar=("Z", "Y", "X"),
        help="synthetic case size in voxels (1 mm)",
    )
    parser.add_argument(
        "--real-data", help="folder of the shared real data (default: $GLIMS_SHARED_DATA, ../shared/data)"
    )
    parser.add_argument("--no-real", action="store_true", help="skip the real case")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--home", help="glims user folder")


def _real_data_root(args: argparse.Namespace) -> Path | None:
    if args.no_real:
        return None
    for candidate in (args.real_data, os.environ.get("GLIMS_SHARED_DATA"), "../shared/data"):
        if candidate and (Path(candidate) / REAL_CASE[0]).is_dir():
            return Path(candidate)
    return None


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    import SimpleITK as sitk

    from ..catalog import load_catalog
    from ..imageio import read_image, read_label_image
    from ..inference import InferenceOptions
    from ..metrics import score_regions
    from ..montage import render_montage
    from ..pipeline import segment_files
    from ..synth import MODALITIES, generate_case, write_case

    catalog = load_catalog(args.home)
    spec = catalog.get(args.model) if args.model else catalog.default("brats")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = InferenceOptions.from_spec(spec.inference, device=args.device)
    rows = []

    case_id = f"GLIMS-SYN-DEMO-{args.seed}"
    ui.log(f"generating synthetic case {case_id} ({'x'.join(map(str, args.size))} voxels)")
    files = write_case(generate_case(args.seed, shape=tuple(args.size)), out / "synthetic", case_id)
    cases = [(case_id, [files[m] for m in MODALITIES], files["seg"], "brats2023", "synthetic truth")]
    root = _real_data_root(args)
    if root is not None:
        folder, name = root / REAL_CASE[0], REAL_CASE[1]
        cases.append(
            (
                name,
                [folder / f"{name}{suffix}" for suffix in REAL_INPUTS],
                folder / f"{name}{REAL_CASE[2]}",
                REAL_CASE[3],
                "silver labels (fusion of 5 algorithms)",
            )
        )
    else:
        ui.log("real demo case not found (pass --real-data DIR); segmenting the synthetic case only")

    for name, inputs, truth, convention, truth_kind in cases:
        target = out / name
        ui.log(f"segmenting {name} with {spec.ref}")
        result = segment_files(
            spec,
            inputs,
            target.with_suffix(".seg.nrrd"),
            labelmap=target.with_suffix(".nii.gz"),
            report=target.with_suffix(".json"),
            options=options,
            progress=ui.progress,
        )
        reference = read_label_image(truth)
        scores = score_regions(
            sitk.GetArrayFromImage(result.labels),
            sitk.GetArrayFromImage(reference),
            spacing=reference.GetSpacing()[::-1],
            ref_convention=convention,
        )
        montage = render_montage(
            {k.upper(): read_image(p) for k, p in result.assignment.items()},
            result.labels,
            spec.labels,
            target.with_suffix(".png"),
            title=f"{name}: {spec.title} ({spec.ref})",
        )
        rows.append((name, truth_kind, scores, result.report["timings_s"]["total"], montage))

    ui.log("")
    ui.log(f"{'case':<24} {'Dice TC':>8} {'Dice WT':>8} {'Dice ET':>8} {'time s':>7}  reference")
    for name, kind, scores, seconds, _ in rows:
        ui.log(
            f"{name:<24} {scores['TC'].dice:8.3f} {scores['WT'].dice:8.3f} {scores['ET'].dice:8.3f} "
            f"{seconds:7.1f}  {kind}"
        )
    ui.log("")
    ui.log(f"outputs in {out}/: <case>.seg.nrrd (open in 3D Slicer), <case>.nii.gz, <case>.json, <case>.png")
    ui.result({name: str(png) for name, *_, png in rows})
    return 0
