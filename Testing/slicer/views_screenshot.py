"""Draw how a brain-tumour result looks in Slicer's views (axial slice + 3D surfaces) for the tutorial, with
Slicer's own displayable managers (trame-slicer's views rendered offscreen through EGL, no display needed)::

    VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow .venv/bin/python Testing/slicer/views_screenshot.py docs/images/result_views.png

The segmentation is imported exactly as the module imports engine results (``sceneio.readSegmentationFile`` on a
``.seg.nrrd`` written by the engine's writer with the BraTS model's label table). Its voxels are the shared case's silver
reference (BraTS-2023 winning algorithm's prediction), not a GLIMS output: the picture shows the display, not a
model's accuracy.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CASE = REPO.parent / "shared" / "data" / "brats" / "brats_gli_00001"
SIZE = (420, 420)


def _capture(view):
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    view.render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    return pixels.copy()


def render_views(path: Path) -> Path:
    import numpy as np
    import SimpleITK as sitk
    import slicer
    from PIL import Image
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition, ViewProps, ViewType

    import vtk

    from glims.segfile import write_seg_nrrd

    from GLIMSSegmenterLib import sceneio
    from panel_screenshot import example_catalog

    app = SlicerApp()
    slicer.mrmlScene = app.scene
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    axial = app.view_manager.create_view(ViewLayoutDefinition(
        singleton_tag="Red", view_type=ViewType.SLICE_VIEW, properties=ViewProps(orientation="Axial")))
    threed = app.view_manager.create_view(ViewLayoutDefinition(
        singleton_tag="ThreeD", view_type=ViewType.THREE_D_VIEW, properties=ViewProps()))
    for view in (axial, threed):
        view.render_window().SetSize(*SIZE)
        view.interactor().UpdateSize(*SIZE)

    flair = app.volumes_logic.AddArchetypeVolume(str(CASE / "BraTS-GLI-00001-000-t2f.nii.gz"),
                                                 "BraTS-GLI-00001-000-t2f")
    app.display_manager.show_volume(flair, vr_preset="", do_reset_views=True)
    vr = app.volume_rendering.get_vr_display_node(flair)
    if vr:
        vr.SetVisibility(False)

    labels = sitk.ReadImage(str(CASE / "BraTS-GLI-00001-000-seg_BraTS23_1_pred_silver.nii.gz"))
    table = next(m for m in example_catalog().models if m.preset == "brats").labels
    with tempfile.TemporaryDirectory() as folder:
        segmentation = sceneio.readSegmentationFile(write_seg_nrrd(labels, table, Path(folder) / "r.seg.nrrd"),
                                                    flair, "BraTS-GLI-00001-000-t2f segmentation")
    segmentation.CreateClosedSurfaceRepresentation()

    # axial slice through the tumour's centre (label array is k, j, i; the image's z axis is RAS superior)
    k, j, i = np.argwhere(sitk.GetArrayFromImage(labels) > 0).mean(axis=0)
    matrix = vtk.vtkMatrix4x4()
    flair.GetIJKToRASMatrix(matrix)
    app.display_manager.reset_views()
    axial.set_slice_value(matrix.MultiplyPoint((i, j, k, 1.0))[2])
    threed.reset_view()
    threed.renderer().GetActiveCamera().Zoom(1.7)
    images = [_capture(axial), _capture(threed)]
    strip = Image.fromarray(np.concatenate(images, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


if __name__ == "__main__":
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    sys.path[:0] = [str(HERE), str(REPO / "GLIMSSegmenter")]
    print(render_views(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "result_views.png"))
