"""The committed outputs of the built-in examples (generated/), rendered afresh."""

from __future__ import annotations

from pathlib import Path

from .derive import derive
from .document import render_document
from .spec import builtin_names, load
from .targets.cuda_target import render_cuda, render_loader, supported
from .targets.numpy_target import render_module


def generated_files() -> dict[str, str]:
    """File name -> content for every built-in example: its NumPy module, its derivation,
    and, where the CUDA target has kernels for every operation (not yet for convolution
    layers), its CUDA source (float32) and the CuPy loader beside it."""
    files: dict[str, str] = {}
    for name in builtin_names():
        derivation = derive(load(name))
        files[f"{name}.py"] = render_module(derivation)
        files[f"{name}.md"] = render_document(derivation, "markdown")
        if supported(derivation):
            files[f"{name}.cu"] = render_cuda(derivation)
            files[f"{name}_cuda.py"] = render_loader(derivation, f"{name}.cu")
    return files


def stale_files(folder: Path) -> list[str]:
    """Names of files in ``folder`` that differ from a fresh regeneration (or are missing)."""
    stale = []
    for name, text in generated_files().items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale
