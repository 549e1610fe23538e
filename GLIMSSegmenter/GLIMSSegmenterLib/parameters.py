"""The module's parameter node, read and written without Qt.

In Slicer the widget wraps the same ``vtkMRMLScriptedModuleNode`` with ``@parameterNodeWrapper``
(``GLIMSSegmenterParameterNode`` in ``GLIMSSegmenter.py``, same field names and types as ``PARAMETER_TYPES``) to
bind it to the panel. This class stores values exactly as that wrapper's serializers do (str as is, float as
``str(value)``, bool as ``"True"``/``"False"``, a node as an empty parameter plus a node reference of the same
name), so scripts, the logic and the panel share one parameter node and it is saved with the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glims.runoptions import OptionKind, RunOption

from .runoptions import PANEL_OPTIONS, addOptionFields, optionChoices

__all__ = ["INPUT_SLOTS", "PARAMETER_TYPES", "SegmentationParameters"]

INPUT_SLOTS = 4
"""Volume selectors in the panel: the most inputs a model may have (BraTS: 4)."""

PARAMETER_TYPES: dict[str, str] = {
    "modelId": "str",
    **{f"inputVolume{slot}": "vtkMRMLScalarVolumeNode" for slot in range(1, INPUT_SLOTS + 1)},
    "outputSegmentation": "vtkMRMLSegmentationNode",
    **{option.name: option.parameter_type for option in PANEL_OPTIONS},
}
"""Field name -> type of every parameter (the widget's ``@parameterNodeWrapper`` class declares the same): the
model, its inputs, the output and the run options of ``GLIMSSegmenterLib.runoptions.PANEL_OPTIONS``."""


@dataclass
@addOptionFields()
class SegmentationParameters:
    """What one segmentation run needs, as chosen in the panel or by a script.

    Besides these fields, one per run option the panel offers (``GLIMSSegmenterLib.runoptions.PANEL_OPTIONS``):
    ``device`` (``auto``), ``overlap`` (None: the model's own, its catalog entry's), ``testTimeFlips`` and
    ``wholeImage`` (off).
    """

    modelId: str = ""
    inputVolumes: list = field(default_factory=lambda: [None] * INPUT_SLOTS)
    """Volume node per model input, in the catalog's input order (None where not selected)."""
    outputSegmentation: object = None
    """An existing segmentation node to replace, or None for a new node."""

    @classmethod
    def fromParameterNode(cls, parameterNode) -> SegmentationParameters:
        """Read the parameters; those not set (or not valid) keep their defaults."""
        params = cls()
        if parameterNode.GetParameter("modelId"):
            params.modelId = parameterNode.GetParameter("modelId")
        for option in PANEL_OPTIONS:
            text = parameterNode.GetParameter(option.name)
            if text:
                setattr(params, option.name, _readValue(option, text, getattr(params, option.name)))
        params.inputVolumes = [
            parameterNode.GetNodeReference(f"inputVolume{slot}") for slot in range(1, INPUT_SLOTS + 1)
        ]
        params.outputSegmentation = parameterNode.GetNodeReference("outputSegmentation")
        return params

    def optionValues(self) -> dict[str, object]:
        """Run option name -> value, for every option the panel offers."""
        return {option.name: getattr(self, option.name) for option in PANEL_OPTIONS}

    def writeToParameterNode(self, parameterNode) -> None:
        """Store every parameter (one Modified event).

        Raises:
            ValueError: a run option outside its choices or range, or more volumes than ``INPUT_SLOTS``.
        """
        for option in PANEL_OPTIONS:
            _checkValue(option, getattr(self, option.name))
        volumes = list(self.inputVolumes) + [None] * (INPUT_SLOTS - len(self.inputVolumes))
        if len(volumes) > INPUT_SLOTS:
            raise ValueError(f"at most {INPUT_SLOTS} input volumes, got {len(volumes)}")
        wasModifying = parameterNode.StartModify()
        try:
            parameterNode.SetParameter("modelId", self.modelId)
            for option in PANEL_OPTIONS:
                parameterNode.SetParameter(option.name, _storedText(option, getattr(self, option.name)))
            for slot, volume in enumerate(volumes, start=1):
                _setNodeParameter(parameterNode, f"inputVolume{slot}", volume)
            _setNodeParameter(parameterNode, "outputSegmentation", self.outputSegmentation)
        finally:
            parameterNode.EndModify(wasModifying)


def _readValue(option: RunOption, text: str, fallback):
    """A stored value as the wrapper's serializers write it; ``fallback`` when it is not one of the choices."""
    if option.kind is OptionKind.FLAG:
        return text == "True"
    if option.kind is OptionKind.NUMBER:
        return float(text)
    if option.kind is OptionKind.INTEGER:
        return int(text)
    return text if text in optionChoices(option) else fallback


def _storedText(option: RunOption, value) -> str:
    """The text the wrapper's serializers store for ``value`` (None: empty, the model's own)."""
    if value is None:
        return ""
    if option.kind is OptionKind.NUMBER:
        return str(float(value))
    return str(value)


def _checkValue(option: RunOption, value) -> None:
    if value is None:
        return
    choices = optionChoices(option)
    if choices and value not in choices:
        raise ValueError(f"{option.name} must be one of {', '.join(choices)}, not {value!r}")
    if option.minimum is not None and option.maximum is not None and not option.minimum <= value <= option.maximum:
        raise ValueError(f"{option.name} must be between {option.minimum:g} and {option.maximum:g}, not {value}")


def _setNodeParameter(parameterNode, name: str, node) -> None:
    parameterNode.SetParameter(name, "")
    parameterNode.SetNodeReferenceID(name, node.GetID() if node is not None else None)
