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


def source_and_loader(
    derivation, options: GenerateOptions, *, target: str, suffix: str, dtype: str, render
) -> dict[Path, str]:
    """The files of a C-family target: NAME<suffix> (or -o) and NAME_<target>.py beside
    it, from ``render(derivation, source name, dtype)`` -> (source, loader) texts."""
    from ...errors import SpecError
    from ...spec import check_module_name

    default = Path(f"{derivation.spec.name}{suffix}")
    path = Path(options.output) if options.output else default
    if path.suffix != suffix or not path.stem.isidentifier():
        raise SpecError(
            str(path),
            "",
            f"the {target.upper()} source path must end in {suffix} and name a module",
        )
    check_module_name(f"{path.stem}_{target}", str(path), "-o")
    source, loader = render(derivation, path.name, options.dtype or dtype)
    return {path: source, path.with_name(f"{path.stem}_{target}.py"): loader}


def _files(derivation, options: GenerateOptions) -> dict[Path, str]:
    from ..registry import default_dtype
    from .target import render_c, render_c_loader, unsupported

    problem = unsupported(derivation)
    if problem is not None:
        raise problem
    return source_and_loader(
        derivation,
        options,
        target="c",
        suffix=".c",
        dtype=default_dtype(derivation.spec),
        render=lambda d, name, dtype: (render_c(d, dtype), render_c_loader(d, name, dtype)),
    )


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
