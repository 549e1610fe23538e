"""The web app with DICOM in a real browser: a generated DICOM series loads from the server's data folder and from
"Upload a folder" (and so does the shared real CT series), the tiny CT model segments it, and the DICOM SEG and RT Structure Set downloads read back with
highdicom and pydicom (SOP class, the source series as reference, one segment per model label); a case loaded from
NIfTI gets the reason instead of a download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from browser import TOKEN, waitFor
from dicom_series import identified_ct_copy, write_mr_series
from test_web_app import JOB_TIMEOUT_S, _choose, _click, _state, _tab, _text

pytestmark = pytest.mark.usefixtures("browser_available")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def _image() -> sitk.Image:
    """A small CT-like volume (HU values) on a 3 mm grid, the tiny CT model's processing spacing."""
    rng = np.random.default_rng(21)
    image = sitk.GetImageFromArray(rng.normal(40, 300, (10, 36, 40)).astype(np.float32))
    image.SetSpacing((3.0, 3.0, 3.0))
    image.SetOrigin((-60.0, -50.0, 20.0))
    return image


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    """The server's data folder: ``ct-case/dicom`` (a DICOM series) and ``nifti-case`` (the same image as NIfTI)."""
    folder = tmp_path_factory.mktemp("web_data")
    write_mr_series(_image(), folder / "ct-case" / "dicom", seed="web-dicom", patient="Web^Dicom", description="CT")
    (folder / "nifti-case").mkdir()
    sitk.WriteImage(_image(), str(folder / "nifti-case" / "ct.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def web_home(tmp_path_factory, browser_available) -> Path:
    """A glims user folder with the tiny CT model (``tiny-btcv``, 3 mm processing spacing)."""
    from tiny_models import register_tiny_ct

    home = tmp_path_factory.mktemp("web_home_dicom")
    register_tiny_ct(home)
    return home


@pytest.fixture(scope="module")
def web_server(web_home, data_folder, tmp_path_factory):
    from browser import WebServer

    logs = tmp_path_factory.mktemp("web_server_dicom")
    server = WebServer(logs / "server.log", ["--home", str(web_home), "--data", str(data_folder), "--device", "cpu",
                                             "--token", TOKEN])
    yield server
    server.stop()


def _loadDataCase(chrome, title: str) -> None:
    _tab(chrome, "segment")
    chrome.execute_script("window.trame.state.set('case_message', '')")
    _click(chrome, "glims-data-menu")
    item = waitFor(lambda: [o for o in chrome.find_elements("css selector", ".v-overlay .v-list-item")
                            if title in o.text and o.is_displayed()], 20, f"'{title}' in the data menu")
    item[0].click()
    waitFor(lambda: "Loaded 1 volumes" in _text(chrome, "glims-case-message"), 60, f"'{title}' to load")


def _segmentWithTinyCt(chrome) -> None:
    _tab(chrome, "segment")
    if _state(chrome, "seg_model") != "tiny-btcv":
        _choose(chrome, "glims-model", "(yours: tiny-btcv)")
        waitFor(lambda: _state(chrome, "seg_model") == "tiny-btcv", 20, "the tiny CT model selected")
    waitFor(lambda: _state(chrome, "seg_button_enabled"), 20, "Segment enabled")
    _click(chrome, "glims-segment")
    waitFor(lambda: _state(chrome, "seg_status").startswith("Finished"), JOB_TIMEOUT_S, "the segmentation")


def _export(chrome, formatTitle: str) -> str:
    """Choose ``formatTitle`` and press Download; returns the export message once there is one."""
    _tab(chrome, "train")
    chrome.execute_script("window.trame.state.set('export_message', '')")
    _choose(chrome, "glims-export-format", formatTitle)
    _click(chrome, "glims-export")
    return waitFor(lambda: _text(chrome, "glims-export-message"), 60, "the export message")


def _downloads(chrome) -> dict[str, int]:
    """The downloads folder now: file name -> modification time (a download of the same name replaces the file)."""
    return {p.name: p.stat().st_mtime_ns for p in chrome.downloads.iterdir()}


def _download(chrome, before: dict[str, int]) -> Path:
    """The one file that arrived in the downloads folder since ``before`` (:func:`_downloads` then)."""
    new = waitFor(lambda: (lambda found: found if len(found) == 1 and not any(
        n.endswith(".crdownload") for n in found) else None)(
        [n for n, t in _downloads(chrome).items() if before.get(n) != t]), 60, "the download")
    return chrome.downloads / new[0]


def _series(data_folder: Path):
    from glims.dicom.source import read_source_series

    return read_source_series(data_folder / "ct-case" / "dicom")


def test_dicom_series_from_the_data_folder_exports_seg_and_rtstruct(chrome, data_folder, web_home):
    import highdicom
    import pydicom
    from glims.catalog import load_catalog

    waitFor(lambda: _state(chrome, "case_data"), 60, "the page")
    _loadDataCase(chrome, "ct-case/dicom (DICOM series)")
    assert _state(chrome, "case_message").startswith("Loaded 1 volumes: 3: CT.")
    _segmentWithTinyCt(chrome)
    source = _series(data_folder)
    labels = load_catalog(web_home).get("tiny-btcv").labels

    before = _downloads(chrome)
    message = _export(chrome, "DICOM SEG")
    assert message.startswith("Exported") and message.endswith("_seg.dcm."), message
    seg = highdicom.seg.segread(_download(chrome, before))
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.first.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= {
        ds.SOPInstanceUID for ds in source.datasets}
    assert len(seg.SegmentSequence) == len(labels)
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    assert seg.PatientName == "Web^Dicom" and seg.StudyInstanceUID == source.first.StudyInstanceUID

    before = _downloads(chrome)
    message = _export(chrome, "DICOM RT Structure Set")
    assert message.startswith("Exported") and message.endswith("_rtstruct.dcm."), message
    rtstruct = pydicom.dcmread(_download(chrome, before))
    assert rtstruct.SOPClassUID == RT_STRUCTURE_SET_STORAGE
    study = rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert study.RTReferencedSeriesSequence[0].SeriesInstanceUID == source.first.SeriesInstanceUID


def _uploadSegmentAndExportSeg(chrome, folder: Path):
    """Upload ``folder`` (one series) with *Upload a folder*, segment it, download its DICOM SEG; read by highdicom."""
    import highdicom

    chrome.refresh()  # a fresh file input: Chromium's driver adds the files to those of an earlier upload
    waitFor(lambda: _state(chrome, "case_data"), 60, "the page after reloading")
    _tab(chrome, "segment")
    chrome.execute_script("window.trame.state.set('case_message', '')")
    upload = chrome.find_element("css selector", "#glims-upload-folder")
    upload.send_keys(str(folder))
    waitFor(lambda: "Loaded 1 volumes" in _text(chrome, "glims-case-message"), 60, "the uploaded series")
    assert _state(chrome, "case_title") == f"Uploaded DICOM series: {len(list(folder.glob('*.dcm')))} files"
    assert _state(chrome, "edit_segmentations") == []
    _segmentWithTinyCt(chrome)
    before = _downloads(chrome)
    assert _export(chrome, "DICOM SEG").startswith("Exported")
    seg = highdicom.seg.segread(_download(chrome, before))
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    return seg


def test_uploaded_dicom_folder_exports_seg(chrome, data_folder):
    seg = _uploadSegmentAndExportSeg(chrome, data_folder / "ct-case" / "dicom")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == _series(data_folder).first.SeriesInstanceUID


@pytest.mark.slow
def test_uploaded_real_ct_series_exports_seg(chrome, shared_data, tmp_path):
    """The shared CT series (its blanked UIDs filled in, see ``identified_ct_copy``), 512 x 512 slices."""
    from glims.dicom.source import read_source_series

    folder = identified_ct_copy(shared_data / "ct" / "totalseg_example_ct_dicom" / "dicom", tmp_path / "ct")
    seg = _uploadSegmentAndExportSeg(chrome, folder)
    source = read_source_series(folder)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.first.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.first.StudyInstanceUID and (seg.Rows, seg.Columns) == (512, 512)


def test_a_case_not_from_dicom_says_why_instead_of_a_download(chrome):
    import time

    _loadDataCase(chrome, "nifti-case")
    _segmentWithTinyCt(chrome)
    before = _downloads(chrome)
    message = _export(chrome, "DICOM SEG")
    assert message.startswith("DICOM export is not possible: 'ct' was not loaded from DICOM"), message
    time.sleep(1.0)  # a download, if one had been started, would have begun by now
    assert _downloads(chrome) == before
