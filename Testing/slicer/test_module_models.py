"""The panel's model manager glue, through the real ``glims models add/rm`` commands with real checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from GLIMSSegmenterLib import models


@pytest.fixture
def authors_checkpoint(tmp_path):
    """A checkpoint in the GLIMS authors' training format (tiny network, random weights)."""
    from glims.network import GLIMS
    from tiny_models import TINY_ARCH

    torch.manual_seed(1)
    net = GLIMS(in_channels=4, out_channels=3, **TINY_ARCH)
    path = tmp_path / "model_best.pt"
    torch.save({"state_dict": net.state_dict(), "epoch": 7, "best_acc": np.float64(0.81)}, path)
    return path


def test_add_list_and_remove_a_user_model(authors_checkpoint, tmp_path):
    home = tmp_path / "home"
    lines = models.addUserModel(authors_checkpoint, "authors-brats", "brats", glimsHome=home)
    assert any(line.startswith("registered authors-brats@1.0.0 (brats, sha256 ") for line in lines)
    spec = models.loadCatalog(home).get("authors-brats")
    assert not spec.builtin and [i.key for i in spec.inputs] == ["flair", "t1ce", "t1", "t2"]
    assert models.modelChoiceText(spec) == "authors-brats 1.0.0"
    assert "added by you" in models.modelSummary(spec) and "model card" not in models.modelSummary(spec)
    details = models.modelDetails(spec)
    assert "authors-brats@1.0.0" in details and "Inputs: FLAIR, T1 contrast-enhanced" in details
    assert f"Licence: {spec.license}" in details
    assert spec.weights[0].path.parent == models.userModelsFolder(home)

    assert models.removeUserModel("authors-brats", glimsHome=home) == ["removed authors-brats@1.0.0"]
    assert "authors-brats" not in models.loadCatalog(home).ids()
    assert not spec.weights[0].path.exists()


def test_a_file_that_is_not_a_checkpoint_is_refused_with_the_engines_reason(tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(models.ModelCommandError) as error:
        models.addUserModel(junk, "junk", "brats", glimsHome=tmp_path / "home")
    assert "notes.pt" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(models.ModelCommandError, match="no user model"):
        models.removeUserModel("junk", glimsHome=tmp_path / "home")
    with pytest.raises(ValueError, match="preset"):
        models.addUserModel(junk, "junk", "lungs", glimsHome=tmp_path / "home")


def test_the_model_summary_is_three_short_lines_and_the_details_are_in_its_tooltip():
    spec = models.loadCatalog().get("glims-brats-synth")  # the bundled model: long title, description, licence
    summary = models.modelSummary(spec)
    lines = summary.split("<br>")
    assert len(lines) == 3 and len(summary) < 600
    assert lines[0] == f"<b>{spec.title}</b>"
    assert lines[1] == "Brain tumour (BraTS), 4-modality MRI · built-in"
    assert lines[2].startswith("Licence: Weights: CC BY 4.0 · <a href=")
    assert spec.description not in summary and "Inputs:" not in summary
    url = models.modelCardUrl(spec)
    assert url.endswith("/docs/model_card_glims_brats_synth.md") and f'href="{url}"' in summary
    if url.startswith("file:"):  # a checkout: the card itself
        assert Path(url[len("file://"):]).is_file()
    details = models.modelDetails(spec)
    assert spec.description in details and spec.license in details and spec.ref in details
    assert "Segments: Necrotic tumour core (NCR), Peritumoral edema (ED), Enhancing tumour (ET)" in details


def test_the_plain_text_summary_names_the_version_and_has_no_markup():
    spec = models.loadCatalog().get("glims-brats-synth")
    lines = models.modelSummaryText(spec).split("\n")
    assert lines == [spec.title, f"glims-brats-synth version {spec.version} · Brain tumour (BraTS), 4-modality MRI · "
                     "built-in", "Licence: Weights: CC BY 4.0"]


def test_a_short_licence_is_the_first_sentence_without_asides():
    assert models.shortLicence("Weights: CC BY 4.0 (X developers). Training data: TCIA, CC BY 3.0.") == (
        "Weights: CC BY 4.0")
    assert models.shortLicence("Test weights (random), no licence needed") == "Test weights, no licence needed"
    assert models.shortLicence("MIT") == "MIT"
    long = models.shortLicence("Research use only, " + "with conditions " * 10)
    assert len(long) == 48 and long.endswith("…")
