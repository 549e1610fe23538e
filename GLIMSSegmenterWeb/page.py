"""The page: trame-slicer's viewer layout with the GLIMS side panel (Vuetify 3 widgets).

Element ids (``glims-…``) name the controls for people writing browser tests and scripts against the page.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v

from glims.runoptions import OptionKind, RunOption
from GLIMSSegmenterLib.parameters import INPUT_SLOTS
from GLIMSSegmenterLib.runoptions import PANEL_OPTIONS

from .export import DOWNLOAD_FORMATS
from .segment_job import DEVICE_CHOICES, optionStateName

__all__ = ["buildPage", "runOptionsSection"]

_PANEL_WIDTH = 430
_UPLOAD_SCRIPT = (
    "if (Array.from($event.target.files).reduce((total, f) => total + f.size, 0) > case_upload_limit_mb * 1048576)"
    " { case_message = 'Not loaded: the files are larger than the upload limit of ' + case_upload_limit_mb"
    " + ' MB.'; } else { case_loading = true; case_message = 'Uploading…';"
    " window.load_files_by_chunks($event.target.files, { trigger_name: '%s' })"
    ".finally(() => { case_loading = false; }); }"
)
_DOWNLOAD_SCRIPT = (
    "trigger('%s', [export_format]).then((name) => { if (name) {"
    " utils.download(name, trigger('%s'), 'application/octet-stream'); } })"
)


def _jobProgressBar(busy: str, value: str, elementId: str, **settings) -> None:
    """A running job's progress bar, without Vuetify's 0.2 s width transition: animating it after every step of
    the job kept the browser repainting (about 0.5 s of CPU time per Segment of a real case), time the engine
    lacks when the browser runs on the same cores."""
    v.VProgressLinear(
        v_if=busy, model_value=(value,), id=elementId, height=6, classes="mt-2", style="transition: none", **settings
    )


def _section(title: str) -> None:
    html.Div(title, classes="text-subtitle-2 mt-4 mb-1 text-medium-emphasis")


def _caseSection(server, context) -> None:
    case = context.case
    _section("1. Case")
    html.Div("{{ case_title || 'No case loaded.' }}", id="glims-case-title", classes="text-body-2 mb-2")
    with html.Div(classes="d-flex flex-wrap ga-2 align-center"):
        with v.VMenu():
            with v.Template(v_slot_activator="{ props }"):
                v.VBtn(
                    "Sample data",
                    v_bind="props",
                    id="glims-sample-menu",
                    prepend_icon="mdi-database",
                    variant="tonal",
                    size="small",
                    disabled=("case_loading_locked || case_loading",),
                )
            with v.VList(density="compact"):
                v.VListItem(
                    v_for="item in case_samples",
                    key="item.value",
                    title=("item.title",),
                    id=("'glims-sample-' + item.value",),
                    click=(case.loadSample, "[item.value]"),
                )
        with v.VMenu(v_if="case_data.length"):
            with v.Template(v_slot_activator="{ props }"):
                v.VBtn(
                    "Server folder",
                    v_bind="props",
                    id="glims-data-menu",
                    prepend_icon="mdi-folder-network",
                    variant="tonal",
                    size="small",
                    disabled=("case_loading_locked || case_loading",),
                )
            with v.VList(density="compact"):
                v.VListItem(
                    v_for="item in case_data",
                    key="item.value",
                    title=("item.title",),
                    id=("'glims-data-' + item.value",),
                    click=(case.loadDataCase, "[item.value]"),
                )
    trigger = server.controller.trigger_name(case.receiveUploadChunk)
    for label, folder, elementId in (
        ("Upload files", False, "glims-upload-files"),
        ("Upload a folder", True, "glims-upload-folder"),
    ):
        v.VFileInput(
            label=label,
            id=elementId,
            multiple=True,
            density="compact",
            hide_details=True,
            show_size=True,
            prepend_icon="mdi-folder-upload" if folder else "mdi-file-upload",
            classes="mt-2",
            raw_attrs=["webkitdirectory"] if folder else [],
            disabled=("case_loading_locked || case_loading",),
            accept=None if folder else ".nii,.gz,.nrrd,.nhdr,.mha,.mhd,.raw,.dcm",
            change=_UPLOAD_SCRIPT % trigger,
        )
    v.VProgressLinear(v_if="case_loading", indeterminate=True, classes="mt-1")
    html.Div("{{ case_message }}", id="glims-case-message", classes="text-caption mt-1")


def _modelSection(context) -> None:
    _section("2. Model and inputs")
    v.VSelect(
        label="Model",
        id="glims-model",
        items=("seg_models",),
        v_model=("seg_model",),
        density="compact",
        hide_details=True,
        disabled=("seg_busy || train_busy",),
    )
    with html.Div(classes="d-flex align-start mt-1"):
        html.Div(
            "{{ seg_model_summary }}",
            id="glims-model-summary",
            classes="text-caption flex-grow-1",
            style="white-space: pre-line;",
        )
        v.VBtn("Model card", id="glims-model-card", size="x-small", variant="text", click="seg_card_open = true")
    with v.VDialog(v_model=("seg_card_open",), max_width=760):
        with v.VCard(title="Model card"):
            v.VCardText(
                "{{ seg_model_card }}",
                style="white-space: pre-wrap; max-height: 70vh; overflow-y: auto;",
                classes="text-body-2",
            )
            with v.VCardActions():
                v.VSpacer()
                v.VBtn("Close", click="seg_card_open = false")
    for slot in range(1, INPUT_SLOTS + 1):
        v.VSelect(
            v_if=f"seg_input_labels.length >= {slot}",
            label=(f"seg_input_labels[{slot - 1}].label",),
            id=f"glims-input-{slot}",
            items=("seg_volumes",),
            v_model=(f"seg_input_{slot}",),
            density="compact",
            hide_details=True,
            clearable=True,
            classes="mt-2",
            disabled=("seg_busy || train_busy",),
        )
    v.VBtn(
        "Assign by name",
        size="small",
        variant="text",
        classes="mt-2",
        click=context.segment.autoAssign,
        disabled=("seg_busy || train_busy",),
    )
    runOptionsSection()


def runOptionsSection(options: tuple[RunOption, ...] = PANEL_OPTIONS) -> None:
    """*Device and quality*, folded as in the Slicer panel: one control per run option of the front ends, bound
    to its page state (``segment_job.optionStateName``), its tooltip shown on hover."""
    with v.VExpansionPanels(classes="mt-2", variant="accordion"):
        with v.VExpansionPanel(title="Device and quality", id="glims-run-options"):
            with v.VExpansionPanelText():
                for option in options:
                    with html.Div(title=option.tooltip, classes="mt-1"):
                        _optionControl(option)


def _optionControl(option: RunOption) -> None:
    common = {
        "id": f"glims-option-{option.name}",
        "label": option.label,
        "v_model": (optionStateName(option.name),),
        "density": "compact",
        "hide_details": True,
        "disabled": ("seg_busy || train_busy",),
    }
    if option.kind is OptionKind.DEVICE:
        v.VSelect(items=("seg_devices", list(DEVICE_CHOICES)), **common)
    elif option.kind is OptionKind.CHOICE:
        v.VSelect(items=(f"seg_{option.name}_choices", list(option.choices)), **common)
    elif option.kind is OptionKind.FLAG:
        v.VCheckbox(**common)
    elif option.kind is OptionKind.NUMBER:
        v.VSlider(min=option.minimum, max=option.maximum, step=option.step, thumb_label=True, **common)
    else:
        v.VTextField(type="number", min=option.minimum, max=option.maximum, **common)


def _runSection(context) -> None:
    _section("3. Segment")
    v.VBtn(
        "{{ seg_button }}",
        id="glims-segment",
        block=True,
        color=("seg_busy ? 'warning' : 'primary'",),
        prepend_icon=("seg_busy ? 'mdi-stop' : 'mdi-play'",),
        disabled=("!seg_button_enabled",),
        click=context.segment.onButton,
    )
    _jobProgressBar("seg_busy", "seg_progress", "glims-seg-progress", color="primary")
    html.Div("{{ seg_status }}", id="glims-seg-status", classes="text-body-2 mt-2")
    with v.VExpansionPanels(classes="mt-2", variant="accordion"):
        with v.VExpansionPanel(title="Engine log"):
            with v.VExpansionPanelText():
                html.Div(
                    "{{ seg_log.join('\\n') }}",
                    id="glims-log",
                    style="white-space: pre-wrap; font-family: monospace; font-size: 11px; "
                    "max-height: 240px; overflow-y: auto;",
                )


def _editTab(context):
    from trame_slicer.app.ui import SegmentEditorUI

    html.Div(
        "Segment first: the result opens here with Slicer's segment editor.",
        v_if="!edit_has_result",
        classes="text-body-2 ma-2",
    )
    v.VSelect(
        v_if="edit_has_result",
        label="Segmentation",
        id="glims-result",
        items=("edit_segmentations",),
        v_model=("edit_segmentation",),
        density="compact",
        hide_details=True,
        classes="ma-2",
    )
    with html.Div(v_show="edit_has_result", style="height: calc(100vh - 200px);"):
        editorUi = SegmentEditorUI()
    return editorUi


def _exportSection(context) -> None:
    export = context.export
    _section("Export")
    with html.Div(classes="d-flex align-center ga-2"):
        v.VSelect(
            label="Format",
            id="glims-export-format",
            items=("export_formats", list(DOWNLOAD_FORMATS)),
            v_model=("export_format",),
            density="compact",
            hide_details=True,
        )
        v.VBtn(
            "Download",
            id="glims-export",
            prepend_icon="mdi-download",
            disabled=("!edit_has_result",),
            click=_DOWNLOAD_SCRIPT % (export.prepareTrigger, export.fetchTrigger),
        )
    html.Div("{{ export_message }}", id="glims-export-message", classes="text-caption mt-1")


def _trainSection(context) -> None:
    training = context.training
    _section("Training set")
    v.VBtn(
        "Add to training set",
        id="glims-add-case",
        prepend_icon="mdi-database-plus",
        size="small",
        variant="tonal",
        disabled=("!edit_has_result || seg_busy || train_busy",),
        click=training.addCurrent,
    )
    html.Div("{{ train_message }}", id="glims-train-message", classes="text-caption mt-1")
    with v.VList(density="compact", v_if="train_cases.length", max_height=160, classes="overflow-y-auto"):
        with v.VListItem(
            v_for="item in train_cases", key="item.id", title=("item.id",), subtitle=("item.preset + ' · ' + item.row",)
        ):
            with v.Template(v_slot_append=True):
                v.VBtn(
                    icon="mdi-delete",
                    size="x-small",
                    variant="text",
                    disabled=("train_busy",),
                    click=(training.removeCase, "[item.id]"),
                )
    _section("Fine-tune the selected model")
    with html.Div(classes="d-flex ga-2"):
        v.VTextField(
            label="New model name",
            v_model=("train_name",),
            placeholder=("train_name_hint",),
            persistent_placeholder=True,
            density="compact",
            hide_details=True,
            id="glims-train-name",
        )
        v.VTextField(
            label="Epochs",
            v_model=("train_epochs",),
            type="number",
            min=1,
            density="compact",
            hide_details=True,
            style="max-width: 90px;",
            id="glims-train-epochs",
        )
    with html.Div(v_if="train_interrupted && !train_busy", classes="text-caption mt-2"):
        html.Span("A stopped run of this name exists. ")
        v.VBtn("Continue it", size="x-small", variant="tonal", click=(training.onButton, "[true]"))
        v.VBtn("Discard it", size="x-small", variant="text", click=training.discardInterrupted)
    v.VBtn(
        "{{ train_button }}",
        id="glims-finetune",
        block=True,
        classes="mt-2",
        color=("train_busy ? 'warning' : 'primary'",),
        disabled=("!train_button_enabled || train_interrupted",),
        prepend_icon=("train_busy ? 'mdi-stop' : 'mdi-school'",),
        click=(training.onButton, "[false]"),
    )
    _jobProgressBar("train_busy", "train_progress", "glims-train-progress")
    html.Div("{{ train_status }}", id="glims-train-status", classes="text-body-2 mt-2")
    html.Div(v_if="train_chart", v_html=("train_chart",), id="glims-train-chart", classes="mt-2")
    html.Div(v_if="train_result", v_html=("train_result",), id="glims-train-result", classes="text-caption mt-2")
    v.VBtn(
        v_if="train_new_model",
        text=("'Use ' + train_new_model + ' for segmentation'",),
        id="glims-use-model",
        block=True,
        variant="tonal",
        classes="mt-2",
        click=training.useNewModel,
    )


def buildPage(server, context, layoutManager):
    """Build the page; returns the layout (with ``editorUi``, trame-slicer's segment editor panel)."""
    from trame_slicer.app.ui import SegmentEditorToolbarUI, SegmentEditorUndoRedoUI, ViewerLayout

    with ViewerLayout(server, title="GLIMS Segmenter", is_drawer_visible=True) as layout:
        layout.drawer.width = _PANEL_WIDTH
        with layout.appbar:
            html.Div("{{ case_title }}", classes="text-body-2 text-medium-emphasis mx-4")
        with layout.drawer:
            with v.VTabs(v_model=("panel_tab",), density="compact", grow=True):
                v.VTab("Segment", value="segment", id="glims-tab-segment")
                v.VTab("Edit", value="edit", id="glims-tab-edit")
                v.VTab("Export & train", value="train", id="glims-tab-train")
            with v.VWindow(v_model=("panel_tab",)):
                with v.VWindowItem(value="segment"), html.Div(classes="pa-3"):
                    _caseSection(server, context)
                    _modelSection(context)
                    _runSection(context)
                with v.VWindowItem(value="edit", eager=True):
                    layout.editorUi = _editTab(context)
                with v.VWindowItem(value="train"), html.Div(classes="pa-3"):
                    _exportSection(context)
                    _trainSection(context)
        with layout.toolbar:
            SegmentEditorToolbarUI(editor_ui=layout.editorUi)
        with layout.undo_redo:
            SegmentEditorUndoRedoUI(editor_ui=layout.editorUi)
        with layout.content:
            layoutManager.initialize_layout_grid(layout)
    return layout
