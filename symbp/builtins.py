"""The committed outputs of the built-in examples (generated/), rendered afresh."""

from __future__ import annotations

from pathlib import Path

from .derive import derive
from .documents import render_document
from .spec import builtin_names, load
from .targets import TARGETS


def generated_files() -> dict[str, str]:
    """File name -> content for every built-in example: its NumPy module, its derivation,
    and what every other registered target makes of it where it has kernels for every
    operation (the CUDA target: its float32 source and the CuPy loader beside it)."""
    files: dict[str, str] = {}
    for name in builtin_names():
        derivation = derive(load(name))
        files.update(TARGETS["numpy"].builtin_files(name, derivation))
        files[f"{name}.md"] = render_document(derivation, "markdown")
        for target in TARGETS.values():
            if target.name != "numpy":
                files.update(target.builtin_files(name, derivation))
    return files


def stale_files(folder: Path) -> list[str]:
    """Names of files in ``folder`` that differ from a fresh regeneration (or are missing)."""
    stale = []
    for name, text in generated_files().items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale
