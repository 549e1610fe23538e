"""``glims models``: list, show, add and remove catalog models."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..catalog import PRESET_NAMES

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "list the model catalog; add or remove user models; choose the default model"

DESCRIPTION = (
    "List the model catalog (* marks each task's default model); add or remove user models; choose the default. "
    "The default model of a task (what `glims segment` uses without --model) is the built-in one until you "
    "choose another with `glims models default ID` (or ID@VERSION to pin a version); `glims models default "
    "--reset` goes back to the built-in default. Ids of built-in models are reserved: a user model cannot take "
    "one. User models, their weights and the default choice live in <home>/models (home: --home, $GLIMS_HOME or "
    "the per-user data folder)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--home", help="glims user folder (default: $GLIMS_HOME or the per-user data folder)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    show = sub.add_parser("show", help="everything about one model")
    show.add_argument("model")
    add = sub.add_parser("add", help="verify a weights file (authors' .pt or ours) and register it as a user model")
    add.add_argument("file")
    add.add_argument(
        "--id", required=True, help="model id: up to 64 letters, digits, . _ - (not the id of a built-in model)"
    )
    add.add_argument("--preset", required=True, choices=PRESET_NAMES)
    add.add_argument("--title")
    add.add_argument("--description", default="")
    add.add_argument("--license", dest="license_text", help="licence of the weights")
    rm = sub.add_parser("rm", help="remove a user model (ID: all versions; ID@VERSION: one)")
    rm.add_argument("model")
    default = sub.add_parser(
        "default",
        help="choose the default model of its task (--reset: back to the built-in one)",
        description="Make MODEL the default of its task (ID: its newest version at each use; "
        "ID@VERSION: that version), or with --reset go back to the built-in "
        "default (of --preset's task, or of every task).",
    )
    default.add_argument("model", nargs="?", help="model id or id@version")
    default.add_argument("--reset", action="store_true", help="use the built-in default model again")
    default.add_argument("--preset", choices=PRESET_NAMES, help="with --reset: only this task")


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..catalog import load_catalog
    from ..registry import register_model, remove_model

    if args.action == "default":
        return _choose_default(args, ui)

    if args.action == "add":
        extra = {"license_text": args.license_text} if args.license_text else {}
        spec = register_model(
            args.file, args.id, args.preset, title=args.title, description=args.description, home=args.home, **extra
        )
        ui.log(f"registered {spec.ref} ({spec.preset}, sha256 {spec.weights[0].sha256[:12]}…)")
        return 0
    if args.action == "rm":
        for ref in remove_model(args.model, args.home):
            ui.log(f"removed {ref}")
        return 0
    catalog = load_catalog(args.home)
    if args.action == "show":
        print(json.dumps(catalog.get(args.model).to_dict(), indent=2))
        return 0
    if args.json:
        print(json.dumps({"models": [m.to_dict() for m in catalog.models]}, indent=2))
        return 0
    if not catalog.models:
        print("no models; add one with `glims models add FILE --id ID --preset brats`")
        return 0
    print(f"{'model':<28} {'task':<6} {'inputs':<24} {'source':<8} title")
    for m in catalog.models:
        star = "*" if m.default else " "
        inputs = ",".join(i.key for i in m.inputs)
        print(f"{star}{m.ref:<27} {m.preset:<6} {inputs:<24} {'builtin' if m.builtin else 'user':<8} {m.title}")
    return 0


def _choose_default(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..catalog import load_catalog
    from ..errors import ConfigError
    from ..registry import reset_default_model, set_default_model

    if args.reset == (args.model is not None):
        raise ConfigError("give either a model (glims models default ID) or --reset")
    if args.preset and not args.reset:
        raise ConfigError("--preset goes with --reset (a model's task is its own)")
    if args.reset:
        reset_default_model(args.preset, args.home)
        catalog = load_catalog(args.home)
        for preset in sorted({m.preset for m in catalog.models if args.preset in (None, m.preset)}):
            ui.log(f"default {preset} model: {catalog.default(preset).ref} (built-in)")
        return 0
    spec = set_default_model(args.model, args.home)
    ui.log(f"default {spec.preset} model: {spec.ref}")
    return 0
