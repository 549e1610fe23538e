"""Command-line options shared by ``glims train`` and ``glims finetune``: which weights move, and how.

Not a subcommand (``glims.cli.COMMANDS`` lists those); the values go to ``glims.training.trainer.TrainConfig``.
"""

from __future__ import annotations

import argparse

from ..training.trainable import TRAINABLE

__all__ = ["add_weight_update_options"]


def add_weight_update_options(parser: argparse.ArgumentParser) -> None:
    """``--trainable``, ``--precision`` and ``--ema-decay`` (see ``TrainConfig``)."""
    parser.add_argument(
        "--trainable",
        choices=sorted(TRAINABLE),
        default="all",
        help="parameters to update: all, or early (intensity-reading layers and normalisations)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="forward pass in bf16 autocast or fp32 (auto: bf16 on a GPU that supports it)",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="validate and keep a moving average of the weights with this decay per step (0: off)",
    )
