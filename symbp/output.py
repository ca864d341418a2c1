"""Write generated files all-or-nothing: render everything first, then replace atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import SpecError


def write_atomically(files: dict[Path, str]) -> None:
    """Write every file through a temporary sibling and ``os.replace``; on any failure,
    remove the temporaries and leave existing files as they were."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            folder = path.parent if str(path.parent) else Path(".")
            if not folder.is_dir():
                raise SpecError(str(path), "", "output folder does not exist")
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
        for tmp, path in staged:
            os.replace(tmp, path)
        staged.clear()
    except OSError as err:
        raise SpecError(str(path), "", f"cannot write: {err.strerror}") from None
    finally:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
