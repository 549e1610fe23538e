"""Names of result segmentations (and so of their export files): the case and the model version, file-safe."""

from __future__ import annotations

from GLIMSSegmenterLib.exportnames import safeFileName
from GLIMSSegmenterLib.naming import caseName, resultName


def test_the_case_is_what_the_input_volume_names_share():
    tcga = ["TCGA-FG-6692_fla_sri24_bet", "TCGA-FG-6692_t1c_sri24_bet", "TCGA-FG-6692_t1_sri24_bet",
            "TCGA-FG-6692_t2_sri24_bet"]
    assert caseName(tcga) == "TCGA-FG-6692"
    brats = ["BraTS-GLI-00001-000-t2f", "BraTS-GLI-00001-000-t1c", "BraTS-GLI-00001-000-t1n",
             "BraTS-GLI-00001-000-t2w"]
    assert caseName(brats) == "BraTS-GLI-00001-000"  # the shared "t" of t2f/t1c is not part of the case
    assert caseName(["example_ct_sm"]) == "example_ct_sm"  # one input: its name
    assert caseName(["flair", "t1ce", "t1", "t2"]) == "flair"  # nothing shared: the reference's name
    assert caseName(["Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"]) == "Flair_subtrMeanDivStd"
    assert caseName(["case7 flair", "case7 t1"]) == "case7"
    assert caseName([]) == ""


def test_a_result_is_named_after_the_case_and_the_model_version():
    tcga = ["TCGA-FG-6692_fla_sri24_bet", "TCGA-FG-6692_t1c_sri24_bet"]
    assert resultName(tcga, "glims-brats-synth", "1.4.0") == "TCGA-FG-6692_glims-brats-synth-1.4.0"
    assert resultName(["Patient 3: FLAIR (axial)"], "m", "2.0.1") == "Patient_3_FLAIR_axial_m-2.0.1"
    assert resultName(["", "  "], "m", "1.0.0") == "case_m-1.0.0"


def test_names_become_safe_file_names_never_paths():
    assert safeFileName("../../etc/passwd") == "etc_passwd"
    assert safeFileName("a\\b:c*?d") == "a_b_c_d"
    assert safeFileName("...") == "segment" and safeFileName("", fallback="x") == "x"
    assert safeFileName("BraTS-GLI-00001-000_tiny-brats-1.0.0") == "BraTS-GLI-00001-000_tiny-brats-1.0.0"
