"""PySide6 widgets standing in for the CTK and qMRML classes our ``.ui`` uses, so that Qt's ``QUiLoader`` builds a
typed, drawable panel without Slicer. Each declares the properties the ``.ui`` sets and the signals and slots its
``<connections>`` name, with Slicer's C++ signatures (MRML pointer types appear only as names)."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

Property, Signal, Slot = QtCore.Property, QtCore.Signal, QtCore.Slot


class qMRMLWidget(QtWidgets.QWidget):  # noqa: N801 - Slicer's class name
    mrmlSceneChanged = Signal("vtkMRMLScene*")

    @Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene) -> None:
        self.scene = scene


class ctkCollapsibleButton(QtWidgets.QGroupBox):  # noqa: N801
    """A titled box with an arrow; its content is hidden while collapsed. As in CTK, a child the panel hid
    itself stays hidden when the box is expanded."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._label = ""
        self._collapsed = False
        self._hiddenByCollapse: list[QtWidgets.QWidget] = []

    def _applyState(self) -> None:
        self.setTitle(("▸ " if self._collapsed else "▾ ") + self._label)
        if self._collapsed:
            for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
                if not child.isHidden():
                    self._hiddenByCollapse.append(child)
                    child.setVisible(False)
        else:
            for child in self._hiddenByCollapse:
                child.setVisible(True)
            self._hiddenByCollapse.clear()

    def showEvent(self, event) -> None:  # children exist only after the .ui set the properties
        self._applyState()
        super().showEvent(event)

    def _setText(self, text: str) -> None:
        self._label = text
        self._applyState()

    def _setCollapsed(self, collapsed: bool) -> None:
        self._collapsed = collapsed
        self._applyState()

    text = Property(str, lambda self: self._label, _setText)
    collapsed = Property(bool, lambda self: self._collapsed, _setCollapsed)


class qMRMLNodeComboBox(QtWidgets.QComboBox):  # noqa: N801
    """Shows node names added by :meth:`addNodeName` (the real one lists the scene's nodes of ``nodeTypes``)."""

    currentNodeChanged = Signal("vtkMRMLNode*")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._options = {"nodeTypes": [], "noneDisplay": "None"}

    def _option(name, kind, default):  # noqa: N805 - builds properties at class creation
        return Property(kind, lambda self: self._options.get(name, default),
                        lambda self, value: self._setOption(name, value))

    def _setOption(self, name, value) -> None:
        self._options[name] = value
        if name == "noneDisplay" and self.count() and self.itemData(0) == "none":
            self.setItemText(0, value)
        if name == "noneEnabled" and value and not (self.count() and self.itemData(0) == "none"):
            self.insertItem(0, self._options["noneDisplay"], "none")

    nodeTypes = _option("nodeTypes", "QStringList", [])
    noneDisplay = _option("noneDisplay", str, "None")
    showChildNodeTypes = _option("showChildNodeTypes", bool, True)
    noneEnabled = _option("noneEnabled", bool, False)
    addEnabled = _option("addEnabled", bool, True)
    removeEnabled = _option("removeEnabled", bool, True)
    renameEnabled = _option("renameEnabled", bool, False)
    del _option

    def addNodeName(self, name: str, select: bool = True) -> None:
        self.addItem(name)
        if select:
            self.setCurrentIndex(self.count() - 1)

    @Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene) -> None:
        self.scene = scene


class ctkSliderWidget(QtWidgets.QWidget):  # noqa: N801
    valueChanged = Signal(float)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.slider.setRange(0, 1000)
        self.spinBox = QtWidgets.QDoubleSpinBox()
        self.spinBox.setDecimals(2)
        layout.addWidget(self.slider)
        layout.addWidget(self.spinBox)
        self.spinBox.valueChanged.connect(self._follow)

    def _follow(self, value: float) -> None:
        span = (self.spinBox.maximum() - self.spinBox.minimum()) or 1.0
        self.slider.setValue(round(1000 * (value - self.spinBox.minimum()) / span))
        self.valueChanged.emit(value)

    value = Property(float, lambda self: self.spinBox.value(), lambda self, v: self.spinBox.setValue(v))
    minimum = Property(float, lambda self: self.spinBox.minimum(), lambda self, v: self.spinBox.setMinimum(v))
    maximum = Property(float, lambda self: self.spinBox.maximum(), lambda self, v: self.spinBox.setMaximum(v))
    singleStep = Property(float, lambda self: self.spinBox.singleStep(), lambda self, v: self.spinBox.setSingleStep(v))


class ctkPathLineEdit(QtWidgets.QWidget):  # noqa: N801
    currentPathChanged = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.lineEdit = QtWidgets.QLineEdit()
        self.browseButton = QtWidgets.QToolButton()
        self.browseButton.setText("…")
        layout.addWidget(self.lineEdit)
        layout.addWidget(self.browseButton)
        self._nameFilters: list[str] = []

    nameFilters = Property("QStringList", lambda self: self._nameFilters,
                           lambda self, v: setattr(self, "_nameFilters", list(v)))
    currentPath = Property(str, lambda self: self.lineEdit.text(), lambda self, v: self.lineEdit.setText(v))


class ctkDirectoryButton(QtWidgets.QPushButton):  # noqa: N801
    directoryChanged = Signal(str)

    directory = Property(str, lambda self: self.text(), lambda self, v: self.setText(v))


STANDINS = (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, ctkSliderWidget, ctkPathLineEdit,
            ctkDirectoryButton)
