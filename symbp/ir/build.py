"""Lower a spec to the model IR.

Expression models are split into atomic elementwise nodes (one SymPy operation each),
with identical subexpressions mapped to a single node, so reverse mode sees the
shared DAG rather than a tree.
"""

from __future__ import annotations

import math

import sympy as sp

from ..program.naming import Names
from ..spec.expression import ExpressionSpec
from .graph import BATCH, Graph, Node, Tensor, broadcast_shape


def _prefix(expr: sp.Expr) -> str:
    if isinstance(expr, sp.Function) or isinstance(expr, (sp.Max, sp.Min)):
        return type(expr).__name__.lower()
    return "t"


class _Lowering:
    def __init__(self, names: Names):
        self.names = names
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.memo: dict[sp.Expr, sp.Symbol] = {}

    def leaf(self, name: str, shape: tuple, role: str) -> None:
        self.tensors[name] = Tensor(name, shape, role, named=True)

    def shape(self, symbol: sp.Symbol) -> tuple:
        return self.tensors[symbol.name].shape

    def atom(self, expr: sp.Expr) -> sp.Expr:
        """A symbol whose tensor holds ``expr`` (adding nodes), or ``expr`` if constant."""
        if not expr.free_symbols or expr.is_Symbol:
            return expr
        if expr in self.memo:
            return self.memo[expr]
        symbol = self.add_node(expr.func(*[self.atom(a) for a in expr.args]), None, expr)
        return symbol

    def add_node(
        self,
        node_expr: sp.Expr,
        name: str | None,
        original: sp.Expr | None = None,
        role: str = "value",
    ) -> sp.Symbol:
        inputs = sorted({s.name for s in node_expr.free_symbols}, key=str)
        shape = broadcast_shape([self.tensors[i].shape for i in inputs])
        symbol = sp.Symbol(name, real=True) if name else self.names.fresh(_prefix(node_expr))
        self.tensors[symbol.name] = Tensor(symbol.name, shape, role, named=bool(name))
        self.nodes.append(Node("elementwise", tuple(inputs), symbol.name, {"expr": node_expr}))
        if original is not None:
            self.memo[original] = symbol
        return symbol

    def named(self, name: str, expr: sp.Expr, role: str = "value") -> sp.Symbol:
        """A user-named value: the top node of ``expr`` gets ``name``."""
        if expr.free_symbols and not expr.is_Symbol and expr not in self.memo:
            top = expr.func(*[self.atom(a) for a in expr.args])
            return self.add_node(top, name, expr, role)
        return self.add_node(self.atom(expr), name, None, role)


def expression_graph(spec: ExpressionSpec, names: Names) -> Graph:
    low = _Lowering(names)
    for x in spec.inputs:
        low.leaf(x, (BATCH,), "input")
    for y in spec.targets:
        low.leaf(y, (BATCH,), "target")
    for p in spec.params:
        low.leaf(p, (), "param")
    for name, expr in spec.lets:
        low.named(name, expr)
    outputs = [low.named(name, expr).name for name, expr in spec.outputs]
    sample_loss = names.pick("l_n", "loss_n")
    low.named(sample_loss, spec.loss, role="sample_loss")
    batch_loss = names.pick("L", "loss_batch")
    low.tensors[batch_loss] = Tensor(batch_loss, (), "loss", named=True)
    low.nodes.append(Node("mean", (sample_loss,), batch_loss))
    return Graph(
        tensors=low.tensors,
        nodes=low.nodes,
        loss=batch_loss,
        params=list(spec.params),
        inputs=list(spec.inputs),
        targets=list(spec.targets),
        outputs=outputs,
    )


def _batched(shape: tuple[int, ...]) -> tuple:
    """The IR shape of a batch of per-sample ``shape``: images (C, H, W) are stored
    channels-last, (N, H, W, C), so that a convolution's unfolded rows are pixels and
    its product with the kernel is the output without a transpose."""
    if len(shape) == 3:
        c, h, w = shape
        return (BATCH, h, w, c)
    return (BATCH, *shape)


def layer_graph(spec, names: Names) -> Graph:
    """A layer stack: Z(l) = A(l-1) W(l)^T + b(l) (dense) or unfold(A(l-1)) W(l)^T + b(l)
    (conv2d, U(l) the unfolded input), pooling and flatten, A(l) = f(Z(l)), then the loss."""
    from ..spec.layers import y, yhat, z

    tensors: dict[str, Tensor] = {}
    nodes: list[Node] = []

    def tensor(name: str, shape: tuple, role: str = "value", origin: tuple = ()) -> sp.Symbol:
        tensors[name] = Tensor(name, shape, role, named=True, origin=origin)
        return tensors[name].symbol

    current = tensor("X", (BATCH, *spec.shapes[0]), "input")  # images (N, C, H, W) as torch
    if spec.convolutional:  # A(0): the same images channels-last, a transposed view
        first = tensor("A0", _batched(spec.shapes[0]), origin=("A", 0))
        nodes.append(Node("channels_last", (current.name,), first.name))
        current = first
    param_shapes = spec.param_shapes()
    for layer in spec.layers:
        k, shape = layer.index, _batched(spec.shapes[layer.index])
        if layer.has_params:
            inputs = [f"W{k}"]
            tensor(f"W{k}", param_shapes[f"W{k}"], "param", ("W", k))
            if layer.bias:
                tensor(f"b{k}", param_shapes[f"b{k}"], "param", ("b", k))
                inputs.append(f"b{k}")
            geometry = {"kernel": layer.kernel, "stride": layer.stride, "padding": layer.padding}
            if layer.op == "conv2d":
                # U(l): every patch of A(l-1) a row (a ones column for the bias)
                _, ho, wo, _ = shape
                columns = math.prod(param_shapes[f"W{k}"][1:]) + layer.bias
                unfolded = tensor(f"U{k}", (BATCH, ho, wo, columns), origin=("U", k))
                attrs = {**geometry, "ones": layer.bias}
                nodes.append(Node("unfold", (current.name,), unfolded.name, attrs))
                current = tensor(f"Z{k}", shape, origin=("Z", k))
                nodes.append(Node("conv2d", (unfolded.name, *inputs), current.name, geometry))
            else:
                current_in = current.name
                current = tensor(f"Z{k}", shape, origin=("Z", k))
                nodes.append(Node("linear", (current_in, *inputs), current.name))
        elif layer.op in ("maxpool2d", "avgpool2d", "flatten"):
            out = tensor(f"A{k}", shape, origin=("A", k))
            attrs = {"kernel": layer.kernel, "stride": layer.stride}
            nodes.append(Node(layer.op, (current.name,), out.name, attrs))
            current = out
        if layer.activation == "softmax":
            out = tensor(f"A{k}", shape, origin=("A", k))
            nodes.append(Node("softmax", (current.name,), out.name))
            current = out
        elif layer.formula is not None and layer.activation != "identity":
            out = tensor(f"A{k}", shape, origin=("A", k))
            expr = layer.formula.xreplace({z: current})
            nodes.append(Node("elementwise", (current.name,), out.name, {"expr": expr}))
            current = out
    names.taken |= set(tensors)
    target = tensor("Y", (BATCH, spec.outputs), "target")
    sample_loss = names.pick("l_n")
    if spec.loss == "cross_entropy":
        tensor(sample_loss, (BATCH,), "sample_loss")
        nodes.append(Node("cross_entropy", (current.name, "Y"), sample_loss))
        per_sample = 1
    else:
        expr = spec.element_loss.xreplace({yhat: current, y: target})
        tensor(sample_loss, (BATCH, spec.outputs), "sample_loss")
        nodes.append(Node("elementwise", (current.name, "Y"), sample_loss, {"expr": expr}))
        # torch's named losses average over every element; a formula sums over outputs
        per_sample = spec.loss_elements
    batch_loss = names.pick("L")
    tensor(batch_loss, (), "loss")
    nodes.append(Node("mean", (sample_loss,), batch_loss, {"per_sample": per_sample}))
    if spec.custom_loss is not None:
        nodes[-1].attrs["sum_features"] = True
    return Graph(
        tensors=tensors,
        nodes=nodes,
        loss=batch_loss,
        params=spec.params,
        inputs=["X"],
        targets=["Y"],
        outputs=[current.name],
    )
