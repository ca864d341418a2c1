"""The rules of the tensor ops of the model language: forward statement and VJP.

Each op's forward is one :class:`Call`; its vector-Jacobian product is written in the
same ops, so every target that prints the forward ops prints the backward pass too:

- ``contract`` (an einsum: ``@``, ``.T``, ``dot``, ``outer``): the VJP of an operand
  is the contraction of the output's adjoint with the other operand onto the operand's
  axes (dL/dW = delta a^T when W @ a; over the batch for a parameter, because its
  subscripts have no batch axis: dL/dW = Delta^T A);
- ``sum`` over axes: its adjoint ``broadcast`` back; ``expand`` (size-1 axes): ``squeeze``;
- ``logsumexp``: g softmax(z), from the stored value: g exp(z - lse);
- ``index``: ``pad`` with zeros; ``concat``: ``index`` each part back;
- ``broadcast``: the loop's own reduction over the batch; ``batch_mean``: g/N broadcast.

Registered into :data:`symbp.ad.rules.RULES` on import (by :mod:`symbp.ad.reverse`).
"""

from __future__ import annotations

import sympy as sp

from ..ir.graph import BATCH, Graph, N, Node
from ..program.statements import Call, Statement
from .rules import Contribution, register, unbroadcast


def _call_forward(node: Node, graph: Graph) -> list[Statement]:
    out = graph.tensors[node.output]
    args = tuple(graph.tensors[i].symbol for i in node.inputs)
    attrs = tuple(sorted(node.attrs.items()))
    return [Call(out.symbol, node.op, args, out.shape, "forward", attrs=attrs)]


def _contract_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    inputs, result = node.attrs["subscripts"].split("->")
    letters = inputs.split(",")
    operands = [graph.tensors[i] for i in node.inputs]
    contributions = []
    for k, operand in enumerate(operands):
        if operand.name not in needs:
            continue
        others = [(letters[j], operands[j].symbol) for j in range(len(operands)) if j != k]
        subscripts = ",".join([result, *(s for s, _ in others)]) + "->" + letters[k]
        args = (g, *(symbol for _, symbol in others))
        value = emit(
            "contract", args, operand.shape, f"d_{operand.name}", (("subscripts", subscripts),)
        )
        contributions.append((operand.name, value, operand.shape))
    return contributions


def _sum_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    attrs = (("axes", node.attrs["axes"]), ("shape", src.shape))
    return [(src.name, emit("broadcast", (g,), src.shape, f"d_{src.name}", attrs), src.shape)]


def _max_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """Each maximal element receives the adjoint, split evenly where several tie (as
    torch.amax): g [x = max] / (the number of maximal elements)."""
    src, out = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    if src.name not in needs:
        return []
    spread = (("axes", node.attrs["axes"]), ("shape", src.shape))
    peak = emit("broadcast", (out.symbol,), src.shape, "peak", spread)
    mask = sp.Piecewise((1, sp.Eq(src.symbol, peak)), (0, True))
    count = emit("sum", (mask,), out.shape, "ties", (("axes", node.attrs["axes"]),))
    share = emit("broadcast", (g,), src.shape, f"d_{src.name}", spread)
    ties = emit("broadcast", (count,), src.shape, "ties", spread)
    return [(src.name, share * mask / ties, src.shape)]


def _expand_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    attrs = (("axes", node.attrs["axes"]),)
    return [(src.name, emit("squeeze", (g,), src.shape, f"d_{src.name}", attrs), src.shape)]


def _logsumexp_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """d lse / dz = softmax(z) = exp(z - lse), from the stored lse."""
    src, out = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    if src.name not in needs:
        return []
    value = out.symbol
    if not node.attrs["keepdims"]:
        axis = (("axes", (len(src.shape) - 1,)),)
        kept = (*out.shape, 1)
        g = emit("expand", (g,), kept, "g", axis)
        value = emit("expand", (value,), kept, "lse", axis)
    return [(src.name, g * sp.exp(src.symbol - value), src.shape)]


def _index_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    attrs = (*sorted(node.attrs.items()), ("size", src.shape[-1]))
    return [(src.name, emit("pad", (g,), src.shape, f"d_{src.name}", attrs), src.shape)]


def _concat_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    contributions, start = [], 0
    for name in node.inputs:
        part = graph.tensors[name]
        stop = start + part.shape[-1]
        if name in needs:
            attrs = (("squeeze", False), ("start", start), ("stop", stop))
            contributions.append(
                (name, emit("index", (g,), part.shape, f"d_{name}", attrs), part.shape)
            )
        start = stop
    return contributions


def _broadcast_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """A value repeated along new leading axes (over the batch, for each sample): its
    adjoint sums over them; the loop itself sums over the batch."""
    src, out = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    if src.name not in needs:
        return []
    return [unbroadcast(src.name, g, src.shape, out.shape, emit)]


def _batch_mean_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """m = (1/N) sum_n v_n: each sample's v_n receives dL/dm / N."""
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    attrs = (("axes", (0,)), ("shape", src.shape))
    spread = emit("broadcast", (g,), src.shape, f"d_{src.name}", attrs)
    return [(src.name, spread / N, src.shape)]


def _channels_first_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """The model language's images are viewed back to (N, C, H, W) after an image op;
    the adjoint is viewed channels-last again."""
    src = graph.tensors[node.inputs[0]]
    if src.name not in needs:
        return []
    return [(src.name, emit("channels_last", (g,), src.shape, f"d_{src.name}"), src.shape)]


def _full_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    return []  # a constant array: it reads nothing


for _op, _vjp in {
    "full": _full_vjp,
    "channels_first": _channels_first_vjp,
    "contract": _contract_vjp,
    "sum": _sum_vjp,
    "max": _max_vjp,
    "expand": _expand_vjp,
    "logsumexp": _logsumexp_vjp,
    "index": _index_vjp,
    "concat": _concat_vjp,
    "broadcast": _broadcast_vjp,
    "batch_mean": _batch_mean_vjp,
}.items():
    register(_op, _call_forward, _vjp, full_adjoint=True)


# --- what each op costs and how the documents write it --------------------------------
# cost(args' shapes, output shape, attrs) in floating-point operations, with the batch
# size already substituted into the shapes; a view or a copy costs none


def _size(shape) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def _contract_cost(shapes, out, attrs) -> int:
    inputs = attrs["subscripts"].split("->")[0].split(",")
    if len(inputs) == 1:
        return 0  # a transpose is a view
    sizes = {}
    for letters, shape in zip(inputs, shapes, strict=True):
        sizes.update(zip(letters, shape, strict=True))
    return 2 * _size(sizes.values())  # a multiply and an add per term


COST = {
    "contract": _contract_cost,
    "sum": lambda shapes, out, attrs: _size(shapes[0]),
    "max": lambda shapes, out, attrs: _size(shapes[0]),
    "sum_to": lambda shapes, out, attrs: _size(shapes[0]),
    "batch_mean": lambda shapes, out, attrs: _size(shapes[0]),
    "logsumexp": lambda shapes, out, attrs: 4 * _size(shapes[0]),
    **{
        op: (lambda shapes, out, attrs: 0)
        for op in (
            "expand",
            "squeeze",
            "broadcast",
            "broadcast_to",
            "index",
            "pad",
            "concat",
            "full",
        )
    },
}


# the subscript letter of the time axis of a recurrence's stacked values (T, N, ...):
# a product over the steps at once (X_t W^T for every t), or summed over them
TIME = "a"


def _product(subscripts: str, args: list[str], plain: bool) -> str:
    """A contraction as a person writes it: W x, X W^T, Delta^T A, u^T v, or einsum; a sum
    over the time axis of two stacks as the sum over t of the product of each step."""
    top = "^T" if plain else r"^{\top}"
    inputs, result = subscripts.split("->")
    letters = inputs.split(",")
    if TIME not in result and all(TIME in part for part in letters) and len(args) == 2:
        inner = ",".join(part.replace(TIME, "") for part in letters) + "->" + result
        each = _product(inner, [f"{a}_t" if plain else f"{{{a}}}_{{t}}" for a in args], plain)
        return f"sum_t {each}" if plain else rf"\textstyle\sum_{{t}} {each}"
    if TIME in result:  # every step at once: the product of one step
        inner = (
            ",".join(part.replace(TIME, "") for part in letters) + "->" + result.replace(TIME, "")
        )
        return _product(inner, args, plain)

    def transposed(text: str) -> str:  # (W x)^T, not W x^T; (W^T)^T is W
        if text.endswith(top) and " " not in text:
            return text[: -len(top)]
        if " " in text and not text.startswith(("(", r"\left(")):
            text = f"({text})" if plain else rf"\left({text}\right)"
        return f"{text}{top}"

    if len(args) == 1:
        return transposed(args[0])
    (left, right), (a, b) = letters, args
    shared = set(left) & set(right) - set(result)
    if not shared and len(left) == len(right) == 1 and result == left + right:  # u v^T
        return f"{a} {transposed(b)}"
    if len(shared) != 1:
        return _einsum(subscripts, a, b, plain)
    (k,) = shared
    free_left, free_right = left.replace(k, ""), right.replace(k, "")
    if result != free_left + free_right:
        if result != free_right + free_left:
            return _einsum(subscripts, a, b, plain)
        (a, left), (b, right) = (b, right), (a, left)
    if len(left) == 1 and len(right) == 2 and right[0] == k:  # g^T W as the course's W^T g
        return f"{transposed(b)} {a}"
    a_text = transposed(a) if len(left) == 2 and left[0] == k else a
    b_text = transposed(b) if len(right) == 2 and right[1] == k else b
    if len(left) == 1 and len(right) == 1:  # two vectors: u^T v
        a_text = transposed(a)
    return f"{a_text} {b_text}"


def _einsum(subscripts: str, a: str, b: str, plain: bool) -> str:
    if plain:
        return f"einsum({subscripts}; {a}, {b})"
    arrow = subscripts.replace("->", r" \to ")
    return rf"\operatorname{{einsum}}_{{{arrow}}}({a}, {b})"


def _axes_text(attrs) -> str:
    return ",".join(str(a) for a in attrs.get("axes", ()))


def summed_axes(shape: tuple, source: tuple) -> tuple[list[int], list[int]]:
    """The axes a ``sum_to`` of ``source`` down to ``shape`` sums over, as (the axes
    that go, the axes kept with size 1): per-sample axes align from the right, after the
    batch axis where both shapes have it (an operand's per-sample adjoint keeps it)."""
    start = 1 if shape[:1] == (BATCH,) and source[:1] == (BATCH,) else 0
    target, full = shape[start:], source[start:]
    lead = len(full) - len(target)
    ones = [start + lead + i for i, d in enumerate(target) if d == 1 and full[lead + i] != 1]
    return [start + i for i in range(lead)], ones


def _summed(attrs) -> str:
    gone, ones = summed_axes(attrs["shape"], attrs["source"])
    return ",".join(str(a) for a in [*gone, *ones])


def _notation(tex, text):
    return {"tex": tex, "text": text}


# op -> how a document writes it: "tex" for LaTeX (Markdown's math too), "text" for plain
# text; each takes the arguments as written and the op's attributes
NOTATION = {
    "contract": _notation(
        lambda args, attrs: _product(attrs["subscripts"], args, False),
        lambda args, attrs: _product(attrs["subscripts"], args, True),
    ),
    "sum": _notation(
        lambda args, attrs: rf"\textstyle\sum_{{\mathrm{{axis}}\,{_axes_text(attrs)}}} {args[0]}",
        lambda args, attrs: f"sum_axis{_axes_text(attrs)}({args[0]})",
    ),
    "max": _notation(
        lambda args, attrs: rf"\max_{{\mathrm{{axis}}\,{_axes_text(attrs)}}} {args[0]}",
        lambda args, attrs: f"max_axis{_axes_text(attrs)}({args[0]})",
    ),
    "sum_to": _notation(
        lambda args, attrs: rf"\textstyle\sum_{{\mathrm{{axis}}\,{_summed(attrs)}}} {args[0]}",
        lambda args, attrs: f"sum_axis{_summed(attrs)}({args[0]})",
    ),
    "batch_mean": _notation(
        lambda args, attrs: rf"\frac{{1}}{{N}} \textstyle\sum_{{n}} {args[0]}",
        lambda args, attrs: f"mean_over_batch({args[0]})",
    ),
    "logsumexp": _notation(
        lambda args, attrs: rf"\operatorname{{logsumexp}}({args[0]})",
        lambda args, attrs: f"logsumexp({args[0]})",
    ),
    "expand": _notation(lambda args, attrs: args[0], lambda args, attrs: args[0]),
    "squeeze": _notation(lambda args, attrs: args[0], lambda args, attrs: args[0]),
    "broadcast": _notation(
        lambda args, attrs: rf"\operatorname{{repeat}}_{{{_axes_text(attrs)}}}({args[0]})",
        lambda args, attrs: f"repeat_axis{_axes_text(attrs)}({args[0]})",
    ),
    "broadcast_to": _notation(
        lambda args, attrs: rf"{args[0]} \mathbf{{1}}", lambda args, attrs: f"{args[0]} 1"
    ),
    "index": _notation(
        lambda args, attrs: rf"{args[0]}_{{[{attrs['start']}:{attrs['stop']}]}}",
        lambda args, attrs: f"{args[0]}[{attrs['start']}:{attrs['stop']}]",
    ),
    "pad": _notation(
        lambda args, attrs: (
            rf"\operatorname{{pad}}_{{[{attrs['start']}:{attrs['stop']}]}}({args[0]})"
        ),
        lambda args, attrs: f"pad[{attrs['start']}:{attrs['stop']}]({args[0]})",
    ),
    "full": _notation(
        lambda args, attrs: rf"{attrs['value']:g} \mathbf{{1}}",
        lambda args, attrs: f"{attrs['value']:g} (an array of that value)",
    ),
    "concat": _notation(
        lambda args, attrs: r"\left[" + r";\ ".join(args) + r"\right]",
        lambda args, attrs: "[" + "; ".join(args) + "]",
    ),
}
