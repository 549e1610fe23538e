"""``glims cases``: the training set of corrected cases used by ``glims finetune``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..catalog import DEFAULT_PRESET, PRESET_NAMES

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "manage the training set of corrected cases (add, list, rm)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="glims user folder (default: $GLIMS_HOME or the per-user data folder)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="validate and store a case: its inputs and its corrected label map")
    add.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESET_NAMES)
    add.add_argument(
        "-i",
        "--input",
        action="append",
        required=True,
        metavar="KEY=IMG",
        help="one per model input, e.g. -i flair=case_flair.nii.gz (first = reference grid)",
    )
    add.add_argument("-l", "--label", required=True, help="corrected label map on the reference grid")
    add.add_argument("--id", dest="case_id", help="case id (default: from the reference file name and time)")
    add.add_argument("--model", help="model that produced the first draft (kept as provenance)")
    add.add_argument(
        "--relabel",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="map label values first, e.g. --relabel 4=3 for BraTS 2017-2021 files",
    )
    sub.add_parser("list", help="list stored cases")
    rm = sub.add_parser("rm", help="remove a case")
    rm.add_argument("case_id")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from ..errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{what} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..casestore import add_case, remove_case, scan_cases
    from ..errors import ConfigError, InputError

    if args.action == "add":
        try:
            relabel = {int(k): int(v) for k, v in _pairs(args.relabel, "--relabel").items()}
        except ValueError:
            raise ConfigError("--relabel values must be integers, e.g. 4=3") from None
        provenance = {"draft_model": args.model} if args.model else {}
        case = add_case(
            args.preset,
            _pairs(args.input, "--input"),
            args.label,
            case_id=args.case_id,
            home=args.home,
            provenance=provenance,
            label_map=relabel,
        )
        ui.log(f"added {case.case_id} ({case.preset}) to {case.folder.parent}")
    elif args.action == "list":
        cases, broken = scan_cases(args.home)
        if not cases and not broken:
            ui.log("the training set is empty; add cases with `glims cases add`")
        for case in cases:
            counts = ", ".join(f"{k}:{v}" for k, v in case.provenance.get("label_voxels", {}).items())
            ui.log(f"{case.case_id:<40} {case.preset:<6} {case.provenance.get('added', '')}  labels {counts}")
        for item in broken:
            ui.log(f"{item.case_id:<40} BROKEN: {item.reason}")
        if broken:  # the readable cases are listed; the exit code says the store needs attention
            raise InputError(
                f"{len(broken)} broken case(s) in the training set: {', '.join(b.case_id for b in broken)} (see above)"
            )
    else:
        remove_case(args.case_id, args.home)
        ui.log(f"removed {args.case_id}")
    return 0
