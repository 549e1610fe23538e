"""GLIMS: a hybrid CNN / shifted-window-transformer network for volumetric segmentation.

Yazici, Oksuz, Ekenel, "GLIMS: Attention-guided lightweight multi-scale hybrid network for volumetric semantic
segmentation", Image and Vision Computing 2024 (arXiv 2404.17854).

Written from the architecture description in ``shared/spec/glims_architecture.md``; the reference implementation
(github.com/yaziciz/GLIMS, MIT licence) was not copied. Parameter names, shapes and numerics follow the reference so
that its checkpoints load with ``strict=True`` and give the same outputs. Weights have their own licence: see the
model card of each catalog entry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeGuard

import torch
from torch import nn

from .conv_blocks import CSAB, DMSF, DMSU, ConvNormAct, OutputHead
from .fast_cpu import Workspace, fast_path_applies, to_channels_last, use_workspace
from .swin import SwinStage, SwinUpStage

__all__ = ["GLIMS", "GLIMSConfig", "PRECISIONS", "build"]

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Compute precisions of the CPU fast path: float32 (exact, the default) and bfloat16 (reduced, opt-in)."""


@dataclass(frozen=True)
class GLIMSConfig:
    """Architecture hyper-parameters; the defaults are the reference BraTS configuration."""

    in_channels: int = 4
    """Input channels (image modalities)."""
    out_channels: int = 3
    """Output channels (logits)."""
    feature_size: int = 24
    """Channels of the first stage; stage k has ``feature_size * 2**k``."""
    img_size: tuple[int, int, int] = (96, 96, 96)
    """Input window (D, H, W) in voxels; each axis divisible by 32. Sizes the learned position embeddings."""
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)
    """Heads per transformer level (index 0 unused, kept for the reference signature)."""
    depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    """Blocks per transformer level (index 0 unused)."""
    window: int = 7
    """Nominal attention window (voxels per axis)."""

    def __post_init__(self) -> None:
        # The fields may arrive as lists or of other lengths (from_dict's JSON); each is checked, then stored as a
        # tuple of ints.
        size = tuple(int(s) for s in self.img_size)
        num_heads = tuple(int(h) for h in self.num_heads)
        depths = tuple(int(d) for d in self.depths)
        if len(size) != 3 or any(s <= 0 or s % 32 for s in size):
            raise ValueError(f"img_size must be 3 positive sizes divisible by 32, got {size}")
        if len(num_heads) != 4 or len(depths) != 4:
            raise ValueError(f"num_heads and depths must be 4 numbers each, got {num_heads} and {depths}")
        object.__setattr__(self, "img_size", size)
        object.__setattr__(self, "num_heads", num_heads)
        object.__setattr__(self, "depths", depths)
        if self.in_channels < 1 or self.out_channels < 1 or self.feature_size < 1:
            raise ValueError("in_channels, out_channels and feature_size must be positive")
        for level, heads in enumerate(self.num_heads[1:], start=1):
            dim = self.feature_size * 2 ** (level + 2)
            if dim % heads:
                raise ValueError(f"feature_size {self.feature_size}: {dim} channels not divisible by {heads} heads")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GLIMSConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GLIMS architecture keys: {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if isinstance(values.get("img_size"), int):
            values["img_size"] = (values["img_size"],) * 3
        return cls(**values)


class _FastPathSwitch(Protocol):
    """A block with a CPU fast path, taken while its ``fast`` attribute is true (see ``conv_blocks``)."""

    fast: bool


def _has_fast_path_switch(module: nn.Module) -> TypeGuard[_FastPathSwitch]:
    return isinstance(getattr(module, "fast", None), bool)


class GLIMS(nn.Module):
    """GLIMS segmentation network.

    Args:
        in_channels: input channels. Defaults to 4 (BraTS: FLAIR, T1ce, T1, T2).
        out_channels: output logits. Defaults to 3 (BraTS: TC, WT, ET sigmoid channels).
        feature_size: channels of the first stage. Defaults to 24 (the reference).
        img_size: input window, an int or (D, H, W), divisible by 32. Defaults to 96.
        num_heads: heads per transformer level. Defaults to (3, 6, 12, 24).
        depths: blocks per transformer level. Defaults to (2, 2, 6, 2).
        window: nominal attention window. Defaults to 7.

    In eval mode ``forward(x)`` returns logits (B, out_channels, D, H, W). In training mode it returns the four
    deep-supervision logits at full, 1/2, 1/4 and 1/8 resolution. The input's spatial size must equal ``img_size``.

    Execution: with autograd off (``torch.no_grad()`` / ``torch.inference_mode()``) on a CPU float32 input, the
    convolutional stages take the channels-last fast path (``fast_cpu``; same weights, same function, logits within
    float32 rounding of the reference path) unless ``fast_path`` is False. ``precision = "bfloat16"`` (or running
    under ``torch.autocast("cpu", dtype=torch.bfloat16)``) makes that path compute the convolutional stages in
    bfloat16 (transformer stages stay float32; logits are returned as float32); it is opt-in because it is not
    exact. Under CPU autocast to another dtype the reference path runs. Training and anything under autograd use
    the reference path. The fast path keeps its scratch buffers (about 0.35 GB for the 96^3 reference
    configuration) between calls; ``release_workspace()`` frees them. One model must not run forwards on two
    threads at once.

    Example::

        net = GLIMS().eval()
        logits = net(torch.zeros(1, 4, 96, 96, 96))   # (1, 3, 96, 96, 96)
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        feature_size: int = 24,
        img_size: int | Sequence[int] = 96,
        num_heads: Sequence[int] = (3, 6, 12, 24),
        depths: Sequence[int] = (2, 2, 6, 2),
        window: int = 7,
    ) -> None:
        super().__init__()
        # from_dict takes an int or any sequence for the tuple fields and checks their lengths.
        self.config = GLIMSConfig.from_dict(
            {
                "in_channels": in_channels,
                "out_channels": out_channels,
                "feature_size": feature_size,
                "img_size": img_size,
                "num_heads": num_heads,
                "depths": depths,
                "window": window,
            }
        )
        f = feature_size
        grid = [tuple(s // 2**k for s in self.config.img_size) for k in range(6)]
        heads, depth = self.config.num_heads, self.config.depths

        # Registration order follows the reference, so state_dict() lists keys in its order too.
        self.stem = ConvNormAct(in_channels, f, kernel_size=1)
        self.dmsu_1 = DMSU(2 * f, f)
        self.dmsf_1 = DMSF(f)
        self.dmsu_2 = DMSU(4 * f, 2 * f)
        self.dmsf_2 = DMSF(2 * f)
        self.dmsu_3 = DMSU(8 * f, 4 * f)
        self.dmsf_3 = DMSF(4 * f)
        self.dmsu_4 = DMSU(16 * f, 8 * f)
        self.t3 = SwinStage(8 * f, depth[1], heads[1], grid[3], window)
        self.dmsf_4 = DMSF(8 * f)
        self.t4_pre = SwinStage(16 * f, depth[2], heads[2], grid[4], window, downsample=True)
        self.t4 = SwinStage(32 * f, depth[3], heads[3], grid[5], window)
        self.t4_post = SwinUpStage(16 * f, depth[2], heads[2], grid[4], window)
        self.t3_up = SwinStage(8 * f, depth[1], heads[1], grid[3], window)
        self.csab1 = CSAB(f)
        self.csab2 = CSAB(2 * f)
        self.csab3 = CSAB(4 * f)
        self.csab4 = CSAB(8 * f)
        self.csab5 = CSAB(16 * f)
        self.out1 = OutputHead(f, out_channels)
        self.out2 = OutputHead(2 * f, out_channels)
        self.out3 = OutputHead(4 * f, out_channels)
        self.out4 = OutputHead(8 * f, out_channels)
        self._workspace = Workspace()
        self._precision = "float32"

    @property
    def img_size(self) -> tuple[int, int, int]:
        return self.config.img_size

    @property
    def fast_path(self) -> bool:
        """Whether inference on the CPU may use the channels-last fast path (default True)."""
        return all(m.fast for m in self._fast_blocks())

    @fast_path.setter
    def fast_path(self, enabled: bool) -> None:
        for module in self._fast_blocks():
            module.fast = bool(enabled)

    def _fast_blocks(self) -> list[_FastPathSwitch]:
        return [m for m in self.modules() if m is not self and _has_fast_path_switch(m)]

    @property
    def precision(self) -> str:
        """Compute precision of the CPU fast path: "float32" (default, exact) or "bfloat16" (opt-in)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {value!r}")
        self._precision = value

    def replica(self) -> GLIMS:
        """A model for running forwards on another thread at the same time as this one: a copy of the modules
        (mode, fast path, precision) that shares this model's parameters and buffers (read-only in inference)
        and has its own empty workspace. Make it outside ``torch.inference_mode()``."""
        shared: dict[int, Any] = {id(t): t for t in (*self.parameters(), *self.buffers())}
        workspace, self._workspace = self._workspace, Workspace()
        try:
            return copy.deepcopy(self, shared)
        finally:
            self._workspace = workspace

    def release_workspace(self) -> None:
        """Free the fast path's scratch buffers (they are re-created by the next fast forward)."""
        self._workspace.clear()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels or tuple(x.shape[2:]) != self.config.img_size:
            raise ValueError(
                f"GLIMS expects input (B, {self.config.in_channels}, {', '.join(map(str, self.config.img_size))}), "
                f"got {tuple(x.shape)}; use sliding-window inference for other sizes"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._check_input(x)
        if not (x.dtype == torch.float32 and fast_path_applies(self.fast_path, x)):
            return self._forward_layers(x)
        compute = PRECISIONS[self._precision]
        if torch.is_autocast_enabled("cpu"):
            # CPU autocast to bfloat16 asks for the reduced-precision path; other autocast dtypes take the reference.
            if torch.get_autocast_dtype("cpu") != torch.bfloat16:
                return self._forward_layers(x)
            compute = torch.bfloat16
        with use_workspace(self._workspace), torch.autocast("cpu", enabled=False):
            out = self._forward_layers(to_channels_last(x.to(compute)))
        # Callers get ordinary float32 channel-first tensors whatever the path.
        if isinstance(out, list):
            return [o.to(x.dtype).contiguous() for o in out]
        return out.to(x.dtype).contiguous()

    def _transformer(self, stage: nn.Module, *inputs: torch.Tensor) -> Any:
        """Run a transformer stage in float32 even when the convolutional stages compute in bfloat16."""
        dtype = inputs[0].dtype
        if dtype != torch.bfloat16:
            return stage(*inputs)
        out = stage(*(t.float() for t in inputs))
        return tuple(o.to(dtype) for o in out) if isinstance(out, tuple) else out.to(dtype)

    def _forward_layers(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.stem(x)
        down1, skip1 = self.dmsf_1(x)
        down2, skip2 = self.dmsf_2(down1)
        down3, skip3 = self.dmsf_3(down2)
        down4, skip4 = self.dmsf_4(self._transformer(self.t3, down3))
        merged, skip5 = self._transformer(self.t4_pre, down4)
        up5 = self._transformer(self.t4_post, self._transformer(self.t4, merged), self.csab5(skip5))
        up4 = self.dmsu_4(up5, self.csab4(skip4))
        up3 = self.dmsu_3(self._transformer(self.t3_up, up4), self.csab3(skip3))
        up2 = self.dmsu_2(up3, self.csab2(skip2))
        up1 = self.dmsu_1(up2, self.csab1(skip1))
        if not self.training:
            return self.out1(up1)
        return [self.out1(up1), self.out2(up2), self.out3(up3), self.out4(up4)]


def build(architecture: Mapping[str, Any]) -> GLIMS:
    """The network an ``architecture`` mapping describes: a catalog entry's or a checkpoint's (its ``name`` key,
    ``"GLIMS"``, is dropped; every other key is a ``GLIMS`` argument).

    Raises:
        TypeError: an unknown key. ValueError: an impossible configuration (e.g. a window size not divisible by 32).
    """
    return GLIMS(**{key: value for key, value in architecture.items() if key != "name"})
