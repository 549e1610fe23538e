"""The panel's model manager glue, through the real ``glims models add/rm`` commands with real checkpoints."""

from __future__ import annotations

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
    summary = models.modelSummary(spec)
    assert "version 1.0.0 (added by you)" in summary and "Inputs: FLAIR, T1 contrast-enhanced" in summary
    assert f"Licence: {spec.license}" in summary
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
