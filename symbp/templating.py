"""Where the Jinja templates live, and the one way to load them.

A target's templates live in its own folder, ``symbp/targets/<name>/templates/``
(package data of ``symbp.targets.<name>``); the documents' in the top-level templates/
folder, which an installed package finds as ``symbp.templates`` (pyproject maps that
package to it) and a source checkout beside symbp/.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module, resources
from pathlib import Path

import jinja2

from .escape import FILTERS


def template_dir() -> Path:
    """The templates/ folder, installed (``symbp.templates``) or beside symbp/ in a checkout.

    templates/ has no ``__init__.py``: installed, ``symbp.templates`` is a namespace
    package, for which ``importlib.resources.files`` gives a MultiplexedPath, not a Path.
    """
    try:
        folder = resources.files("symbp.templates")
    except (ModuleNotFoundError, TypeError):
        folder = None
    candidates = [folder] if isinstance(folder, Path) else []
    if folder is not None:
        candidates += [Path(p) for p in getattr(import_module("symbp.templates"), "__path__", [])]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parent.parent / "templates"


def _pytuple(items) -> str:
    """A tuple literal in the style of ruff format: ("x",) and ("a", "b")."""
    items = list(items)
    inner = ", ".join(f'"{item}"' for item in items)
    return f"({inner},)" if len(items) == 1 else f"({inner})"


def _folder(where: str) -> Path:
    """``templates/<where>/``, or, for a package (``symbp.targets.numpy``), its
    ``templates/`` folder."""
    if "." not in where:
        return template_dir() / where
    return Path(str(resources.files(where))) / "templates"


@cache
def environment(where: str) -> jinja2.Environment:
    """The one configuration for the templates of ``where`` (a folder of templates/ or a
    target's package): undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_folder(where))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pytuple"] = _pytuple
    env.filters.update(FILTERS)  # the escapers of free text, one per language and position
    return env
