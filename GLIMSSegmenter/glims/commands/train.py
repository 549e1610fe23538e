"""``glims train``: train a GLIMS model from scratch (or from given weights) on labelled cases."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .training_options import add_weight_update_options

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "train a GLIMS model on labelled cases (seeded, resumable, per-epoch log and curves)"
PROGRESS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cases",
        nargs="+",
        required=True,
        metavar="DIR",
        help="case folders, or folders of case folders (BraTS 2021/2023 names, glims synth output)",
    )
    parser.add_argument(
        "--case-weights",
        nargs="+",
        type=float,
        default=(),
        metavar="W",
        help="sampling weight of the cases under each --cases entry, one per entry (default: every "
        "case equally likely)",
    )
    parser.add_argument(
        "--val-cases",
        nargs="+",
        default=(),
        metavar="DIR",
        help="explicit validation cases (default: a seeded --val-fraction of --cases)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (weights, state, log, curves)")
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs (cosine schedule length)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="time budget; without --epochs the schedule is fitted to it after the first epoch",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="optimiser steps per epoch (default: one pass over the training cases)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=2,
        help="windows per optimiser step; per process under torchrun (docs/DISTRIBUTED.md)",
    )
    parser.add_argument("--feature-size", type=int, default=12, help="channels of the first stage (reference: 24)")
    parser.add_argument("--img-size", type=int, default=32, help="training window, voxels per axis, divisible by 32")
    parser.add_argument(
        "--depths",
        type=int,
        nargs=4,
        default=(2, 2, 2, 2),
        metavar="D",
        help="transformer blocks per level (reference: 2 2 6 2)",
    )
    parser.add_argument("--num-heads", type=int, nargs=4, default=(3, 6, 12, 24), metavar="H")
    parser.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="processing voxel size in mm (default: the preset's, i.e. the images' own)",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    add_weight_update_options(parser)
    parser.add_argument(
        "--ce",
        choices=("bce", "softmax"),
        default="bce",
        help="cross-entropy term: per-channel BCE, or the softmax CE MONAI's DiceCELoss computes",
    )
    parser.add_argument(
        "--tumour-fraction",
        type=float,
        default=0.5,
        help="share of training windows centred on a tumour voxel (rest uniform)",
    )
    parser.add_argument("--no-augment", action="store_true", help="turn the augmentations off")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--val-every", type=int, default=1, help="validate every N epochs")
    parser.add_argument(
        "--label-convention",
        default="auto",
        help="auto, brats2023 (ET=3), brats2017 (ET=4) or brats2013 (3=non-enhancing, 4=ET)",
    )
    parser.add_argument(
        "--keep",
        choices=("best", "last"),
        default="best",
        help="weights kept as best.safetensors: best validation Dice, or the end of the schedule",
    )
    parser.add_argument("--init-weights", default=None, help="start from these weights instead of random ones")
    parser.add_argument("--save-fp16", action="store_true", help="store best.safetensors in float16")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=25)


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..outputs import check_output_folder
    from ..progress import CancelToken, cancel_on_signals
    from ..training import distributed
    from ..training.trainer import TrainConfig, train

    check_output_folder(args.out, "run folder (--out)")
    config = TrainConfig(
        out_dir=args.out,
        cases=tuple(args.cases),
        val_cases=tuple(args.val_cases),
        case_weights=tuple(args.case_weights),
        architecture={
            "feature_size": args.feature_size,
            "img_size": [args.img_size] * 3,
            "depths": list(args.depths),
            "num_heads": list(args.num_heads),
        },
        spacing=(args.spacing,) * 3 if args.spacing else None,
        label_convention=args.label_convention,
        epochs=args.epochs,
        minutes=args.minutes,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        trainable=args.trainable,
        ema_decay=args.ema_decay,
        precision=args.precision,
        ce=args.ce,
        tumour_fraction=args.tumour_fraction,
        augment=not args.no_augment,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        keep=args.keep,
        init_weights=args.init_weights,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        save_dtype="fp16" if args.save_fp16 else "fp32",
    )
    with distributed.session(args.device) as parallel, cancel_on_signals(CancelToken()) as token:
        main = distributed.is_main_process()
        result = train(config, resume=args.resume, progress=ui.progress, cancel=token)
    if parallel and not main:
        return 0  # rank 0 reports
    summary = {
        "epochs": result.epochs_done,
        "steps": result.steps_done,
        "elapsed_s": round(result.elapsed_s, 1),
        "best_val_dice_mean": result.best_metric,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped_because,
    }
    ui.log(
        f"trained {result.epochs_done} epochs ({result.steps_done} steps, {result.elapsed_s / 60:.1f} min, "
        f"stopped: {result.stopped_because}); best validation mean Dice "
        f"{result.best_metric if result.best_metric is None else round(result.best_metric, 4)} "
        f"at epoch {result.best_epoch}; outputs in {result.out_dir}"
    )
    outputs = {
        "run": str(result.out_dir),
        "log": str(result.out_dir / "log.jsonl"),
        "curves": str(result.out_dir / "curves.png"),
    }
    if result.best_checkpoint is not None:
        outputs["best"] = str(result.best_checkpoint)
    ui.result(outputs, summary)
    return 0
