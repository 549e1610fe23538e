"""DICOM SEG and RT Structure Set outputs, checked with readers that are not ours: pydicom, highdicom, matplotlib's
point-in-polygon test (RTSTRUCT contours filled back to masks) and dicom3tools' ``dciodvfy`` (IOD validation).

Cases: a generated oblique MR series with hand-made masks (holes, diagonal pixels, overlap, an empty segment), the
real CT series of ../shared/data/ct with TotalSegmentator's labels and through ``glims segment``, and a real MR
series written from the TCGA-FG-6692 FLAIR.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from glims.catalog import load_catalog  # noqa: E402
from glims.cli import main  # noqa: E402
from glims.dicom.content import AUTOMATIC, Algorithm, ExportSegment, segments_from_labels  # noqa: E402
from glims.dicom.export import algorithm_of, labels_on_series, write_dicom_objects  # noqa: E402
from glims.dicom.source import read_source_series  # noqa: E402
from glims.errors import OutputError  # noqa: E402
from glims.pipeline import segment_files  # noqa: E402

from dicom_series import dciodvfy_errors, identified_ct_copy, rtstruct_masks, seg_masks, write_mr_series  # noqa: E402
from tiny_models import brats_case_paths, coarse_copy, register_tiny_model  # noqa: E402

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CT_SERIES = Path("ct") / "totalseg_example_ct_dicom"
ANATOMY = ("SCT", "123037004", "Anatomical Structure")
ALTERED = ("SCT", "49755003", "Morphologically Altered Structure")


# ---- what every output must say -----------------------------------------------------------------------------------

def assert_identity_and_references(ds, source) -> None:
    """Patient and study of the source kept; its frame of reference shared."""
    first = source.first
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "AccessionNumber"):
        assert str(ds.get(keyword, "")) == str(first.get(keyword, "")), keyword
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID


def assert_seg_frames_on_source_slices(seg, source) -> None:
    """Every frame refers to one source image and has exactly its position; orientation and spacing shared."""
    by_uid = {ds.SOPInstanceUID: ds for ds in source.datasets}
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, source.first.ImageOrientationPatient)
    assert np.allclose(shared.PixelMeasuresSequence[0].PixelSpacing, source.first.PixelSpacing)
    assert (int(seg.Rows), int(seg.Columns)) == (int(source.first.Rows), int(source.first.Columns))
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.first.SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == set(by_uid)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, by_uid[uid].ImagePositionPatient,
                           atol=1e-4)


def assert_round_trip(seg_path: Path, rt_path: Path, source, segments, algorithm: Algorithm) -> None:
    """Everything both files must say about ``segments`` (their masks on the source grid) and the algorithm."""
    seg, pixels = seg_masks(seg_path, source)
    assert seg.SOPClassUID == SEG_STORAGE and seg.SegmentationType == "BINARY"
    assert_identity_and_references(seg, source)
    assert_seg_frames_on_source_slices(seg, source)
    assert len(seg.SegmentSequence) == len(segments)
    for number, (item, segment) in enumerate(zip(seg.SegmentSequence, segments), start=1):
        assert item.SegmentNumber == number and item.SegmentLabel == segment.name
        assert item.SegmentAlgorithmType == segment.algorithm_type == AUTOMATIC
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == segment.category[:2]
        assert (kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning) == segment.type
        identification = item.SegmentationAlgorithmIdentificationSequence[0]
        assert identification.AlgorithmName == algorithm.name and identification.AlgorithmVersion == algorithm.version
        assert all(sha in identification.AlgorithmParameters for sha in algorithm.weights_sha256)
        np.testing.assert_array_equal(pixels[..., number - 1], segment.mask, err_msg=segment.name)
    assert dciodvfy_errors(seg_path) == []

    rt = pydicom.dcmread(rt_path)
    assert rt.SOPClassUID == RTSTRUCT_STORAGE and rt.Modality == "RTSTRUCT"
    assert_identity_and_references(rt, source)
    contour_images = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
        .RTReferencedSeriesSequence[0].ContourImageSequence
    assert [item.ReferencedSOPInstanceUID for item in contour_images] == [ds.SOPInstanceUID for ds in source.datasets]
    assert [roi.ROIName for roi in rt.StructureSetROISequence] == [s.name for s in segments]
    for roi, observation, segment in zip(rt.StructureSetROISequence, rt.RTROIObservationsSequence, segments):
        assert roi.ROIGenerationAlgorithm == AUTOMATIC
        assert roi.ROIDerivationAlgorithmIdentificationSequence[0].AlgorithmName == algorithm.name
        code = observation.RTROIIdentificationCodeSequence[0]
        assert (code.CodingSchemeDesignator, code.CodeValue) == segment.type[:2]
    filled = rtstruct_masks(rt_path, source)
    for segment in segments:
        np.testing.assert_array_equal(filled[segment.name], segment.mask, err_msg=segment.name)
    assert dciodvfy_errors(rt_path) == []


# ---- a generated oblique series, hand-made masks ------------------------------------------------------------------

@pytest.fixture(scope="module")
def oblique_series(tmp_path_factory) -> Path:
    """A 7-slice 24x20 MR series, tilted in all three axes, with anisotropic pixels."""
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.normal(300, 40, (7, 20, 24)).astype(np.float32))
    image.SetSpacing((1.2, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(sitk.VersorTransform((0.3, 0.2, 1.0), 0.4).GetMatrix())
    folder = tmp_path_factory.mktemp("oblique")
    write_mr_series(image, folder, seed="oblique", patient="Oblique^Test")
    return folder


def test_generated_oblique_series_round_trips_through_seg_and_rtstruct(oblique_series, tmp_path):
    source = read_source_series(oblique_series)
    shape = (7, 20, 24)
    ring = np.zeros(shape, bool)
    ring[1:6, 3:15, 4:18] = True
    ring[2:5, 6:11, 8:13] = False  # a hole through three slices
    ring[0, 0, 0] = ring[0, 1, 1] = True  # diagonal neighbours: separate contours
    blob = np.zeros(shape, bool)
    blob[3:7, 10:19, 14:23] = True  # overlaps the ring: both keep their voxels
    segments = [
        ExportSegment("Necrosis / core: 1", (222, 60, 60), ALTERED, ("SCT", "6574001", "Necrosis"), ring),
        ExportSegment("Œdème péritumoral", (90, 200, 90), ALTERED, ("SCT", "79654002", "Edema"), blob),
        ExportSegment("Left kidney", (185, 102, 83), ANATOMY, ("SCT", "64033007", "Kidney"), np.zeros(shape, bool),
                      type_modifier=("SCT", "7771000", "Left")),
    ]
    algorithm = Algorithm("glims-test", "2.1.0", ("ab" * 32, "cd" * 32), "glims test")
    written = write_dicom_objects(source, segments, algorithm,
                                  {"dicom_seg": tmp_path / "seg.dcm", "dicom_rtstruct": tmp_path / "rt.dcm"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.dcm", "seg.dcm"] == sorted(p.name for p in written.values())
    assert_round_trip(tmp_path / "seg.dcm", tmp_path / "rt.dcm", source, segments, algorithm)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    modifier = seg.SegmentSequence[2].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeValue == "7771000"
    assert seg.PatientName == "Oblique^Test"
    rt = pydicom.dcmread(tmp_path / "rt.dcm")
    assert "ContourSequence" not in rt.ROIContourSequence[2]  # the empty segment is listed, without contours
    per_slice = [c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in rt.ROIContourSequence[0].ContourSequence]
    assert per_slice.count(source.datasets[0].SOPInstanceUID) == 2  # the diagonal pair
    assert per_slice.count(source.datasets[2].SOPInstanceUID) == 2  # outline and hole


def test_series_without_uids_or_not_a_series_is_refused(oblique_series, tmp_path):
    anonymised = tmp_path / "anonymised"
    anonymised.mkdir()
    for path in oblique_series.iterdir():
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = ""
        ds.save_as(anonymised / path.name)
    with pytest.raises(OutputError, match="no SeriesInstanceUID"):
        read_source_series(anonymised)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OutputError, match="no DICOM images"):
        read_source_series(tmp_path / "empty")
    with pytest.raises(OutputError, match="not a folder"):
        read_source_series(next(anonymised.iterdir()))


# ---- the real CT series -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct_series(shared_data, tmp_path_factory) -> Path:
    return identified_ct_copy(shared_data / CT_SERIES / "dicom", tmp_path_factory.mktemp("ct_dicom"))


@pytest.fixture(scope="module")
def home(home) -> Path:
    """The module's user folder with a tiny CT model that processes at 16 mm (the MRI one runs on a 6 mm copy), so
    that the runs take seconds."""
    register_tiny_model(home, "btcv", overrides={"preprocessing": {"spacing": [16.0, 16.0, 16.0]}})
    return home


def test_totalsegmentator_labels_on_the_real_ct_series(shared_data, ct_series, home, tmp_path):
    """Real organ masks (TotalSegmentator's, as BTCV labels) on the real series: realistic contours and frames."""
    source = read_source_series(ct_series)
    labels = sitk.ReadImage(str(shared_data / CT_SERIES / "example_seg_dicom_btcv13.nii.gz"))
    spec = load_catalog(home).get("tiny-btcv")
    segments = segments_from_labels(labels_on_series(labels, source), spec.labels)
    assert sum(not s.empty for s in segments) == 8
    written = write_dicom_objects(source, segments, algorithm_of(spec),
                                  {"dicom_seg": tmp_path / "seg.dcm", "dicom_rtstruct": tmp_path / "rt.dcm"})
    assert set(written) == {"dicom_seg", "dicom_rtstruct"}
    assert_round_trip(tmp_path / "seg.dcm", tmp_path / "rt.dcm", source, segments, algorithm_of(spec))


def test_cli_segments_the_ct_series_into_dicom_seg_and_rtstruct(ct_series, home, tmp_path, one_torch_thread):
    out = tmp_path / "out"
    code = main(["segment", "-m", "tiny-btcv", "-i", str(ct_series), "-o", str(out / "ct.seg.nrrd"),
                 "--labelmap", str(out / "ct.nii.gz"), "--dicom-seg", str(out / "ct_seg.dcm"),
                 "--dicom-rtstruct", str(out / "ct_rt.dcm"), "--home", str(home), "--progress", "none"])
    assert code == 0
    source = read_source_series(ct_series)
    labels = sitk.ReadImage(str(out / "ct.nii.gz"))
    spec = load_catalog(home).get("tiny-btcv")
    segments = segments_from_labels(sitk.GetArrayFromImage(labels), spec.labels)
    assert any(not s.empty for s in segments)
    assert_round_trip(out / "ct_seg.dcm", out / "ct_rt.dcm", source, segments, algorithm_of(spec))


def test_anonymised_ct_series_without_uids_is_refused_before_any_work(shared_data, home, tmp_path, capsys):
    code = main(["segment", "-m", "tiny-btcv", "-i", str(shared_data / CT_SERIES / "dicom"),
                 "-o", str(tmp_path / "ct.seg.nrrd"), "--dicom-seg", str(tmp_path / "seg.dcm"), "--home", str(home),
                 "--progress", "none"])
    assert code == OutputError.exit_code
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no SOPClassUID" in error[0]
    assert list(tmp_path.iterdir()) == []


# ---- a real MR series written from a shared BraTS case --------------------------------------------------------

def test_mri_series_written_from_tcga_fg_6692_flair(shared_data, home, tmp_path, one_torch_thread):
    """FLAIR as a DICOM MR series (the reference input), the other three as NIfTI: the outputs refer to the FLAIR
    series, with the BraTS terminology codes."""
    small = coarse_copy(brats_case_paths(shared_data, "tcga_fg_6692"), tmp_path / "nifti", spacing=6.0)
    flair = tmp_path / "flair_dicom"
    write_mr_series(sitk.ReadImage(str(small[0])), flair, seed="fg6692", patient="TCGA-FG-6692^")
    out = tmp_path / "out"
    segment_files("tiny-brats", [flair, *small[1:]], out / "case.seg.nrrd", labelmap=out / "case.nii.gz",
                  dicom_seg=out / "seg.dcm", dicom_rtstruct=out / "rt.dcm", home=home)
    source = read_source_series(flair)
    assert source.first.Modality == "MR"
    spec = load_catalog(home).get("tiny-brats")
    segments = segments_from_labels(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case.nii.gz"))), spec.labels)
    assert [s.type[1] for s in segments] == ["6574001", "79654002", "108369006"]
    assert_round_trip(out / "seg.dcm", out / "rt.dcm", source, segments, algorithm_of(spec))


# ---- without shared data: NIfTI inputs --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated_ct(tmp_path_factory) -> tuple[Path, Path]:
    """A small generated CT-like volume, as NIfTI and as the DICOM series it came from."""
    rng = np.random.default_rng(5)
    z, y, x = np.mgrid[:12, :40, :48]
    body = ((y - 20) / 16) ** 2 + ((x - 24) / 20) ** 2 < 1
    array = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, body.shape)
    array[body & (((y - 18) / 6) ** 2 + ((x - 18) / 7) ** 2 + ((z - 6) / 4) ** 2 < 1)] = 180.0
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((4.0, 4.0, 5.0))
    folder = tmp_path_factory.mktemp("generated_ct")
    write_mr_series(image, folder / "series", seed="generated-ct", description="CT-like")
    sitk.WriteImage(image, str(folder / "ct.nii.gz"))
    return folder / "ct.nii.gz", folder / "series"


def test_nifti_input_is_refused_with_the_reason_before_any_work(generated_ct, home, tmp_path, capsys):
    nifti, _ = generated_ct
    code = main(["segment", "-m", "tiny-btcv", "-i", str(nifti), "-o", str(tmp_path / "ct.seg.nrrd"),
                 "--dicom-rtstruct", str(tmp_path / "rt.dcm"), "--home", str(home), "--progress", "none"])
    assert code == OutputError.exit_code
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "not a DICOM series folder" in error[0] and "--dicom-reference" in error[0]
    code = main(["segment", "-m", "tiny-btcv", "-i", str(nifti), "-o", str(tmp_path / "ct.seg.nrrd"),
                 "--dicom-seg", str(tmp_path / "seg.dcm"), "--dicom-reference", str(tmp_path / "gone"),
                 "--home", str(home), "--progress", "none"])
    assert code == OutputError.exit_code and "gone does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_nifti_input_with_a_dicom_reference_series(generated_ct, home, tmp_path, one_torch_thread):
    nifti, series = generated_ct
    code = main(["segment", "-m", "tiny-btcv", "-i", str(nifti), "-o", str(tmp_path / "ct.seg.nrrd"),
                 "--labelmap", str(tmp_path / "ct.nii.gz"), "--dicom-seg", str(tmp_path / "seg.dcm"),
                 "--dicom-rtstruct", str(tmp_path / "rt.dcm"), "--dicom-reference", str(series),
                 "--home", str(home), "--progress", "none"])
    assert code == 0
    source = read_source_series(series)
    spec = load_catalog(home).get("tiny-btcv")
    segments = segments_from_labels(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct.nii.gz"))), spec.labels)
    assert_round_trip(tmp_path / "seg.dcm", tmp_path / "rt.dcm", source, segments, algorithm_of(spec))


def test_dicom_reference_without_a_dicom_output_is_an_option_error(generated_ct, home, tmp_path, capsys):
    nifti, series = generated_ct
    code = main(["segment", "-m", "tiny-btcv", "-i", str(nifti), "-o", str(tmp_path / "ct.seg.nrrd"),
                 "--dicom-reference", str(series), "--home", str(home), "--progress", "none"])
    assert code == 2
    assert "add --dicom-seg or --dicom-rtstruct" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_without_highdicom_the_install_command_is_named_before_any_work(generated_ct, home, tmp_path):
    """A Python where highdicom cannot be imported (as without the ``dicom`` extra): one line naming the install."""
    _, series = generated_ct
    script = ("import sys; sys.modules['highdicom'] = None; from glims.cli import main; "
              f"sys.exit(main(['segment', '-m', 'tiny-btcv', '-i', {str(series)!r}, '-o', {str(tmp_path / 'o.seg.nrrd')!r},"
              f" '--dicom-seg', {str(tmp_path / 'seg.dcm')!r}, '--home', {str(home)!r}, '--progress', 'none']))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == OutputError.exit_code
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "DICOM output needs highdicom" in lines[0] and "glims[dicom]" in lines[0]
    assert list(tmp_path.iterdir()) == []
