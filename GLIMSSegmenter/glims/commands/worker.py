"""``glims worker``: a long-lived engine process that runs ``segment`` requests read from stdin (see
``glims.worker`` for the protocol), keeping the imported libraries and loaded models between them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "run segment requests from stdin (JSON lines), keeping libraries and models loaded between them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..worker import DEFAULT_IDLE_TIMEOUT_S

    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT_S,
        metavar="SECONDS",
        help=f"exit after this long without a request (default {DEFAULT_IDLE_TIMEOUT_S:g}; 0: never)",
    )
    parser.add_argument(
        "--cache-size",
        type=int,
        default=2,
        metavar="N",
        help="models kept loaded, least recently used dropped first (default 2)",
    )


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    import sys

    from ..errors import ConfigError
    from ..worker import Worker, protocol_stream

    if args.idle_timeout < 0:
        raise ConfigError(f"--idle-timeout must be 0 (never) or more seconds, got {args.idle_timeout:g}")
    if args.cache_size < 1:
        raise ConfigError(f"--cache-size must be at least 1, got {args.cache_size}")
    worker = Worker(protocol_stream(), idle_timeout=args.idle_timeout or None, cache_size=args.cache_size)
    worker.serve(sys.stdin)
    return 0
