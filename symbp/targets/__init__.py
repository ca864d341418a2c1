"""Targets: one folder per backend (``numpy/``, ``c/``, ``cuda/``), each registering itself.

Importing this package registers every target (:data:`registry.TARGETS`).
"""

from . import c, cuda, numpy  # noqa: F401 - each registers its Target
from .registry import TARGETS, GenerateOptions, Target

__all__ = ["TARGETS", "GenerateOptions", "Target"]
