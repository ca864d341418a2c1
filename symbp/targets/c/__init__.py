"""The C target: one C99 file (the C API with the whole training loop in one call, and a
standalone main) and the ctypes loader beside it, with the NumPy module's contract.
``printer.py`` prints the math (shared with the CUDA target), ``stages.py`` stages the
program into loops (shared with the CUDA target), ``target.py`` builds the templates'
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
    from ..registry import default_dtype
    from .target import render_c, render_c_loader, unsupported

    problem = unsupported(derivation)
    if problem is not None:
        raise problem
    path = Path(options.output) if options.output else Path(f"{derivation.spec.name}.c")
    if path.suffix != ".c" or not path.stem.isidentifier():
        raise SpecError(str(path), "", "the C source path must end in .c and name a module")
    check_module_name(f"{path.stem}_c", str(path), "-o")
    dtype = options.dtype or default_dtype(derivation.spec)
    return {
        path: render_c(derivation, dtype),
        path.with_name(f"{path.stem}_c.py"): render_c_loader(derivation, path.name, dtype),
    }


def _builtin_files(name: str, derivation) -> dict[str, str]:
    """The .c and its loader (the NumPy module's dtype), where the target stages every op."""
    from .target import render_c, render_c_loader, supported

    if not supported(derivation):
        return {}
    return {
        f"{name}.c": render_c(derivation),
        f"{name}_c.py": render_c_loader(derivation, f"{name}.c"),
    }


register(
    Target(
        name="c",
        summary="a C99 source (training in one call, and a main) and its ctypes loader",
        check_options=_check_options,
        files=_files,
        builtin_files=_builtin_files,
    )
)
