"""Term constructors: each infers its result's per-sample shape or says why it cannot.

A shape problem is a :class:`ShapeError` whose message names both shapes; the parser
adds the file, the field and the column.
"""

from __future__ import annotations

import sympy as sp

from .terms import Shape, Term, broadcast, shape_text


class ShapeError(ValueError):
    pass


def name(label: str, shape: Shape, batched: bool) -> Term:
    return Term("name", (), tuple(shape), batched, (("name", label),))


def const(value: sp.Expr) -> Term:
    return Term("const", (), (), False, (("value", value),))


def elementwise(func, args: list[Term], text: str) -> Term:
    shape: Shape = ()
    for arg in args:
        joined = broadcast(shape, arg.shape)
        if joined is None:
            shown = " and ".join(shape_text(a.shape) for a in args)
            raise ShapeError(f"shapes {shown} do not broadcast in {text}")
        shape = joined
    batched = any(a.batched for a in args)
    return Term("ew", tuple(args), shape, batched, (("func", func), ("text", text)))


_LETTERS = "ijklmopqrstuvw"


def contract(operands: list[Term], subscripts: str) -> Term:
    """An einsum over per-sample axes, ``"ij,j->i"``; every letter of the result
    appears in an operand. Sizes must agree where a letter repeats."""
    inputs, result = subscripts.split("->")
    sizes: dict[str, int] = {}
    for term, letters in zip(operands, inputs.split(","), strict=True):
        for letter, size in zip(letters, term.shape, strict=True):
            if sizes.setdefault(letter, size) != size:
                raise ShapeError(f"sizes {sizes[letter]} and {size} do not match")
    shape = tuple(sizes[letter] for letter in result)
    batched = any(t.batched for t in operands)
    return Term("contract", tuple(operands), shape, batched, (("subscripts", subscripts),))


def matmul(a: Term, b: Term) -> Term:
    """``a @ b`` for vectors and matrices, as NumPy's matmul of one sample's arrays."""
    if not 1 <= len(a.shape) <= 2 or not 1 <= len(b.shape) <= 2:
        raise ShapeError(
            f"@ takes vectors and matrices, got shapes {shape_text(a.shape)} and"
            f" {shape_text(b.shape)}"
        )
    if a.shape[-1] != b.shape[0]:
        raise ShapeError(
            f"shapes {shape_text(a.shape)} and {shape_text(b.shape)} do not match for @"
            f" ({a.shape[-1]} != {b.shape[0]})"
        )
    left = "ik"[2 - len(a.shape) :]  # "k" or "ik"
    right = "kj"[: len(b.shape)]  # "k" or "kj"
    result = left[:-1] + right[1:]
    return contract([a, b], f"{left},{right}->{result}")


def transpose(a: Term) -> Term:
    """``a.T``: the axes reversed, as NumPy's (a vector's .T is the vector)."""
    if len(a.shape) < 2:
        return a
    letters = _LETTERS[: len(a.shape)]
    return contract([a], f"{letters}->{letters[::-1]}")


def axes_of(a: Term, axis) -> tuple[int, ...]:
    """Per-sample axes from ``axis=`` (None: all; negative counts from the end)."""
    rank = len(a.shape)
    if axis is None:
        return tuple(range(rank))
    items = axis if isinstance(axis, tuple) else (axis,)
    result = []
    for item in items:
        if not -rank <= item < rank:
            raise ShapeError(f"axis {item} is out of range for shape {shape_text(a.shape)}")
        result.append(item % rank)
    if len(set(result)) != len(result):
        raise ShapeError(f"axis {axis} repeats an axis")
    return tuple(sorted(result))


def reduce_sum(a: Term, axes: tuple[int, ...]) -> Term:
    if not axes:
        return a
    shape = tuple(d for i, d in enumerate(a.shape) if i not in axes)
    return Term("sum", (a,), shape, a.batched, (("axes", axes),))


def reduce_max(a: Term, axes: tuple[int, ...]) -> Term:
    if not axes:
        return a
    shape = tuple(d for i, d in enumerate(a.shape) if i not in axes)
    return Term("max", (a,), shape, a.batched, (("axes", axes),))


def expand(a: Term, axes: tuple[int, ...]) -> Term:
    """Size-1 axes inserted at ``axes`` (positions in the result), as np.expand_dims."""
    if not axes:
        return a
    shape = list(a.shape)
    for axis in sorted(axes):
        shape.insert(axis, 1)
    return Term("expand", (a,), tuple(shape), a.batched, (("axes", tuple(sorted(axes))),))


def logsumexp(a: Term, keepdims: bool) -> Term:
    if not a.shape:
        raise ShapeError("needs at least one axis, got a scalar")
    shape = a.shape[:-1] + ((1,) if keepdims else ())
    return Term("logsumexp", (a,), shape, a.batched, (("keepdims", keepdims),))


def index(a: Term, start: int, stop: int, squeeze: bool) -> Term:
    shape = () if squeeze else (stop - start,)
    attrs = (("start", start), ("stop", stop), ("squeeze", squeeze))
    return Term("index", (a,), shape, a.batched, attrs)


def concat(parts: list[Term]) -> Term:
    for part in parts:
        if len(part.shape) != 1:
            raise ShapeError(f"concat joins vectors, got shape {shape_text(part.shape)}")
    size = sum(p.shape[0] for p in parts)
    return Term("concat", tuple(parts), (size,), any(p.batched for p in parts))


def batch_mean(a: Term) -> Term:
    if not a.batched:
        raise ShapeError("its argument is the same for every sample (it reads no input)")
    return Term("batch_mean", (a,), a.shape, False)
