"""Shared fixtures: paths to the real cases in ../shared/data (tests that need them skip cleanly without them).

``GLIMS_SHARED=DIR`` points the suite at another shared folder (``DIR/data``, ``DIR/spec``); a folder that does not
exist runs the suite as in a bare clone. ``GLIMS_SHARED_DATA=DIR`` overrides the data folder alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GLIMS_SHARED", REPO.parent / "shared"))
SHARED_DATA = Path(os.environ.get("GLIMS_SHARED_DATA", SHARED / "data"))
SPEC_DIR = SHARED / "spec"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spec_keys_file() -> Path:
    path = SPEC_DIR / "glims_state_dict_keys.txt"
    if not path.is_file():
        pytest.skip(f"reference state_dict listing not found at {path}")
    return path


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread (restored after): on 2-core machines the tiny networks and
    small tensors of the tests run several times faster without the second thread's synchronisation."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A glims user folder of the test module's own with ``tiny-brats`` (a tiny random GLIMS) registered.

    A module that needs more in it defines its own ``home(home)`` fixture that adds to this one.
    """
    from tiny_models import register_tiny_model

    folder = tmp_path_factory.mktemp("glims_home")
    register_tiny_model(folder, "brats")
    return folder
