"""The NumPy target: a standalone module (NumPy and the standard library) per model,
with its pytest file on request. ``printer.py`` prints the math (with the kernels of
``conv_kernels.py`` and ``tensor_kernels.py``, the in-place forms of ``inplace.py``),
``module.py``, ``graph_module.py`` and ``float_step.py`` build the templates' contexts,
``templates/`` holds the layout."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..registry import GenerateOptions, Target, register


def _check_options(options: GenerateOptions) -> None:
    return None


def _files(derivation, options: GenerateOptions) -> dict[Path, str]:
    from ...errors import SpecError
    from ...spec import check_module_name
    from .module import render_module, render_tests

    path = Path(options.output) if options.output else Path(f"{derivation.spec.name}.py")
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise SpecError(str(path), "", "the module path must end in .py and name a valid module")
    check_module_name(path.stem, str(path), "-o")
    repeated = " ".join(
        [
            *(["-o", shlex.quote(options.output)] if options.output else []),
            *(["--tests"] * options.tests),
        ]
    )
    files = {path: render_module(derivation, options.dtype, options=repeated)}
    if options.tests:
        files[path.with_name(f"test_{path.stem}.py")] = render_tests(derivation, path.stem)
    return files


def _builtin_files(name: str, derivation) -> dict[str, str]:
    from .module import render_module

    return {f"{name}.py": render_module(derivation)}


register(
    Target(
        name="numpy",
        summary="a NumPy module (and its tests with --tests)",
        check_options=_check_options,
        files=_files,
        builtin_files=_builtin_files,
    )
)
