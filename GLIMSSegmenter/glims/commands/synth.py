"""``glims synth``: write synthetic BraTS-like cases (four MR sequences and an exact label) as NIfTI."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "generate synthetic BraTS-like cases with exact labels (BraTS 2021 file names, labels 1 NCR, 2 ED, 3 ET)"
PROGRESS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write <ID>/<ID>_{flair,t1ce,t1,t2,seg}.nii.gz into")
    parser.add_argument("--n", type=int, required=True, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed: same seed, same cases (default 0)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(128, 128, 128),
        metavar=("X", "Y", "Z"),
        help="image size in voxels, x y z as ITK/NIfTI report it (default 128 128 128; BraTS: 240 240 155)",
    )
    parser.add_argument("--spacing", type=float, default=1.0, help="voxel size in mm (default 1)")
    parser.add_argument(
        "--site-shift",
        type=float,
        default=0.0,
        metavar="STRENGTH",
        help="simulate another scanner protocol (0 none, 1 strong; see docs/SYNTHETIC_DATA.md)",
    )
    parser.add_argument(
        "--site-profile",
        choices=("low-contrast", "other-scanner"),
        default="low-contrast",
        help="what the site shift changes (see docs/SYNTHETIC_DATA.md; default low-contrast)",
    )
    parser.add_argument(
        "--generator",
        type=int,
        choices=(1, 2),
        default=2,
        help="generator version: 2 (default, latest) or 1 (reproduces data made before version 2; "
        "see docs/SYNTHETIC_DATA.md)",
    )
    parser.add_argument("--prefix", default="GLIMS-SYN", help="case id prefix (ids are PREFIX-SEED-NNNN)")


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    from ..errors import ConfigError
    from ..progress import CancelToken, cancel_on_signals
    from ..synth import MIN_SIZE_VOXELS, generate_dataset, shifted_site, synth_params

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, not {args.n}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be non-negative, not {args.seed}")
    if min(args.shape) < MIN_SIZE_VOXELS:
        raise ConfigError(
            f"--shape X Y Z must be at least {MIN_SIZE_VOXELS} voxels on every axis, "
            f"not {' '.join(map(str, args.shape))}"
        )
    if args.spacing <= 0:
        raise ConfigError(f"--spacing must be positive, not {args.spacing}")
    site = shifted_site(args.site_shift, args.site_profile) if args.site_shift > 0 else None
    params = synth_params(args.generator, site=site)
    shape_zyx = tuple(reversed(args.shape))
    with cancel_on_signals(CancelToken()) as token:
        folders = generate_dataset(
            args.out,
            args.n,
            args.seed,
            shape_zyx,
            args.spacing,
            params,
            prefix=args.prefix,
            progress=ui.progress,
            cancel=token,
        )
    ui.log(f"wrote {len(folders)} cases to {args.out} (labels: 1 NCR, 2 ED, 3 ET = BraTS 2023 convention)")
    ui.result({"dataset": str(args.out)}, {"cases": len(folders)})
    return 0
