"""Which compute devices this computer offers the engine (shown in the panel's device choice)."""

from __future__ import annotations

import importlib.util
import logging
import os

__all__ = ["detectDevices"]

logger = logging.getLogger(__name__)


def detectDevices() -> dict[str, str]:
    """Device -> description of what is available: always ``cpu``; ``cuda``/``mps`` when torch sees them.

    Imports torch (only when it is installed), so call it when the panel is first shown, not at import time.
    Without torch only ``cpu`` is reported; the engine still picks the best device itself with ``auto``.
    """
    devices = {"cpu": f"CPU ({os.cpu_count() or 1} cores)"}
    if importlib.util.find_spec("torch") is None:
        return devices
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            memory = torch.cuda.get_device_properties(0).total_memory / 2**30
            devices["cuda"] = f"GPU: {names[0]}, {memory:.0f} GiB" + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices["mps"] = "GPU: Apple Metal (MPS)"
    except Exception as err:  # a broken torch install must not break the panel
        logger.warning("could not query torch devices: %s", err)
    return devices
