"""Training GLIMS models: data (case discovery, loading with the inference preprocessing, BraTS label
conventions), augmentation, the authors' deep-supervised DiceCE loss, and a seeded, resumable trainer.

``glims train`` and ``glims finetune`` are thin command-line wrappers around ``glims.training.trainer.train``.
"""

from __future__ import annotations
