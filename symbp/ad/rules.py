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
from functools import lru_cache

import sympy as sp
from sympy.core.parameters import distribute, global_parameters

from ..functions import apply_kink_conventions
from ..ir.graph import BATCH, Graph, N, Node, Shape
from ..program.statements import Assign, BatchMean, BatchSum, Call, Statement

Contribution = tuple[str, sp.Expr, Shape]


@dataclass(frozen=True)
class Rule:
    forward: Callable[[Node, Graph], list[Statement]]
    # (node, adjoint of its output, graph, tensors that need adjoints, emitter) ->
    # contributions; tensor ops emit their products through ``emit`` and contribute
    # the resulting symbol
    vjp: Callable[..., list[Contribution]]
    # the VJP hands the adjoint to tensor ops, so it must hold the output's whole shape
    # even where its value is the same for every element (dL/dl_n = 1/N)
    full_adjoint: bool = False


RULES: dict[str, Rule] = {}


def register(op: str, forward, vjp, *, full_adjoint: bool = False) -> None:
    RULES[op] = Rule(forward, vjp, full_adjoint)


# adjoint ops that route each gradient element to one input element whose value is
# known (max-pooling's, to the window's maximum): op -> (index of the input, of the
# known values, of the gradient) among its arguments; symbp.program.mask_before_routing
# applies elementwise masks before them
ROUTING: dict[str, tuple[int, int, int]] = {}


# --- elementwise: out = f(inputs), any SymPy expression over the inputs' symbols ------


def _elementwise_forward(node: Node, graph: Graph) -> list[Statement]:
    out = graph.tensors[node.output]
    return [Assign(out.symbol, node.attrs["expr"], out.shape, "forward")]


def local_derivative(expr: sp.Expr, wrt: sp.Symbol, value: sp.Symbol) -> sp.Expr:
    """d expr / d wrt, written with ``value`` (the stored result of ``expr``) wherever
    the derivative repeats the forward computation: tanh' = 1 - t**2 from t = tanh(a),
    exp' = e, sigmoid' = s*(1 - s), sqrt' = 1/(2*r). Call it under
    ``undistributed()`` so that 2*(x - y) stays a product.

    Every layer of a stack applies the same activation to a different tensor, so the
    derivative is taken once per formula over placeholder names and renamed after."""
    symbols = sorted(expr.free_symbols | {wrt, value}, key=lambda s: s.name)
    # SymPy's distribute switch changes the result (2*(x - y) or 2*x - 2*y): part of the key
    distributing = bool(global_parameters.distribute)
    if len(symbols) > len(_PLACEHOLDERS):
        return _canonical_derivative(expr, wrt, value, distributing)
    placeholders = _PLACEHOLDERS[: len(symbols)]
    forward = dict(zip(symbols, placeholders, strict=True))
    backward = dict(zip(placeholders, symbols, strict=True))
    canonical = expr.xreplace(forward)
    local = _canonical_derivative(canonical, forward[wrt], forward[value], distributing)
    return local.xreplace(backward)


_PLACEHOLDERS = [sp.Symbol(f"_u{i}", real=True) for i in range(64)]


@lru_cache(maxsize=4096)
def _canonical_derivative(
    expr: sp.Expr, wrt: sp.Symbol, value: sp.Symbol, distributing: bool
) -> sp.Expr:
    local = sp.diff(expr, wrt)
    reuse = {expr: value}
    if isinstance(expr, sp.Pow) and not expr.exp.is_Integer:
        base, power = expr.args
        reuse[base ** (power - 1)] = value / base
        reuse[1 / base ** (1 - power)] = value / base
    return _tests_on_the_value(apply_kink_conventions(local.xreplace(reuse)), expr, wrt, value)


def _tests_on_the_value(local: sp.Expr, expr: sp.Expr, wrt: sp.Symbol, value: sp.Symbol):
    """relu'(z) = [z > 0] is also [a > 0] for the stored a = relu(z): where f(z) > 0
    exactly when z > 0 (relu, leaky_relu), a test on z is the same test on a, and the
    backward pass need not keep z. Only done where it removes z from the derivative."""
    tests = {
        e
        for e in sp.preorder_traversal(local)
        if (isinstance(e, sp.Heaviside) and e.args == (wrt, 0)) or e == (wrt > 0)
    }
    if not tests:
        return local
    on_value = local.xreplace({t: t.xreplace({wrt: value}) for t in tests})
    if on_value.has(wrt):
        return local
    definition = expr.replace(lambda e: hasattr(e, "definition"), lambda e: e.definition())
    try:
        positive = sp.solveset(definition > 0, wrt, sp.S.Reals)
    except (NotImplementedError, ValueError, TypeError):  # pragma: no cover - SymPy gives up
        return local
    return on_value if positive == sp.Interval.open(0, sp.oo) else local


def undistributed():
    """SymPy otherwise rewrites 2*(x - y) as 2*x - 2*y, which costs an operation and
    hides shared factors. Switching it clears SymPy's caches, so do it once per pass."""
    return distribute(False)


def _elementwise_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    out = graph.tensors[node.output]
    expr = node.attrs["expr"]
    result = []
    for name in dict.fromkeys(node.inputs):
        if name not in needs:
            continue
        local = local_derivative(expr, graph.tensors[name].symbol, out.symbol)
        if local == 0:
            continue
        result.append(unbroadcast(name, g * local, graph.tensors[name].shape, out.shape, emit))
    return result


def unbroadcast(name: str, contribution, shape: Shape, source: Shape, emit) -> Contribution:
    """The contribution to ``name`` (of ``shape``) of an adjoint of ``source``'s shape,
    which ``name`` was broadcast to (a bias of shape () added to a vector, a size-1
    axis): summed over the axes it was repeated along. The batch, if ``name`` has none,
    is the loop's to sum."""
    if _per_sample(shape) == _per_sample(source):
        return (name, contribution, source)
    kept = shape if BATCH in shape or BATCH not in source else (BATCH, *shape)
    attrs = (("shape", kept), ("source", source))
    return (name, emit("sum_to", (contribution,), kept, f"d_{name}", attrs), kept)


def _per_sample(shape: Shape) -> Shape:
    return shape[1:] if shape[:1] == (BATCH,) else shape


register("elementwise", _elementwise_forward, _elementwise_vjp)


# --- mean over the batch: L = (1/N) sum_n l_n -----------------------------------------


def _mean_forward(node: Node, graph: Graph) -> list[Statement]:
    out, src = graph.tensors[node.output], graph.tensors[node.inputs[0]]
    if BATCH in src.shape and node.attrs.get("reduction") == "sum":
        return [BatchSum(out.symbol, src.symbol, out.shape, "forward")]
    if BATCH in src.shape:
        return [
            BatchMean(
                out.symbol,
                src.symbol,
                out.shape,
                sum_features=node.attrs.get("sum_features", False),
            )
        ]
    return [Assign(out.symbol, src.symbol, out.shape, "forward")]


def _mean_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    # each element enters the mean with weight 1/(N * elements per sample)
    per_sample = node.attrs.get("per_sample", 1)
    if node.attrs.get("reduction") == "sum":
        return [(src.name, g / per_sample, ())]
    return [(src.name, g / (N * per_sample) if BATCH in src.shape else g / per_sample, ())]


register("mean", _mean_forward, _mean_vjp)


# --- linear: Z = A W^T + b (torch.nn.Linear's layout) ----------------------------------


def _linear_forward(node: Node, graph: Graph) -> list[Statement]:
    out = graph.tensors[node.output]
    args = tuple(graph.tensors[i].symbol for i in node.inputs)
    return [Call(out.symbol, "linear", args, out.shape, "forward")]


def _linear_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """dL/dA = delta W, dL/dW = delta^T A, dL/db = the column sums of delta."""
    a, w = (graph.tensors[i] for i in node.inputs[:2])
    result = []
    if a.name in needs:
        result.append((a.name, emit("matmul", (g, w.symbol), a.shape, f"d_{a.name}"), a.shape))
    if w.name in needs:
        result.append((w.name, emit("matmul_tn", (g, a.symbol), w.shape, f"d_{w.name}"), w.shape))
    if len(node.inputs) > 2 and node.inputs[2] in needs:
        b = graph.tensors[node.inputs[2]]
        result.append((b.name, emit("sum_rows", (g,), b.shape, f"d_{b.name}"), b.shape))
    return result


register("linear", _linear_forward, _linear_vjp)


# --- softmax over the features: s_i = exp(z_i) / sum_j exp(z_j) ------------------------


def _softmax_forward(node: Node, graph: Graph) -> list[Statement]:
    out, src = graph.tensors[node.output], graph.tensors[node.inputs[0]]
    return [Call(out.symbol, "softmax", (src.symbol,), out.shape, "forward")]


def _softmax_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """J^T g with J_ij = s_i (delta_ij - s_j): dL/dz = s o (g - (g . s) 1)."""
    src, out = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    if src.name not in needs:
        return []
    return [(src.name, emit("softmax_vjp", (out.symbol, g), src.shape, f"d_{src.name}"), src.shape)]


register("softmax", _softmax_forward, _softmax_vjp)


# --- cross-entropy of logits against class probabilities (one-hot labels) -------------


def _cross_entropy_forward(node: Node, graph: Graph) -> list[Statement]:
    out = graph.tensors[node.output]
    args = tuple(graph.tensors[i].symbol for i in node.inputs)
    return [Call(out.symbol, "cross_entropy", args, out.shape, "forward")]


def _cross_entropy_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """l_n = logsumexp(z_n) - y_n . z_n, so dl_n/dz_n = softmax(z_n) - y_n (fused, stable)."""
    logits, labels = (graph.tensors[i] for i in node.inputs)
    if logits.name not in needs:
        return []
    delta = emit("cross_entropy_vjp", (logits.symbol, labels.symbol, g), logits.shape, "delta")
    return [(logits.name, delta, logits.shape)]


register("cross_entropy", _cross_entropy_forward, _cross_entropy_vjp)
