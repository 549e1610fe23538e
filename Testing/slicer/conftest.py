"""Fixtures for the Slicer module's tests: a headless Slicer (real MRML from the slicer-core wheel), tiny real
models in a temporary user folder, and the real cases of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def headless():
    """One headless Slicer for the session (as one application), installed into the ``slicer`` package."""
    pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
    from headless_slicer import HeadlessSlicer, terminology_folder

    folder = terminology_folder()
    if folder is None:
        pytest.skip("trame-slicer (which ships Slicer's terminology files) is not installed")
    app = HeadlessSlicer(folder)
    app.install()
    return app


@pytest.fixture
def scene(headless):
    """The scene, emptied after the test."""
    yield headless.scene
    headless.clear()


@pytest.fixture(scope="session")
def glims_home(tmp_path_factory) -> Path:
    """A user folder with two tiny random GLIMS models: ``tiny-brats`` and ``tiny-btcv`` (3 mm grid)."""
    from tiny_models import register_tiny_brats_and_ct

    home = tmp_path_factory.mktemp("glims_home")
    register_tiny_brats_and_ct(home)
    return home


@pytest.fixture
def logic(headless, glims_home):
    """The module logic on the headless scene, using the tiny models."""
    from GLIMSSegmenterLib.logic import GLIMSSegmenterLogic

    return GLIMSSegmenterLogic(glimsHome=glims_home)


@pytest.fixture(scope="session")
def brats_full_files(shared_data) -> list[Path]:
    """The BraTS 2023-named real case (240x240x155, 1 mm) in the model's input order: FLAIR, T1ce, T1, T2."""
    from tiny_models import brats_case_paths

    return brats_case_paths(shared_data, "brats_gli_00001")


@pytest.fixture(scope="session")
def brats_coarse_files(brats_full_files, tmp_path_factory) -> list[Path]:
    """The same real case resampled to 3 mm (same names and physical extent), so the engine runs in seconds."""
    from tiny_models import coarse_copy

    return coarse_copy(brats_full_files, tmp_path_factory.mktemp("brats_coarse"))


@pytest.fixture(scope="session")
def ct_files(shared_data) -> dict[str, Path]:
    """The small real abdominal CT (122x101x30 at 3 mm) and its silver 13-organ BTCV label map."""
    folder = shared_data / "ct" / "totalseg_example_ct"
    return {"ct": folder / "example_ct_sm.nii.gz", "labels": folder / "example_seg_btcv13.nii.gz"}
