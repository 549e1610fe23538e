"""``glims segment``: one case, from image files to a Slicer segmentation, a label map and a report."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from ..catalog import DEFAULT_PRESET, PRESET_NAMES
from ..runoptions import add_run_arguments

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "segment one case with a catalog model"
PROGRESS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--model", default=None, help="model id or id@version (default: the default model of --preset)"
    )
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESET_NAMES, help="task, when no --model is given")
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        required=True,
        metavar="IMG",
        help="input image file or DICOM folder; repeat once per model input. Roles are taken from "
        "the file names (else the order given); name a role explicitly as ROLE=IMG, e.g. "
        "-i t1ce=scan2.nii.gz (roles: `glims models show MODEL`)",
    )
    parser.add_argument("-o", "--output", required=True, help="Slicer segmentation to write (.seg.nrrd)")
    parser.add_argument("--labelmap", help="also write a label map (.nii.gz, .nrrd)")
    parser.add_argument("--probabilities", help="also write per-channel probabilities (multi-component .nrrd/.nii.gz)")
    parser.add_argument(
        "--dicom-seg",
        metavar="OUT.dcm",
        help="also write a DICOM Segmentation referring to the DICOM series of the reference input",
    )
    parser.add_argument(
        "--dicom-rtstruct",
        metavar="OUT.dcm",
        help="also write a DICOM RT Structure Set (contours) referring to that series",
    )
    parser.add_argument(
        "--dicom-reference",
        metavar="DIR",
        help="DICOM series the DICOM outputs refer to, when the inputs are not that series "
        "(default: the reference input's folder)",
    )
    parser.add_argument(
        "--report", help="JSON report (volumes, timings, model, device); default: OUTPUT's name + .json"
    )
    parser.add_argument("--no-report", action="store_true", help="do not write the JSON report")
    add_run_arguments(parser)
    parser.add_argument("--home", help="glims user folder (default: $GLIMS_HOME or the per-user data folder)")


def _report_path(args: argparse.Namespace) -> str | None:
    if args.no_report:
        return None
    if args.report:
        return args.report
    out = args.output
    for suffix in (".seg.nrrd", ".nrrd", ".nii.gz", ".nii"):
        if out.endswith(suffix):
            return out[: -len(suffix)] + ".json"
    return out + ".json"


def parse_thresholds(items: list[str]) -> dict[str, float]:
    from ..errors import ConfigError

    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--threshold expects CHANNEL=PROBABILITY, got {item!r}") from None
    return out


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..catalog import load_catalog
    from ..cpu_threads import apply_threads
    from ..inference import InferenceOptions, resolve_device, window_streams
    from ..pipeline import segment_files
    from ..progress import cancel_on_signals

    if args.dicom_reference and not (args.dicom_seg or args.dicom_rtstruct):
        from ..errors import ConfigError

        raise ConfigError("--dicom-reference names the series of a DICOM output: add --dicom-seg or --dicom-rtstruct")
    catalog = load_catalog(args.home)
    spec = catalog.get(args.model) if args.model else catalog.default(args.preset)
    options = InferenceOptions.from_spec(
        spec.inference,
        device=args.device or None,
        overlap=args.overlap,
        blend=args.blend,
        placement=args.placement,
        sw_batch_size=args.sw_batch_size or None,
        precision=args.precision,
        tta=args.tta,
    )
    # Small windows run as one stream per core, whatever the load: the load probe (0.1 s) is for the others.
    streams = window_streams(spec.roi_size, resolve_device(options.device), options)
    ui.log(apply_threads(args.threads, measure=streams == 1).log_line())
    options = dataclasses.replace(options, streams=args.threads)
    with cancel_on_signals(ui.cancel) as token:
        result = segment_files(
            spec,
            args.input,
            args.output,
            labelmap=args.labelmap,
            probabilities=args.probabilities,
            report=_report_path(args),
            options=options,
            postprocess=False if args.no_postprocess else None,
            thresholds=parse_thresholds(args.threshold),
            crop=False if args.no_crop else None,
            home=args.home,
            dicom_seg=args.dicom_seg,
            dicom_rtstruct=args.dicom_rtstruct,
            dicom_reference=args.dicom_reference,
            progress=ui.progress,
            cancel=token,
        )
    for key, path in result.assignment.items():
        ui.log(f"input {key:<6} <- {path}")
    for seg in result.report["segments"]:
        ui.log(f"{seg['name']:<32} {seg['volume_ml']:>10.2f} mL")
    ui.log(
        f"{spec.ref} on {result.report['device']} in {result.report['timings_s']['total']:.1f} s; "
        f"wrote {', '.join(str(p) for p in result.outputs.values())}"
    )
    summary = {"segments": result.report["segments"], "timings_s": result.report["timings_s"]}
    ui.result({k: str(v) for k, v in result.outputs.items()}, summary)
    return 0
