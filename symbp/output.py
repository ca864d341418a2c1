"""Write a set of generated files all-or-nothing, and only where writing is safe.

Every command that writes goes through :func:`write_set`. It checks every destination
before it writes anything (a regular file or nothing at all, not read-only, not the spec
being read, not twice in the set; a symbolic link is written through, to its target),
renders nothing itself, stages each file beside its destination, and then swaps the
whole set in with ``os.replace`` while SIGINT, SIGTERM and SIGHUP are held back: after
any interruption either every file is new or every file is old. Staged copies and
backups carry the writer's process id, so that a writer killed outright (SIGKILL, where
nothing can clean up) leaves files the next write in that folder removes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from .errors import SpecError

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_LEFTOVER = re.compile(r"^\..+\.symbp-(\d+)-[^.]+\.(tmp|bak)$")


def write_set(
    files: dict[Path, str | bytes],
    *,
    inputs: Iterable[str | Path] = (),
    make_folder: Path | None = None,
) -> list[Path]:
    """Write every file of ``files`` (text, or bytes for a picture) or none; return the
    paths as given.

    ``inputs`` are files the command reads (the spec): none may be overwritten.
    ``make_folder`` is created if missing (``symbp run -o DIR``), and removed again if
    the write fails.
    """
    made = _make_folder(make_folder) if make_folder is not None else None
    try:
        targets = _destinations(files, inputs)
        _swap_in({target: files[path] for path, target in targets.items()})
    except BaseException:
        if made is not None:
            with contextlib.suppress(OSError):
                made.rmdir()
        raise
    return list(files)


def _make_folder(folder: Path) -> Path | None:
    """Create ``folder`` (and its parents); return it if this call created it."""
    if folder.is_dir():
        return None
    if folder.exists() or folder.is_symlink():
        raise SpecError(str(folder), "", "exists and is not a folder")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise SpecError(str(folder), "", f"cannot create: {parent} is not a folder")
    try:
        folder.mkdir(parents=True)
    except OSError as err:
        raise SpecError(str(folder), "", f"cannot create the folder: {err.strerror}") from None
    return folder


def _destinations(files: dict[Path, str | bytes], inputs: Iterable[str | Path]) -> dict[Path, Path]:
    """Each requested path and the real file it writes (symbolic links followed), after
    checking that writing there replaces nothing it must not."""
    protected = []
    for item in inputs:
        with contextlib.suppress(OSError):
            protected.append(os.stat(item))
    targets: dict[Path, Path] = {}
    seen: dict[Path, Path] = {}
    for path in files:
        target = Path(os.path.realpath(path))
        if target in seen:
            raise SpecError(str(path), "", f"written twice in one command (also as {seen[target]})")
        seen[target] = path
        folder = target.parent
        if not folder.is_dir():
            raise SpecError(str(path), "", "output folder does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SpecError(str(path), "", "output folder is not writable")
        try:
            info = os.stat(target)
        except FileNotFoundError:
            targets[path] = target
            continue
        except OSError as err:
            raise SpecError(str(path), "", f"cannot write: {err.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            raise SpecError(str(path), "", "is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(
                str(path), "", f"is a {_kind(info.st_mode)}, not a regular file: not replacing it"
            )
        if any(os.path.samestat(info, p) for p in protected):
            raise SpecError(str(path), "", "is the spec being read: not overwriting it")
        if not info.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(
            target, os.W_OK
        ):
            raise SpecError(str(path), "", "is read-only: not replacing it")
        targets[path] = target
    return targets


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _swap_in(files: dict[Path, str | bytes]) -> None:
    """Stage every file, then replace all destinations with signals held back."""
    staged: dict[Path, str] = {}
    backups: dict[Path, str] = {}
    replaced: list[Path] = []
    umask_mode = 0o666 & ~_umask()
    current = next(iter(files), Path("."))
    try:
        for folder in {target.parent for target in files}:
            _remove_leftovers(folder)
        for current, text in files.items():
            fd, tmp = tempfile.mkstemp(dir=current.parent, prefix=_prefix(current), suffix=".tmp")
            staged[current] = tmp
            if isinstance(text, bytes):  # a picture (PNG, PDF): written as it is
                with os.fdopen(fd, "wb") as handle:
                    handle.write(text)
            else:
                with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                    handle.write(text)
            if current.exists():
                os.chmod(tmp, stat.S_IMODE(os.stat(current).st_mode))
                backups[current] = _backup(current)
            else:
                os.chmod(tmp, umask_mode)
        with _signals_held():  # a failed replace is undone before a signal can arrive
            try:
                for current, tmp in staged.items():
                    os.replace(tmp, current)
                    replaced.append(current)
            except BaseException:
                _restore(replaced, backups)
                raise
            staged.clear()
            replaced.clear()  # committed: a signal delivered now leaves the new set
    except OSError as err:
        _restore(replaced, backups)
        raise SpecError(str(current), "", f"cannot write: {err.strerror or err}") from None
    except BaseException:
        _restore(replaced, backups)
        raise
    finally:
        for tmp in staged.values():
            _remove(tmp)
        for backup in backups.values():
            _remove(backup)


def _prefix(path: Path) -> str:
    return f".{path.name}.symbp-{os.getpid()}-"


def _backup(path: Path) -> str:
    """A second name for the current file (a hard link: instant, and the old content
    survives the replace); a copy where links are not possible."""
    name = str(path.parent / f"{_prefix(path)}{uuid.uuid4().hex}.bak")
    try:
        os.link(path, name)
    except OSError:
        shutil.copy2(path, name)
    return name


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT, SIGTERM and SIGHUP back while the set is swapped in (a few renames);
    they are delivered as soon as it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _remove_leftovers(folder: Path) -> None:
    """Remove the staged files and backups of writers that no longer run."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _LEFTOVER.match(name)
        if match and not _alive(int(match.group(1))):
            _remove(folder / name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _restore(replaced: list[Path], backups: dict[Path, str]) -> None:
    for path in replaced:
        if path in backups:
            os.replace(backups.pop(path), path)
        else:
            _remove(path)
    replaced.clear()  # undone: a second call has nothing left to undo


def _remove(path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
