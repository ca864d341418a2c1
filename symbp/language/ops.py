"""Term constructors: each infers its result's per-sample shape or says why it cannot.

A shape problem is a :class:`ShapeError` whose message names both shapes; the parser
adds the file, the field and the column.
"""

from __future__ import annotations

import sympy as sp

from ..spec.formula import _beyond_float64
from .terms import Shape, Term, broadcast, shape_text


class ShapeError(ValueError):
    pass


def name(label: str, shape: Shape, batched: bool) -> Term:
    return Term("name", (), tuple(shape), batched, (("name", label),))


def const(value: sp.Expr) -> Term:
    return Term("const", (), (), False, (("value", value),))


def _folded(value: sp.Expr) -> sp.Expr:
    """A constant formula's value, or why the generated code could not hold it."""
    if value.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise ShapeError("the formula is undefined (division by zero or infinity)")
    if _beyond_float64(value) is not None:
        raise ShapeError("number too large (beyond float64)")
    if any(e.is_number and e.is_extended_real is False for e in sp.preorder_traversal(value)):
        raise ShapeError("the formula is not real (a constant is a complex number)")
    return value


def elementwise(func, args: list[Term], text: str) -> Term:
    if all(a.op == "const" for a in args):  # numbers fold, and must stay float64 numbers
        return const(_folded(func(*[a.attr("value") for a in args])))
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


def batch_mean(a: Term, statistic: str | None = None) -> Term:
    """A batch statistic. ``statistic`` says which, for the running average that eval
    mode reads in its place: ``"variance"`` for the biased variance, the mean of
    ``(v - batch_mean(v))**2`` (``batch_var(v)`` writes it so), whose running value is
    unbiased as torch's; ``"mean"`` for any other."""
    if not a.batched:
        raise ShapeError("its argument is the same for every sample (it reads no input)")
    if statistic is None:
        statistic = "variance" if _centred_square(a) else "mean"
    return Term("batch_mean", (a,), a.shape, False, (("statistic", statistic),))


def _centred_square(a: Term) -> bool:
    """Whether ``a`` is ``(v - batch_mean(v))**2``, the same ``v`` in both places."""

    def is_ew(term: Term, text: str) -> bool:
        return term.op == "ew" and str(term.attr("text")).strip("'\"") == text

    if not is_ew(a, "**") or len(a.args) != 2:
        return False
    base, power = a.args
    if power.op != "const" or power.attr("value") != 2 or not is_ew(base, "-"):
        return False
    v, mean = base.args
    return mean.op == "batch_mean" and mean.args[0] is v


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, tuple) and len(value) == 2:
        pair = value
    elif isinstance(value, int):
        pair = (value, value)
    else:
        raise ShapeError(f"{what} is an integer or a pair (kh, kw), got {value!r}")
    if any(not isinstance(v, int) or v < (0 if what == "padding" else 1) for v in pair):
        least = "non-negative" if what == "padding" else "positive"
        raise ShapeError(f"{what} must be {least} integers, got {value!r}")
    return pair


def _image(a: Term, what: str) -> None:
    if len(a.shape) != 3:
        raise ShapeError(f"{what} takes images of shape (C, H, W), got {shape_text(a.shape)}")
    if not a.batched:
        raise ShapeError(f"{what} takes a per-sample image (one that reads an input)")


def _out_size(size: int, kernel: int, stride: int, padding: int, what: str) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ShapeError(f"the {what} window ({kernel}) is larger than the input ({size})")
    return out


def conv2d(x: Term, kernel: Term, bias: Term | None, stride, padding) -> Term:
    """torch.nn.functional.conv2d of one image (C, H, W) by K (C_out, C, kh, kw)."""
    _image(x, "conv2d")
    if len(kernel.shape) != 4 or kernel.batched:
        raise ShapeError(
            f"conv2d's kernel is a parameter of shape (C_out, C, kh, kw), got"
            f" {shape_text(kernel.shape)}"
        )
    out, channels, kh, kw = kernel.shape
    if channels != x.shape[0]:
        raise ShapeError(
            f"the kernel {shape_text(kernel.shape)} takes {channels} channels, the image"
            f" {shape_text(x.shape)} has {x.shape[0]}"
        )
    if bias is not None and (bias.shape != (out,) or bias.batched):
        raise ShapeError(f"conv2d's bias has shape ({out},), got {shape_text(bias.shape)}")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    ho = _out_size(x.shape[1], kh, stride[0], padding[0], "kernel")
    wo = _out_size(x.shape[2], kw, stride[1], padding[1], "kernel")
    args = (x, kernel) if bias is None else (x, kernel, bias)
    attrs = (("op", "conv2d"), ("kernel", (kh, kw)), ("stride", stride), ("padding", padding))
    return Term("image", args, (out, ho, wo), True, attrs)


def pool2d(op: str, x: Term, kernel, stride) -> Term:
    _image(x, op)
    kernel = _pair(kernel, "kernel")
    stride = kernel if stride is None else _pair(stride, "stride")
    ho = _out_size(x.shape[1], kernel[0], stride[0], 0, op)
    wo = _out_size(x.shape[2], kernel[1], stride[1], 0, op)
    attrs = (("op", op), ("kernel", kernel), ("stride", stride))
    return Term("image", (x,), (x.shape[0], ho, wo), True, attrs)


def flatten(x: Term) -> Term:
    """An image (C, H, W) as a vector of C H W values in that order (torch's)."""
    _image(x, "flatten")
    return Term("image", (x,), (x.size,), True, (("op", "flatten"),))


def steps(scan: Term, value: str, term: Term) -> Term:
    """A value of a recurrence's step (``term``, named ``value``) at every step, per
    sample of shape ("T", *its shape): what the forward loop computes, kept."""
    return Term("steps", (scan,), ("T", *term.shape), True, (("value", value),))
