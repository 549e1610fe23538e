"""glims: the GLIMSSegmenter engine (network, model catalog, I/O, inference, training, CLI).

Pure Python on top of torch/MONAI/SimpleITK; it never imports slicer, qt or vtk. Heavy modules are imported lazily
by the code paths that need them, so ``import glims`` and ``glims --help`` stay fast.
"""

__version__ = "0.1.0"
