"""The NumPy step's layout for dense layers: the bias as one more column of the product.

``Z = A W^T + b`` is one product ``[A | 1] [W | b]^T`` when A's array carries a column
of ones after its features and W and b are one block ``[W | b]`` of shape (out, in + 1)
in the flat parameter array; and ``[dL/dW | dL/db] = delta^T [A | 1]`` gives both
gradients in one product, since the column sums of delta are ``delta^T 1``. Each fold
saves two NumPy calls per layer and step (the bias add and ``1^T delta``), which is
most of what a tiny network costs, and the passes over Z and delta that they make.

This is a layout decision of the in-place NumPy printing only: the program, the
derivation and the other targets keep Z = A W^T + b. A layer is folded only where every
array involved can carry the extra column safely (:func:`find_folds`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..memory import Plan
from ..program import Assign, BatchMean, BatchSum, Call, Statement

# tensor operations whose NumPy printing reads and writes arrays of any strides (a
# value that lives in the features of an [A | 1] array is a strided view of it)
STRIDED_OPS = frozenset({"linear", "matmul", "matmul_tn", "sum_rows"})


@dataclass(frozen=True)
class BiasFold:
    """One dense layer whose bias rides in its products."""

    linear: Call  # Z = linear(A, W, b)
    weight_grad: Call  # dL/dW = matmul_tn(delta, A)
    bias_grad: Call  # dL/db = sum_rows(delta)

    @property
    def source(self) -> sp.Symbol:
        return self.linear.args[0]

    @property
    def weight(self) -> str:
        return self.linear.args[1].name

    @property
    def bias(self) -> str:
        return self.linear.args[2].name

    @property
    def block(self) -> str:
        """The name of [W | b] (and, with ``d_``, of its gradient)."""
        return f"{self.weight}_{self.bias}"


def ones_name(array: str) -> str:
    """The name of the array [array | 1]."""
    return f"{array}_ones"


def find_folds(
    statements: list[Statement],
    params: list[sp.Symbol],
    grads: dict[sp.Symbol, sp.Symbol],
    inputs: list[sp.Symbol],
    plan: Plan,
) -> list[BiasFold]:
    """The dense layers of ``statements`` that can be folded.

    A layer qualifies when its forward statement is ``linear(A, W, b)`` over parameters,
    its two parameter gradients are ``delta^T A`` and the column sums of the same delta,
    and A is a (N, in) program input or lives in a planned buffer that only ever holds
    (N, in) values written and read by strided-safe operations."""
    by_target = {s.target: s for s in statements}
    folds = []
    for stmt in statements:
        if not (isinstance(stmt, Call) and stmt.op == "linear" and len(stmt.args) == 3):
            continue
        source, weight, bias = stmt.args
        if weight not in params or bias not in params:
            continue
        weight_grad, bias_grad = by_target.get(grads.get(weight)), by_target.get(grads.get(bias))
        if not (
            isinstance(weight_grad, Call)
            and weight_grad.op == "matmul_tn"
            and weight_grad.args[1] == source
            and isinstance(bias_grad, Call)
            and bias_grad.op == "sum_rows"
            and bias_grad.args == weight_grad.args[:1]
        ):
            continue
        if source in inputs or _carries_ones(plan.home.get(source), statements, plan):
            folds.append(BiasFold(stmt, weight_grad, bias_grad))
    return folds


def _carries_ones(buffer: str | None, statements: list[Statement], plan: Plan) -> bool:
    """Whether a column of ones after the buffer's features is safe: every value it
    holds has the same (N, k) shape and is written and read by operations that treat
    a strided view like any array."""
    if buffer is None or buffer not in {b.name for b in plan.buffers}:
        return False
    held = {value for value, home in plan.home.items() if home == buffer}
    shapes = {s.shape for s in statements if s.target in held}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        return False
    for stmt in statements:
        touches = stmt.target in held or bool(stmt.reads & held)
        if touches and not _strided_safe(stmt):
            return False
    return True


def _strided_safe(stmt: Statement) -> bool:
    if isinstance(stmt, (Assign, BatchSum, BatchMean)):
        return True
    return isinstance(stmt, Call) and stmt.op in STRIDED_OPS
