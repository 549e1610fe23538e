"""GLIMS Segmenter in the browser: the module's workflow on Slicer's own core, served by trame-slicer.

The page shows Slicer's slice and 3D views (rendered on the server, streamed as images) and a panel with the same
steps as the Slicer module: load a case, pick a model, **Segment** (in a background engine process, cancellable),
edit with Slicer's segment editor effects, export, add to the training set and fine-tune. The work is done by the
module's Qt-free logic (``GLIMSSegmenterLib``) and the ``glims`` engine, exactly as in Slicer.

Start it with ``python -m GLIMSSegmenterWeb`` (see ``docs/web_app.md``).
"""
