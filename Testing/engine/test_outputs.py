"""Direct tests of ``glims.outputs``: staged writes that appear only on commit and vanish on failure, the checks that
no output overwrites an input or another output (however the path is spelt), the removal of abandoned temporary
files (glims's own only), and the one-line messages for failed writes. The command-line view of the same rules is in
``test_data_safety_paths.py``."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glims.errors import OutputError
from glims.outputs import (
    STALE_AFTER_S,
    OutputSet,
    check_output_folder,
    check_targets,
    describe_write_error,
    remove_stale_partials,
)


def _dead_pid() -> int:
    """The process id of a process that has ended."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(finished.stdout)


def _hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- OutputSet -----------------------------------------------------------------------------------------------


def test_a_staged_path_is_hidden_beside_its_target_and_keeps_the_whole_extension(tmp_path):
    outputs = OutputSet()
    staged = outputs.staged(tmp_path / "case.seg.nrrd")
    assert staged.parent == tmp_path
    assert re.fullmatch(rf"\.case\.partial-{os.getpid()}-[0-9a-f]{{8}}\.seg\.nrrd", staged.name), staged.name
    assert outputs.staged(tmp_path / "case.seg.nrrd") != staged  # each staging is its own file
    assert outputs.staged(tmp_path / "README").name.startswith(".README.partial-")
    outputs.discard()


def test_nothing_is_visible_at_the_targets_until_commit(tmp_path):
    targets = [tmp_path / "a.nii.gz", tmp_path / "b.json"]
    with OutputSet() as outputs:
        for target in targets:
            outputs.staged(target).write_text(target.name)
        assert not any(t.exists() for t in targets)
        assert outputs.commit() == targets
    assert [t.read_text() for t in targets] == ["a.nii.gz", "b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.json"]


def test_commit_replaces_an_existing_output_whole(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with OutputSet() as outputs:
        outputs.staged(target).write_text("new")
        assert target.read_text() == "old"
        outputs.commit()
    assert target.read_text() == "new"


def test_an_error_before_commit_removes_every_staged_file_and_writes_no_target(tmp_path):
    existing = tmp_path / "s.seg.nrrd"
    existing.write_text("the user's earlier result")
    with pytest.raises(RuntimeError, match="cancelled"), OutputSet() as outputs:
        outputs.staged(existing).write_text("half")
        outputs.staged(tmp_path / "r.json").write_text("half")
        outputs.staged(tmp_path / "never-written.txt")  # staged but not yet created: no error on cleanup
        raise RuntimeError("cancelled")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.seg.nrrd"]
    assert existing.read_text() == "the user's earlier result"


def test_discard_removes_staged_files_and_a_later_commit_writes_nothing(tmp_path):
    outputs = OutputSet()
    outputs.staged(tmp_path / "x.txt").write_text("x")
    outputs.discard()
    assert list(tmp_path.iterdir()) == []
    assert outputs.commit() == []
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_is_one_line_and_leaves_no_staged_file(tmp_path):
    (tmp_path / "b.json").mkdir()
    (tmp_path / "b.json" / "keep").write_text("a user's file inside a folder in the way")
    outputs = OutputSet()  # also without a with-block: commit cleans up after itself
    for name in ("a.txt", "b.json", "c.txt"):
        outputs.staged(tmp_path / name).write_text(name)
    with pytest.raises(OutputError, match=f"^cannot write {re.escape(str(tmp_path / 'b.json'))}: ") as err:
        outputs.commit()
    assert "\n" not in str(err.value)
    assert _hidden_files(tmp_path) == []
    assert not (tmp_path / "c.txt").exists()
    assert (tmp_path / "b.json" / "keep").read_text() == "a user's file inside a folder in the way"


# ---- check_targets -------------------------------------------------------------------------------------------


@pytest.fixture
def an_input(tmp_path, monkeypatch):
    """An input file t1.nii.gz in tmp_path (the working folder), with a symlink and a hard link to it."""
    source = tmp_path / "t1.nii.gz"
    source.write_bytes(b"input")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.nii.gz").symlink_to(source)
    os.link(source, tmp_path / "hard.nii.gz")
    monkeypatch.chdir(tmp_path)
    return source


@pytest.mark.parametrize(
    "spelling", ["t1.nii.gz", "./t1.nii.gz", "sub/../t1.nii.gz", "sub/./../t1.nii.gz", "link.nii.gz", "hard.nii.gz"]
)
def test_an_output_that_is_an_input_however_spelt_is_refused(an_input, spelling):
    with pytest.raises(OutputError) as err:
        check_targets({"segmentation": spelling}, [an_input])
    assert str(err.value) == (
        f"the segmentation {Path(spelling)} would overwrite the input {an_input}; choose another output"
    )
    assert an_input.read_bytes() == b"input"


def test_an_input_given_through_a_link_is_protected_too(an_input):
    with pytest.raises(OutputError, match="would overwrite the input link.nii.gz"):
        check_targets({"report": str(an_input)}, ["link.nii.gz"])


def test_an_output_inside_an_input_dicom_folder_is_refused(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    with pytest.raises(OutputError, match="the labelmap .* would overwrite the input"):
        check_targets({"labelmap": series / "seg.nii.gz"}, [series])
    # a sibling folder whose name merely starts with the input folder's name is not inside it
    check_targets({"labelmap": tmp_path / "series2" / "seg.nii.gz"}, [series])


def test_two_outputs_that_are_one_file_are_refused(an_input, tmp_path):
    with pytest.raises(OutputError) as err:
        check_targets({"segmentation": "out.seg.nrrd", "report": "sub/../out.seg.nrrd"}, [an_input])
    assert str(err.value) == (
        "the report and the segmentation are the same file (sub/../out.seg.nrrd); give each output its own file"
    )
    (tmp_path / "out.json").write_text("{}")
    (tmp_path / "alias.json").symlink_to(tmp_path / "out.json")
    with pytest.raises(OutputError, match="the probabilities and the report are the same file"):
        check_targets({"report": "out.json", "probabilities": "alias.json"}, [an_input])


def test_distinct_outputs_beside_the_inputs_pass_and_nothing_is_created(an_input, tmp_path):
    before = sorted(os.listdir(tmp_path))
    check_targets({"segmentation": "s.seg.nrrd", "report": "new/folder/s.json"}, [an_input])
    assert sorted(os.listdir(tmp_path)) == before


def test_an_output_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "result").mkdir()
    with pytest.raises(OutputError, match=f"^cannot write the report {re.escape(str(tmp_path / 'result'))}: it is a"):
        check_targets({"report": tmp_path / "result"}, [])


def test_an_output_below_a_file_or_a_broken_link_names_what_is_in_the_way(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(OutputError, match=f"{re.escape(str(afile))} is a file, not a folder"):
        check_targets({"segmentation": afile / "deeper" / "s.seg.nrrd"}, [])
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match=f"{re.escape(str(dangling))} is a broken symbolic link, not a folder"):
        check_targets({"segmentation": dangling / "s.seg.nrrd"}, [])
    assert afile.read_text() == "mine"


def test_check_output_folder_refuses_a_file_and_accepts_a_new_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(OutputError, match=f"^cannot use {re.escape(str(afile))} as the run folder: it is a file"):
        check_output_folder(afile, "run folder")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_folder(afile / "below", "run folder")
    check_output_folder(tmp_path / "new" / "folder", "run folder")
    assert not (tmp_path / "new").exists()


# ---- remove_stale_partials -----------------------------------------------------------------------------------


def test_only_abandoned_glims_partials_are_removed(tmp_path):
    dead = _dead_pid()
    now = 2_000_000_000.0
    abandoned = [
        f".s.partial-{dead}-0123abcd.seg.nrrd",
        f"..s.partial-{dead}-0123abcd.seg.nrrd.tmp1.seg.nrrd",  # an image writer's own temporary of ours
        f".report.partial-{dead}-89abcdef",  # a target without extension
        ".old.partial-deadbeef.json",  # no process id, older than STALE_AFTER_S
    ]
    kept = [
        f".s.partial-{os.getpid()}-00112233.seg.nrrd",  # a live writer (this process)
        ".fresh.partial-44556677.json",  # no process id, young: may be live
        f"s.partial-{dead}-0123abcd.seg.nrrd",  # not hidden: a user's file
        f".s.partial-{dead}-0123ABCD.seg.nrrd",  # not glims's lower-case hex
        f".s.partial-{dead}-0123abc.seg.nrrd",  # seven hex digits
        ".notes.partial-mine.txt",
        "t1.nii.gz",
    ]
    for name in abandoned + kept:
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, (now - 10, now - 10))
    os.utime(tmp_path / ".old.partial-deadbeef.json", (now - STALE_AFTER_S - 1, now - STALE_AFTER_S - 1))
    removed = remove_stale_partials(tmp_path, now=now)
    assert sorted(p.name for p in removed) == sorted(abandoned)
    assert all(p.parent == tmp_path for p in removed)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
    assert all((tmp_path / name).read_text() == name for name in kept)


def test_stale_partials_are_never_followed_through_links_nor_looked_for_below_the_folder(tmp_path):
    dead = _dead_pid()
    user_file = tmp_path / "precious.nii.gz"
    user_file.write_text("user data")
    link = tmp_path / f".s.partial-{dead}-0123abcd.nii.gz"
    link.symlink_to(user_file)
    folder_named_like_one = tmp_path / f".d.partial-{dead}-0123abcd"
    folder_named_like_one.mkdir()
    nested = tmp_path / "sub" / f".s.partial-{dead}-0123abcd.json"
    nested.parent.mkdir()
    nested.write_text("below")
    assert remove_stale_partials(tmp_path) == []
    assert link.is_symlink() and user_file.read_text() == "user data"
    assert folder_named_like_one.is_dir() and nested.read_text() == "below"


def test_a_partial_of_another_running_process_is_kept_until_it_ends(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        partial = tmp_path / f".s.partial-{sleeper.pid}-0123abcd.seg.nrrd"
        partial.write_text("being written")
        assert remove_stale_partials(tmp_path) == []
        assert partial.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_partials(tmp_path) == [partial]


def test_a_missing_folder_has_no_stale_partials(tmp_path):
    assert remove_stale_partials(tmp_path / "absent") == []


def test_a_staged_file_of_this_run_is_never_taken_for_an_abandoned_one(tmp_path):
    outputs = OutputSet()
    staged = outputs.staged(tmp_path / "s.seg.nrrd")
    staged.write_text("in progress")
    assert remove_stale_partials(tmp_path, now=1e12) == []
    outputs.discard()


# ---- describe_write_error ------------------------------------------------------------------------------------


def test_a_full_disk_says_so():
    err = describe_write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "/out/r.json")
    assert isinstance(err, OutputError)
    assert str(err) == "cannot write /out/r.json: the disk is full (nothing was written)"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EDQUOT])
def test_other_write_errors_give_the_system_reason(code):
    err = describe_write_error(OSError(code, os.strerror(code)), Path("/out/r.json"))
    assert str(err) == f"cannot write /out/r.json: {os.strerror(code)} (nothing was written)"


def test_a_write_error_without_a_reason_still_names_the_file():
    assert str(describe_write_error(OSError("odd failure"), "x.json")) == (
        "cannot write x.json: odd failure (nothing was written)"
    )
