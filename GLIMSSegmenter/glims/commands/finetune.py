"""``glims finetune``: teach a model a site's corrected cases; the result is a new user model version."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .training_options import add_weight_update_options

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "fine-tune a model on corrected cases (the training-set store or folders) and register a new version"
PROGRESS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="base model (id or id@version)")
    parser.add_argument(
        "--name",
        required=True,
        help="id of the fine-tuned model (a new version if it exists): up to 64 letters, digits, "
        ". _ -; not a built-in model's id",
    )
    parser.add_argument("--cases", nargs="+", help="case folders or folders of them (default: `glims cases` store)")
    parser.add_argument("--epochs", type=int, help="epoch budget")
    parser.add_argument("--minutes", type=float, help="wall-time budget")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held out when more than 5 cases")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=40, help="linear learning-rate warm-up (0: none)")
    add_weight_update_options(parser)
    parser.add_argument(
        "--patience",
        type=int,
        default=8,
        help="early stopping patience in validations (0: off; only when the best is kept)",
    )
    parser.add_argument(
        "--keep",
        choices=("auto", "best", "last"),
        default="auto",
        help="weights to register: best validation Dice, the end of the schedule, or auto (last "
        "when one case is held out, else best)",
    )
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument(
        "--replay",
        nargs="+",
        metavar="DIR",
        help="labelled cases of the base model's own domain to mix into the training windows "
        "(default: the base model's replay recipe, if its catalog entry has one: the bundled "
        "model replays 10 synthetic cases, generated once)",
    )
    replay.add_argument("--no-replay", action="store_true", help="train on the site's cases only")
    parser.add_argument(
        "--replay-fraction",
        type=float,
        default=0.3,
        help="share of the training windows drawn from --replay cases (default 0.3)",
    )
    parser.add_argument("--steps-per-epoch", type=int, default=20, help="optimiser steps between validations")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run of --name")
    parser.add_argument("--home", help="glims user folder (default: $GLIMS_HOME or the per-user data folder)")


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..errors import ConfigError
    from ..paths import check_name
    from ..progress import CancelToken, cancel_on_signals
    from ..training import distributed
    from ..training.finetune import FinetuneOptions, finetune

    check_name(args.name, "model name")
    if args.epochs is None and args.minutes is None:
        raise ConfigError("give a budget: --epochs N and/or --minutes M")
    options = FinetuneOptions(
        cases=args.cases,
        epochs=args.epochs,
        minutes=args.minutes,
        val_fraction=args.val_fraction,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        trainable=args.trainable,
        ema_decay=args.ema_decay,
        precision=args.precision,
        patience=args.patience or None,
        keep=args.keep,
        replay=[] if args.no_replay else (args.replay or "auto"),
        replay_fraction=args.replay_fraction,
        steps_per_epoch=args.steps_per_epoch,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        resume=args.resume,
    )
    with distributed.session(args.device) as parallel, cancel_on_signals(CancelToken()) as token:
        main = distributed.is_main_process()
        result = finetune(args.model, args.name, options, home=args.home, progress=ui.progress, cancel=token)
    if parallel and not main:
        return 0  # rank 0 reports
    ui.log(f"{'validation Dice':<18} {'TC':>6} {'WT':>6} {'ET':>6} {'mean':>6}")
    for label, row in (("before (base)", result.before), ("after (kept)", result.after)):
        ui.log(f"{label:<18} {row['TC']:6.3f} {row['WT']:6.3f} {row['ET']:6.3f} {row['mean']:6.3f}")
    ui.log(f"registered {result.model.ref} (run in {result.run_dir}; stopped: {result.training.stopped_because})")
    ui.result(
        {"model": result.model.ref, "run_dir": str(result.run_dir)}, {"before": result.before, "after": result.after}
    )
    return 0
