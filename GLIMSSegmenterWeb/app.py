"""The web app: trame-slicer's Slicer core (scene, views, segment editor) plus the GLIMS steps, on one page.

Layout: a title bar with the case, Slicer's views (axial, 3D, coronal, sagittal) streamed from the server, a narrow
tool bar (quick effects, undo/redo) and a side panel with tabs: **Segment** (case, model, inputs, run),
**Edit** (Slicer's segment editor), **Export & train**.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from trame.app import TrameApp

__all__ = ["WebOptions", "GlimsWebApp"]

logger = logging.getLogger(__name__)


@dataclass
class WebOptions:
    """What the command line sets (see ``__main__``).

    Attributes:
        dataFolder: a server folder whose cases are offered (None: none).
        glimsHome: the engine's user folder (models, training set); None: ``GLIMS_HOME`` or the default.
        demoSize: edge of the synthetic sample case, voxels.
        uploadLimitMb: largest total upload, MB.
        device: default compute device of the engine.
        accessToken: required on every request when set (any host other than 127.0.0.1).
    """

    dataFolder: Path | None = None
    glimsHome: Path | None = None
    demoSize: int = 128
    uploadLimitMb: int = 2048
    device: str = "auto"
    accessToken: str | None = None


class WebContext:
    """The objects the steps share, and the notifications between them."""

    def __init__(self, server, slicerApp, options: WebOptions, session) -> None:
        from GLIMSSegmenterLib.finetuning import FineTuningLogic

        from .polling import JobPoller
        from .web_logic import WebSegmenterLogic

        self.server = server
        self.state = server.state
        self.slicerApp = slicerApp
        self.options = options
        self.session = session
        self.logic = WebSegmenterLogic(session.sub("jobs"), glimsHome=options.glimsHome)
        self.fineTuning = FineTuningLogic(self.logic)
        self.poller = JobPoller(server.state)
        self.editorLogic = None
        self.case = self.segment = self.editing = self.export = self.training = None

    def onCaseLoaded(self) -> None:
        self.state.panel_tab = "segment"
        self.training.refresh()
        self.logic.prestartWorker()  # its imports run while the user looks at the case, not after the click

    def onResultChanged(self) -> None:
        self.training.refresh()

    def onJobsChanged(self) -> None:
        self.state.case_loading_locked = self.logic.jobs.busy
        if self.training is not None:
            self.training.updateButton()


class GlimsWebApp(TrameApp):
    """The page and its server-side objects.

    Args:
        options: command-line settings.
        session: the temporary ``SessionFolder`` (removed at exit).
        server: a trame server (None: the default one).
    """

    def __init__(self, options: WebOptions, session, server=None) -> None:
        super().__init__(server, client_type="vue3")
        from trame_slicer import module as trameSlicerModule
        from trame_slicer.app.logic import SegmentEditorLogic
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        from .slicer_binding import bindSlicerNames

        self.server.enable_module(trameSlicerModule)
        self.slicerApp = SlicerApp()
        bindSlicerNames(self.slicerApp)
        register_rca_factories(self.slicerApp.view_manager, self.server)
        self.layoutManager = LayoutManager(self.slicerApp.scene, self.slicerApp.view_manager, self.server)
        self.layoutManager.register_layout_dict(LayoutManager.default_grid_configuration())

        from .case_step import CaseStep
        from .editing import EditStep
        from .export import ExportStep
        from .segment_job import SegmentStep
        from .training import TrainStep

        context = WebContext(self.server, self.slicerApp, options, session)
        context.editorLogic = SegmentEditorLogic(self.server, self.slicerApp)
        context.case = CaseStep(context)
        context.segment = SegmentStep(context)
        context.editing = EditStep(context)
        context.export = ExportStep(context)
        context.training = TrainStep(context)
        context.segment.reloadModels()
        self.context = context
        self.state.panel_tab = "segment"
        self.state.case_loading_locked = False
        self.state.trame__title = "GLIMS Segmenter"

        from .page import buildPage

        self.ui = buildPage(self.server, context, self.layoutManager)
        context.editorLogic.set_ui(self.ui.editorUi)
        self.layoutManager.set_layout("Axial Primary")
        self.ui.flush_content()
        if options.accessToken:
            from .security import tokenMiddleware

            middleware = tokenMiddleware(options.accessToken)
            self.server.controller.on_server_bind.add(lambda web: web.app.middlewares.append(middleware))
