"""The worker's prepared-case cache on real files: the same unchanged files are read and prepared once; a replaced
file, other settings or another crop are prepared again; without a cache nothing is kept."""

from __future__ import annotations

import os

import numpy as np
import pytest
import SimpleITK as sitk
from test_worker import write_case

from glims.casecache import CaseCache, active_case_cache, prepared_case, use_case_cache
from glims.catalog_sections import PreprocessingSpec
from glims.preprocessing import prepare_case

ROI = (16, 16, 16)
SETTINGS = PreprocessingSpec(orientation="LPS", crop_margin=0)


@pytest.fixture
def case(tmp_path):
    paths = write_case(tmp_path / "case", shape=(20, 24, 22))
    return paths, [p.name for p in paths]


def test_the_same_unchanged_files_are_prepared_once_and_give_the_uncached_result(case):
    paths, names = case
    messages: list[str] = []
    with use_case_cache(CaseCache(on_lookup=messages.append)) as cache:
        first = prepared_case(paths, names, SETTINGS, ROI)
        second = prepared_case([str(p) for p in paths], names, SETTINGS, ROI)
        assert second is first and len(cache) == 1
        assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert messages == ["case cache miss: reading and preparing the inputs",
                        "case cache hit: the inputs were read and prepared earlier in this worker"]
    assert active_case_cache() is None
    uncached = prepare_case(paths, names, SETTINGS, ROI)
    assert np.array_equal(first.array, uncached.array) and first.box == uncached.box
    assert prepared_case(paths, names, SETTINGS, ROI) is not prepared_case(paths, names, SETTINGS, ROI)


def test_a_replaced_file_other_settings_or_another_crop_miss(case, tmp_path):
    paths, names = case
    with use_case_cache(CaseCache()) as cache:
        first = prepared_case(paths, names, SETTINGS, ROI)

        brighter = sitk.ReadImage(str(paths[0])) * 2.0 + 5.0  # the same size, other voxels, a new file
        staged = tmp_path / "staged.nii.gz"
        sitk.WriteImage(brighter, str(staged))
        os.replace(staged, paths[0])
        changed = prepared_case(paths, names, SETTINGS, ROI)
        assert changed is not first and not np.array_equal(changed.array, first.array)
        assert np.array_equal(changed.array, prepare_case(paths, names, SETTINGS, ROI).array)

        uncropped = prepared_case(paths, names, SETTINGS, ROI, crop=False)
        assert uncropped is not changed and uncropped.array.shape[1:] == (22, 24, 20)
        margin = prepared_case(paths, names, PreprocessingSpec(orientation="LPS", crop_margin=2), ROI)
        assert margin is not uncropped
        assert prepared_case(paths, names, PreprocessingSpec(orientation="LPS", crop_margin=2), ROI) is margin
        assert (cache.stats.hits, cache.stats.misses) == (1, 4)


def test_a_dicom_folder_input_is_never_cached(case, tmp_path):
    pytest.importorskip("pydicom")
    from dicom_series import write_mr_series

    paths, _ = case
    series = tmp_path / "series"
    write_mr_series(sitk.ReadImage(str(paths[0])), series)
    with use_case_cache(CaseCache()) as cache:
        first = prepared_case([series], ["FLAIR"], SETTINGS, ROI)
        assert prepared_case([series], ["FLAIR"], SETTINGS, ROI) is not first and len(cache) == 0
