"""The CUDA target's printer: the C target's printer (symbp.targets.c.printer), whose C99
compiles unchanged inside CUDA C++'s ``__host__ __device__`` functions."""

from __future__ import annotations

from ..c.printer import C_TYPES, NAME_PREFIX, CPrinter

__all__ = ["C_TYPES", "NAME_PREFIX", "CudaPrinter"]


class CudaPrinter(CPrinter):
    """SymPy expressions as CUDA C++ of one floating-point type: C99's text."""
