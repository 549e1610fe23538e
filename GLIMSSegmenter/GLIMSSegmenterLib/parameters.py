"""The module's parameter node, read and written without Qt.

In Slicer the widget wraps the same ``vtkMRMLScriptedModuleNode`` with ``@parameterNodeWrapper``
(``GLIMSSegmenterParameterNode`` in ``GLIMSSegmenter.py``, same field names and types as ``PARAMETER_TYPES``) to
bind it to the panel. This class stores values exactly as that wrapper's serializers do (str as is, float as
``str(value)``, bool as ``"True"``/``"False"``, a node as an empty parameter plus a node reference of the same
name), so scripts, the logic and the panel share one parameter node and it is saved with the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glims.catalog import DEFAULT_OVERLAP

__all__ = ["INPUT_SLOTS", "DEVICES", "DEFAULT_OVERLAP", "PARAMETER_TYPES", "SegmentationParameters"]

INPUT_SLOTS = 4
"""Volume selectors in the panel: the most inputs a model may have (BraTS: 4)."""

DEVICES = ("auto", "cpu", "cuda", "mps")

PARAMETER_TYPES: dict[str, str] = {
    "modelId": "str",
    **{f"inputVolume{slot}": "vtkMRMLScalarVolumeNode" for slot in range(1, INPUT_SLOTS + 1)},
    "outputSegmentation": "vtkMRMLSegmentationNode",
    "device": "str",
    "overlap": "float",
    "testTimeFlips": "bool",
    "wholeImage": "bool",
}
"""Field name -> type of every parameter (the widget's ``@parameterNodeWrapper`` class declares the same)."""


@dataclass
class SegmentationParameters:
    """What one segmentation run needs, as chosen in the panel or by a script."""

    modelId: str = ""
    inputVolumes: list = field(default_factory=lambda: [None] * INPUT_SLOTS)
    """Volume node per model input, in the catalog's input order (None where not selected)."""
    outputSegmentation: object = None
    """An existing segmentation node to replace, or None for a new node."""
    device: str = "auto"
    overlap: float | None = None
    """Fraction (0-0.9) by which neighbouring sliding windows overlap; None: the model's own (its catalog entry's)."""
    testTimeFlips: bool = False
    wholeImage: bool = False
    """Windows over the whole image (the reference pipeline's answer, slower) instead of the foreground box."""

    @classmethod
    def fromParameterNode(cls, parameterNode) -> SegmentationParameters:
        """Read the parameters; those not set keep their defaults."""
        params = cls()
        if parameterNode.GetParameter("modelId"):
            params.modelId = parameterNode.GetParameter("modelId")
        if parameterNode.GetParameter("device") in DEVICES:
            params.device = parameterNode.GetParameter("device")
        if parameterNode.GetParameter("overlap"):
            params.overlap = float(parameterNode.GetParameter("overlap"))
        if parameterNode.GetParameter("testTimeFlips"):
            params.testTimeFlips = parameterNode.GetParameter("testTimeFlips") == "True"
        if parameterNode.GetParameter("wholeImage"):
            params.wholeImage = parameterNode.GetParameter("wholeImage") == "True"
        params.inputVolumes = [
            parameterNode.GetNodeReference(f"inputVolume{slot}") for slot in range(1, INPUT_SLOTS + 1)
        ]
        params.outputSegmentation = parameterNode.GetNodeReference("outputSegmentation")
        return params

    def writeToParameterNode(self, parameterNode) -> None:
        """Store every parameter (one Modified event)."""
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.overlap is not None and not 0.0 <= self.overlap <= 0.9:
            raise ValueError(f"overlap must be between 0 and 0.9, not {self.overlap}")
        volumes = list(self.inputVolumes) + [None] * (INPUT_SLOTS - len(self.inputVolumes))
        if len(volumes) > INPUT_SLOTS:
            raise ValueError(f"at most {INPUT_SLOTS} input volumes, got {len(volumes)}")
        wasModifying = parameterNode.StartModify()
        try:
            parameterNode.SetParameter("modelId", self.modelId)
            parameterNode.SetParameter("device", self.device)
            parameterNode.SetParameter("overlap", "" if self.overlap is None else str(float(self.overlap)))
            parameterNode.SetParameter("testTimeFlips", "True" if self.testTimeFlips else "False")
            parameterNode.SetParameter("wholeImage", "True" if self.wholeImage else "False")
            for slot, volume in enumerate(volumes, start=1):
                _setNodeParameter(parameterNode, f"inputVolume{slot}", volume)
            _setNodeParameter(parameterNode, "outputSegmentation", self.outputSegmentation)
        finally:
            parameterNode.EndModify(wasModifying)


def _setNodeParameter(parameterNode, name: str, node) -> None:
    parameterNode.SetParameter(name, "")
    parameterNode.SetNodeReferenceID(name, node.GetID() if node is not None else None)
