"""The ``glims`` command line: one subcommand per module in ``glims.commands``.

Each command module defines ``HELP``, ``add_arguments(parser)`` and ``run(args, ui) -> int`` and imports heavy
packages (torch, SimpleITK) only inside ``run``, so ``glims --help`` stays instant. Errors derived from
``GlimsError`` become one line on stderr (and one ``error`` line in ``--progress json`` mode) and the exit code of
their class. Anything else is a fault in glims: it is reported the same way as an ``InternalError`` (exit code
70), with the traceback only under ``--debug``. Command-line usage errors exit with code 2 (and, when
``--progress json`` was asked for, an ``error`` line on stdout too).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from . import __version__
from .cpu_allocator import ALLOCATORS, retain_freed_memory
from .errors import Cancelled, ConfigError, GlimsError, InternalError
from .progress import CancelToken, HumanReporter, JsonLinesReporter

__all__ = ["main", "COMMANDS", "UsageError"]

# name -> module under glims.commands (the order is the order of `glims --help`)
COMMANDS = {
    "demo": "demo",
    "segment": "segment",
    "models": "models",
    "synth": "synth",
    "train": "train",
    "evaluate": "evaluate",
    "cases": "cases",
    "finetune": "finetune",
    "bench": "bench",
    "info": "info",
    "worker": "worker",
}


class UserInterface:
    """What a command uses to talk to its caller: a progress callback and log lines, human or JSON."""

    def __init__(self, mode: str, reporter: JsonLinesReporter | None = None) -> None:
        self.json = mode == "json"
        self.cancel = CancelToken()
        """Stops a command between units of work: SIGINT/SIGTERM set it, and so does the worker's cancel request."""
        self.reporter: JsonLinesReporter | HumanReporter | None
        if mode == "json":
            self.reporter = reporter or JsonLinesReporter(sys.stdout)
        elif mode == "bar":
            self.reporter = HumanReporter(sys.stderr)
        else:
            self.reporter = None

    @property
    def progress(self) -> JsonLinesReporter | HumanReporter | None:
        return self.reporter

    def log(self, message: str) -> None:
        """A line for the user: stderr for humans (stdout stays clean for results), a log object in JSON mode."""
        if isinstance(self.reporter, JsonLinesReporter):
            self.reporter.log(message)
        else:
            print(message, file=sys.stderr if self.reporter else sys.stdout, flush=True)

    def result(self, outputs: dict, summary: dict | None = None) -> None:
        if isinstance(self.reporter, JsonLinesReporter):
            self.reporter.result(outputs, summary)


class UsageError(Exception):
    """A command-line usage error, raised instead of argparse's immediate exit so that it is reported like others."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def _wants_json(argv: Sequence[str]) -> bool:
    """True when the command line asks for ``--progress json`` (read before it is parsed, for usage errors)."""
    items = list(argv)
    return any(
        item == "--progress=json" or (item == "--progress" and items[i + 1 : i + 2] == ["json"])
        for i, item in enumerate(items)
    )


def _available_commands() -> dict[str, ModuleType]:
    modules = {}
    for name, module in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f".commands.{module}", __package__)
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.commands.{module}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="glims",
        description="GLIMS volumetric segmentation: segment, train, fine-tune and evaluate GLIMS models.",
    )
    parser.add_argument("--version", action="version", version=f"glims {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="retain",
        help="retain (default): this process keeps freed memory for reuse (glibc), so large tensors are not "
        "page-faulted in again for every window, and its resident memory stays at its peak until it exits; "
        "default: the C library's own behaviour",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if getattr(module, "PROGRESS", False):
            cmd.add_argument(
                "--progress",
                choices=("bar", "json", "none"),
                default="bar",
                help="bar: human progress on stderr; json: one JSON object per stdout line (protocol v1)",
            )
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise). Set before torch is
    # imported, which reads it once. On a shared or busy machine spinning threads burn the CPU time the other
    # thread of the same op waits for: the GLIMS fast path's forward took 3x the CPU time and 2-3x the wall time.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        err.parser.print_usage(sys.stderr)
        if _wants_json(sys.argv[1:] if argv is None else argv):
            JsonLinesReporter(sys.stdout).error(ConfigError(str(err)), ConfigError.exit_code)
        print(f"{err.parser.prog}: error: {_one_line(str(err))}", file=sys.stderr, flush=True)
        return ConfigError.exit_code
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.allocator == "retain":
        # A command-line job is a process of its own that exits when done: keeping its peak heap costs nothing
        # after it, and saves re-faulting every large activation (about 8 % of a 96^3 forward on two cores).
        retain_freed_memory()
    ui = UserInterface(getattr(args, "progress", "none"))
    try:
        return int(args._module.run(args, ui) or 0)
    except GlimsError as err:
        return _report_error(err, err.exit_code, ui, args.debug)
    except KeyboardInterrupt:
        return _report_error(Cancelled("cancelled by the user"), Cancelled.exit_code, ui, args.debug)
    except Exception as err:  # noqa: BLE001 - the last resort: a fault in glims still ends in one line and a code
        internal = InternalError.of(err, "" if args.debug else " (run with --debug for the traceback)")
        if args.debug:
            traceback.print_exception(err, file=sys.stderr)
        return _report_error(internal, InternalError.exit_code, ui, False)


def _report_error(err: BaseException, code: int, ui: UserInterface, debug: bool) -> int:
    if debug:
        logging.getLogger("glims").exception("error")
    if isinstance(ui.reporter, JsonLinesReporter):
        ui.reporter.error(err, code)
    print(f"glims: error: {_one_line(str(err))}", file=sys.stderr, flush=True)
    return code


def _one_line(message: str) -> str:
    """A message on one line (an unexpected exception's text may span several)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip()) or "unknown error"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
