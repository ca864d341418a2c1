"""The functions and losses a tensor formula may call, each written once in the
primitive ops of :mod:`symbp.language.ops` (reverse mode then derives them: nothing
here states a derivative).

Each entry names its positional arity, its keyword arguments with their defaults,
and how it builds its term. Losses also name their torch.nn counterpart; each is
written in its numerically stable form (cross-entropy through logsumexp, binary
cross-entropy on logits through softplus), chosen here once for every target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from ..functions import FUNCTIONS
from ..losses import LOSSES as TABLE
from ..losses import y, yhat
from . import ops
from .ops import ShapeError
from .terms import Term, shape_text


@dataclass(frozen=True)
class Function:
    name: str
    arity: tuple[int, ...] | None  # None: two or more
    build: Callable[[list[Term], dict], Term]
    doc: str
    keywords: dict[str, object] = field(default_factory=dict)  # name -> default
    torch: str = ""  # a loss's torch.nn counterpart


def _ew(func, *args: Term, text: str) -> Term:
    return ops.elementwise(func, list(args), text)


def _num(value) -> Term:
    return ops.const(sp.sympify(value))


def _add(a, b):
    return _ew(lambda x, y: x + y, a, b, text="+")


def _sub(a, b):
    return _ew(lambda x, y: x - y, a, b, text="-")


def _mul(a, b):
    return _ew(lambda x, y: x * y, a, b, text="*")


def _div(a, b):
    return _ew(lambda x, y: x / y, a, b, text="/")


def _keep(reduced: Term, axes: tuple[int, ...]) -> Term:
    """A reduction's result with the reduced axes back as size 1, to broadcast against
    what it reduced (NumPy's keepdims)."""
    return ops.expand(reduced, axes)


def _sum(args, kw):
    (a,) = args
    return ops.reduce_sum(a, ops.axes_of(a, kw["axis"]))


def _max(args, kw):
    """The largest element; where several tie, the gradient is split evenly among them,
    as torch.amax (and torch.max without a dim) does."""
    (a,) = args
    return ops.reduce_max(a, ops.axes_of(a, kw["axis"]))


def _min(args, kw):
    """The smallest element, -max(-v): ties share the gradient, as torch.amin."""
    (a,) = args
    negated = _ew(lambda x: -x, a, text="-")
    return _ew(lambda x: -x, ops.reduce_max(negated, ops.axes_of(a, kw["axis"])), text="-")


def _count(a: Term, axes: tuple[int, ...]) -> int:
    count = 1
    for i in axes:
        count *= a.shape[i]
    return count


def _mean(args, kw):
    (a,) = args
    axes = ops.axes_of(a, kw["axis"])
    return _div(ops.reduce_sum(a, axes), _num(_count(a, axes)))


def _var(args, kw):
    """The biased variance (divided by the count), as torch's normalization uses."""
    (a,) = args
    axes = ops.axes_of(a, kw["axis"])
    mean = _div(ops.reduce_sum(a, axes), _num(_count(a, axes)))
    centred = _sub(a, _keep(mean, axes) if a.shape else mean)
    squares = _ew(lambda x: x**2, centred, text="**")
    return _div(ops.reduce_sum(squares, axes), _num(_count(a, axes)))


def _norm(args, kw):
    (a,) = args
    axes = ops.axes_of(a, kw["axis"])
    squares = _ew(lambda x: x**2, a, text="**")
    return _ew(sp.sqrt, ops.reduce_sum(squares, axes), text="sqrt")


def _layer_norm(args, kw):
    """(v - mean(v)) / sqrt(var(v) + eps) over the last axis: torch.nn.functional.layer_norm
    without its affine part (multiply and add parameters in the formula for that)."""
    (a,) = args
    if not a.shape:
        raise ShapeError("layer_norm normalizes a vector or the last axis of a matrix")
    eps = sp.sympify(kw["eps"])
    if not eps > 0:
        raise ShapeError(f"eps must be positive, got {kw['eps']}")
    axes = (len(a.shape) - 1,)
    n = _num(a.shape[-1])
    mean = _keep(_div(ops.reduce_sum(a, axes), n), axes)
    centred = _sub(a, mean)
    var = _keep(_div(ops.reduce_sum(_ew(lambda x: x**2, centred, text="**"), axes), n), axes)
    return _div(centred, _ew(lambda v: sp.sqrt(v + eps), var, text="sqrt"))


def _logsumexp(args, kw):
    return ops.logsumexp(args[0], keepdims=False)


def _log_softmax(args, kw):
    (z,) = args
    return _sub(z, ops.logsumexp(z, keepdims=True))


def _softmax(args, kw):
    return _ew(sp.exp, _log_softmax(args, kw), text="exp")


def _dot(args, kw):
    u, v = args
    if len(u.shape) != 1 or len(v.shape) != 1:
        raise ShapeError(
            f"dot takes two vectors, got shapes {shape_text(u.shape)} and {shape_text(v.shape)}"
        )
    return ops.contract([u, v], "i,i->")


def _outer(args, kw):
    u, v = args
    if len(u.shape) != 1 or len(v.shape) != 1:
        raise ShapeError(
            f"outer takes two vectors, got shapes {shape_text(u.shape)} and {shape_text(v.shape)}"
        )
    return ops.contract([u, v], "i,j->ij")


def _concat(args, kw):
    return ops.concat(list(args))


def _batch_mean(args, kw):
    return ops.batch_mean(args[0])


def _batch_var(args, kw):
    """The biased variance over the batch, torch.nn.functional.batch_norm's in training."""
    (a,) = args
    centred = _sub(a, ops.batch_mean(a))
    return ops.batch_mean(_ew(lambda x: x**2, centred, text="**"), "variance")


def _integer(value, what: str):
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(_integer(v, what) for v in value)
    number = sp.sympify(value)
    if not number.is_Integer:
        raise ShapeError(f"{what} must be an integer, got {value}")
    return int(number)


def _conv2d(args, kw):
    x, kernel, *bias = args
    return ops.conv2d(
        x,
        kernel,
        bias[0] if bias else None,
        _integer(kw["stride"], "stride"),
        _integer(kw["padding"], "padding"),
    )


def _pool(op: str):
    def build(args, kw):
        x, kernel = args
        if kernel.op != "const":
            raise ShapeError(f"{op}'s window is a number, such as {op}(x, 2)")
        size = _integer(kernel.attr("value"), "the window")
        return ops.pool2d(op, x, size, _integer(kw["stride"], "stride"))

    return build


def _flatten(args, kw):
    return ops.flatten(args[0])


# --- losses: per-sample, the batch loss is their mean --------------------------------


def _same_shape(name: str, a: Term, b: Term) -> None:
    if a.shape != b.shape:
        raise ShapeError(
            f"{name} compares equal shapes, got {shape_text(a.shape)} and {shape_text(b.shape)}"
        )


def _elementwise_loss(name: str):
    """The table's element formula (symbp/losses.py) applied to each element of the
    prediction and its target, averaged over the sample's elements, as torch.nn's
    losses do with reduction 'mean' (over every element of the batch)."""
    loss = TABLE[name]

    def build(args, kw):
        a, b = args
        _same_shape(name, a, b)
        for key, value in kw.items():
            least = 0 if key == "beta" else None
            number = sp.sympify(value)
            if (least is None and not number > 0) or (least is not None and number < least):
                kind = "positive" if least is None else "non-negative"
                raise ShapeError(f"{key} must be {kind}, got {value}")
        if name == "smooth_l1" and float(kw["beta"]) == 0:  # torch: the l1 loss then
            element = TABLE["l1"].element
        else:
            element = loss.element_with(kw)
        each = _ew(lambda p, t: element.xreplace({yhat: p, y: t}), a, b, text=name)
        return _div(ops.reduce_sum(each, tuple(range(len(a.shape)))), _num(max(1, a.size)))

    return build


def _class_targets(name: str, z: Term, y: Term) -> Term:
    """Targets as class probabilities over the logits' last axis: labels one-hot."""
    if len(z.shape) != 1:
        raise ShapeError(f"{name} takes a vector of logits, got shape {shape_text(z.shape)}")
    if y.shape == z.shape:
        return y
    if y.op == "name" and y.shape == () and y.batched:  # class labels, one-hot in the IR
        return Term("one_hot", (y,), z.shape, True, (("classes", z.shape[0]),))
    raise ShapeError(
        f"{name}'s targets are class labels (shape ()) or probabilities of the logits'"
        f" shape {shape_text(z.shape)}, got shape {shape_text(y.shape)}"
    )


def _cross_entropy(args, kw):
    """-sum(y' log_softmax(z)), y' the (smoothed) class probabilities: for labels
    logsumexp(z) - z_y, torch.nn.CrossEntropyLoss's form, never exp of a large z."""
    z, y = args
    y = _class_targets("cross_entropy", z, y)
    eps = sp.sympify(kw["label_smoothing"])
    if not 0 <= eps <= 1:
        raise ShapeError(f"label_smoothing must be in [0, 1], got {kw['label_smoothing']}")
    if float(eps) != 0:
        k = z.shape[0]
        y = _ew(lambda t: (1 - eps) * t + eps / k, y, text="label smoothing")
    logp = _log_softmax([z], {})
    return _ew(lambda t: -t, ops.reduce_sum(_mul(y, logp), (0,)), text="-")


def _nll(args, kw):
    logp, y = args
    y = _class_targets("nll", logp, y)
    return _ew(lambda t: -t, ops.reduce_sum(_mul(y, logp), (0,)), text="-")


# the losses of the shared table (symbp/losses.py): an element formula averaged, or a
# row loss written here with logsumexp
_ROW_LOSSES = {"cross_entropy": _cross_entropy, "nll": _nll}
LOSSES: dict[str, Function] = {
    name: Function(
        name,
        (2,),
        _ROW_LOSSES[name] if loss.element is None else _elementwise_loss(name),
        loss.described,
        keywords=dict(loss.keywords),
        torch=loss.torch,
    )
    for name, loss in TABLE.items()
}

TENSOR_FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        Function("sum", (1,), _sum, "sum over the sample's elements", {"axis": None}),
        Function("mean", (1,), _mean, "mean over the sample's elements", {"axis": None}),
        Function("var", (1,), _var, "biased variance", {"axis": None}),
        Function("norm", (1,), _norm, "Euclidean norm", {"axis": None}),
        Function("amax", (1,), _max, "largest element (ties share the gradient)", {"axis": None}),
        Function("amin", (1,), _min, "smallest element (ties share the gradient)", {"axis": None}),
        Function("layer_norm", (1,), _layer_norm, "normalized over the last axis", {"eps": 1e-5}),
        Function("softmax", (1,), _softmax, "softmax over the last axis"),
        Function("log_softmax", (1,), _log_softmax, "log-softmax over the last axis"),
        Function("logsumexp", (1,), _logsumexp, "log sum exp over the last axis"),
        Function("dot", (2,), _dot, "u . v of two vectors"),
        Function("outer", (2,), _outer, "u v^T of two vectors"),
        Function("concat", None, _concat, "vectors joined end to end"),
        Function("batch_mean", (1,), _batch_mean, "mean over the batch"),
        Function(
            "conv2d",
            (2, 3),
            _conv2d,
            "torch.nn.functional.conv2d of an image (C, H, W)",
            {"stride": 1, "padding": 0},
        ),
        Function("maxpool2d", (2,), _pool("maxpool2d"), "max over windows", {"stride": None}),
        Function("avgpool2d", (2,), _pool("avgpool2d"), "mean over windows", {"stride": None}),
        Function("flatten", (1,), _flatten, "an image (C, H, W) as a vector"),
        Function("batch_var", (1,), _batch_var, "biased variance over the batch"),
        *LOSSES.values(),
    ]
}

# the elementwise functions of symbp.functions (tanh, relu, ..., Max of 2+ arguments)
ELEMENTWISE = FUNCTIONS


def known_functions() -> list[str]:
    return sorted({*ELEMENTWISE, *TENSOR_FUNCTIONS})
