"""The CUDA target: one .cu file (kernels, a C API, a standalone main) and the CuPy
loader beside it. ``printer.py`` prints the math, ``target.py`` builds the templates'
context, ``templates/`` holds the layout."""

from __future__ import annotations

from pathlib import Path

from ..registry import GenerateOptions, Target, register


def _check_options(options: GenerateOptions) -> None:
    from ...errors import SpecError

    if options.tests:
        raise SpecError("--tests", "", "generated tests come with --target numpy only")


def _files(derivation, options: GenerateOptions) -> dict[Path, str]:
    from ...errors import SpecError
    from ...spec import check_module_name
    from .target import render_cuda, render_loader, unsupported

    problem = unsupported(derivation)
    if problem is not None:
        raise problem
    path = Path(options.output) if options.output else Path(f"{derivation.spec.name}.cu")
    if path.suffix != ".cu" or not path.stem.isidentifier():
        raise SpecError(str(path), "", "the CUDA source path must end in .cu and name a module")
    check_module_name(f"{path.stem}_cuda", str(path), "-o")
    dtype = options.dtype or "float32"
    return {
        path: render_cuda(derivation, dtype),
        path.with_name(f"{path.stem}_cuda.py"): render_loader(derivation, path.name, dtype),
    }


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
