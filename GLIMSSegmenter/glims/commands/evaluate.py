"""``glims evaluate``: Dice and HD95 of TC, WT and ET per case, as a CSV and a summary table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cli import UserInterface

from ..runoptions import add_run_arguments, run_option

HELP = "score segmentations against references (Dice, HD95 per BraTS region); from files or by running a model"
PROGRESS = True

_CONVENTION_HELP = "brats2023 (ET=3; glims), brats2017 (2017-2021, ET=4) or brats2013 (2013-2015, 3=non-enhancing)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to score (either --pred/--ref or -m/--cases)")
    source.add_argument("--pred", help="folder of predicted label maps (<ID>.nii.gz, <ID>_seg.nii.gz, ...)")
    source.add_argument("--ref", help="folder of reference label maps (BraTS layout <ID>/<ID>_seg.nii.gz, ...)")
    source.add_argument("-m", "--model", help="catalog model to segment the cases with (ID or ID@VERSION)")
    source.add_argument("--cases", help="folder of cases, each with its images and a reference label")
    parser.add_argument("-o", "--out", default="evaluation.csv", help="CSV to write (default: evaluation.csv)")
    parser.add_argument("--labels", default="brats2023", help=f"label convention of both sides: {_CONVENTION_HELP}")
    parser.add_argument("--pred-labels", help="label convention of the predictions (default: --labels)")
    parser.add_argument("--ref-labels", help="label convention of the references (default: --labels)")
    parser.add_argument("--pred-pattern", help="file pattern of predictions with {id}, e.g. '{id}_pred.nii.gz'")
    parser.add_argument("--ref-pattern", help="file pattern of references with {id}, e.g. '*/{id}_seg.nii.gz'")
    parser.add_argument(
        "--missing",
        choices=("error", "empty", "skip"),
        default="error",
        help="a reference without prediction: stop (default), score it as empty (BraTS), or skip it",
    )
    parser.add_argument(
        "--hd95-penalty",
        type=float,
        default=None,
        metavar="MM",
        help="HD95 when a region is empty on one side only (default 373.13, as BraTS)",
    )
    parser.add_argument(
        "--save-pred",
        help="with -m: folder for the predicted label maps (default: next to the CSV, <CSV name>_predictions)",
    )
    add_run_arguments(
        parser,
        tuple(
            run_option(name)
            for name in (
                "device",
                "overlap",
                "placement",
                "threads",
                "testTimeFlips",
                "noPostprocess",
                "wholeImage",
                "thresholds",
            )
        ),
        help_prefix="with -m: ",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also split each region's errors into boundary, far and detached false positives and "
        "boundary, far and missed false negatives; with -m, add the Dice ceiling of the model's "
        "processing grid (docs/EVALUATION.md)",
    )
    parser.add_argument(
        "--boundary-mm",
        type=float,
        default=None,
        metavar="MM",
        help="with --breakdown: errors within this distance of the other mask are boundary errors (default 2)",
    )
    parser.add_argument("--home", help="with -m: glims user folder (default: $GLIMS_HOME or the per-user folder)")


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..cpu_threads import apply_threads
    from ..error_breakdown import DEFAULT_BOUNDARY_MM
    from ..errors import ConfigError
    from ..evaluate import (
        Breakdown,
        evaluate_folders,
        evaluate_model,
        format_breakdown,
        format_summary,
        summarize,
        summarize_breakdown,
        write_csv,
    )
    from ..metrics import BRATS_HD95_PENALTY
    from ..progress import CancelToken, cancel_on_signals
    from .segment import parse_thresholds

    by_files = args.pred is not None or args.ref is not None
    by_model = args.model is not None or args.cases is not None
    if by_files == by_model:
        raise ConfigError("give either --pred DIR --ref DIR, or -m MODEL --cases DIR")
    if by_files and (args.pred is None or args.ref is None):
        raise ConfigError("--pred and --ref go together")
    if by_model and (args.model is None or args.cases is None):
        raise ConfigError("-m MODEL and --cases DIR go together")
    if by_files and (
        args.device
        or args.overlap is not None
        or args.placement
        or args.threads is not None
        or args.tta
        or args.threshold
        or args.no_crop
        or args.no_postprocess
    ):
        raise ConfigError(
            "--device, --overlap, --placement, --threads, --tta, --threshold, --no-crop and --no-postprocess "
            "choose how -m segments; --pred/--ref segment nothing"
        )
    if args.boundary_mm is not None and not args.breakdown:
        raise ConfigError("--boundary-mm goes with --breakdown")
    boundary_mm = DEFAULT_BOUNDARY_MM if args.boundary_mm is None else args.boundary_mm
    if not boundary_mm >= 0:
        raise ConfigError(f"--boundary-mm must not be negative, not {boundary_mm}")
    pred_labels = args.pred_labels or args.labels
    ref_labels = args.ref_labels or args.labels
    penalty = BRATS_HD95_PENALTY if args.hd95_penalty is None else args.hd95_penalty
    if penalty < 0:
        raise ConfigError(f"--hd95-penalty must not be negative, not {penalty}")
    out = Path(args.out)

    with cancel_on_signals(CancelToken()) as token:
        if by_files:
            results = evaluate_folders(
                args.pred,
                args.ref,
                pred_convention=pred_labels,
                ref_convention=ref_labels,
                pred_pattern=args.pred_pattern,
                ref_pattern=args.ref_pattern,
                missing=args.missing,
                empty_penalty=penalty,
                breakdown=Breakdown(boundary_mm) if args.breakdown else None,
                progress=ui.progress,
                cancel=token,
            )
        else:
            pred_dir = Path(args.save_pred) if args.save_pred else out.with_name(out.stem + "_predictions")
            ui.log(apply_threads(args.threads).log_line())
            results = evaluate_model(
                args.model,
                args.cases,
                pred_dir,
                pred_convention=pred_labels,
                ref_convention=ref_labels,
                empty_penalty=penalty,
                home=args.home,
                inference={
                    "device": args.device,
                    "overlap": args.overlap,
                    "placement": args.placement,
                    "tta": args.tta or None,
                    "streams": args.threads,
                },
                thresholds=parse_thresholds(args.threshold),
                crop=False if args.no_crop else None,
                postprocess=False if args.no_postprocess else None,
                breakdown_mm=boundary_mm if args.breakdown else None,
                progress=ui.progress,
                cancel=token,
            )
    write_csv(results, out)
    summary = summarize(results)
    for line in format_summary(summary).splitlines():
        ui.log(line)
    if args.breakdown:
        breakdown = summarize_breakdown(results)
        for line in format_breakdown(breakdown, boundary_mm).splitlines():
            ui.log(line)
        summary = {**summary, "breakdown": breakdown}
    ui.log(f"per-case scores: {out}")
    ui.result({"csv": str(out)}, summary)
    return 0
