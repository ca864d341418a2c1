"""Terms: a parsed tensor formula, each node with its per-sample shape.

A term describes one sample, as the course writes a^(l) = f(W^(l) a^(l-1) + b^(l));
``batched`` says whether its value differs from sample to sample (it reads an input
or a target) or is shared by the batch (parameters and what is built from them alone).
The primitive ops are few; the functions of :mod:`symbp.language.library` are written
in them.

- ``name`` (attrs: name), ``const`` (attrs: value, a SymPy number);
- ``ew``: elementwise ``func(*args)`` with NumPy broadcasting (attrs: func, a SymPy
  callable, and text, how the formula wrote it);
- ``contract``: a product of one or two operands written as einsum subscripts over the
  per-sample axes (attrs: subscripts): ``@``, ``.T``, ``dot``, ``outer``;
- ``sum`` over per-sample axes (attrs: axes), ``expand`` (attrs: axes, size-1 axes
  inserted), ``logsumexp`` over the last axis (attrs: keepdims);
- ``index`` (attrs: start, stop, squeeze) and ``concat`` of vectors;
- ``batch_mean`` over the batch (training-mode normalization).
"""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Term:
    op: str
    args: tuple[Term, ...]
    shape: Shape  # per sample
    batched: bool
    attrs: tuple[tuple[str, object], ...] = ()

    def attr(self, key: str, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def size(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count


def shape_text(shape: Shape) -> str:
    """(8, 4), (8,), () as a user reads them."""
    return (
        "()"
        if not shape
        else f"({', '.join(str(d) for d in shape)}{',' if len(shape) == 1 else ''})"
    )


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """NumPy broadcasting of two per-sample shapes, or None where they do not broadcast."""
    result = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        result.append(max(x, y) if 1 in (x, y) else x)
    return tuple(reversed(result))


def walk(term: Term):
    """Every term of ``term``'s tree once (a shared subterm once), ``term`` first."""
    stack, seen = [term], set()
    while stack:
        t = stack.pop()
        if id(t) not in seen:
            seen.add(id(t))
            yield t
            stack.extend(t.args)
