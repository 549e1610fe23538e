"""The web app's server side without a browser: who needs a token, which upload names and files are accepted,
the session folder's removal, the command line's refusals, and where cases come from."""

from __future__ import annotations

import pytest

from glims.errors import InputError


def test_only_loopback_hosts_go_without_token():
    from GLIMSSegmenterWeb.security import isLocalHost

    assert all(isLocalHost(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(isLocalHost(h) for h in ("0.0.0.0", "::", "192.168.1.20", "gpu-server.example.org"))


@pytest.mark.parametrize("sent, kept", [
    ("case1_flair.nii.gz", "case1_flair.nii.gz"),
    ("BraTS/case1/case1_t1ce.nrrd", "case1_t1ce.nrrd"),  # a folder upload: the folder part is dropped
    ("../../etc/t2.nii", "t2.nii"),
    ("C:\\Users\\me\\t1.mha", "t1.mha"),
    ("export/series3/IM0001.dcm", "IM0001.dcm"),  # the slices of a DICOM series
])
def test_upload_names_lose_their_folders(sent, kept):
    from GLIMSSegmenterWeb.security import safeUploadName

    assert safeUploadName(sent) == kept


@pytest.mark.parametrize("sent", ["notes.txt", "scene.mrb", "..", "", ".hidden.nii.gz", "folder/", "run.sh"])
def test_upload_names_that_are_not_images_are_refused(sent):
    from GLIMSSegmenterWeb.security import safeUploadName

    with pytest.raises(InputError):
        safeUploadName(sent)


def test_a_file_without_image_header_is_refused(tmp_path):
    from GLIMSSegmenterWeb.security import checkImageFile

    fake = tmp_path / "t1.nii.gz"
    fake.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="not a readable image file"):
        checkImageFile(fake)


def test_session_folder_is_private_and_removed(tmp_path):
    from GLIMSSegmenterWeb.session import SessionFolder

    session = SessionFolder(str(tmp_path))
    (session.sub("upload") / "t1.nii.gz").write_bytes(b"x")
    assert session.root.stat().st_mode & 0o777 == 0o700
    session.fresh("upload")
    assert list(session.sub("upload").iterdir()) == []
    session.remove()
    assert not session.root.exists()
    assert tmp_path.exists()


def test_command_line_refuses_bad_options(tmp_path, capsys):
    from GLIMSSegmenterWeb.__main__ import parseArguments

    with pytest.raises(SystemExit):
        parseArguments(["--data", str(tmp_path / "missing")])
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parseArguments(["--demo-size", "8"])
    args = parseArguments([])
    assert (args.host, args.port, args.token) == ("127.0.0.1", 8080, None)


def test_data_folder_cases_hold_volumes_only(tmp_path):
    from GLIMSSegmenterWeb.cases import dataFolderCases, volumeName

    case = tmp_path / "case7"
    case.mkdir()
    for name in ("case7_flair.nii.gz", "case7_t1.nrrd", "case7_seg.nii.gz", "notes.txt"):
        (case / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    [found] = dataFolderCases(tmp_path)
    assert found.title == "case7"
    assert [p.name for p in found.files] == ["case7_flair.nii.gz", "case7_t1.nrrd"]
    assert [volumeName(p) for p in found.files] == ["case7_flair", "case7_t1"]


def test_data_folder_dicom_series_are_cases(tmp_path):
    from GLIMSSegmenterWeb.cases import dataFolderCases

    for folder in ("case8/dicom", "series9", "case8/dicom/too_deep"):
        (tmp_path / folder).mkdir(parents=True)
        for name in ("IM2.dcm", "IM1.DCM", "notes.txt"):
            (tmp_path / folder / name).write_bytes(b"")
    found = dataFolderCases(tmp_path)
    assert [(c.title, c.dicom) for c in found] == [("case8/dicom (DICOM series)", True), ("series9 (DICOM series)", True)]
    assert [p.name for p in found[0].files] == ["IM1.DCM", "IM2.dcm"]


def test_real_sample_case_is_offered_with_shared_data_and_matches_the_inputs(shared_data):
    from glims.catalog import load_catalog, match_inputs
    from GLIMSSegmenterWeb.cases import SAMPLE_TCGA, prepareSample, sampleCases, volumeName

    assert SAMPLE_TCGA in [c.caseId for c in sampleCases()]
    case = prepareSample(SAMPLE_TCGA, shared_data, 32)  # files used in place: nothing is written
    names = [volumeName(p) for p in case.files]
    spec = load_catalog().default("brats")
    assert match_inputs(spec, names) == dict(zip([i.key for i in spec.inputs], names))
