"""Where the Jinja templates live, and the one way to load them.

Each stage that writes files keeps its templates in its own package folder:
``symbp/targets/<name>/templates/`` for a target, ``symbp/documents/templates/`` for the
derivation documents; installed, they are package data of those packages.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import jinja2

from .escape import FILTERS


def _pytuple(items) -> str:
    """A tuple literal in the style of ruff format: ("x",) and ("a", "b")."""
    items = list(items)
    inner = ", ".join(f'"{item}"' for item in items)
    return f"({inner},)" if len(items) == 1 else f"({inner})"


def _folder(package: str) -> Path:
    """The ``templates/`` folder of ``package`` (``symbp.targets.numpy``)."""
    return Path(str(resources.files(package))) / "templates"


@cache
def environment(package: str) -> jinja2.Environment:
    """The one configuration for the templates of ``package``: undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_folder(package))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pytuple"] = _pytuple
    env.filters.update(FILTERS)  # the escapers of free text, one per language and position
    return env
