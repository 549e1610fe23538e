"""The model catalog as the panel needs it: list, describe, match volumes to inputs, add and remove user models.

Reading the catalog (``glims.catalog``) imports no torch. Adding a model verifies the checkpoint by loading it into
the network, so that runs in an engine process (``glims models add``), as does removing one.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from glims.catalog import PRESET_NAMES

from .engine import MODULE_DIR, engineCommand, engineEnvironment
from .process import EngineProcess, ProcessState

__all__ = [
    "PRESETS",
    "loadCatalog",
    "PROJECT_URL",
    "taskTitle",
    "modelCardUrl",
    "shortLicence",
    "modelSummary",
    "modelSummaryText",
    "modelDetails",
    "modelChoiceText",
    "modelChoice",
    "matchVolumes",
    "userModelsFolder",
    "addUserModel",
    "removeUserModel",
    "ModelCommandError",
]

PROJECT_URL = "https://github.com/glims-segmenter/SlicerGLIMSSegmenter"
"""The project's home: documentation, model cards."""

PRESETS = PRESET_NAMES
"""Task presets a user checkpoint can be registered with (the engine's ``glims.catalog.PRESET_NAMES``)."""


class ModelCommandError(RuntimeError):
    """``glims models add/rm`` failed; the message is the engine's one-line explanation."""


def loadCatalog(glimsHome: str | os.PathLike | None = None):
    """Built-in and user models (``glims.catalog.Catalog``)."""
    from glims.catalog import load_catalog

    return load_catalog(glimsHome)


def shortLicence(text: str, limit: int = 48) -> str:
    """The licence's first sentence without asides in parentheses (e.g. ``Weights: CC BY 4.0``), at most
    ``limit`` characters."""
    first = re.split(r"(?<=[^.\s][.;])\s", text.strip(), maxsplit=1)[0].rstrip(".;")
    first = re.sub(r"\s*\([^()]*\)", "", first).strip() or first
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def taskTitle(spec) -> str:
    """What the model segments, from its task preset, e.g. ``Brain tumour (BraTS), 4-modality MRI``."""
    from glims.catalog import load_presets

    return load_presets().get(spec.preset, {}).get("title", spec.preset)


def modelCardUrl(spec) -> str:
    """Where the model card is: a local file when it is there (a checkout), else the project's copy online, or a
    URL given in the catalog; "" when the model has no card."""
    card = spec.model_card
    if not card:
        return ""
    if re.match(r"^https?://", card):
        return card
    path = Path(card)
    if path.is_absolute():
        return path.as_uri() if path.is_file() else ""
    local = MODULE_DIR.parent / path  # a built-in model's card is named from the repository root
    if local.is_file():
        return local.as_uri()
    return f"{PROJECT_URL}/blob/main/{path.as_posix()}" if spec.builtin else ""


def modelSummary(spec) -> str:
    """Three short rich-text lines under the model choice (whose item shows id and version): title; task and
    source; short licence and a link to the model card.

    The details (description, inputs, segments, whole licence) are in :func:`modelDetails`, the tooltip.
    """
    licence = f"Licence: {html.escape(shortLicence(spec.license))}"
    url = modelCardUrl(spec)
    if url:
        licence += f' · <a href="{html.escape(url, quote=True)}">model card</a>'
    lines = [f"<b>{html.escape(spec.title)}</b>", f"{html.escape(taskTitle(spec))} · {_source(spec)}", licence]
    return "<br>".join(lines)


def modelSummaryText(spec) -> str:
    """The summary as plain text, for a page without the model choice's id and version (the web app): title;
    id, version, task and source; short licence."""
    return "\n".join(
        [
            spec.title,
            f"{spec.id} version {spec.version} · {taskTitle(spec)} · {_source(spec)}",
            f"Licence: {shortLicence(spec.license)}",
        ]
    )


def _source(spec) -> str:
    return "built-in" if spec.builtin else "added by you"


def modelDetails(spec) -> str:
    """Everything the panel knows about a model, as plain text (the summary's tooltip)."""
    lines = [
        f"{spec.title} — {spec.ref}",
        "Inputs: " + ", ".join(i.title for i in spec.inputs),
        "Segments: " + ", ".join(label.name for label in spec.labels),
        f"Licence: {spec.license}",
    ]
    if spec.description:
        lines.insert(1, spec.description)
    return "\n".join(lines)


def modelChoiceText(spec) -> str:
    """A model's item in the model combo box, short enough to show whole: ``ID VERSION`` (the title is in the
    summary below it and in the item's tooltip)."""
    return f"{spec.id} {spec.version}"


def modelChoice(catalog, spec) -> str:
    """How the panel refers to a catalog entry: its id when it is the newest version, else ``ID@VERSION``.

    ``ID`` means "the newest version" to the catalog, so a model's newest version stays selected when it is
    fine-tuned again, and older versions remain selectable.
    """
    return spec.id if catalog.get(spec.id).version == spec.version else spec.ref


def matchVolumes(spec, volumeNodes: Sequence) -> dict[str, object]:
    """Input key -> volume node, assigned by the model's name patterns (unmatched inputs are absent).

    Each volume is used at most once; of volumes with the same name, the first counts.
    """
    from glims.catalog import match_inputs

    byName: dict[str, object] = {}
    for node in volumeNodes:
        byName.setdefault(node.GetName(), node)
    return {key: byName[name] for key, name in match_inputs(spec, list(byName)).items()}


def userModelsFolder(glimsHome: str | os.PathLike | None = None) -> Path:
    """Where user models (their weights and catalog) are kept."""
    from glims.catalog import user_catalog_path

    return user_catalog_path(glimsHome).parent


def _runModelsCommand(arguments: Sequence[str], glimsHome, env: Mapping[str, str] | None) -> list[str]:
    """Run ``glims models ...`` to completion; returns its log lines."""
    lines: list[str] = []
    process = EngineProcess(
        engineCommand(["models", *arguments]), env=engineEnvironment(env, glimsHome), onLog=lines.append
    )
    process.start()
    outcome = process.wait()
    if outcome.state is not ProcessState.SUCCEEDED:
        raise ModelCommandError(outcome.errorMessage)
    return lines


def addUserModel(
    weightsFile: str | os.PathLike,
    modelId: str,
    preset: str,
    glimsHome: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Verify, hash and register a checkpoint (e.g. the GLIMS authors' BraTS weights) as a user model.

    Returns:
        The engine's messages.

    Raises:
        ModelCommandError: the file is not a usable GLIMS checkpoint for that preset, or the id is taken.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {preset!r}")
    return _runModelsCommand(["add", str(weightsFile), "--id", modelId, "--preset", preset], glimsHome, env)


def removeUserModel(
    modelRef: str, glimsHome: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """Remove a user model (``ID`` = all its versions, ``ID@VERSION`` = one) and its weights.

    Raises:
        ModelCommandError: unknown or built-in model.
    """
    return _runModelsCommand(["rm", modelRef], glimsHome, env)
