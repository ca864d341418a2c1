"""The derivation of a layer stack (a dense network) as a document: text, Markdown or LaTeX.

It follows the course notes in their matrix form, for a mini-batch X of N samples (one
per row): the network Z(l) = A(l-1) W(l)^T + b(l), A(l) = f_l(Z(l)) and its parameter
count; the loss, in the numerically stable form the generated code uses; delta(K) =
dL/dZ(K) of the output layer in closed form (derived with SymPy from the scalar loss
and the output activation); the recursion delta(l) = (delta(l+1) W(l+1)) o f_l'(Z(l))
with each f' written out as the generated code computes it; the cost of a training step
in operations and memory; and the straight-line program. As in
:mod:`symbp.documents.expression`, Python writes every formula in the notation of the format and
the templates (templates/docs/layers.*.j2) hold the layout and the prose.

:func:`layer_costs` gives the numbers of the cost section on their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy.core.parameters import distribute
from sympy.printing.str import StrPrinter

from ..ad.rules import local_derivative
from ..derive import Derivation, derive
from ..escape import tex_name
from ..functions import apply_kink_conventions, sigmoid
from ..optim import update_rule
from ..program.statements import Assign, BatchMean, BatchSum, Call, Program, Statement
from ..spec.layers import ELEMENTWISE_LOSSES, Layer, LayerSpec, y, yhat, z
from ..stats import dag_ops
from ..targets.numpy.printer import wrap
from ..templating import environment
from .layout import finish
from .notation import (
    CODE_WIDTH,
    KINKS,
    Equation,
    EquationBuilder,
    TextNotation,
    latex,
)
from .picture import document_graph
from .training import training_context

TEMPLATES = {
    "text": "layers.txt.j2",
    "markdown": "layers.md.j2",
    "latex": "layers.tex.j2",
}
FLOAT32_BYTES = 4
TORCH_LOSSES = {
    "mse": "torch.nn.MSELoss",
    "l1": "torch.nn.L1Loss",
    "bce": "torch.nn.BCELoss",
    "bce_with_logits": "torch.nn.BCEWithLogitsLoss",
    "cross_entropy": "torch.nn.CrossEntropyLoss",
}
LOSS_NAMES = {
    "mse": "mean squared error",
    "l1": "mean absolute error",
    "bce": "binary cross-entropy of probabilities",
    "bce_with_logits": "binary cross-entropy of logits",
    "cross_entropy": "cross-entropy of logits against class labels",
}
# per-row operation counts of the tensor ops that are not elementwise formulas (d = width):
# (as the document writes it, the count)
SOFTMAX_OPS = ("5 d - 2", lambda d: 5 * d - 2)  # max, shift, exp, sum, divide
SOFTMAX_VJP_OPS = ("4 d - 1", lambda d: 4 * d - 1)  # g o s, row sum, subtract, multiply
# max, shift, exp, sum (4d - 2), log and adding the max back (2), y . z (2d - 1), subtract (1)
CROSS_ENTROPY_OPS = ("6 d", lambda d: 6 * d)
CROSS_ENTROPY_VJP_OPS = ("7 d - 2", lambda d: 7 * d - 2)  # softmax, minus y, times 1/N

N = sp.Symbol("N", positive=True)
softmax = sp.Function("softmax")  # for display only: the row-wise softmax
_loss_value = sp.Symbol("l", real=True)


# --- notation ---------------------------------------------------------------------------


def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def Zs(k: int) -> sp.Symbol:  # noqa: N802 - the course's matrix names
    return _sym(f"Z^({k})")


def As(k: int) -> sp.Symbol:  # noqa: N802
    return _sym("X") if k == 0 else _sym(f"A^({k})")


Ys = _sym("Y")


class _TextPrinter(StrPrinter):
    """SymPy's str, with relu' as [z > 0] and superscripted names parenthesized in powers."""

    def _print_Heaviside(self, expr):  # noqa: N802 - SymPy's dispatch name
        if len(expr.args) == 2 and expr.args[1] == 0:
            return f"[{self._print(expr.args[0])} > 0]"
        return super()._print_Heaviside(expr)

    def _print_Pow(self, expr, rational=False):  # noqa: N802
        base = expr.base
        if base.is_Symbol and "^" in base.name and expr.exp != sp.S.Half and expr.exp != -1:
            return f"({base.name})**{self.parenthesize(expr.exp, 100)}"
        return super()._print_Pow(expr, rational)


def _shown(expr: sp.Expr) -> sp.Expr:
    """``expr`` as the documents write it: bce's clamped log as max(log x, -100)."""
    return expr.replace(
        lambda e: type(e).__name__ == "clamped_log" and hasattr(e, "definition"),
        lambda e: e.definition(),
    )


def text_expr(expr: sp.Expr) -> str:
    """A formula of the text document."""
    return _TextPrinter({"order": "none"}).doprint(_shown(expr))


class TexNames:
    """The LaTeX (and Markdown $...$) spelling of the document's matrices and operators."""

    text = False

    def __init__(self, breakable: bool = False):
        self.breakable = breakable

    def expr(self, expr: sp.Expr) -> str:
        return latex(_shown(expr), (), self.breakable)

    def m(self, kind: str, k: object = None, t: bool = False) -> str:
        """A matrix: ``m("W", 2, t=True)`` is W^{(2)T}; ``m("A", 0)`` is X."""
        if kind == "A" and k == 0:
            return "X^{T}" if t else "X"
        names = {"delta": r"\delta", "Yhat": r"\hat{Y}"}
        name = names.get(kind, kind)
        if k is None:
            return f"{name}^{{T}}" if t else name
        return f"{name}^{{({k}){'T' if t else ''}}}"

    def el(self, kind: str, k: object, index: str) -> str:
        """An element: ``el("w", 2, "ki")`` is w^{(2)}_{ki}."""
        name = {"delta": r"\delta"}.get(kind, kind)
        return f"{name}^{{({k})}}_{{{index}}}"

    def d(self, var: str) -> str:
        return rf"\frac{{\partial L}}{{\partial {var}}}"

    had = r" \circ "
    dot = r" \cdot "
    times = r" \times "

    def frac(self, top: str, bottom: str) -> str:
        return rf"\frac{{{top}}}{{{bottom}}}"

    def sum(self, index: str, lo: str, hi: str, body: str) -> str:
        return rf"\sum_{{{index}={lo}}}^{{{hi}}} {body}"

    def paren(self, body: str) -> str:
        return rf"\left({body}\right)"

    def op(self, name: str, arg: str) -> str:
        return rf"\operatorname{{{tex_name(name)}}}\left({arg}\right)"

    ones = r"\mathbf{1}"
    ones_t = r"\mathbf{1}^{T}"
    iverson_eq = r"\left[i = j\right]"
    yhat_ni = r"\hat{y}_{ni}"
    y_ni = "y_{ni}"


class TextNames:
    """The plain-text spelling of the same."""

    text = True
    breakable = False

    def expr(self, expr: sp.Expr) -> str:
        return text_expr(expr)

    def m(self, kind: str, k: object = None, t: bool = False) -> str:
        if kind == "A" and k == 0:
            return "X^T" if t else "X"
        name = {"Yhat": "Yhat"}.get(kind, kind)
        if k is None:
            return f"{name}^T" if t else name
        return f"{name}^({k}){'T' if t else ''}"

    def el(self, kind: str, k: object, index: str) -> str:
        return f"{kind}_{index}^({k})"

    def d(self, var: str) -> str:
        return f"dL/d{var}"

    had = " o "
    dot = " . "
    times = " x "

    def frac(self, top: str, bottom: str) -> str:
        top = f"({top})" if " " in top else top
        return f"{top}/({bottom})" if " " in bottom else f"{top}/{bottom}"

    def sum(self, index: str, lo: str, hi: str, body: str) -> str:
        return f"sum_{index}={lo}..{hi} {body}"

    def paren(self, body: str) -> str:
        return f"({body})"

    def op(self, name: str, arg: str) -> str:
        return f"{name}({arg})"

    ones = "1"
    ones_t = "1^T"
    iverson_eq = "[i = j]"
    yhat_ni = "yhat_ni"
    y_ni = "y_ni"


Names = TexNames | TextNames
Rows = list[tuple[str, str]]


class _Equations:
    """Builds equations with :class:`symbp.documents.notation.EquationBuilder` (its layouts for
    long LaTeX formulas), from row functions over :class:`TexNames` / :class:`TextNames`."""

    def __init__(self, fmt: str):
        self.builder = EquationBuilder(fmt)
        self.nt: Names = TextNames() if fmt == "text" else TexNames()

    def __call__(self, rows_for: Callable[[Names], Rows]) -> Equation:
        def adapted(base) -> Rows:
            if isinstance(base, TextNotation):
                return rows_for(TextNames())
            return rows_for(TexNames(base.breakable))

        return self.builder(adapted)


# --- formulas ---------------------------------------------------------------------------


def _tidy(expr: sp.Expr) -> sp.Expr:
    """``expr`` for reading: integral floats as integers (1.0*exp(z) -> exp(z)) and the
    terms of each sum with the subtracted ones last (sigmoid(z) - y, not -y + sigmoid(z))."""
    floats = {f: sp.Integer(int(f)) for f in expr.atoms(sp.Float) if float(f).is_integer()}
    with distribute(False):
        expr = expr.xreplace(floats)
        return _ordered(expr)


def _ordered(expr: sp.Basic) -> sp.Basic:
    if expr.is_Atom or not expr.args:
        return expr
    args = [_ordered(a) for a in expr.args]
    if expr.is_Add:
        plus = [a for a in args if not a.could_extract_minus_sign()]
        minus = [a for a in args if a.could_extract_minus_sign()]
        return sp.Add(*plus, *minus, evaluate=False)
    if isinstance(expr, sp.Piecewise):
        return sp.Piecewise(*[(pair.args[0], pair.args[1]) for pair in args], evaluate=False)
    return expr.func(*args)


def _shortest(expr: sp.Expr) -> sp.Expr:
    """The shortest of a few rewritings (the first on ties: stable)."""
    rewritings = [sp.factor_terms]
    if not expr.has(sp.Piecewise, sp.Heaviside, sp.Max, sp.Min, sp.sign):
        rewritings += [sp.expand, sp.factor]
    candidates = [expr]
    for rewrite in rewritings:
        try:
            candidates.append(rewrite(expr))
        except (sp.PolynomialError, NotImplementedError, RecursionError):  # pragma: no cover
            pass  # SymPy gives up on some formulas: keep the others
    return min(candidates, key=sp.count_ops)


def activation_formula(layer: Layer, arg: sp.Expr) -> sp.Expr | None:
    """f_l(arg) for an elementwise activation; ``arg`` itself for none; None for softmax."""
    if layer.activation == "softmax":
        return None
    if layer.formula is None:
        return arg
    return layer.formula.xreplace({z: arg})


def activation_derivative(layer: Layer, k: int) -> sp.Expr | None:
    """f_l'(Z(l)) as the generated code computes it: written with the stored A(l)
    wherever the derivative repeats the forward value (sigmoid' = A(1 - A))."""
    f = activation_formula(layer, Zs(k))
    if f is None:
        return None
    if f == Zs(k):
        return sp.S.One
    return _tidy(local_derivative(f, Zs(k), As(k)))


def _is_identity(layer: Layer) -> bool:
    return layer.activation != "softmax" and (
        layer.formula is None or layer.activation == "identity"
    )


def _output_gradient(spec: LayerSpec) -> sp.Expr:
    """G(K) = dL/dA(K) elementwise, for an elementwise loss (over the stored output)."""
    K = len(spec.layers)
    out = As(K) if not _is_identity(spec.layers[-1]) else Zs(K)
    local = local_derivative(spec.element_loss, yhat, _loss_value)
    local = _shortest(local.xreplace({yhat: out, y: Ys}))
    return _tidy(local / (N * spec.loss_elements))


def _unclamped(loss: sp.Expr) -> sp.Expr:
    """The bce loss without torch's clamp of the logs at -100."""
    loss = loss.replace(lambda e: type(e).__name__ == "clamped_log", lambda e: sp.log(e.args[0]))
    return loss.replace(
        lambda e: isinstance(e, sp.Max) and -100 in e.args,
        lambda e: next(a for a in e.args if a != -100),
    )


def output_delta(spec: LayerSpec, clamp: bool = True) -> sp.Expr | None:
    """delta(K) = dL/dZ(K) in closed form, derived with SymPy from the scalar loss and the
    output activation (None where the output layer is a softmax: its J^T product is no
    elementwise formula). ``clamp=False`` drops bce's clamp of the logs."""
    K, layer = len(spec.layers), spec.layers[-1]
    scale = 1 / (N * spec.loss_elements)
    if spec.loss == "cross_entropy":
        if not _is_identity(layer):
            return None
        return _tidy((softmax(Zs(K)) - Ys) / N)
    f = activation_formula(layer, Zs(K))
    if f is None:
        return None
    loss = spec.element_loss
    if not clamp:
        loss = _unclamped(loss)
    composite = loss.xreplace({yhat: f, y: Ys})
    with distribute(False):
        local = apply_kink_conventions(sp.diff(composite, Zs(K)))
        if f != Zs(K):
            local = local.xreplace({f: As(K)})
    local = _shortest(_real(local))
    if f != Zs(K):
        local = local.xreplace({f: As(K)})
    return _tidy(local * scale)


def _real(expr: sp.Expr) -> sp.Expr:
    return expr.replace(sp.re, lambda arg: arg).replace(sp.im, lambda arg: sp.S.Zero)


# --- costs ------------------------------------------------------------------------------


def _ops(expr: sp.Expr) -> int:
    """Operations per element of ``expr`` (``dag_ops``), common factors pulled out first
    where that is shorter: 2*(yhat - y) rather than SymPy's 2*yhat - 2*y."""
    try:
        factored = sp.factor_terms(expr)
    except RecursionError:  # pragma: no cover - SymPy gives up on some formulas
        factored = expr
    return min(dag_ops(expr), dag_ops(factored))


def _elementwise_ops(layer: Layer) -> tuple[int, int]:
    """Operations per element of f and of the backward product G o f'(Z) (f' + 1)."""
    if _is_identity(layer):
        return 0, 0
    return _ops(layer.formula), _ops(local_derivative(layer.formula, z, _sym("a"))) + 1


def _per_row(count: tuple, d: int) -> int:
    return count[1](d)


def _needs_input_gradient(spec: LayerSpec, index: int) -> bool:
    """Whether dL/dA(index - 1) is needed: some layer before ``index`` has parameters."""
    return any(layer.has_params for layer in spec.layers[: index - 1])


@dataclass(frozen=True)
class _Origins:
    """What the stack's front end made each program value as: ("Z", 2) is Z^(2). Read
    from the IR's tensors and the program's record of its adjoints, never from a name."""

    values: dict[sp.Symbol, tuple[str, int]]  # Z^(2)'s symbol -> ("Z", 2)
    adjoints: dict[sp.Symbol, tuple[str, int]]  # dL/dZ^(2)'s symbol -> ("Z", 2)
    masked: dict[sp.Symbol, tuple[str, int]]  # dL/dA^(2) masked before a pool -> ("A", 2)
    leaves: set[sp.Symbol]  # X and Y, written as they are


def _origins(derivation: Derivation) -> _Origins:
    program = derivation.program
    values = {
        derivation.values[name]: t.origin
        for name, t in derivation.graph.tensors.items()
        if t.origin and name in derivation.values
    }
    adjoints = {
        g: values[value]
        for g, (value, per_sample) in program.adjoint_of.items()
        if value in values and not per_sample
    }
    masked = {m: adjoints[g] for m, g in program.masked.items() if g in adjoints}
    return _Origins(values, adjoints, masked, {*program.inputs, *program.targets})


def _cached(spec: LayerSpec, derivation: Derivation) -> list[dict]:
    """The forward values the backward pass reads (kept in memory from the forward pass),
    in program order, each with its floats and the layer it belongs to: 0 for the input
    X, K + 1 for the targets and the loss's own intermediate values; a shared
    intermediate value (c1, ...) belongs to the layer of the next Z(l) or A(l)."""
    program = derivation.program
    origins = _origins(derivation)
    K = len(spec.layers)
    batch = spec.train.batch_size
    readers: dict[sp.Symbol, list[str]] = {}
    for stmt in program.statements:
        if stmt.phase == "backward":
            for symbol in sorted(stmt.reads, key=lambda s: s.name):
                readers.setdefault(symbol, []).append(stmt.target.name)
    forward = [s for s in program.statements if s.phase == "forward"]
    values: list[tuple[sp.Symbol, Statement | None]] = [(program.inputs[0], None)]
    values += [(s.target, s) for s in forward]
    values.append((program.targets[0], None))
    layers: list[int] = []
    pending = 0  # shared values waiting for the next Z(l) or A(l) (the output is one)
    past_output = False
    for symbol, _ in values:
        origin = origins.values.get(symbol, ("", 0))
        if symbol in program.inputs:
            layers.append(0)
        elif past_output or symbol in program.targets:
            layers.append(K + 1)
        elif origin[0] in ("Z", "A", "U"):
            layers += [origin[1]] * (pending + 1)
            pending = 0
        else:
            pending += 1
        if symbol == program.outputs[0]:
            past_output = True
    entries = []
    for (symbol, stmt), layer in zip(values, layers, strict=True):
        if symbol not in readers:
            continue
        shape = stmt.shape if stmt is not None else _leaf_shape(spec, symbol)
        sizes = tuple(batch if s == "N" else int(s) for s in shape)
        floats = 1
        for size in sizes:
            floats *= size
        entries.append(
            {
                "name": symbol.name,
                "layer": layer,
                "floats": floats,
                "shape": sizes,
                "read_by": readers[symbol],
            }
        )
    return entries


def _leaf_shape(spec: LayerSpec, symbol: sp.Symbol) -> tuple:
    if symbol.name == "X":
        return ("N", *spec.shapes[0])
    return ("N", spec.outputs)


def _batched(shape: tuple) -> tuple:
    """The IR shape (channels-last for images) of a batch of per-sample ``shape``."""
    return ("N", shape[1], shape[2], shape[0]) if len(shape) == 3 else ("N", *shape)


def _param_count(spec: LayerSpec, layer: Layer) -> int:
    """(in + 1) x out for a dense layer, (C kh kw + 1) x out for a convolution."""
    shapes = spec.param_shapes()
    if not layer.has_params:
        return 0
    weights = math.prod(shapes[f"W{layer.index}"])
    return weights + (shapes[f"W{layer.index}"][0] if layer.bias else 0)


def _optimizer_ops(spec: LayerSpec) -> tuple[int, int]:
    """Operations per parameter element of one update, and once per step (step scalars)."""
    rule = update_rule(spec.train.optimizer, spec.train.options)
    per_element = sum(dag_ops(expr) for _, expr in rule.updates)
    per_step = sum(dag_ops(expr) for _, expr in rule.step_scalars)
    return per_element, per_step


def layer_costs(spec: LayerSpec, derivation: Derivation | None = None) -> dict:
    """Operations and memory of one training step of ``spec`` at its batch size N.

    Operations are counted per element, as :mod:`symbp.stats` counts them: a matrix
    product (N x in)(in x out) is 2 N in out (a multiply and an add per term), adding the
    bias N out, an elementwise formula its SymPy operation count (``dag_ops``) per
    element, a softmax 5 d - 2 per row, the cross-entropy 6 d per row. The backward pass
    of a dense layer is two more products (dL/dW(l) and dL/dA(l-1), the latter skipped
    where no earlier layer has parameters, as for the first layer), the column sums for
    dL/db(l), and G o f'(Z) at (ops of f' + 1) per element. The optimizer's update is
    counted per parameter element from its SymPy rule (:mod:`symbp.optim`).

    Memory: the forward values the backward pass reads (from the derived program; pass
    ``derivation``, that of ``spec``, to skip deriving it), in floats and float32 bytes,
    against inference, which keeps one layer's input and output at a time: max over l
    of N (in + out).
    """
    if derivation is None:
        derivation = derive(spec)
    batch = spec.train.batch_size
    widths = spec.widths
    K = len(spec.layers)
    layers = []
    for layer in spec.layers:
        k, d_in, d_out = layer.index, widths[layer.index - 1], widths[layer.index]
        dense = layer.has_params
        # a product of (rows x inner)(inner x out): N x in x out (dense), or per output
        # pixel a patch of C kh kw times the kernel (conv2d, rows = N Ho Wo)
        rows, inner, outs = batch, d_in, d_out
        if layer.op == "conv2d":
            c_out, ho, wo = spec.shapes[k]
            rows, inner, outs = batch * ho * wo, math.prod(spec.param_shapes()[f"W{k}"][1:]), c_out
        forward = {
            "product": 2 * rows * inner * outs if dense else 0,
            "bias": rows * outs if dense and layer.bias else 0,
        }
        needs_input = _needs_input_gradient(spec, k)
        backward = {
            "weights": 2 * rows * inner * outs if dense else 0,
            "bias": rows * outs if dense and layer.bias else 0,
            "input": 2 * rows * inner * outs if dense and needs_input else 0,
        }
        if layer.op == "conv2d" and needs_input:  # fold: one add per patch entry
            backward["input"] += rows * inner
        if layer.op in ("maxpool2d", "avgpool2d"):
            window = layer.kernel[0] * layer.kernel[1]
            forward["activation_pool"] = (window - 1) * batch * d_out  # max or sum per window
            if layer.op == "avgpool2d":
                forward["activation_pool"] += batch * d_out  # the division
            # max: a compare and a multiply per window entry; avg: an add per entry
            per_entry = 2 if layer.op == "maxpool2d" else 1
            backward["pool"] = per_entry * window * batch * d_out if needs_input else 0
        needs_delta = dense or needs_input
        if layer.activation == "softmax":
            f_ops, df_ops = None, None
            forward["activation"] = batch * _per_row(SOFTMAX_OPS, d_out)
            backward["activation"] = batch * _per_row(SOFTMAX_VJP_OPS, d_out)
        else:
            f_ops, df_ops = _elementwise_ops(layer)
            forward["activation"] = f_ops * batch * d_out
            backward["activation"] = df_ops * batch * d_out
        if not needs_delta:
            backward["activation"] = 0
        forward["total"] = sum(forward.values())
        backward["total"] = sum(backward.values())
        params = _param_count(spec, layer)
        layers.append(
            {
                "index": k,
                "in": d_in,
                "out": d_out,
                "dense": dense,
                "bias": dense and layer.bias,
                "params": params,
                "activation_ops": f_ops,
                "derivative_ops": df_ops,
                "forward": forward,
                "backward": backward,
            }
        )
    d_k = spec.outputs
    if spec.loss == "cross_entropy":
        loss_ops = None
        loss_forward = batch * _per_row(CROSS_ENTROPY_OPS, d_k) + batch
        loss_backward = batch * _per_row(CROSS_ENTROPY_VJP_OPS, d_k)
        loss_derivative_ops = None
    else:
        loss = spec.element_loss
        loss_ops = _ops(loss)
        loss_derivative_ops = _ops(local_derivative(loss, yhat, _loss_value)) + 1
        loss_forward = (loss_ops + 1) * batch * d_k  # the formula, then the mean's adds
        loss_backward = loss_derivative_ops * batch * d_k
    per_element, per_step = _optimizer_ops(spec)
    params = sum(layer["params"] for layer in layers)
    optimizer = per_element * params + per_step
    forward = sum(layer["forward"]["total"] for layer in layers)
    backward = sum(layer["backward"]["total"] for layer in layers) + loss_backward
    cached = _cached(spec, derivation)
    for layer in layers:
        layer["cached_floats"] = sum(c["floats"] for c in cached if c["layer"] == layer["index"])
    training = sum(c["floats"] for c in cached)
    inference = max(batch * (widths[i] + widths[i + 1]) for i in range(K))
    state = len(update_rule(spec.train.optimizer, spec.train.options).state)
    return {
        "batch_size": batch,
        "widths": widths,
        "layers": layers,
        "params": params,
        "loss_ops": loss_ops,  # per element (None: cross_entropy, per row)
        "loss_derivative_ops": loss_derivative_ops,
        "forward_flops": forward,  # inference: X to the output
        "loss_flops": loss_forward,  # the loss and its mean
        "loss_backward_flops": loss_backward,  # dL/dYhat
        "backward_flops": backward,  # dL/dYhat, then every layer
        "optimizer_element_ops": per_element,
        "optimizer_flops": optimizer,
        "step_flops": forward + loss_forward + backward + optimizer,
        "cached": cached,  # name, layer (0: input, K + 1: loss), floats, shape, read_by
        "input_cached_floats": sum(c["floats"] for c in cached if c["layer"] == 0),
        "loss_cached_floats": sum(c["floats"] for c in cached if c["layer"] == K + 1),
        "training_floats": training,
        "training_bytes": training * FLOAT32_BYTES,
        "inference_floats": inference,
        "inference_bytes": inference * FLOAT32_BYTES,
        "param_floats": params,
        "optimizer_state_floats": state * params,
    }


def format_layer_costs(costs: dict, name: str) -> str:
    """:func:`layer_costs` as a short text report (what ``derive --stats`` prints)."""
    n = costs["batch_size"]
    forward = costs["forward_flops"] + costs["loss_flops"]
    rows = [
        ("parameters", costs["params"]),
        (f"forward pass to the output (N = {n})", costs["forward_flops"]),
        ("loss and its mean", costs["loss_flops"]),
        ("backward pass", costs["backward_flops"]),
        ("optimizer update", costs["optimizer_flops"]),
        ("training step in all", costs["step_flops"]),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"operation counts for {name} (floating-point operations per step)"]
    lines += [f"  {label:<{width}}  {value:>12}" for label, value in rows]
    lines.append(f"  step / forward with loss: {costs['step_flops'] / max(forward, 1):.2f}")
    lines.append(
        "per layer        in      out   parameters      forward     backward   cached floats"
    )
    for layer in costs["layers"]:
        lines.append(
            f"  {layer['index']:>5} {layer['in']:>8} {layer['out']:>8} {layer['params']:>12} "
            f"{layer['forward']['total']:>12} {layer['backward']['total']:>12} "
            f"{layer['cached_floats']:>15}"
        )
    lines.append("memory of activations (float32)")
    lines.append(
        f"  training keeps   {costs['training_floats']:>10} floats "
        f"{costs['training_bytes']:>12} bytes"
    )
    lines.append(
        f"  inference keeps  {costs['inference_floats']:>10} floats "
        f"{costs['inference_bytes']:>12} bytes"
    )
    return "\n".join(lines) + "\n"


# --- the sections -----------------------------------------------------------------------


def _factor(nt: Names, expr: sp.Expr) -> str:
    """``expr`` as a factor after an elementwise product sign: parenthesized unless atomic."""
    text = nt.expr(expr)
    if expr.is_Atom or (isinstance(expr, sp.Function) and not expr.could_extract_minus_sign()):
        return text
    return nt.paren(text)


def _dense_rhs(nt: Names, layer: Layer, k: int) -> str:
    product = f"{nt.m('A', k - 1)} {nt.m('W', k, t=True)}"
    return f"{product} + {nt.m('b', k)}" if layer.bias else product


def _image_rhs(nt: Names, layer: Layer, k: int) -> str:
    """Z(l) of an image layer: unfold + product, pooling, or flatten of A(l-1)."""
    a = nt.m("A", k - 1)
    if layer.op == "conv2d":
        product = f"{nt.op('unfold', a)} {nt.m('W', k, t=True)}"
        return f"{product} + {nt.m('b', k)}" if layer.bias else product
    return nt.op(layer.op, a)


def _above_gradient(nt: Names, above: Layer, k: int) -> str:
    """G(k) = dL/dA(k) from delta(k + 1) of the layer above: through its product (dense),
    fold of the product (conv2d), the pooling's routing, or the inverse reshape."""
    delta = nt.m("delta", k + 1)
    if above.dense is not None:
        return f"{delta} {nt.m('W', k + 1)}"
    if above.op == "conv2d":
        return nt.op("fold", f"{delta} {nt.m('W', k + 1)}")
    if above.op == "maxpool2d":
        return nt.op("unpool_max", delta)
    if above.op == "avgpool2d":
        return nt.op("unpool_avg", delta)
    if above.op == "flatten":
        return nt.op("unflatten", delta)
    return delta


_NO_ACTIVATION_KINDS = {"maxpool2d": "max pool", "avgpool2d": "avg pool"}


def _activation_name(layer: Layer, last: bool, loss: str) -> str:
    """The layer's activation as tables and headings name it; a pooling or flatten
    layer, which has none, says what it is instead of a bare "none"."""
    if layer.activation == "custom":
        return "custom"
    if layer.op in _NO_ACTIVATION_KINDS:
        size = "x".join(map(str, layer.kernel))
        return f"none ({size} {_NO_ACTIVATION_KINDS[layer.op]})"
    if layer.op == "flatten":
        return "none (flatten)"
    if _is_identity(layer):
        logits = last and loss in ("bce_with_logits", "cross_entropy")
        return "none (logits)" if logits else "none"
    return layer.text or layer.activation


def _layer_table(spec: LayerSpec) -> list[dict]:
    """Per layer: widths, shapes and parameter count ((in + 1) x out, in x out without bias)."""
    widths, K = spec.widths, len(spec.layers)
    rows = []
    for layer in spec.layers:
        d_in, d_out = widths[layer.index - 1], widths[layer.index]
        dense = layer.dense is not None
        params = _param_count(spec, layer)
        w_dims = list(spec.param_shapes().get(f"W{layer.index}", ()))
        rows.append(
            {
                "index": layer.index,
                "in": d_in,
                "out": d_out,
                "w_dims": w_dims,  # W's shape ([] without parameters)
                "fan": math.prod(w_dims[1:]) if w_dims else 0,  # inputs per output
                "outs": w_dims[0] if w_dims else 0,  # outputs (features or channels)
                "dense": dense,
                "bias": layer.has_params and layer.bias,
                "activation": _activation_name(layer, layer.index == K, spec.loss),
                "params": params,
            }
        )
    return rows


def _convolution(spec: LayerSpec, eq: _Equations) -> dict | None:
    """The image layers in the unfold/fold view: per layer its sizes (with what the floor
    of torch's output size drops), the memory of the unfolded input against the input,
    and the general equations of the forward and backward passes."""
    if not spec.convolutional:
        return None
    batch = spec.train.batch_size
    layers = []
    for layer in spec.layers:
        if layer.op not in ("conv2d", "maxpool2d", "avgpool2d"):
            continue
        k = layer.index
        (c, h, w), (c_out, ho, wo) = spec.shapes[k - 1], spec.shapes[k]
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
        sizes = []
        for name, size, kernel, stride, pad, out in (
            ("height", h, kh, sh, ph, ho),
            ("width", w, kw, sw, pw, wo),
        ):
            left = (size + 2 * pad - kernel) % stride  # what the floor drops
            sizes.append(
                {
                    "name": name,
                    "size": size,
                    "kernel": kernel,
                    "stride": stride,
                    "padding": pad,
                    "out": out,
                    "dropped": left,
                }
            )
        entry = {
            "index": k,
            "op": layer.op,
            "in": f"{c} x {h} x {w}",
            "out": f"{c_out} x {ho} x {wo}",
            "sizes": sizes,
            "kernel": f"{kh} x {kw}",
            "stride": f"{sh} x {sw}",
            "window": kh * kw,
            "needs_input": _needs_input_gradient(spec, k),
        }
        if layer.op == "conv2d":
            columns = c * kh * kw
            unfolded = ho * wo * (columns + layer.bias)
            entry.update(
                {
                    "columns": columns,
                    "bias": layer.bias,
                    "rows": ho * wo,
                    "unfolded": unfolded * batch,
                    "input_floats": c * h * w * batch,
                    "ratio": f"{unfolded / (c * h * w):.1f}",
                    "unfolded_bytes": unfolded * batch * FLOAT32_BYTES,
                }
            )
        layers.append(entry)

    def forward(nt: Names) -> Rows:
        u, a, wt = nt.m("U", "l"), nt.m("A", "l-1"), nt.m("W", "l", t=True)
        return [
            (u, nt.op("unfold", a)),
            (nt.m("Z", "l"), f"{u} {wt} + {nt.m('b', 'l')}"),
        ]

    def backward(nt: Names) -> Rows:
        delta = nt.m("delta", "l")
        return [
            (
                nt.d(nt.m("W", "l")),
                nt.op("reshape", f"{nt.m('delta', 'l', t=True)} {nt.m('U', 'l')}"),
            ),
            (nt.d(nt.m("b", "l")), f"{nt.ones_t} {delta}"),
            (nt.d(nt.m("U", "l")), f"{delta} {nt.m('W', 'l')}"),
            (nt.d(nt.m("A", "l-1")), nt.op("fold", f"{delta} {nt.m('W', 'l')}")),
        ]

    return {
        "layers": layers,
        "forward": eq(forward),
        "backward": eq(backward),
        "has_max": any(entry["op"] == "maxpool2d" for entry in layers),
        "has_avg": any(entry["op"] == "avgpool2d" for entry in layers),
        "has_conv": any(entry["op"] == "conv2d" for entry in layers),
        "has_flatten": any(layer.op == "flatten" for layer in spec.layers),
        "input": " x ".join(map(str, spec.shapes[0])),
        "batch": batch,
    }


def _network(spec: LayerSpec, eq: _Equations) -> dict:
    K = len(spec.layers)

    def general(nt: Names) -> Rows:
        f = "f_{l}" if not nt.text else "f_l"
        return [
            (nt.m("A", "0"), nt.m("X")),
            (nt.m("Z", "l"), f"{nt.m('A', 'l-1')} {nt.m('W', 'l', t=True)} + {nt.m('b', 'l')}"),
            (nt.m("A", "l"), f"{f}{nt.paren(nt.m('Z', 'l'))}"),
        ]

    def concrete(nt: Names) -> Rows:
        rows = []
        for layer in spec.layers:
            k = layer.index
            if layer.dense is not None:
                rows.append((nt.m("Z", k), _dense_rhs(nt, layer, k)))
            elif layer.op:
                rows.append((nt.m("Z", k), _image_rhs(nt, layer, k)))
            else:
                rows.append((nt.m("Z", k), nt.m("A", k - 1)))
            if layer.activation == "softmax":
                rows.append((nt.m("A", k), nt.op("softmax", nt.m("Z", k))))
            elif _is_identity(layer):
                rows.append((nt.m("A", k), nt.m("Z", k)))
            else:
                rows.append((nt.m("A", k), nt.expr(_tidy(activation_formula(layer, Zs(k))))))
        rows.append((nt.m("Yhat"), nt.m("A", K)))
        return rows

    table = _layer_table(spec)
    return {
        "K": K,
        "d0": spec.widths[0],
        "dK": spec.outputs,
        "general": eq(general),
        "concrete": eq(concrete),
        "table": table,
        "total_params": sum(r["params"] for r in table),
        "has_identity": any(_is_identity(layer) for layer in spec.layers),
        "has_activation_only": any(layer.dense is None for layer in spec.layers),
        "has_softmax": any(layer.activation == "softmax" for layer in spec.layers),
    }


def _training(spec: LayerSpec) -> dict:
    return training_context(spec.train, len(spec.data[0]) if spec.data else None)


def _loss(spec: LayerSpec, eq: _Equations) -> dict:
    d_k = spec.outputs
    yh, yy = _sym("yhat_ni"), _sym("y_ni")

    def definition(nt: Names) -> Rows:
        if spec.loss == "cross_entropy":
            if nt.text:
                return [("l_n", f"-sum_i=1..{d_k} y_ni log(softmax(yhat_n)_i)")]
            body = r"y_{ni} \log \operatorname{softmax}\left(\hat{y}_{n}\right)_{i}"
            return [("l_{n}", f"-{nt.sum('i', '1', str(d_k), body)}")]
        loss = spec.element_loss.xreplace({yhat: yh, y: yy})
        return [("l_ni" if nt.text else "l_{ni}", nt.expr(_tidy(loss)))]

    def batch(nt: Names) -> Rows:
        if spec.loss == "cross_entropy":
            body = "l_n" if nt.text else "l_{n}"
            return [("L", f"{nt.frac('1', 'N')} {nt.sum('n', '1', 'N', body)}")]
        if d_k == 1:
            body = "l_n1" if nt.text else "l_{n1}"
            return [("L", f"{nt.frac('1', 'N')} {nt.sum('n', '1', 'N', body)}")]
        body = nt.sum("i", "1", str(d_k), "l_ni" if nt.text else "l_{ni}")
        mean = "N" if spec.custom_loss is not None else f"{d_k} N"  # a formula sums outputs
        return [("L", f"{nt.frac('1', mean)} {nt.sum('n', '1', 'N', body)}")]

    custom = spec.custom_loss is not None
    return {
        "key": spec.loss,
        "custom": custom,
        "name": "formula of the spec" if custom else LOSS_NAMES[spec.loss],
        "torch": "no torch.nn loss (a formula)" if custom else TORCH_LOSSES[spec.loss],
        "dK": d_k,
        "definition": eq(definition),
        "batch": eq(batch),
        "stable": eq(lambda nt: _stable_rows(spec.loss, nt))
        if spec.loss != "mse" and not custom
        else None,
        # bce's clamp evaluated as log(max(x, e^-100)) (symbp.functions.clamped_log)
        "log_of_max": spec.loss == "bce"
        and any(
            type(e).__name__ == "clamped_log"
            for e in sp.preorder_traversal(ELEMENTWISE_LOSSES["bce"])
        ),
    }


def _stable_rows(loss: str, nt: Names) -> Rows:
    """The numerically stable form of a named loss, as the generated code computes it."""
    if nt.text:
        return {
            "l1": [("l_ni", "|yhat_ni - y_ni|")],
            "bce": [
                ("l_ni", "-(y_ni max(log(yhat_ni), -100) + (1 - y_ni) max(log(1 - yhat_ni), -100))")
            ],
            "bce_with_logits": [
                ("l_ni", "-(y_ni log(sigmoid(yhat_ni)) + (1 - y_ni) log(1 - sigmoid(yhat_ni)))"),
                ("", "softplus(yhat_ni) - yhat_ni y_ni"),
                ("", "max(yhat_ni, 0) - yhat_ni y_ni + log(1 + exp(-|yhat_ni|))"),
            ],
            "cross_entropy": [
                ("l_n", "logsumexp(yhat_n) - sum_i y_ni yhat_ni"),
                ("logsumexp(yhat_n)", "m_n + log(sum_i exp(yhat_ni - m_n)),  m_n = max_i yhat_ni"),
            ],
        }[loss]
    sig = r"\operatorname{sigmoid}\left(\hat{y}_{ni}\right)"
    return {
        "l1": [("l_{ni}", r"\left|\hat{y}_{ni} - y_{ni}\right|")],
        "bce": [
            (
                "l_{ni}",
                r"-\left(y_{ni} \max\left(\log \hat{y}_{ni}, -100\right) + \left(1 - y_{ni}\right)"
                r" \max\left(\log\left(1 - \hat{y}_{ni}\right), -100\right)\right)",
            )
        ],
        "bce_with_logits": [
            (
                "l_{ni}",
                rf"-\left(y_{{ni}} \log {sig} + \left(1 - y_{{ni}}\right) "
                rf"\log\left(1 - {sig}\right)\right)",
            ),
            ("", r"\operatorname{softplus}\left(\hat{y}_{ni}\right) - \hat{y}_{ni} y_{ni}"),
            (
                "",
                r"\max\left(\hat{y}_{ni}, 0\right) - \hat{y}_{ni} y_{ni} + "
                r"\log\left(1 + e^{-\left|\hat{y}_{ni}\right|}\right)",
            ),
        ],
        "cross_entropy": [
            (
                "l_{n}",
                r"\operatorname{logsumexp}\left(\hat{y}_{n}\right) - \sum_{i} y_{ni} \hat{y}_{ni}",
            ),
            (
                r"\operatorname{logsumexp}\left(\hat{y}_{n}\right)",
                r"m_{n} + \log \sum_{i} e^{\hat{y}_{ni} - m_{n}}, \quad "
                r"m_{n} = \max_{i} \hat{y}_{ni}",
            ),
        ],
    }[loss]


def _softmax_rows(nt: Names, k: int) -> Rows:
    """Generalized backprop through a row-wise softmax: dL/dz_n = J_n^T g_n."""
    s, g = nt.m("A", k), nt.m("G", k)
    if nt.text:
        return [
            ("J_n", "ds_n/dz_n,  (J_n)_ij = s_ni ([i = j] - s_nj)  (symmetric)"),
            ("dL/dz_n", "J_n^T g_n = s_n o (g_n - (g_n . s_n) 1)"),
            (nt.m("delta", k), f"{s} o ({g} - (({g} o {s}) 1) 1^T)"),
        ]
    return [
        (
            r"\left(J_{n}\right)_{ij}",
            r"\frac{\partial s_{ni}}{\partial z_{nj}} = s_{ni} \left(\left[i = j\right] - "
            r"s_{nj}\right)",
        ),
        (
            r"\frac{\partial L}{\partial z_{n}}",
            r"J_{n}^{T} g_{n} = s_{n} \circ \left(g_{n} - \left(g_{n} \cdot s_{n}\right)"
            r" \mathbf{1}\right)",
        ),
        (
            nt.m("delta", k),
            rf"{s} \circ \left({g} - \left(\left({g} \circ {s}\right) \mathbf{{1}}\right)"
            r" \mathbf{1}^{T}\right)",
        ),
    ]


def _output(spec: LayerSpec, eq: _Equations) -> dict:
    """Section 3: delta(K) = dL/dZ(K) of the output layer."""
    K, layer, d_k = len(spec.layers), spec.layers[-1], spec.outputs
    identity, is_softmax = _is_identity(layer), layer.activation == "softmax"
    ce = spec.loss == "cross_entropy"
    delta = output_delta(spec)
    # the mean's factor: over N d_K elements for torch's losses, N samples for a formula
    scale = sp.Integer(1) / (N * spec.loss_elements)
    out = Zs(K) if identity else As(K)

    def gradient(nt: Names) -> Rows:
        """G(K) = dL/dA(K), when an activation stands between Z(K) and the loss."""
        lhs = f"{nt.m('G', K)} = {nt.d(nt.m('A', K))}"
        if ce:
            return [(lhs, nt.expr(_tidy((softmax(As(K)) - Ys) / N)))]
        local = spec.element_loss.xreplace({yhat: As(K), y: Ys})
        return [
            (lhs, f"{nt.expr(scale)} {_derivative_text(nt, local, As(K))}"),
            ("", nt.expr(_output_gradient(spec))),
        ]

    def closed(nt: Names) -> Rows:
        lhs = f"{nt.m('delta', K)} = {nt.d(nt.m('Z', K))}"
        if ce and delta is None:  # an elementwise activation before the cross-entropy
            return [(lhs, f"{nt.m('G', K)}{nt.had}{_factor(nt, activation_derivative(layer, K))}")]
        if ce:
            return [(lhs, nt.expr(delta))]
        f = activation_formula(layer, Zs(K))
        local = spec.element_loss.xreplace({yhat: f, y: Ys})
        rows = []
        if not identity:
            rows.append(
                (lhs, f"{nt.m('G', K)}{nt.had}{_factor(nt, activation_derivative(layer, K))}")
            )
            lhs = ""
        rows.append((lhs, f"{nt.expr(scale)} {_derivative_text(nt, local, Zs(K))}"))
        rows.append(("", nt.expr(delta)))
        return rows

    def unclamped(nt: Names) -> Rows:
        return [(nt.m("delta", K), nt.expr(output_delta(spec, clamp=False)))]

    def ce_element(nt: Names) -> Rows:
        if nt.text:
            return [
                ("dl_n/dz_ni", "exp(z_ni) / sum_k exp(z_nk) - y_ni = softmax(z_n)_i - y_ni"),
            ]
        return [
            (
                r"\frac{\partial l_{n}}{\partial z_{ni}}",
                r"\frac{e^{z_{ni}}}{\sum_{k} e^{z_{nk}}} - y_{ni} = "
                r"\operatorname{softmax}\left(z_{n}\right)_{i} - y_{ni}",
            )
        ]

    return {
        "K": K,
        "dK": d_k,
        "loss": spec.loss,
        "identity": identity,
        "softmax": is_softmax,
        "activation": _activation_name(layer, True, spec.loss),
        "gradient": eq(gradient) if not identity else None,
        "closed": eq(closed) if delta is not None or (ce and not is_softmax) else None,
        "softmax_rows": eq(lambda nt: _softmax_rows(nt, K)) if is_softmax else None,
        "unclamped": eq(unclamped) if spec.loss == "bce" else None,
        "ce_element": eq(ce_element) if ce and identity else None,
        "logits": identity and spec.loss in ("bce_with_logits", "cross_entropy"),
        "prediction_minus_target": delta is not None
        and _is_prediction_minus_target(output_delta(spec, clamp=False), out, 1 if ce else d_k),
        "cancels": "softmax" if ce else "sigmoid",
    }


def _derivative_text(nt: Names, expr: sp.Expr, wrt: sp.Symbol) -> str:
    """d/dwrt [expr], written out (not evaluated)."""
    body = nt.expr(_tidy(expr))
    if nt.text:
        return f"d/d{wrt.name} [{body}]"
    return rf"\frac{{\partial}}{{\partial {nt.expr(wrt)}}} \left[{body}\right]"


def _is_prediction_minus_target(delta: sp.Expr, out: sp.Symbol, per_sample: int) -> bool:
    """Whether delta(K) = (prediction - Y) / (N d_K): the pairing that makes it simple."""
    prediction = sp.expand(delta * N * per_sample + Ys)
    return prediction == out or prediction.func in (softmax,) or _is_sigmoid_of(prediction, out)


def _is_sigmoid_of(expr: sp.Expr, out: sp.Symbol) -> bool:
    return isinstance(expr, sigmoid) and expr.args[0] == out


def _derivatives(spec: LayerSpec, eq: _Equations) -> list[dict]:
    """Each layer's f and f'(Z), as the generated code computes f'."""
    K = len(spec.layers)
    rows = []
    for layer in spec.layers:
        k = layer.index
        if layer.activation == "softmax":
            f, df = None, None
        else:
            f = _tidy(activation_formula(layer, z))
            df = activation_derivative(layer, k)
        reads = sorted(s.name for s in df.free_symbols) if df is not None else []
        rows.append(
            {
                "index": k,
                "activation": _activation_name(layer, k == K, spec.loss),
                "softmax": f is None,
                "f": eq(lambda nt, f=f: [("f(z)", nt.expr(f))]) if f is not None else None,
                "df": eq(lambda nt, k=k, df=df: [(f"f'({nt.m('Z', k)})", nt.expr(df))])
                if df is not None
                else None,
                "both": eq(
                    lambda nt, k=k, f=f, df=df: [
                        ("f(z)", nt.expr(f)),
                        (f"f'({nt.m('Z', k)})", nt.expr(df)),
                    ]
                )
                if f is not None
                else None,
                "reuses_a": f"A^({k})" in reads,
                "reads_z": f"Z^({k})" in reads,
            }
        )
    return rows


def _first_needed(spec: LayerSpec) -> int:
    """The lowest layer whose delta the backward pass computes (the first dense layer)."""
    return next(layer.index for layer in spec.layers if layer.has_params)


def _backward(spec: LayerSpec, eq: _Equations) -> dict:
    """Section 4: the recursion from delta(K) down to the first layer."""
    K = len(spec.layers)
    first = _first_needed(spec)

    def general(nt: Names) -> Rows:
        g = f"{nt.m('delta', 'l+1')} {nt.m('W', 'l+1')}"
        fprime = "f_{l}'" if not nt.text else "f_l'"
        fz = f"{fprime}{nt.paren(nt.m('Z', 'l'))}"
        return [
            (f"{nt.m('G', 'l')} = {nt.d(nt.m('A', 'l'))}", g),
            (f"{nt.m('delta', 'l')} = {nt.d(nt.m('Z', 'l'))}", f"{nt.m('G', 'l')}{nt.had}{fz}"),
            ("", f"{nt.paren(g)}{nt.had}{fz}"),
            (nt.d(nt.m("W", "l")), f"{nt.m('delta', 'l', t=True)} {nt.m('A', 'l-1')}"),
            (nt.d(nt.m("b", "l")), f"{nt.ones_t} {nt.m('delta', 'l')}"),
        ]

    steps = []
    for layer in reversed(spec.layers):
        k = layer.index
        if k < first:
            break
        steps.append(
            {
                "index": k,
                "dense": layer.dense is not None,
                "last": k == K,
                "first": k == first,
                "softmax": layer.activation == "softmax",
                "activation": _activation_name(layer, k == K, spec.loss),
                "equation": eq(lambda nt, layer=layer: _layer_rows(spec, layer, nt)),
            }
        )
    return {
        "general": eq(general),
        "derivatives": _derivatives(spec, eq),
        "steps": steps,
        "first": first,
        "K": K,
    }


def _layer_rows(spec: LayerSpec, layer: Layer, nt: Names) -> Rows:
    K, k = len(spec.layers), layer.index
    rows: Rows = []
    if k < K:
        above = spec.layers[k]  # layer l + 1
        g = _above_gradient(nt, above, k)
        rows.append((f"{nt.m('G', k)} = {nt.d(nt.m('A', k))}", g))
        lhs = f"{nt.m('delta', k)} = {nt.d(nt.m('Z', k))}"
        if layer.activation == "softmax":
            s, gg = nt.m("A", k), nt.m("G", k)
            if nt.text:
                rows.append((lhs, f"{s} o ({gg} - (({gg} o {s}) 1) 1^T)"))
            else:
                rows.append(
                    (
                        lhs,
                        rf"{s} \circ \left({gg} - \left(\left({gg} \circ {s}\right)"
                        r" \mathbf{1}\right) \mathbf{1}^{T}\right)",
                    )
                )
        elif _is_identity(layer):
            rows.append((lhs, nt.m("G", k)))
        else:
            df = _factor(nt, activation_derivative(layer, k))
            rows.append((lhs, f"{nt.m('G', k)}{nt.had}{df}"))
            rows.append(("", f"{nt.paren(g) if above.dense else g}{nt.had}{df}"))
    if layer.op == "conv2d":
        product = f"{nt.m('delta', k, t=True)} {nt.m('U', k)}"
        rows.append((nt.d(nt.m("W", k)), nt.op("reshape", product)))
        if layer.bias:
            rows.append((nt.d(nt.m("b", k)), f"{nt.ones_t} {nt.m('delta', k)}"))
    if layer.dense is not None:
        rows.append((nt.d(nt.m("W", k)), f"{nt.m('delta', k, t=True)} {nt.m('A', k - 1)}"))
        if layer.bias:
            rows.append((nt.d(nt.m("b", k)), f"{nt.ones_t} {nt.m('delta', k)}"))
    return rows


def _element(spec: LayerSpec, eq: _Equations) -> dict:
    """The index form: every matrix formula of section 4, element by element."""
    K = len(spec.layers)
    first = _first_needed(spec)

    def a(nt: Names, k: object, index: str) -> str:
        if k == 0:
            return f"x_{index}" if nt.text else f"x_{{{index}}}"
        return nt.el("a", k, index)

    def general(nt: Names) -> Rows:
        fprime = "f_l'" if nt.text else "f_{l}'"
        inner = nt.sum("k", "1", "d_l+1" if nt.text else "d_{l+1}", "")
        inner += f"{nt.el('delta', 'l+1', 'nk')} {nt.el('w', 'l+1', 'ki')}"
        return [
            (
                nt.el("delta", "l", "ni"),
                f"{nt.paren(inner)} {fprime}{nt.paren(nt.el('z', 'l', 'ni'))}",
            ),
            (
                nt.d(nt.el("w", "l", "ij")),
                nt.sum("n", "1", "N", f"{nt.el('delta', 'l', 'ni')} {a(nt, 'l-1', 'nj')}"),
            ),
            (nt.d(nt.el("b", "l", "i")), nt.sum("n", "1", "N", nt.el("delta", "l", "ni"))),
        ]

    def elementwise(expr: sp.Expr, k: int) -> sp.Expr:
        mapping = {
            Zs(k): _sym(f"z_ni^({k})"),
            As(k): _sym(f"a_ni^({k})"),
            Ys: _sym("y_ni"),
        }
        with distribute(False):
            return _tidy(expr.xreplace(mapping))

    def layer_rows(layer: Layer, nt: Names) -> Rows:
        k = layer.index
        lhs = nt.el("delta", k, "ni")
        rows: Rows = []
        if k == K:
            delta = output_delta(spec)
            if spec.loss == "cross_entropy" and delta is not None:
                rows.append((lhs, nt.frac(_softmax_of(nt, "z", k), "N")))
            elif delta is not None:
                rows.append((lhs, nt.expr(elementwise(delta, k))))
            else:
                rows.append((lhs, _softmax_element(nt, k, "g", spec.widths[k])))
                rows.append(
                    (nt.el("g", k, "ni"), nt.expr(elementwise(_output_gradient(spec), k)))
                    if spec.loss != "cross_entropy"
                    else (nt.el("g", k, "ni"), nt.frac(_softmax_of(nt, "a", k), "N"))
                )
        else:
            above = spec.layers[k]
            hi = str(spec.widths[k + 1])
            g = (
                nt.sum("k", "1", hi, f"{nt.el('delta', k + 1, 'nk')} {nt.el('w', k + 1, 'ki')}")
                if above.dense
                else nt.el("delta", k + 1, "ni")
            )
            if layer.activation == "softmax":
                rows.append((lhs, _softmax_element(nt, k, "g", spec.widths[k])))
                rows.append((nt.el("g", k, "ni"), g))
            elif _is_identity(layer):
                rows.append((lhs, g))
            else:
                df = elementwise(activation_derivative(layer, k), k)
                g_text = nt.paren(g) if above.dense else g
                rows.append((lhs, f"{g_text} {_factor(nt, df)}"))
        if layer.dense is not None:
            products = f"{nt.el('delta', k, 'ni')} {a(nt, k - 1, 'nj')}"
            rows.append((nt.d(nt.el("w", k, "ij")), nt.sum("n", "1", "N", products)))
            if layer.bias:
                rows.append(
                    (nt.d(nt.el("b", k, "i")), nt.sum("n", "1", "N", nt.el("delta", k, "ni")))
                )
        return rows

    return {
        "general": eq(general),
        "layers": [
            {"index": layer.index, "equation": eq(lambda nt, layer=layer: layer_rows(layer, nt))}
            for layer in reversed(spec.layers)
            if layer.index >= first
        ],
    }


def _softmax_element(nt: Names, k: int, g: str, width: int) -> str:
    s = nt.el("a", k, "ni")
    total = nt.sum("k", "1", str(width), f"{nt.el(g, k, 'nk')} {nt.el('a', k, 'nk')}")
    inner = f"{nt.el(g, k, 'ni')} - {total}"
    return f"{s} {nt.paren(inner)}"


def _softmax_of(nt: Names, name: str, k: int) -> str:
    """softmax(z_n^(k))_i - y_ni: the cross-entropy's gradient for one element."""
    if nt.text:
        return f"softmax({name}_n^({k}))_i - y_ni"
    return rf"\operatorname{{softmax}}\left({name}^{{({k})}}_{{n}}\right)_{{i}} - y_{{ni}}"


# --- costs and memory, the program ------------------------------------------------------


def _adjoint_of_a(spec: LayerSpec, k: int) -> tuple[str, int]:
    """What d_A{k} is in the document: G(k), or delta(k + 1) where layer k + 1 is an
    activation alone (its Z is A(k))."""
    if k < len(spec.layers) and spec.layers[k].dense is None:
        return "delta", k + 1
    return "G", k


def _value(symbol: sp.Symbol, nt: Names, spec: LayerSpec, origins: _Origins) -> dict:
    """A program value as the document writes it: math (Z^(1) for Z1, delta^(1) for its
    adjoint) or code (shared values such as c1)."""
    if symbol in origins.leaves:
        return {"math": symbol.name}
    if symbol in origins.values:
        return {"math": nt.m(*origins.values[symbol])}
    if symbol in origins.adjoints:
        kind, k = origins.adjoints[symbol]
        if kind == "Z":
            return {"math": nt.m("delta", k)}
        if kind == "A":
            return {"math": nt.m(*_adjoint_of_a(spec, k))}
        if kind in ("W", "b"):
            return {"math": nt.d(nt.m(kind, k))}
    return {"code": symbol.name}


def _in_notation(
    symbols: list[sp.Symbol], program: Program, nt: Names, spec: LayerSpec, origins: _Origins
) -> list[sp.Symbol]:
    """The readers of a cached value as the document names them: a program temporary
    (v1 = delta^(1)T U^(1), d_A2_masked) stands for the named values it flows into
    (dL/dW^(1) and dL/db^(1), delta^(1)), which the sections above define."""
    readers: dict[sp.Symbol, list[sp.Symbol]] = {}
    for stmt in program.statements:
        for read in stmt.reads:
            readers.setdefault(read, []).append(stmt.target)
    out: list[sp.Symbol] = []
    pending, seen = list(symbols), set()
    while pending:
        symbol = pending.pop(0)
        if symbol in seen:
            continue
        seen.add(symbol)
        if "math" in _value(symbol, nt, spec, origins) or symbol not in readers:
            out.append(symbol)
        else:
            pending[:0] = readers[symbol]
    return list(dict.fromkeys(out))


def _costs(derivation: Derivation, nt: Names) -> dict:
    spec, program = derivation.spec, derivation.program
    costs = layer_costs(spec, derivation)
    origins = _origins(derivation)

    def symbol(name: str) -> sp.Symbol:  # a name of the costs' table: program symbols are real
        return sp.Symbol(name, real=True)

    K = len(spec.layers)
    groups = []
    for layer in range(K + 2):
        entries = [c for c in costs["cached"] if c["layer"] == layer]
        if not entries:
            continue
        label = "input" if layer == 0 else "loss" if layer == K + 1 else f"layer {layer}"
        floats = sum(c["floats"] for c in entries)
        groups.append(
            {
                "label": label,
                "values": [
                    {
                        **_value(symbol(c["name"]), nt, spec, origins),
                        "shape": " x ".join(map(str, c["shape"])),
                        "floats": c["floats"],
                        "read_by": [
                            _value(r, nt, spec, origins)
                            for r in _in_notation(
                                [symbol(r) for r in c["read_by"]], program, nt, spec, origins
                            )
                        ],
                    }
                    for c in entries
                ],
                "floats": floats,
                "bytes": floats * FLOAT32_BYTES,
            }
        )
    with_loss = costs["forward_flops"] + costs["loss_flops"]
    widest = max(range(K), key=lambda i: spec.widths[i] + spec.widths[i + 1])
    return {
        **costs,
        "groups": groups,
        "forward_with_loss": with_loss,
        "bound": 3 * with_loss + costs["optimizer_flops"],
        "ratio": f"{costs['step_flops'] / max(with_loss, 1):.2f}",
        "memory_ratio": f"{costs['training_floats'] / max(costs['inference_floats'], 1):.1f}",
        "widest": {
            "index": widest + 1,
            "in": spec.widths[widest],
            "out": spec.widths[widest + 1],
        },
        "optimizer": spec.train.optimizer,
        "optimizer_state": len(update_rule(spec.train.optimizer, spec.train.options).state),
        "loss_per_row": spec.loss == "cross_entropy",
        "cross_entropy_ops": CROSS_ENTROPY_OPS[0],
        "cross_entropy_vjp_ops": CROSS_ENTROPY_VJP_OPS[0],
        "softmax_ops": SOFTMAX_OPS[0],
        "softmax_vjp_ops": SOFTMAX_VJP_OPS[0],
    }


CALLS = {
    "linear": lambda a, w, b=None: f"{a} @ {w}.T" + (f" + {b}" if b else ""),
    "matmul": lambda g, w: f"{g} @ {w}",
    "matmul_tn": lambda g, a: f"{g}.T @ {a}",
    "sum_rows": lambda g: f"{g}.sum(axis=0)",
    "softmax": lambda zz: f"softmax({zz})",
    "softmax_vjp": lambda s, g: f"softmax_vjp({s}, {g})",
    "cross_entropy": lambda zz, yy: f"cross_entropy({zz}, {yy})",
    "cross_entropy_vjp": lambda zz, yy, g: f"cross_entropy_vjp({zz}, {yy}, {g})",
}


def _call_text(stmt: Call) -> str:
    """A Call as the document's program writes it: the op with its settings."""
    args = [a.name for a in stmt.args]
    if stmt.op in CALLS:
        return CALLS[stmt.op](*args)
    if stmt.op == "kernel_part":
        return f"reshape({args[0]}[:, :-1], {dict(stmt.attrs)['shape']})"
    if stmt.op == "bias_part":
        return f"{args[0]}[:, -1]"
    settings = [f"{key}={value}" for key, value in stmt.attrs]
    return f"{stmt.op}({', '.join(args + settings)})"


def _statement_text(stmt: Statement) -> str:
    if isinstance(stmt, Assign):
        return sp.sstr(stmt.expr, order="none")
    if isinstance(stmt, Call):
        return _call_text(stmt)
    return f"{'sum' if isinstance(stmt, BatchSum) else 'mean'}({stmt.source.name})"


def _comment(stmt: Statement, cached: set[str], spec: LayerSpec, origins: _Origins) -> str:
    name = stmt.target.name
    if stmt.phase == "forward":
        return "cached for the backward pass" if name in cached else ""
    if stmt.target in origins.masked:  # symbp.program.mask_before_routing
        _, k = origins.masked[stmt.target]
        return f"f'(Z^({k - 1})) at the pooled size: A^({k - 1}) = A^({k}) where max-pool routes"
    kind, k = origins.adjoints.get(stmt.target, ("", 0))
    if kind == "Z":
        return f"delta^({k})"
    if kind != "A":
        return ""
    adjoint, index = _adjoint_of_a(spec, k)
    return f"{adjoint}^({index}) = dL/dA^({k})"


def _program(derivation: Derivation) -> dict:
    program = derivation.program
    origins = _origins(derivation)
    cached = {s.name for stmt in program.statements if stmt.phase == "backward" for s in stmt.reads}

    def lines(phase: str) -> list[str]:
        result = []
        for stmt in program.statements:
            if stmt.phase != phase:
                continue
            target = stmt.target.name
            code = f"{target} = {wrap(_statement_text(stmt), 0, len(target) + 3, CODE_WIDTH)}"
            comment = _comment(stmt, cached, derivation.spec, origins)
            if comment and "\n" not in code and len(code) + len(comment) + 4 <= CODE_WIDTH:
                result.append(f"{code}  # {comment}")
            elif comment:
                result += [f"# {comment}", *code.split("\n")]
            else:
                result += code.split("\n")
        return result

    kinds = {program.temporaries.get(s.target) for s in program.statements}
    ops = {s.op for s in program.statements if isinstance(s, Call)}
    has_step = any(isinstance(s, Assign) and s.expr.has(sp.Heaviside) for s in program.statements)
    return {
        "forward": lines("forward"),
        "backward": lines("backward"),
        "statements": len(program.statements),
        "ops": sorted(ops),
        "has_c": "shared" in kinds,
        "has_step": has_step,
        "has_mean": any(isinstance(s, BatchMean) for s in program.statements),
        "grads": [{"param": p.name, "grad": g.name} for p, g in program.grads.items()],
    }


def _kinks(spec: LayerSpec) -> list[dict]:
    exprs = [layer.formula for layer in spec.layers if layer.formula is not None]
    if spec.element_loss is not None:
        exprs.append(spec.element_loss)
    present = []
    for functions, key, text in KINKS:
        functions = functions if isinstance(functions, tuple) else (functions,)
        if any(e.has(f) for e in exprs for f in functions):
            present.append({"key": key, "text": text})
    return present


# --- the document -----------------------------------------------------------------------


def _context(derivation: Derivation, fmt: str, element: bool) -> dict:
    spec = derivation.spec
    eq = _Equations(fmt)
    return {
        "name": spec.name,
        "source": spec.source,
        "description": spec.description,
        "network": _network(spec, eq),
        "train": _training(spec),
        "loss": _loss(spec, eq),
        "output": _output(spec, eq),
        "backward": _backward(spec, eq),
        "convolution": _convolution(spec, eq),
        "element": _element(spec, eq) if element else None,
        "costs": _costs(derivation, eq.nt),
        "program": _program(derivation),
        "kinks": _kinks(spec),
        "graph": document_graph(derivation),
    }


def render_layer_document(derivation: Derivation, fmt: str, element: bool = False) -> str:
    """The derivation of the layer stack ``derivation.spec`` in ``fmt``: "text",
    "markdown" or "latex" (a complete document for pdflatex). ``element`` adds the
    index form of the backward pass (dL/dw_ij, dL/db_i, delta_ni)."""
    if fmt not in TEMPLATES:
        raise ValueError(f"unknown document format {fmt!r} (known: {', '.join(TEMPLATES)})")
    if not isinstance(derivation.spec, LayerSpec):
        raise TypeError("render_layer_document needs the derivation of a layer stack")
    env = environment(__package__)
    text = env.get_template(TEMPLATES[fmt]).render(_context(derivation, fmt, element))
    return finish(text, fmt)
