"""The C-family kernels of the model language's tensor ops: how each op of a tensor
model's program is staged (:mod:`.stages`).

Each entry of :data:`KERNELS` takes one :class:`~symbp.program.statements.Call` and the
shapes of what it reads, and returns the stages it becomes, as ``(kind, statement)``
pairs, or raises :class:`NoKernelError`. A tensor model is staged where every sample's values
are scalars or vectors: a matrix product (``W @ a`` over a batch, a weight's gradient
Delta^T A, a transpose) becomes one ``gemm`` (or ``transpose``), a reduction over a
sample's features one ``rows`` call, broadcasting an elementwise ``map``, a sum over the
batch ``colsum`` or ``reduce``. What the C target supports is read from this table
(:func:`symbp.targets.c.stages.unsupported`); an op without an entry, or one whose shapes
its entry does not take, is refused in the user's terms (:data:`USER_TERMS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import sympy as sp

from ...ir.graph import BATCH
from ...program.statements import Assign, BatchSum, Call


class NoKernelError(Exception):
    """The op, at these shapes, has no C-family kernel."""


# how the user wrote what needs an op, for the one-line refusal
MATRICES = "per-sample matrices (outer(u, v), a matrix-valued formula)"
USER_TERMS = {
    "contract": MATRICES,
    "expand": MATRICES,
    "squeeze": MATRICES,
    "broadcast": MATRICES,
    "broadcast_to": MATRICES,
    "sum_to": MATRICES,
    "sum": MATRICES,
    "max": MATRICES,
    "logsumexp": MATRICES,
    "index": MATRICES,
    "pad": MATRICES,
    "concat": MATRICES,
    "full": MATRICES,
    "batch_mean": "batch statistics (batch_mean, batch_var)",
}


def _attrs(stmt: Call) -> dict:
    return dict(stmt.attrs)


def _batched(shape) -> bool:
    return bool(shape) and shape[0] == BATCH


def _rows_shape(shape) -> bool:
    """(N, k): a batch of vectors."""
    return len(shape) == 2 and shape[0] == BATCH


def _per_sample(shape) -> bool:
    """(N,) or (N, 1): one value per sample."""
    return (len(shape) == 1 and _batched(shape)) or (_rows_shape(shape) and shape[1] == 1)


def gemm_layout(subscripts: str, shapes: list[tuple]) -> tuple | None:
    """A contraction of two operands as one row-major product C (M x Nc) = op(A) op(B)
    over one summed index: (first, second, transpose first, transpose second, M, Nc, K),
    where first and second index the operands and a vector operand is a 1 x K row or a
    K x 1 column; None where the contraction is not such a product."""
    inputs, result = subscripts.split("->")
    left, right = inputs.split(",")
    if len(left) > 2 or len(right) > 2 or len(result) > 2:
        return None
    summed = (set(left) & set(right)) - set(result)
    if len(summed) != 1 or set(left) & set(right) & set(result):
        return None
    (k,) = summed
    sizes: dict[str, object] = {"1": 1}
    for letters, shape in zip((left, right), shapes, strict=True):
        sizes.update(zip(letters, shape, strict=True))
    candidates = [tuple(result)] if len(result) == 2 else [(result, "1"), ("1", result)]
    for m, n in candidates:
        for first, second in ((0, 1), (1, 0)):
            a, b = (left, right)[first], (right, left)[first]
            a_ok = set(a) <= {m, k} and k in a and (m in a or m == "1")
            b_ok = set(b) <= {k, n} and k in b and (n in b or n == "1")
            if not (a_ok and b_ok):
                continue
            trans_a = len(a) == 2 and a[0] == k
            trans_b = len(b) == 2 and b[1] == k
            return (first, second, trans_a, trans_b, sizes[m], sizes[n], sizes[k])
    return None


def _elementwise(subscripts: str, shapes: list[tuple]) -> bool:
    """A contraction that sums nothing and whose operands an elementwise loop reads: the
    result's own layout, one value per sample ("n,ni->ni": the adjoint of a dot), or a
    vector along the features."""
    inputs, result = subscripts.split("->")
    if len(result) > 2 or set(inputs.replace(",", "")) != set(result):
        return False
    for letters, shape in zip(inputs.split(","), shapes, strict=True):
        per_sample = letters == result[:1] and _batched(shape)
        features = letters == result[-1:] and not _batched(shape) and len(result) == 2
        if letters != result and not per_sample and not features:
            return False
    return True


def _contract(stmt: Call, shapes: dict) -> list:
    subscripts = _attrs(stmt)["subscripts"]
    operands = [shapes[a] for a in stmt.args]
    if len(stmt.args) == 1:
        letters, result = subscripts.split("->")
        if len(letters) == 2 and result == letters[::-1] and not _batched(operands[0]):
            return [("transpose", stmt)]
        raise NoKernelError("contract")
    if _elementwise(subscripts, operands):  # nothing summed: a product, broadcast
        a, b = stmt.args
        return [("map", Assign(stmt.target, a * b, tuple(stmt.shape), stmt.phase))]
    if any(len(s) == 1 and _batched(s) for s in operands):
        raise NoKernelError("contract")
    if gemm_layout(subscripts, operands) is not None:
        return [("gemm", stmt)]
    left, right = subscripts.split("->")[0].split(",")
    if left == right and subscripts.endswith(f"->{left[0]}") and len(left) == 2:
        if all(_rows_shape(s) for s in operands):  # dot(u, v) of each sample
            return [("rows", replace(stmt, op="dot_row"))]
    raise NoKernelError("contract")


def _row_reduction(op: str) -> Callable:
    def kernel(stmt: Call, shapes: dict) -> list:
        (a,) = stmt.args
        attrs = _attrs(stmt)
        over_features = attrs.get("axes", (1,)) == (1,)
        if _rows_shape(shapes[a]) and over_features and _per_sample(stmt.shape):
            return [("rows", replace(stmt, op=op))]
        if op == "sum_row" and len(shapes[a]) == 1 and not _batched(shapes[a]):
            # the sum of a parameter's (or a value of parameters') elements
            return [("reduce", BatchSum(stmt.target, a, (), stmt.phase))]
        raise NoKernelError(stmt.op)

    return kernel


def _spread(stmt: Call, shapes: dict) -> list:
    """broadcast_to and broadcast: the value read at every element of the result, in
    the loop of the elementwise stage it joins."""
    (g,) = stmt.args
    source, shape = shapes[g], tuple(stmt.shape)
    fits = (
        not source
        or (_batched(shape) and _per_sample(source))
        or (_rows_shape(shape) and tuple(source) in ((shape[1],), (1, shape[1])))
    )
    if not fits or len(shape) > 2:
        raise NoKernelError(stmt.op)
    return [("map", Assign(stmt.target, g, shape, stmt.phase))]


def _sum_to(stmt: Call, shapes: dict) -> list:
    (g,) = stmt.args
    source, shape = shapes[g], tuple(stmt.shape)
    if _rows_shape(source) and _per_sample(shape):
        return [("rows", replace(stmt, op="sum_row"))]
    if _rows_shape(source) and shape in ((source[1],), (1, source[1])) and source[1] > 1:
        return [("colsum", replace(stmt, op="sum_rows"))]
    if _batched(source) and not shape:
        return [("reduce", BatchSum(stmt.target, g, (), stmt.phase))]
    raise NoKernelError(stmt.op)


def _same_layout(stmt: Call, shapes: dict) -> list:
    """expand and squeeze between (N,) and (N, 1): the same elements, copied."""
    (g,) = stmt.args
    if _per_sample(shapes[g]) and _per_sample(stmt.shape):
        return [("map", Assign(stmt.target, g, tuple(stmt.shape), stmt.phase))]
    raise NoKernelError(stmt.op)


def _part(stmt: Call, shapes: dict) -> list:
    """index (v[0], v[1:3]) and its adjoint pad: a copy within each sample's row."""
    (a,) = stmt.args
    if _rows_shape(shapes[a]) or _rows_shape(stmt.shape):
        return [("rows", replace(stmt, op="slice_row" if stmt.op == "index" else "pad_row"))]
    raise NoKernelError(stmt.op)


def _concat(stmt: Call, shapes: dict) -> list:
    """concat(u, v, ...): each sample's parts one after another in its row."""
    if _rows_shape(stmt.shape) and all(_batched(shapes[a]) for a in stmt.args):
        return [("rows", replace(stmt, op="concat_row"))]
    raise NoKernelError(stmt.op)


def _full(stmt: Call, shapes: dict) -> list:
    """A constant tensor: the value at every element, in an elementwise stage."""
    value = _attrs(stmt)["value"]
    if len(stmt.shape) > 2:
        raise NoKernelError(stmt.op)
    return [("map", Assign(stmt.target, sp.sympify(value), tuple(stmt.shape), stmt.phase))]


KERNELS: dict[str, Callable[[Call, dict], list]] = {
    "index": _part,
    "pad": _part,
    "concat": _concat,
    "full": _full,
    "contract": _contract,
    "sum": _row_reduction("sum_row"),
    "max": _row_reduction("max_row"),
    "logsumexp": _row_reduction("logsumexp_row"),
    "broadcast_to": _spread,
    "broadcast": _spread,
    "sum_to": _sum_to,
    "expand": _same_layout,
    "squeeze": _same_layout,
}


def lower(stmt: Call, shapes: dict) -> list:
    """The stages of one tensor op (raises NoKernelError where the C family has none)."""
    kernel = KERNELS.get(stmt.op)
    if kernel is None:
        raise NoKernelError(stmt.op)
    return kernel(stmt, shapes)
