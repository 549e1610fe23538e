"""``glims info``: the network's configuration, size and the runtime it would use."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cli import UserInterface

HELP = "print the GLIMS network summary (parameters per stage) and the runtime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--out-channels", type=int, default=3)
    parser.add_argument("--feature-size", type=int, default=24)
    parser.add_argument("--img-size", type=int, default=96)


def run(args: argparse.Namespace, ui: UserInterface) -> int:
    import platform

    import torch

    from ..network import GLIMS

    net = GLIMS(args.in_channels, args.out_channels, args.feature_size, args.img_size)
    total = sum(p.numel() for p in net.parameters() if p.requires_grad)
    ui.log(f"GLIMS {net.config.to_dict()}")
    for name, child in net.named_children():
        count = sum(p.numel() for p in child.parameters())
        ui.log(f"  {name:<8} {count:>12,d} parameters")
    ui.log(f"  total    {total:>12,d} trainable parameters, {len(net.state_dict())} state_dict entries")
    cuda = torch.cuda.is_available()
    ui.log(
        f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cuda {'yes: ' + torch.cuda.get_device_name(0) if cuda else 'no'}"
    )
    return 0
