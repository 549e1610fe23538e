"""``glims bench TARGET``: measure the engine on this machine and print a Markdown table (or JSON)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING

from ..bench import TARGETS

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "benchmark the engine on this machine (network: GLIMS vs SwinUNETR forward time, memory, MACs, accuracy)"
PROGRESS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for target in TARGETS.values():
        sub = targets.add_parser(target.name, help=target.help, description=target.help)
        target.add_arguments(sub)
        sub.add_argument("--json", action="store_true", help="print the report as JSON instead of Markdown")
        sub.add_argument("--output", default=None, help="also write the report to this file (Markdown or JSON)")


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..fileio import atomic_write
    from ..progress import CancelToken, cancel_on_signals

    target = TARGETS[args.target]
    with cancel_on_signals(CancelToken()) as cancel:
        report = target.run(target.spec_from_args(args), progress=ui.progress, cancel=cancel)
    if sys.argv and sys.argv[0].endswith(("glims", "__main__.py")):  # the command line, when we are the program
        report.context["command"] = "glims " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = json.dumps(report.to_json(), indent=2) + "\n" if args.json else report.to_markdown()
    outputs = {}
    if args.output:
        with atomic_write(args.output, "w") as fh:
            fh.write(text)
        outputs["report"] = str(args.output)
    if ui.json:
        ui.result(outputs, report.to_json())
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0
