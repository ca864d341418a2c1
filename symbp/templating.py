"""Where the Jinja templates live, and the one way to load them.

An installed package finds them as ``symbp.templates`` (pyproject maps that package
to the top-level templates/ folder); a source checkout finds templates/ beside symbp/.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2


def template_dir() -> Path:
    try:
        folder = Path(str(resources.files("symbp.templates")))
        if folder.is_dir():
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "templates"


def _pytuple(items) -> str:
    """A tuple literal in the style of ruff format: ("x",) and ("a", "b")."""
    items = list(items)
    inner = ", ".join(f'"{item}"' for item in items)
    return f"({inner},)" if len(items) == 1 else f"({inner})"


@lru_cache(maxsize=None)
def environment(target: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir() / target)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pytuple"] = _pytuple
    return env
