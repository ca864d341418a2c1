"""The registry of targets: what ``symbp generate --target``, ``symbp regenerate`` and
the built-ins' generated/ folder offer is what is registered here.

A target is one folder, ``symbp/targets/<name>/``, holding its printer, its context
builders and its templates; its package registers one :class:`Target` on import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..spec.layers import LayerSpec


@dataclass(frozen=True)
class GenerateOptions:
    """What the command line asked of ``symbp generate`` besides the spec."""

    output: str | None
    dtype: str | None
    tests: bool


@dataclass(frozen=True)
class Target:
    name: str
    summary: str  # one line for --help
    # option problems, raised before the spec is derived (a SpecError)
    check_options: Callable[[GenerateOptions], None]
    # the files ``symbp generate`` writes: path -> text (a SpecError where it cannot)
    files: Callable[..., dict[Path, str]]
    # the files of a built-in in generated/: name -> text (none where unsupported)
    builtin_files: Callable[..., dict[str, str]]


TARGETS: dict[str, Target] = {}


def default_dtype(spec) -> str:
    """Every target's dtype unless told: float64 for expression models (checked to the
    last digit), float32 for layer stacks."""
    return "float32" if isinstance(spec, LayerSpec) else "float64"


def register(target: Target) -> None:
    TARGETS[target.name] = target
