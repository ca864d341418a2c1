"""The front end: specs read from TOML into validated model records, never evaluated.

:func:`load` and :func:`parse_spec` read any spec and hand its ``[model]`` to the front
end of its kind: ``expression`` (scalar formulas), ``layers`` (layer stacks) or the
model language (:mod:`symbp.language`). ``fields`` reads the tables every kind shares
(numbers, ``[train]``, names), ``formula`` is the whitelist parser of formulas. Every
problem becomes a one-line :class:`SpecError` naming the file and the field.
"""

from __future__ import annotations

import stat
import sys
import tomllib
from importlib import resources
from pathlib import Path

from ..errors import SpecError
from .expression import _expression_spec
from .fields import _only, _table
from .formula import is_identifier


def builtin_names() -> list[str]:
    folder = resources.files("symbp") / "examples"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


MAX_SPEC_BYTES = 16 * 2**20  # a spec is a page of TOML; 16 MiB holds a large [data] table


def resolve(spec_arg: str) -> tuple[str, str]:
    """Return (display name, TOML text) for a path or a built-in example's name."""
    path = Path(spec_arg)
    names = builtin_names()
    # a built-in's bare name means the built-in, even beside a file of that name (nvcc's
    # -o quadratic makes one): ./quadratic reads the file
    if spec_arg in names:
        text = (resources.files("symbp") / "examples" / f"{spec_arg}.toml").read_text("utf-8")
        return f"{spec_arg}.toml", text
    if path.suffix == ".toml" or path.exists() or path.is_symlink():
        return path.name, _read_spec_file(path, spec_arg)
    known = ", ".join(names)
    raise SpecError(spec_arg, "", f"no such file or built-in example (built-ins: {known})")


def _read_spec_file(path: Path, spec_arg: str) -> str:
    """The text of a spec file: a regular file (a FIFO would block, /dev/zero never end)
    of at most MAX_SPEC_BYTES, UTF-8 with or without a byte-order mark."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SpecError(spec_arg, "", "no such file") from None
    except OSError as err:
        raise SpecError(spec_arg, "", f"cannot read: {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(spec_arg, "", "is a directory, not a spec file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(spec_arg, "", "is not a regular file (a device, FIFO or socket)")
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError(
            spec_arg, "", f"is {info.st_size:,} bytes; a spec may be at most {MAX_SPEC_BYTES:,}"
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise SpecError(spec_arg, "", f"cannot read: {err.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(spec_arg, "", f"is larger than {MAX_SPEC_BYTES:,} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError(spec_arg, "", "not a UTF-8 text file") from None


def load(spec_arg: str):
    """Load a spec from a path or a built-in name."""
    source, text = resolve(spec_arg)
    return parse_spec(text, source)


def parse_spec(text: str, source: str):
    if not text.strip():
        raise SpecError(source, "", "empty file")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(source, "", f"not valid TOML: {err}") from None
    _only(doc, {"name", "description", "model", "params", "train", "data", "predict"}, source, "")
    name = doc.get("name")
    if name is None:
        raise SpecError(source, "name", "missing")
    if not is_identifier(name):
        raise SpecError(source, "name", f"{name!r} is not a valid identifier")
    check_module_name(name, source, "name")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise SpecError(source, "description", "expected a string")
    model = _table(doc, "model", source, required=True)
    from ..language.model import is_tensor_model, tensor_model  # it reads spec.fields
    from .recurrent import is_recurrent_stack, recurrent_model

    if is_recurrent_stack(model):  # sugar, written out in the model language
        doc, model = recurrent_model(doc, model, source)
        return tensor_model(doc, model, name, description, source)
    if is_tensor_model(model):
        return tensor_model(doc, model, name, description, source)
    if "layers" in model:
        from .layers import layer_spec

        return layer_spec(doc, model, name, description, source)
    return _expression_spec(doc, model, name, description, source)


# modules a generated file imports or is imported beside: a NAME.py named like one of
# them hides it from the script's own folder (numpy.py imports itself)
IMPORTED_MODULES = frozenset({"numpy", "cupy", "matplotlib", "pytest", "sympy", "symbp"})


def check_module_name(name: str, source: str, field: str) -> None:
    """A model's module name may not be a standard-library or imported module's name."""
    if name in sys.stdlib_module_names or name in IMPORTED_MODULES:
        whose = "the standard library's" if name in sys.stdlib_module_names else "an imported"
        raise SpecError(
            source,
            field,
            f"'{name}' is {whose} module name: {name}.py would hide that module from the"
            " generated code; rename the model",
        )
