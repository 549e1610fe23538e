"""The GLIMS network (``glims.network.GLIMS``) and its building blocks."""

from .glims_net import GLIMS, GLIMSConfig, build

__all__ = ["GLIMS", "GLIMSConfig", "build"]
