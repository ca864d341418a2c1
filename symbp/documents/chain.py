"""The chain rule at the level of the names a user wrote, for people to read.

Reverse mode (:mod:`symbp.ad.reverse`) works on atomic operations; documents and code
comments speak of the values the user named: the loss l, the output(s) yhat, the
let-names, the parameters. A :class:`ChainStep` says how the adjoint of one named
value is assembled from the adjoints of the named values that consume it, in the
order of the course notes: dl/dyhat first, then back to each parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..ad.rules import local_derivative, undistributed
from ..spec.expression import ExpressionSpec


@dataclass(frozen=True)
class ChainStep:
    name: str  # the value whose adjoint dl/d(name) this step computes
    kind: str  # "output" | "let" | "param"
    terms: tuple[tuple[str, sp.Expr], ...]  # (consumer c, dc/d(name)) pairs
    value: sp.Expr  # dl/d(name) over named forward values (yhat, lets, inputs, params)


def definitions(spec: ExpressionSpec) -> list[tuple[str, sp.Expr]]:
    """Named values in forward order, the per-sample loss ``l`` last."""
    return [*spec.lets, *spec.outputs, ("l", spec.loss)]


LOCAL_MAX_OPS = 24  # a definition larger than this keeps its local partial unexpanded


def chain_steps(spec: ExpressionSpec) -> list[ChainStep]:
    with undistributed():
        return _chain_steps(spec)


def _chain_steps(spec: ExpressionSpec) -> list[ChainStep]:
    defs = definitions(spec)
    reads = {name: expr.free_symbols for name, expr in defs}  # computed once: O(size)
    large = {name for name, expr in defs if sp.count_ops(expr) > LOCAL_MAX_OPS}
    adjoint: dict[str, sp.Expr] = {"l": sp.S.One}
    steps: list[ChainStep] = []
    kinds = {n: "let" for n, _ in spec.lets} | {n: "output" for n, _ in spec.outputs}
    candidates = [n for n, _ in reversed(defs[:-1])] + list(spec.params)
    for name in candidates:
        symbol = sp.Symbol(name, real=True)
        terms = []
        for consumer, expr in defs:
            if consumer in adjoint and symbol in reads[consumer]:
                value = sp.Symbol(consumer, real=True)
                if consumer in large:  # written as d(consumer)/d(name): stays readable
                    local = sp.Derivative(value, symbol, evaluate=False)
                else:
                    local = local_derivative(expr, symbol, value)
                if local != 0:
                    terms.append((consumer, local))
        value = sp.Add(*[adjoint[c] * local for c, local in terms])
        if not terms and name not in spec.params:
            continue  # a let-name nothing reads: no step
        adjoint[name] = value
        steps.append(ChainStep(name, kinds.get(name, "param"), tuple(terms), value))
    return steps


def substitute_definitions(spec: ExpressionSpec, expr: sp.Expr) -> sp.Expr:
    """Rewrite ``expr`` over inputs, targets and parameters only (no named intermediates)."""
    for name, definition in reversed(definitions(spec)[:-1]):
        expr = expr.xreplace({sp.Symbol(name, real=True): definition})
    return expr


def full_loss(spec: ExpressionSpec) -> sp.Expr:
    """The per-sample loss over inputs, targets and parameters."""
    return substitute_definitions(spec, spec.loss)
