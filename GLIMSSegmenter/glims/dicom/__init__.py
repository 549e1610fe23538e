"""DICOM outputs for clinical systems (PACS, treatment planning): DICOM Segmentation and RT Structure Set objects
that reference the DICOM series a segmentation was made on.

One writer for every front end: the CLI (``glims segment --dicom-seg/--dicom-rtstruct``), the Slicer module's export
and any other caller go through :func:`glims.dicom.export.write_dicom_objects`. ``pydicom`` and ``highdicom`` are
optional dependencies (``pip install 'glims[dicom]'``), imported only when a DICOM output is asked for.

Modules: ``source`` (the referenced series), ``content`` (what a segment and the algorithm are, in DICOM terms),
``seg`` (DICOM SEG through highdicom), ``contours`` (closed planar contours of a pixel mask), ``rtstruct`` (RT
Structure Set through pydicom), ``export`` (from a label image to the files).
"""
