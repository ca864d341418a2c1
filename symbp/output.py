"""Write generated files all-or-nothing: render everything first, then replace atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import SpecError


def write_atomically(files: dict[Path, str]) -> None:
    """Write every file or none: stage each beside its destination, back up what is
    there, then swap them in with ``os.replace``; on any failure restore the backups."""
    staged: list[tuple[str, Path]] = []
    backups: list[tuple[str, Path]] = []
    replaced: list[Path] = []
    mode = 0o666 & ~_umask()
    path = next(iter(files), Path("."))
    try:
        for path, text in files.items():
            folder = path.parent if str(path.parent) else Path(".")
            if not folder.is_dir():
                raise SpecError(str(path), "", "output folder does not exist")
            if path.is_dir():
                raise SpecError(str(path), "", "is a folder, not a file")
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            os.chmod(tmp, mode)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
            if path.exists():
                fd, backup = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".bak")
                os.close(fd)
                shutil.copy2(path, backup)
                backups.append((backup, path))
        for tmp, path in staged:
            os.replace(tmp, path)
            replaced.append(path)
        staged.clear()
    except OSError as err:
        _restore(replaced, backups)
        raise SpecError(str(path), "", f"cannot write: {err.strerror}") from None
    except BaseException:
        _restore(replaced, backups)
        raise
    finally:
        for tmp, _ in staged:
            _remove(tmp)
        for backup, _ in backups:
            _remove(backup)


def _restore(replaced: list[Path], backups: list[tuple[str, Path]]) -> None:
    saved = {dest: backup for backup, dest in backups}
    for path in replaced:
        if path in saved:
            os.replace(saved.pop(path), path)
        else:
            _remove(path)


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
