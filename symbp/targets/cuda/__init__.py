"""The CUDA target: one .cu file (kernels, a C API, a standalone main) and the CuPy
loader beside it. ``printer.py`` prints the math, ``target.py`` builds the templates'
context, ``templates/`` holds the layout."""

from __future__ import annotations

from pathlib import Path

from ..c import _check_options
from ..registry import GenerateOptions, Target, register


def _files(derivation, options: GenerateOptions) -> dict[Path, str]:
    from ..c import source_and_loader
    from .target import render_cuda, render_loader, unsupported

    problem = unsupported(derivation)
    if problem is not None:
        raise problem
    return source_and_loader(
        derivation,
        options,
        target="cuda",
        suffix=".cu",
        dtype="float32",
        render=lambda d, name, dtype: (render_cuda(d, dtype), render_loader(d, name, dtype)),
    )


def _builtin_files(name: str, derivation) -> dict[str, str]:
    """The float32 .cu and its loader, where the target has kernels for every op."""
    from .target import render_cuda, render_loader, supported

    if not supported(derivation):
        return {}
    return {
        f"{name}.cu": render_cuda(derivation),
        f"{name}_cuda.py": render_loader(derivation, f"{name}.cu"),
    }


register(
    Target(
        name="cuda",
        summary="a CUDA source with a C API and main, and its CuPy loader",
        check_options=_check_options,
        files=_files,
        builtin_files=_builtin_files,
    )
)
