"""A term's value element by element: each element a SymPy expression.

The model language's terms (:mod:`symbp.language.terms`) describe one sample as tensors;
here each is spelled out as a NumPy array of ``object`` dtype whose elements are SymPy
expressions of the elements it reads (``(W @ x)[i] = W[i,0] x[0] + W[i,1] x[1]``). That is
what a symbolic check compares, and, with numbers in place of the symbols, what a
numeric check evaluates at high precision. It is an independent reading of the terms:
the derivation lowers the same terms to the IR and never comes here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sympy as sp

from ..language.terms import Term

Array = np.ndarray  # of dtype object, elements SymPy expressions


def symbols(name: str, shape: tuple, *, sample: int | None = None) -> Array:
    """``name[i,j]`` for each index of ``shape`` (``name[n|i,j]`` for sample n of a batch)."""
    prefix = name if sample is None else f"{name}[{sample}|"
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        inside = ",".join(str(i) for i in index)
        if sample is None:
            out[index] = sp.Symbol(f"{name}[{inside}]" if shape else name, real=True)
        else:
            out[index] = sp.Symbol(f"{prefix}{inside}]", real=True)
    return out


def array(value) -> Array:
    out = np.empty((), dtype=object)
    out[()] = value
    return out


def _apply(func: Callable, args: list[Array]) -> Array:
    """``func`` on each element, NumPy broadcasting the arguments."""
    result = np.frompyfunc(func, len(args), 1)(*args)
    return result if isinstance(result, np.ndarray) else array(result)


def _reduce(values: Array, axes: tuple[int, ...], combine: Callable) -> Array:
    keep = [a for a in range(values.ndim) if a not in axes]
    moved = np.transpose(values, (*keep, *axes))
    flat = moved.reshape(*moved.shape[: len(keep)], -1)
    out = np.empty(flat.shape[:-1], dtype=object)
    for index in np.ndindex(*out.shape):
        out[index] = combine(list(flat[index]))
    return out


def _windows(image: Array, kernel, stride, padding=(0, 0)):
    """(out_h, out_w, [(channel, window elements)]) as torch walks them; padding zeros."""
    c, h, w = image.shape
    ph, pw = padding
    padded = np.full((c, h + 2 * ph, w + 2 * pw), sp.Integer(0), dtype=object)
    padded[:, ph : ph + h, pw : pw + w] = image
    kh, kw = kernel
    sh, sw = stride
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    return padded, ho, wo


def _image(term: Term, args: list[Array]) -> Array:
    op = term.attr("op")
    if op == "flatten":
        return args[0].reshape(-1)
    if op == "conv2d":
        image, kernel = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        padded, ho, wo = _windows(
            image, term.attr("kernel"), term.attr("stride"), term.attr("padding")
        )
        kh, kw = term.attr("kernel")
        sh, sw = term.attr("stride")
        out = np.empty((kernel.shape[0], ho, wo), dtype=object)
        for o, i, j in np.ndindex(*out.shape):
            patch = padded[:, i * sh : i * sh + kh, j * sw : j * sw + kw]
            total = sp.Add(*(patch * kernel[o]).reshape(-1))
            out[o, i, j] = total + bias[o] if bias is not None else total
        return out
    padded, ho, wo = _windows(args[0], term.attr("kernel"), term.attr("stride"))
    kh, kw = term.attr("kernel")
    sh, sw = term.attr("stride")
    out = np.empty((args[0].shape[0], ho, wo), dtype=object)
    for ch, i, j in np.ndindex(*out.shape):
        window = list(padded[ch, i * sh : i * sh + kh, j * sw : j * sw + kw].reshape(-1))
        out[ch, i, j] = sp.Max(*window) if op == "maxpool2d" else sp.Add(*window) / len(window)
    return out


class Evaluator:
    """Values of terms for the samples of a batch. ``leaf(term, n)`` gives the array of a
    named term (or of any term the caller wants cut, such as a let-name's own symbols)
    for sample n, or None to evaluate it; ``samples`` is the batch size, which only
    ``batch_mean`` reads."""

    def __init__(self, leaf: Callable[[Term, int], Array | None], samples: int):
        self.leaf = leaf
        self.samples = samples
        self.memo: dict[tuple[int, int], Array] = {}

    def value(self, term: Term, n: int = 0) -> Array:
        key = (id(term), n if term.batched else -1)
        if key not in self.memo:
            self.memo[key] = self._value(term, n)
        return self.memo[key]

    def _value(self, term: Term, n: int) -> Array:
        cut = self.leaf(term, n)
        if cut is not None:
            return cut
        op = term.op
        if op == "name":
            raise KeyError(term.attr("name"))
        if op == "const":
            return array(term.attr("value"))
        if op == "batch_mean":
            parts = [self.value(term.args[0], m) for m in range(self.samples)]
            return _apply(lambda *xs: sp.Add(*xs) / len(xs), parts)
        args = [self.value(a, n) for a in term.args]
        if op == "ew":
            return _apply(term.attr("func"), args)
        if op == "contract":
            return np.asarray(np.einsum(term.attr("subscripts"), *args), dtype=object)
        if op == "sum":
            return _reduce(args[0], term.attr("axes"), lambda xs: sp.Add(*xs))
        if op == "max":
            return _reduce(args[0], term.attr("axes"), lambda xs: sp.Max(*xs))
        if op == "expand":
            return np.expand_dims(args[0], term.attr("axes"))
        if op == "logsumexp":
            out = _reduce(args[0], (args[0].ndim - 1,), lambda xs: sp.log(sp.Add(*map(sp.exp, xs))))
            return np.expand_dims(out, -1) if term.attr("keepdims") else out
        if op == "index":
            start, stop = term.attr("start"), term.attr("stop")
            return array(args[0][start]) if term.attr("squeeze") else args[0][start:stop]
        if op == "concat":
            return np.concatenate(args)
        if op == "one_hot":
            if args[0].shape == (term.attr("classes"),):  # a generic label, one-hot already
                return args[0]
            label = args[0][()]
            return np.array(
                [sp.Integer(int(label == k)) for k in range(term.attr("classes"))], dtype=object
            )
        if op == "image":
            return _image(term, args)
        raise ValueError(f"no element form for the op {op!r}")
