"""GLIMS Segmenter in the browser: the module's workflow on Slicer's own core, served by trame-slicer.

The page shows Slicer's slice and 3D views (rendered on the server, streamed as images) and a panel with the same
steps as the Slicer module: load a case, pick a model, **Segment** (in a background engine process, cancellable),
edit with Slicer's segment editor effects, export, add to the training set and fine-tune. The work is done by the
module's Qt-free logic (``GLIMSSegmenterLib``) and the ``glims`` engine, exactly as in Slicer.

This folder sits beside the Slicer module folder and is not part of the Slicer extension. Start it from the
checkout with ``python -m GLIMSSegmenterWeb`` or ``make app`` (see ``docs/web_app.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_MODULE_FOLDER = Path(__file__).resolve().parents[1] / "GLIMSSegmenter"
if _MODULE_FOLDER.is_dir() and str(_MODULE_FOLDER) not in sys.path:
    sys.path.append(str(_MODULE_FOLDER))  # GLIMSSegmenterLib and the engine live in the Slicer module folder
