"""Rules of the image ops: convolution by unfold (im2col) and a matrix product,
pooling, and flatten. Registered in :data:`symbp.ad.rules.RULES` like every other op.

Images are stored channels-last inside a module, (N, H, W, C). A convolution is
lowered to two nodes, as the course derives it:

    U = unfold(A)           every kh x kw patch of A one row, (N, Ho, Wo, C kh kw [+ 1])
    Z = U W^T (+ b)         W as an (out, C kh kw) matrix; the bias as U's ones column

so that its vector-Jacobian products are those of a matrix product,
dL/dW = (dL/dZ)^T U reshaped to the kernel and dL/dU = (dL/dZ) W, followed by the
adjoint of unfold, fold: every patch row's gradient added back into the pixels it was
copied from. Max-pooling sends each window's gradient to its (first) maximum,
average-pooling spreads it evenly; flatten is a reshape to torch's (C, H, W) order.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..program.statements import Call, Statement
from .rules import ROUTING, Contribution, register


def _geometry(node: Node, *keys: str) -> tuple[tuple[str, object], ...]:
    return tuple((key, tuple(node.attrs[key])) for key in keys)


def _call(node: Node, graph: Graph, op: str, attrs=()) -> list[Statement]:
    out = graph.tensors[node.output]
    args = tuple(graph.tensors[i].symbol for i in node.inputs)
    return [Call(out.symbol, op, args, out.shape, "forward", attrs=attrs)]


# --- channels_last: the input images (N, C, H, W) as (N, H, W, C), a view -----------


def _channels_last_forward(node: Node, graph: Graph) -> list[Statement]:
    return _call(node, graph, "channels_last")


def _channels_last_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:  # the input is data: never needed in a layer stack
        return []
    return [(src.name, emit("channels_first", (g,), src.shape, f"d_{src.name}"), src.shape)]


register("channels_last", _channels_last_forward, _channels_last_vjp)


# --- unfold (im2col): U = the patches of A as rows; its adjoint is fold ---------------


def _unfold_forward(node: Node, graph: Graph) -> list[Statement]:
    attrs = (*_geometry(node, "kernel", "stride", "padding"), ("ones", node.attrs["ones"]))
    return _call(node, graph, "unfold", attrs)


def _unfold_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """dL/dA = fold(dL/dU): each pixel receives the sum of the gradients of every patch
    entry it was copied into (the ones column, a constant, has none)."""
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    _, h, w, _ = src.shape
    attrs = (("size", (h, w)), *_geometry(node, "kernel", "stride", "padding"))
    return [(src.name, emit("fold", (g,), src.shape, f"d_{src.name}", attrs), src.shape)]


register("unfold", _unfold_forward, _unfold_vjp)


# --- conv2d as a product: Z = U W^T + b, W of shape (out, C, kh, kw) --------------------


def _conv2d_forward(node: Node, graph: Graph) -> list[Statement]:
    return _call(node, graph, "conv2d")


def _conv2d_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """dL/dW = (dL/dZ)^T U reshaped to (out, C, kh, kw); dL/db = its ones-column part (the
    column sums of dL/dZ); dL/dU = (dL/dZ) W (without the ones column)."""
    unfolded, w = (graph.tensors[i] for i in node.inputs[:2])
    bias = graph.tensors[node.inputs[2]] if len(node.inputs) > 2 else None
    result = []
    if w.name in needs or (bias is not None and bias.name in needs):
        out, *rest = w.shape
        columns = unfolded.shape[-1]
        both = emit("conv2d_weight_grad", (g, unfolded.symbol), (out, columns), f"d_{w.name}")
        if w.name in needs:
            attrs = (("shape", tuple(w.shape)),)
            result.append(
                (w.name, emit("kernel_part", (both,), w.shape, f"d_{w.name}", attrs), w.shape)
            )
        if bias is not None and bias.name in needs:
            result.append(
                (bias.name, emit("bias_part", (both,), bias.shape, f"d_{bias.name}"), bias.shape)
            )
    if unfolded.name in needs:
        n, ho, wo, _ = unfolded.shape
        shape = (n, ho, wo, w.shape[1] * w.shape[2] * w.shape[3])
        contribution = emit("conv2d_input_grad", (g, w.symbol), shape, f"d_{unfolded.name}")
        result.append((unfolded.name, contribution, shape))
    return result


register("conv2d", _conv2d_forward, _conv2d_vjp)


# --- pooling over kh x kw windows with a stride ---------------------------------------


def _maxpool_forward(node: Node, graph: Graph) -> list[Statement]:
    return _call(node, graph, "maxpool2d", _geometry(node, "kernel", "stride"))


def _maxpool_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """Each window's gradient goes to the position of its maximum, the first one on ties
    (as torch); every other input gets none from that window."""
    src, out = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    if src.name not in needs:
        return []
    args = (src.symbol, out.symbol, g)
    attrs = _geometry(node, "kernel", "stride")
    return [(src.name, emit("maxpool2d_vjp", args, src.shape, f"d_{src.name}", attrs), src.shape)]


register("maxpool2d", _maxpool_forward, _maxpool_vjp)
# maxpool2d_vjp(a, p, g) sends g[w] to the element of a equal to p[w]
ROUTING["maxpool2d_vjp"] = (0, 1, 2)


def _avgpool_forward(node: Node, graph: Graph) -> list[Statement]:
    return _call(node, graph, "avgpool2d", _geometry(node, "kernel", "stride"))


def _avgpool_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """Each window's gradient, divided by kh kw, goes to every input of the window."""
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    _, h, w, _ = src.shape
    attrs = (("size", (h, w)), *_geometry(node, "kernel", "stride"))
    return [(src.name, emit("avgpool2d_vjp", (g,), src.shape, f"d_{src.name}", attrs), src.shape)]


register("avgpool2d", _avgpool_forward, _avgpool_vjp)


# --- flatten: (N, H, W, C) to (N, C H W) in torch's (C, H, W) order --------------------


def _flatten_forward(node: Node, graph: Graph) -> list[Statement]:
    return _call(node, graph, "flatten")


def _flatten_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    _, h, w, c = src.shape
    attrs = (("shape", (c, h, w)),)
    return [(src.name, emit("unflatten", (g,), src.shape, f"d_{src.name}", attrs), src.shape)]


register("flatten", _flatten_forward, _flatten_vjp)


# --- what each image op costs, in floating-point operations (shapes with the batch size
# substituted; copies and views cost none)


def _count(shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


COST = {
    "conv2d": lambda shapes, out, attrs: 2 * _count(out) * shapes[0][-1],
    "conv2d_weight_grad": lambda shapes, out, attrs: 2 * _count(shapes[0]) * shapes[1][-1],
    "conv2d_input_grad": lambda shapes, out, attrs: 2 * _count(out) * shapes[0][-1],
    "fold": lambda shapes, out, attrs: _count(shapes[0]),
    "maxpool2d": lambda shapes, out, attrs: _count(shapes[0]),
    "maxpool2d_vjp": lambda shapes, out, attrs: _count(shapes[0]),
    "avgpool2d": lambda shapes, out, attrs: _count(shapes[0]),
    "avgpool2d_vjp": lambda shapes, out, attrs: _count(out),
    **{
        op: (lambda shapes, out, attrs: 0)
        for op in (
            "unfold",
            "channels_last",
            "channels_first",
            "flatten",
            "unflatten",
            "kernel_part",
            "bias_part",
        )
    },
}
