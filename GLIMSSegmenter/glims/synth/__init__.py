"""Synthetic BraTS-like brain tumour cases with exact labels (domain randomisation for training and tests).

A case is four co-registered MR sequences of a skull-stripped brain, in the authors' channel order
``flair, t1ce, t1, t2``, and a label map with the BraTS 2023 convention (0 background, 1 necrotic / non-enhancing
tumour core NCR, 2 peritumoural oedema ED, 3 enhancing tumour ET). Every image is drawn from the same tissue
model as the label, so the label is exact for the images: a voxel gets a tumour label when that compartment
occupies at least half of it.

The anatomy is analytic (ellipsoidal cerebrum, cerebellum and brainstem; cortex, sulci, interhemispheric fissure,
tentorium, lateral and third ventricles, choroid plexus, thalamus and basal ganglia) perturbed by smooth random
fields; the tumour is a set of nested noise-perturbed ellipsoids (oedema that spreads through white matter and
spares cortex and CSF, an enhancing rim, a necrotic centre), or for a low-grade-like case a non-enhancing core
(label 1) without ET. The tumour pushes the surrounding anatomy away (mass effect). Tissue intensities are
drawn per case from ranges that keep each sequence's characteristic contrast (``DEFAULT_CONTRAST``; earlier
generator versions stay reproducible through ``synth_params``); then the acquisition is simulated per sequence:
intensity non-linearity, blur, thick slices, bias field, Rician noise, skull stripping (exact zeros outside the
brain) and integer intensities on a random scale.

Geometry is in millimetres; arrays are ``(z, y, x)`` (slices first, as SimpleITK returns them) and written in
LPS orientation like BraTS (x to the patient's left, y posterior, z superior). With the default 128³ at 1 mm the
brain is scaled down to fit the field of view; ``shape=(155, 240, 240)`` gives a BraTS-sized case at true scale.

Only numpy and torch are used. Everything random is drawn from ``numpy.random.Generator`` streams derived from
the case seed, so a seed always gives the same case.

The package, one module per concern: ``vocabulary`` (sequences, tissues, labels), ``sites`` (site profiles),
``params`` (contrast tables and ranges per generator version), ``geometry`` (grid, smooth noise, soft shapes),
``layout`` (the brain's layout and placement), ``anatomy`` (normal tissue fractions), ``lesions`` (the tumour),
``acquisition`` (contrasts, labels and the simulated scan), ``case`` (``generate_case``) and ``writer`` (NIfTI files
and datasets). Everything public is imported here: ``from glims.synth import generate_case``.
"""

from __future__ import annotations

from .case import SynthCase, generate_case
from .geometry import MIN_SIZE_VOXELS
from .params import DEFAULT_CONTRAST, GENERATOR_VERSIONS, LATEST_GENERATOR, SynthParams, synth_params
from .sites import SITE_PROFILES, SiteShift, shifted_site
from .vocabulary import LABEL_ED, LABEL_ET, LABEL_NCR, MODALITIES, NORMAL_TISSUES, TISSUES
from .writer import dataset_case_seed, generate_dataset, write_case

__all__ = [
    "MODALITIES",
    "TISSUES",
    "LABEL_NCR",
    "LABEL_ED",
    "LABEL_ET",
    "DEFAULT_CONTRAST",
    "GENERATOR_VERSIONS",
    "LATEST_GENERATOR",
    "synth_params",
    "SiteShift",
    "shifted_site",
    "SITE_PROFILES",
    "SynthParams",
    "SynthCase",
    "generate_case",
    "write_case",
    "generate_dataset",
    "dataset_case_seed",
    "NORMAL_TISSUES",
    "MIN_SIZE_VOXELS",
]
