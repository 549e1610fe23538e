"""Data safety of names, deletions and outputs (docs/ERRORS.md, "Data safety" rows): a user-given name never becomes
a path, glims deletes only what it created inside its home, no output overwrites an input, built-in ids are
reserved and the default model changes only when the user says so, and every failure is one line with a
documented exit code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glims.catalog import load_catalog
from glims.cli import main
from glims.errors import ConfigError, InternalError, OutputError
from glims.paths import OWNED_MARKER, check_name, make_owned_dir, remove_owned

from tiny_models import register_tiny_model

REPO = Path(__file__).resolve().parents[2]
KEYS = ("flair", "t1ce", "t1", "t2")


# ---- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory) -> Path:
    """A glims home with the tiny BraTS model, shared by the tests that do not change it."""
    home = tmp_path_factory.mktemp("shared_home")
    register_tiny_model(home, "brats")
    return home


@pytest.fixture
def world(tmp_path) -> dict[str, Path]:
    """A glims home (with the tiny model) inside ``tmp_path``, beside a sentinel folder glims must never touch."""
    home = tmp_path / "nest" / "home"
    home.mkdir(parents=True)
    register_tiny_model(home, "brats")
    sentinel = tmp_path / "nest" / "sentinel"
    sentinel.mkdir()
    (sentinel / "precious.txt").write_text("user data")
    return {"root": tmp_path, "home": home, "sentinel": sentinel}


def snapshot_outside(root: Path, home: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` except those inside ``home``, with file contents (None for folders)."""
    found = {}
    for path in root.rglob("*"):
        if path == home or home in path.parents:
            continue
        found[str(path)] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return found


def volumes(folder: Path, names=KEYS, size: int = 40) -> list[Path]:
    """Small generated co-registered volumes named like a BraTS 2021 case."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for name in names:
        array = np.zeros((size, size, size), np.float32)
        array[8:32, 8:32, 8:32] = rng.uniform(100, 500, (24, 24, 24))
        paths.append(folder / f"case_{name}.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(array), str(paths[-1]))
    return paths


def label_for(reference: Path, path: Path) -> Path:
    array = np.zeros(sitk.GetArrayViewFromImage(sitk.ReadImage(str(reference))).shape, np.uint8)
    array[12:20, 12:20, 12:20] = 2
    array[14:18, 14:18, 14:18] = 1
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(sitk.ReadImage(str(reference)))
    sitk.WriteImage(image, str(path))
    return path


def one_error_line(capsys, code: int, expected_code: int, *fragments: str) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert code == expected_code, err
    assert len(err) == 1 and err[0].startswith("glims: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    return err[0]


def glims_process(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "GLIMSSegmenter"), "GLIMS_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "glims", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def segment_args(home: Path, inputs: list[Path | str], out: Path | str, *extra: str) -> list[str]:
    args = ["segment", "-m", "tiny-brats", "--home", str(home), "-o", str(out), "--progress", "none", *extra]
    for path in inputs:
        args += ["-i", str(path)]
    return args


# ---- one rule for names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["site-a", "Site_2.v3", "a", "x" * 64])
def test_valid_names_pass_the_name_rule(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/../..", "/tmp/x", "a/b", "a\\b", "a b", ".hidden",
                                  "trailing.", "a..b", "évian", "名前", "x" * 65, "nul", "CON.txt", "-rf", "a\0b"])
def test_hostile_names_fail_the_name_rule_with_one_line(name):
    with pytest.raises(ConfigError) as info:
        check_name(name, "model id")
    assert "\n" not in str(info.value) and str(info.value).startswith("invalid model id")


def _name_commands(name: str, world: dict[str, Path], files: list[Path], label: Path) -> list[list[str]]:
    """Every command line that takes a name, with ``name`` in the name's place."""
    home = str(world["home"])
    adds = [f"{key}={path}" for key, path in zip(KEYS, files)]
    return [
        ["finetune", "--progress", "none", "-m", "tiny-brats", "--name", name, "--epochs", "1", "--home", home],
        ["cases", "--home", home, "add", *sum((["-i", a] for a in adds), []), "-l", str(label), "--id", name],
        ["cases", "--home", home, "rm", name],
        ["models", "--home", home, "add", str(files[0]), "--id", name, "--preset", "brats"],
        ["models", "--home", home, "rm", name],
        ["models", "--home", home, "default", name],
    ]


HOSTILE = {
    "relative": lambda w: "../sentinel",
    "relative-deep": lambda w: "../../nest/sentinel",
    "absolute": lambda w: str(w["sentinel"]),
    "nested": lambda w: "a/../..",
    "dotdot": lambda w: "..",
    "unicode": lambda w: "säte-ß",
    "very-long": lambda w: "v" * 300,
    "empty": lambda w: "",
    "spaces": lambda w: "a b",
    "hidden": lambda w: ".glims-owned",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_names_are_refused_on_every_command_and_nothing_outside_the_home_changes(kind, world, capsys):
    files = volumes(world["root"] / "inputs")
    label = label_for(files[0], world["root"] / "inputs" / "label.nii.gz")
    name = HOSTILE[kind](world)
    before = snapshot_outside(world["root"], world["home"])
    for args in _name_commands(name, world, files, label):
        code = main(args)
        line = one_error_line(capsys, code, ConfigError.exit_code, "invalid")
        assert repr(name)[:20].strip("'") in line or kind == "very-long", line
    assert snapshot_outside(world["root"], world["home"]) == before
    assert (world["sentinel"] / "precious.txt").read_text() == "user data"


def test_finetune_name_that_is_a_path_does_not_delete_a_folder_outside_the_home(world, capsys):
    # the run folder of --name ../../v would be <home>/finetune/../../v-1.0.0, i.e. beside the home
    victim = world["home"].parent / "v-1.0.0"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    for name in ("../../v", str(world["home"].parent / "v"), "a b"):
        code = main(["finetune", "--progress", "none", "-m", "tiny-brats", "--name", name, "--epochs", "1",
                     "--home", str(world["home"])])
        one_error_line(capsys, code, 2, "invalid model name")
    assert (victim / "keep.txt").read_text() == "keep"
    assert not (world["home"] / "finetune").exists()


def test_cases_rm_of_a_path_deletes_nothing(world, capsys):
    victim = world["home"].parent / "victim"
    victim.mkdir()
    (victim / "case.json").write_text("{}")
    for case_id in ("../../victim", str(victim), "../victim"):
        code = main(["cases", "--home", str(world["home"]), "rm", case_id])
        one_error_line(capsys, code, 2, "invalid case id")
    assert (victim / "case.json").is_file()


def test_symlinks_inside_the_home_pointing_outside_are_never_followed_for_deletion(world, capsys):
    home, sentinel = world["home"], world["sentinel"]
    (sentinel / OWNED_MARKER).write_text("a marker copied by hand")  # even a marker outside does not count
    (sentinel / "case.json").write_text("{}")
    (home / "cases").mkdir()
    (home / "cases" / "evil").symlink_to(sentinel, target_is_directory=True)
    code = main(["cases", "--home", str(home), "rm", "evil"])
    one_error_line(capsys, code, 3, "no case 'evil'")
    # a fine-tuning run folder that is a link outside: the killed-run clean-up refuses to follow it
    (home / "finetune").mkdir()
    (home / "finetune" / "evil-1.0.0").symlink_to(sentinel, target_is_directory=True)
    code = main(["finetune", "--progress", "none", "-m", "tiny-brats", "--name", "evil", "--epochs", "1",
                 "--home", str(home)])
    one_error_line(capsys, code, OutputError.exit_code, "refusing to delete", "symbolic link")
    assert (sentinel / "precious.txt").read_text() == "user data"
    with pytest.raises(OutputError, match="symbolic link"):
        remove_owned(home / "cases" / "evil", home)
    assert sentinel.is_dir()


def test_remove_owned_deletes_only_marked_folders_inside_the_home(world):
    home = world["home"]
    with pytest.raises(OutputError, match="not inside the glims home"):
        remove_owned(world["sentinel"], home)
    with pytest.raises(OutputError, match="not inside the glims home"):
        remove_owned(home / ".." / "sentinel", home)
    unmarked = home / "cases" / "hand-made"
    unmarked.mkdir(parents=True)
    with pytest.raises(OutputError, match="glims did not create it"):
        remove_owned(unmarked, home)
    with pytest.raises(OutputError, match="not inside"):
        remove_owned(home, home)  # never the home itself
    made = make_owned_dir(home / "finetune" / "run-1.0.0", home)
    (made / "weights.bin").write_bytes(b"0")
    remove_owned(made, home)
    assert not made.exists() and unmarked.is_dir() and (world["sentinel"] / "precious.txt").is_file()


# ---- outputs never overwrite inputs --------------------------------------------------------------------------


def _spellings(target: Path, workdir: Path) -> dict[str, str]:
    """Other names of ``target``: ``./``, ``..``, a symlink and a hard link (all relative to ``workdir``)."""
    (workdir / "sub").mkdir(exist_ok=True)
    link = workdir / "link.nii.gz"
    if not link.exists():
        link.symlink_to(target)
    hard = workdir / "hard.nii.gz"
    if not hard.exists():
        os.link(target, hard)
    return {"same": str(target), "dot": f"./{target.name}", "dotdot": f"sub/../{target.name}", "symlink": link.name,
            "hardlink": hard.name}


@pytest.mark.parametrize("flag", ["-o", "--labelmap", "--report", "--probabilities"])
def test_an_output_that_is_an_input_is_refused_before_any_work(flag, tiny_home, tmp_path, monkeypatch, capsys):
    inputs = volumes(tmp_path)
    originals = {p: p.read_bytes() for p in inputs}
    monkeypatch.chdir(tmp_path)
    for spelling, name in _spellings(inputs[2], tmp_path).items():
        args = segment_args(tiny_home, inputs, tmp_path / "s.seg.nrrd") if flag != "-o" else \
            segment_args(tiny_home, inputs, name)
        if flag != "-o":
            args += [flag, name]
        code = main(args)
        one_error_line(capsys, code, OutputError.exit_code, "would overwrite the input")
        assert all(p.read_bytes() == data for p, data in originals.items()), spelling
    assert not (tmp_path / "s.seg.nrrd").exists() and not list(tmp_path.glob(".*partial*"))


def test_two_outputs_that_are_one_file_are_refused(tiny_home, tmp_path, capsys):
    inputs = volumes(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    code = main(segment_args(tiny_home, inputs, out / "s.seg.nrrd", "--report", str(out / "x" / ".." / "s.seg.nrrd")))
    one_error_line(capsys, code, OutputError.exit_code, "the report and the segmentation are the same file")
    code = main(segment_args(tiny_home, inputs, out / "s.seg.nrrd", "--labelmap", str(out / "l.nii.gz"),
                             "--probabilities", str(out / "l.nii.gz")))
    one_error_line(capsys, code, OutputError.exit_code, "the probabilities and the labelmap are the same file")
    assert list(out.iterdir()) == []


def test_an_output_below_a_file_says_that_the_folder_is_a_file(tiny_home, tmp_path, capsys):
    inputs = volumes(tmp_path / "in")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out in (afile / "x.seg.nrrd", afile / "deeper" / "x.seg.nrrd"):
        code = main(segment_args(tiny_home, inputs, out))
        one_error_line(capsys, code, OutputError.exit_code, f"{afile} is a file, not a folder")
    assert afile.read_text() == "not a folder"


def test_stale_partial_files_of_a_killed_run_are_removed_by_the_next_run(tiny_home, tmp_path, capsys):
    inputs = volumes(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)  # a process that has ended: its temporary files are abandoned
    stale = [out / f".s.partial-{dead_pid}-0123abcd.seg.nrrd",
             out / f"..s.partial-{dead_pid}-0123abcd.seg.nrrd.x1.seg.nrrd",  # an image writer's own temporary
             out / ".r.partial-89abcdef.json"]
    for path in stale:
        path.write_bytes(b"half")
    os.utime(stale[-1], (1e9, 1e9))  # a temporary file of an older glims (no process id), years old
    kept = [out / f".s.partial-{os.getpid()}-00112233.seg.nrrd",  # a live writer's
            out / ".notes.partial-mine.txt",  # not glims's pattern
            out / ".r.partial-44556677.json"]  # no process id and fresh: may be live
    for path in kept:
        path.write_bytes(b"not stale")
    code = main(segment_args(tiny_home, inputs, out / "s.seg.nrrd"))
    capsys.readouterr()
    assert code == 0
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"not stale" for p in kept)
    assert (out / "s.seg.nrrd").is_file() and (out / "s.json").is_file()


def _can_mount_tmpfs(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs '{folder}'"],
                           capture_output=True)
    return probe.returncode == 0


def test_a_full_disk_while_writing_the_report_is_one_line_and_leaves_nothing(tiny_home, tmp_path):
    inputs = volumes(tmp_path / "in")
    out, full = tmp_path / "out", tmp_path / "full"
    out.mkdir()
    full.mkdir()
    if not _can_mount_tmpfs(full):
        pytest.skip("cannot mount a small tmpfs in a user namespace here (unshare -r -m)")
    # a 16 kB file system, filled up: the report is the only output written there
    glims = " ".join([sys.executable, "-m", "glims", *segment_args(tiny_home, inputs, out / "s.seg.nrrd",
                                                                    "--report", str(full / "r.json"))])
    script = (f"mount -t tmpfs -o size=16k tmpfs '{full}' "
              f"&& (head -c 1000000 /dev/zero > '{full}/filler' 2>/dev/null; true) "
              f"&& {glims}; echo \"exit=$?\"; ls -A '{full}' '{out}'")
    env = {**os.environ, "PYTHONPATH": str(REPO / "GLIMSSegmenter")}
    proc = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert f"exit={OutputError.exit_code}" in proc.stdout, (proc.stdout, proc.stderr)
    assert len(err) == 1 and err[0].startswith("glims: error: cannot write") and "disk is full" in err[0], err
    listing = proc.stdout.split("exit=")[1].splitlines()[1:]
    assert [line for line in listing if line and not line.endswith(":")] == ["filler"], listing


# ---- built-in ids, the default model, channels ---------------------------------------------------------------


def _tiny_checkpoint(folder: Path, out_channels: int = 3) -> Path:
    import torch

    from glims.checkpoint import save_checkpoint
    from glims.network import GLIMS
    from tiny_models import TINY_ARCH

    torch.manual_seed(0)
    net = GLIMS(in_channels=4, out_channels=out_channels, **TINY_ARCH)
    meta = save_checkpoint(folder / f"tiny-{out_channels}", net.state_dict(), {"name": "GLIMS", **net.config.to_dict()})
    return meta.with_suffix(".safetensors")


def test_a_builtin_model_id_is_reserved(tmp_path, capsys):
    home = tmp_path / "home"
    weights = _tiny_checkpoint(tmp_path)
    builtin = load_catalog(home).default("brats")
    code = main(["models", "--home", str(home), "add", str(weights), "--id", builtin.id, "--preset", "brats"])
    one_error_line(capsys, code, 2, f"{builtin.id} is the id of a built-in model (reserved)")
    assert load_catalog(home).default("brats").ref == builtin.ref
    assert not list((home / "models").glob("*.safetensors")) if (home / "models").exists() else True


def test_a_user_entry_never_makes_itself_the_default_or_takes_a_builtin_id(tmp_path, capsys):
    home = tmp_path / "home"
    register_tiny_model(home, "brats", model_id="mine")
    builtin = load_catalog(home).default("brats")
    path = home / "models" / "catalog.json"
    document = json.loads(path.read_text())
    document["models"][0]["default"] = True  # hand-edited
    path.write_text(json.dumps(document))
    assert load_catalog(home).default("brats").ref == builtin.ref
    document["models"].append({**document["models"][0], "id": builtin.id, "version": "99.0.0"})
    path.write_text(json.dumps(document))
    code = main(["models", "--home", str(home)])
    one_error_line(capsys, code, 2, "takes the id of a built-in model", f"glims models rm {builtin.id}@99.0.0")
    assert main(["models", "--home", str(home), "rm", f"{builtin.id}@99.0.0"]) == 0
    assert load_catalog(home).default("brats").ref == builtin.ref


def test_the_default_model_changes_only_when_the_user_chooses_it(tmp_path, capsys):
    home = tmp_path / "home"
    register_tiny_model(home, "brats", model_id="mine")
    builtin = load_catalog(home).default("brats")
    assert builtin.builtin
    assert main(["models", "--home", str(home), "default", "mine"]) == 0
    assert load_catalog(home).default("brats").ref == "mine@1.0.0"
    listing = capsys.readouterr().out
    assert main(["models", "--home", str(home)]) == 0
    listing = capsys.readouterr().out
    assert "*mine@1.0.0" in listing and f"*{builtin.ref}" not in listing
    assert main(["models", "--home", str(home), "default", "--reset"]) == 0
    assert load_catalog(home).default("brats").ref == builtin.ref
    assert main(["models", "--home", str(home), "default", "mine"]) == 0
    assert main(["models", "--home", str(home), "rm", "mine"]) == 0  # removing it goes back to the built-in one
    assert load_catalog(home).default("brats").ref == builtin.ref
    code = main(["models", "--home", str(home), "default", "nothing-here"])
    one_error_line(capsys, code, 2, "unknown model 'nothing-here'")


def test_models_help_says_how_to_choose_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["models", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "glims models default ID" in text and "built-in" in text and "--reset" in text


def test_a_checkpoint_whose_outputs_do_not_match_the_preset_is_refused(tmp_path, capsys):
    home = tmp_path / "home"
    weights = _tiny_checkpoint(tmp_path, out_channels=5)
    code = main(["models", "--home", str(home), "add", str(weights), "--id", "five", "--preset", "brats"])
    one_error_line(capsys, code, 2, "gives 5 output channels; preset brats needs 3")
    assert "five" not in load_catalog(home).ids()


def test_a_hand_edited_entry_whose_outputs_do_not_match_its_task_is_refused(tmp_path, capsys):
    home = tmp_path / "home"
    register_tiny_model(home, "brats", model_id="mine")
    path = home / "models" / "catalog.json"
    document = json.loads(path.read_text())
    document["models"][0]["architecture"]["out_channels"] = 5
    path.write_text(json.dumps(document))
    code = main(["models", "--home", str(home)])
    one_error_line(capsys, code, 2, "5 output channels; its task (brats) has 3")


# ---- options are checked before any training ----------------------------------------------------------------


@pytest.mark.parametrize("option", [("--lr", "nan"), ("--lr", "0"), ("--lr=-1e-4",), ("--lr", "inf"),
                                    ("--epochs", "0"), ("--minutes", "nan"), ("--minutes=-1",),
                                    ("--val-fraction", "1.5"), ("--replay-fraction", "0"),
                                    ("--steps-per-epoch", "0"), ("--threads", "0"), ("--patience=-2",),
                                    ("--warmup-steps=-1",), ("--ema-decay", "1")])
def test_finetune_options_are_checked_before_any_work(option, world, capsys):
    code = main(["finetune", "--progress", "none", "-m", "tiny-brats", "--name", "site", "--epochs", "1",
                 "--home", str(world["home"]), *option])
    one_error_line(capsys, code, 2)
    runs = world["home"] / "finetune"
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("option", [("--lr", "nan"), ("--lr", "0"), ("--epochs", "0"), ("--weight-decay", "nan"),
                                    ("--minutes", "inf"), ("--val-every", "0"), ("--threads", "0"),
                                    ("--spacing=-1",)])
def test_train_options_are_checked_before_any_work(option, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--progress", "none", "--cases", str(tmp_path), "--out", str(run), "--epochs", "1", *option])
    one_error_line(capsys, code, 2)
    assert not run.exists()


def test_train_out_that_is_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile, afile / "run"):
        code = main(["train", "--progress", "none", "--cases", str(tmp_path), "--out", str(out), "--epochs", "1"])
        one_error_line(capsys, code, OutputError.exit_code, "is a file")
    assert afile.read_text() == "mine"


# ---- every failure is a message ------------------------------------------------------------------------------


def test_a_user_catalog_that_is_not_utf8_is_one_line_also_as_a_json_event(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "catalog.json").write_bytes(b'{"catalog_version": 1, "models": [\xff\xfe]}')
    code = main(["models", "--home", str(home)])
    one_error_line(capsys, code, 2, "is not UTF-8 text")
    inputs = volumes(tmp_path / "in")
    code = main([*segment_args(home, inputs, tmp_path / "s.seg.nrrd")[:-len(inputs) * 2 - 2], "--progress", "json",
                 *sum((["-i", str(p)] for p in inputs), [])])
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert code == 2 and events[-1]["type"] == "error" and "not UTF-8" in events[-1]["message"]
    assert events[-1]["exit_code"] == 2 and len(captured.err.strip().splitlines()) == 1


def test_one_corrupt_case_record_is_named_and_the_others_still_listed(world, capsys):
    from glims.casestore import add_case

    home = world["home"]
    for case_id in ("good", "bad"):
        files = volumes(world["root"] / case_id)
        add_case("brats", dict(zip(KEYS, files)), label_for(files[0], world["root"] / case_id / "l.nii.gz"),
                 case_id=case_id, home=home)
    (home / "cases" / "bad" / "case.json").write_bytes(b"\x00\xff{ not json")
    code = main(["cases", "--home", str(home), "list"])
    captured = capsys.readouterr()
    assert code == 3
    assert "good" in captured.out and "bad" in captured.out and "BROKEN" in captured.out
    assert captured.err.strip().splitlines() == ["glims: error: 1 broken case(s) in the training set: bad (see above)"]
    code = main(["finetune", "--progress", "none", "-m", "tiny-brats", "--name", "site", "--epochs", "1",
                 "--home", str(home)])
    one_error_line(capsys, code, 3, "case bad in the training set is broken", "glims cases rm bad")
    assert main(["cases", "--home", str(home), "rm", "bad"]) == 0
    capsys.readouterr()
    assert main(["cases", "--home", str(home), "list"]) == 0


def test_a_damaged_run_record_in_the_home_is_one_line(world, capsys):
    runs = world["home"] / "finetune"
    run = make_owned_dir(runs / "site-1.0.0", world["home"])
    (run / "state.pt").write_bytes(b"x")
    (run / "config.json").write_bytes(b"\xff\xff")
    code = main(["finetune", "--progress", "none", "-m", "tiny-brats", "--name", "site", "--epochs", "1",
                 "--resume", "--home", str(world["home"])])
    one_error_line(capsys, code, 2, "is not UTF-8 text")


def test_an_unexpected_exception_is_one_line_with_the_internal_error_code(monkeypatch, capsys):
    """glims has no known fault to trigger, so one is injected into a command: the last-resort handler is what is
    tested, in both output modes and with --debug."""
    from glims.commands import info

    def broken(args, ui):
        raise KeyError("something\nglims did not expect")

    monkeypatch.setattr(info, "run", broken)
    code = main(["info"])
    line = one_error_line(capsys, code, InternalError.exit_code, "internal error: KeyError", "--debug")
    assert "Traceback" not in line
    code = main(["--debug", "info"])
    captured = capsys.readouterr()
    assert code == InternalError.exit_code and "Traceback" in captured.err
    assert captured.err.strip().splitlines()[-1].startswith("glims: error: internal error: KeyError")


def test_an_unexpected_exception_in_json_mode_is_an_error_event(tiny_home, tmp_path, monkeypatch, capsys):
    from glims import pipeline

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(pipeline, "segment_files", broken)
    inputs = volumes(tmp_path)
    args = segment_args(tiny_home, inputs, tmp_path / "s.seg.nrrd")
    args[args.index("none")] = "json"
    code = main(args)
    captured = capsys.readouterr()
    event = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 70 and event["type"] == "error" and event["exit_code"] == 70
    assert event["error"] == "InternalError" and "ZeroDivisionError" in event["message"]
    assert len(captured.err.strip().splitlines()) == 1


def test_a_usage_error_in_json_mode_is_also_an_error_event(capsys):
    code = main(["segment", "--progress", "json", "-i", "x.nii.gz"])
    captured = capsys.readouterr()
    event = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 2 and event["type"] == "error" and "required" in event["message"]
    assert captured.err.strip().splitlines()[-1].startswith("glims segment: error:")


def test_a_case_stored_before_folders_were_marked_can_still_be_removed(world, capsys):
    from glims.casestore import add_case

    home = world["home"]
    files = volumes(world["root"] / "old")
    add_case("brats", dict(zip(KEYS, files)), label_for(files[0], world["root"] / "old" / "l.nii.gz"),
             case_id="old", home=home)
    (home / "cases" / "old" / OWNED_MARKER).unlink()  # as an earlier glims version left it
    stranger = home / "cases" / "stranger"  # a folder of the store without a case record is not glims's
    stranger.mkdir()
    (stranger / "notes.txt").write_text("kept")
    assert main(["cases", "--home", str(home), "rm", "old"]) == 0
    assert not (home / "cases" / "old").exists()
    code = main(["cases", "--home", str(home), "rm", "stranger"])
    one_error_line(capsys, code, 6, "glims did not create it")
    assert (stranger / "notes.txt").read_text() == "kept"
