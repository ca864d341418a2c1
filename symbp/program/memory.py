"""Memory planning for a training step: which array each value of the program lives in.

A training step that allocates its arrays afresh pays for it every step (the allocator,
and the page faults of memory touched for the first time). The plan here gives every
tensor value of the program a buffer that is allocated once per batch size and reused
by later values of the same shape once its value is dead (its last reader has run), the
way a register allocator reuses registers. Parameter gradients go straight into the
buffers the optimizer reads. The plan is target-neutral: a printer decides what an
operation may overwrite (``may_overwrite``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from .statements import BatchMean, Statement


@dataclass(frozen=True)
class Buffer:
    """One preallocated array: named after the first value it holds."""

    name: str
    shape: tuple


@dataclass(frozen=True)
class Plan:
    buffers: list[Buffer]  # the arrays to allocate, in order of first use
    home: dict[sp.Symbol, str]  # tensor value -> the buffer (or gradient array) holding it
    reuses: dict[sp.Symbol, sp.Symbol]  # value -> the dead value whose buffer it takes


def plan_buffers(
    statements: list[Statement],
    external: set[sp.Symbol],
    results: dict[sp.Symbol, str],
    may_overwrite: Callable[[Statement, sp.Symbol], bool],
) -> Plan:
    """Buffers for ``statements``. ``external`` values (inputs, parameters) live in the
    caller's arrays; ``results`` maps values to arrays the caller provides (gradients);
    a statement writes over one of its own inputs only where ``may_overwrite`` allows it
    and that input is read by nothing later."""
    last_read: dict[sp.Symbol, int] = {}
    for i, stmt in enumerate(statements):
        for symbol in stmt.reads:
            last_read[symbol] = i
    buffers: list[Buffer] = []
    home: dict[sp.Symbol, str] = {s: name for s, name in results.items()}
    holder: dict[str, sp.Symbol] = {}  # buffer -> the value it holds now
    free: list[str] = []
    reuses: dict[sp.Symbol, sp.Symbol] = {}
    shapes: dict[str, tuple] = {}
    for i, stmt in enumerate(statements):
        target = stmt.target
        if not _is_tensor(stmt) or target in home or target in external:
            _release(stmt, i, last_read, holder, free)
            continue
        name = _overwritable(stmt, i, last_read, holder, home, may_overwrite)
        if name is None:  # a free array of the same shape (values dead before this statement)
            name = next((b for b in free if shapes[b] == stmt.shape), None)
            if name is not None:
                free.remove(name)
        if name is None:
            name = target.name
            buffers.append(Buffer(name, stmt.shape))
            shapes[name] = stmt.shape
        else:
            reuses[target] = holder[name]
        holder[name] = target
        home[target] = name
        _release(stmt, i, last_read, holder, free)
    return Plan(buffers, home, reuses)


def _is_tensor(stmt: Statement) -> bool:
    return bool(stmt.shape) and not isinstance(stmt, BatchMean)


def _overwritable(stmt, i, last_read, holder, home, may_overwrite) -> str | None:
    """A buffer of an input that dies here and that the operation may write over."""
    for symbol in sorted(stmt.reads, key=lambda s: s.name):
        name = home.get(symbol)
        if (
            name is not None
            and holder.get(name) == symbol
            and last_read.get(symbol) == i
            and may_overwrite(stmt, symbol)
        ):
            return name
    return None


def _release(stmt, i, last_read, holder, free) -> None:
    """Buffers whose values are dead after statement ``i`` become free."""
    for name, symbol in list(holder.items()):
        if last_read.get(symbol, -1) <= i and name not in free and symbol != stmt.target:
            free.append(name)
