"""The run options as the Slicer module stores, shows and sends them, derived from ``glims.runoptions``.

The options the front ends offer (``glims.runoptions.front_end_options``: device, window overlap, test-time flips,
whole image) become fields of the parameter node (:func:`addOptionFields`, :func:`wrapperOptionFields`), rows of the
panel's *Device and quality* section (:func:`addOptionRows`) and, where the user changed them, arguments of
``glims segment`` (:func:`changedOptions`). Nothing here imports Qt: the panel passes its widget factory in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from glims.runoptions import DEVICES, OptionKind, RunOption, front_end_options

__all__ = [
    "PANEL_OPTIONS",
    "WIDGET_CLASSES",
    "addOptionFields",
    "wrapperOptionFields",
    "addOptionRows",
    "widgetName",
    "labelName",
    "optionChoices",
    "modelValue",
    "modelValues",
    "changedOptions",
]

PANEL_OPTIONS: tuple[RunOption, ...] = front_end_options()
"""The options of the panel and the web page, in the order of their rows."""

WIDGET_CLASSES = {
    OptionKind.FLAG: "QCheckBox",
    OptionKind.NUMBER: "ctkSliderWidget",
    OptionKind.INTEGER: "QSpinBox",
    OptionKind.CHOICE: "QComboBox",
    OptionKind.DEVICE: "QComboBox",
}
"""The panel's widget class of each kind (a device list is filled by the panel with the devices it found)."""

_WIDGET_SUFFIXES = {
    "QCheckBox": "CheckBox",
    "ctkSliderWidget": "SliderWidget",
    "QSpinBox": "SpinBox",
    "QComboBox": "ComboBox",
}
_PYTHON_TYPES = {"bool": bool, "float": float, "int": int, "str": str}


def optionChoices(option: RunOption) -> tuple[str, ...]:
    """The values a front end offers for a ``CHOICE`` or ``DEVICE`` option (empty for the other kinds)."""
    return DEVICES if option.kind is OptionKind.DEVICE else option.choices


def widgetName(option: RunOption) -> str:
    """The object name of the option's widget (``overlapSliderWidget``, ``testTimeFlipsCheckBox``, ...)."""
    return option.name + _WIDGET_SUFFIXES[WIDGET_CLASSES[option.kind]]


def labelName(option: RunOption) -> str:
    """The object name of the option's row label (``overlapLabel``, ...)."""
    return option.name + "Label"


def _storedDefault(option: RunOption):
    """The Qt-free parameters' default: None (the model's own) for an option a model may set, else its default."""
    return None if option.model_setting else option.default


def addOptionFields(options: tuple[RunOption, ...] = PANEL_OPTIONS) -> Callable[[type], type]:
    """Class decorator, applied before ``@dataclass``: one field per option, named and typed as the parameter
    node stores it (``float | None`` for an option a model may set: None is the model's own)."""

    def decorate(cls: type) -> type:
        annotations = cls.__dict__.get("__annotations__", {})
        for option in options:
            annotations[option.name] = option.parameter_type + (" | None" if option.model_setting else "")
            setattr(cls, option.name, _storedDefault(option))
        cls.__annotations__ = annotations
        return cls

    return decorate


def wrapperOptionFields(choice: Callable, withinRange: Callable, options: tuple[RunOption, ...] = PANEL_OPTIONS):
    """Class decorator, applied before Slicer's ``@parameterNodeWrapper``: one typed field per option with its
    validator and default (the wrapper needs a value: an option a model may set starts from its ``default`` and
    the logic puts the model's own in).

    Args:
        choice, withinRange: ``slicer.parameterNodeWrapper.Choice`` and ``WithinRange``.
    """

    def decorate(cls: type) -> type:
        annotations = cls.__dict__.get("__annotations__", {})
        for option in options:
            valueType = _PYTHON_TYPES[option.parameter_type]
            if optionChoices(option):
                valueType = Annotated[valueType, choice(list(optionChoices(option)))]
            elif option.kind in (OptionKind.NUMBER, OptionKind.INTEGER):
                valueType = Annotated[valueType, withinRange(option.minimum, option.maximum)]
            annotations[option.name] = valueType
            setattr(cls, option.name, option.default)
        cls.__annotations__ = annotations
        return cls

    return decorate


def addOptionRows(formLayout, createWidget: Callable[[str], object], options: tuple[RunOption, ...] = PANEL_OPTIONS):
    """Insert a labelled row per option at the top of ``formLayout`` (the panel's *Device and quality* section).

    Each widget is named by :func:`widgetName` and bound to its parameter (the ``SlicerParameterName`` property),
    except the device list, which the panel fills with the devices it found and follows itself.

    Args:
        formLayout: a ``QFormLayout``.
        createWidget: a new widget of a Qt or CTK class name (``QCheckBox``, ``ctkSliderWidget``, ...).

    Returns:
        Option name -> its widget.
    """
    widgets = {}
    for row, option in enumerate(options):
        label = createWidget("QLabel")
        label.setObjectName(labelName(option))
        label.setText(f"{option.label}:")
        widget = createWidget(WIDGET_CLASSES[option.kind])
        widget.setObjectName(widgetName(option))
        widget.setToolTip(option.tooltip)
        if option.kind in (OptionKind.NUMBER, OptionKind.INTEGER):
            properties = {"minimum": option.minimum, "maximum": option.maximum, "singleStep": option.step or 1}
            for name, value in properties.items():
                widget.setProperty(name, value if option.kind is OptionKind.NUMBER else int(value))
            widget.setProperty("value", option.default)
        if option.kind is OptionKind.CHOICE:
            for value in option.choices:
                widget.addItem(value)
        if option.kind is OptionKind.DEVICE:
            widget.setProperty("sizeAdjustPolicy", "AdjustToMinimumContentsLengthWithIcon")
            widget.setProperty("minimumContentsLength", 16)
        else:
            widget.setProperty("SlicerParameterName", option.name)
        formLayout.insertRow(row, label, widget)
        widgets[option.name] = widget
    return widgets


def modelValue(option: RunOption, spec=None):
    """The value the engine uses for ``option`` when it is not sent: the model's own (``spec``, a
    ``glims.catalog.ModelSpec``) where a model may set it, else the option's default."""
    if option.model_setting and spec is not None:
        return getattr(spec, option.model_setting)
    return option.default


def modelValues(spec, options: tuple[RunOption, ...] = PANEL_OPTIONS) -> dict[str, object]:
    """Option name -> the model's own value, for the options a model may set (what the panel shows for a model)."""
    return {option.name: modelValue(option, spec) for option in options if option.model_setting}


def changedOptions(values: Mapping[str, object], spec=None, options: tuple[RunOption, ...] = PANEL_OPTIONS):
    """The options to send to the engine: those of ``values`` (name -> value) that differ from what the engine
    uses anyway (:func:`modelValue`); the others are left to the engine, so the model's own value applies.

    Raises:
        KeyError: a name that is not one of ``options``.
    """
    unknown = sorted(set(values) - {option.name for option in options})
    if unknown:
        raise KeyError(f"no run option {', '.join(map(repr, unknown))}")
    return {
        option.name: values[option.name]
        for option in options
        if values.get(option.name) is not None and values[option.name] != modelValue(option, spec)
    }
