"""One rule per op: its forward statement and its vector-Jacobian product.

The reverse-mode loop looks rules up here by ``node.op`` and never names an op itself.
A VJP returns ``(input tensor, contribution, contribution shape)`` triples; the loop
sums contributions and reduces them to the input's shape (the adjoint of
broadcasting). Elementwise derivatives come from ``sympy.diff``, rewritten to read the
forward value the node already computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy.core.parameters import distribute

from .functions import apply_kink_conventions
from .ir import BATCH, Graph, N, Node, Shape
from .program import Assign, BatchMean, Statement

Contribution = tuple[str, sp.Expr, Shape]


@dataclass(frozen=True)
class Rule:
    forward: Callable[[Node, Graph], list[Statement]]
    vjp: Callable[[Node, sp.Expr, Graph, set[str]], list[Contribution]]


RULES: dict[str, Rule] = {}


def register(op: str, forward, vjp) -> None:
    RULES[op] = Rule(forward, vjp)


# --- elementwise: out = f(inputs), any SymPy expression over the inputs' symbols ------


def _elementwise_forward(node: Node, graph: Graph) -> list[Statement]:
    out = graph.tensors[node.output]
    return [Assign(out.symbol, node.attrs["expr"], out.shape, "forward")]


def local_derivative(expr: sp.Expr, wrt: sp.Symbol, value: sp.Symbol) -> sp.Expr:
    """d expr / d wrt, written with ``value`` (the stored result of ``expr``) wherever
    the derivative repeats the forward computation: tanh' = 1 - t**2 from t = tanh(a),
    exp' = e, sigmoid' = s*(1 - s), sqrt' = 1/(2*r)."""
    with distribute(False):
        local = sp.diff(expr, wrt)
        reuse = {expr: value}
        if isinstance(expr, sp.Pow) and not expr.exp.is_Integer:
            base, power = expr.args
            reuse[base ** (power - 1)] = value / base
            reuse[1 / base ** (1 - power)] = value / base
        local = local.xreplace(reuse)
    return apply_kink_conventions(local)


def _elementwise_vjp(node: Node, g: sp.Expr, graph: Graph, needs: set[str]) -> list[Contribution]:
    out = graph.tensors[node.output]
    expr = node.attrs["expr"]
    result = []
    for name in dict.fromkeys(node.inputs):
        if name not in needs:
            continue
        local = local_derivative(expr, graph.tensors[name].symbol, out.symbol)
        if local != 0:
            with distribute(False):
                result.append((name, g * local, out.shape))
    return result


register("elementwise", _elementwise_forward, _elementwise_vjp)


# --- mean over the batch: L = (1/N) sum_n l_n -----------------------------------------


def _mean_forward(node: Node, graph: Graph) -> list[Statement]:
    out, src = graph.tensors[node.output], graph.tensors[node.inputs[0]]
    if BATCH in src.shape:
        return [BatchMean(out.symbol, src.symbol, out.shape)]
    return [Assign(out.symbol, src.symbol, out.shape, "forward")]


def _mean_vjp(node: Node, g: sp.Expr, graph: Graph, needs: set[str]) -> list[Contribution]:
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    # each sample's loss enters the mean with weight 1/N
    return [(src.name, g / N if BATCH in src.shape else g, ())]


register("mean", _mean_forward, _mean_vjp)
