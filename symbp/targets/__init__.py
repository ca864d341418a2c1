"""Targets: one folder per backend (``numpy/``, ``cuda/``), each registering itself.

Importing this package registers every target (:data:`registry.TARGETS`).
"""

from . import cuda, numpy  # noqa: F401 - each registers its Target
from .registry import TARGETS, GenerateOptions, Target

__all__ = ["TARGETS", "GenerateOptions", "Target"]
