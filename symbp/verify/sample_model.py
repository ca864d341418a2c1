"""Any spec as one sample's named tensor formulas: what a claim is checked against.

A claim speaks of a model's values as the derivation document names them, per sample:
an expression model's let-names and outputs, a layer stack's z1, a1, ..., yhat (the
course's z^(l), a^(l)), a tensor model's let-names. This module states each front end's
model in the terms of the model language (:mod:`symbp.language.terms`): leaves (inputs,
targets, parameters), named values in order, each a term over the names before it, and
the per-sample loss. A dense layer is ``W @ a + b``, a convolution ``conv2d(a, W, b)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..errors import SpecError
from ..language import ops
from ..language.library import LOSSES, TENSOR_FUNCTIONS
from ..language.model import TensorModel
from ..language.terms import Term
from ..spec.expression import ExpressionSpec
from ..spec.layers import LayerSpec
from ..spec.layers import y as loss_y
from ..spec.layers import yhat as loss_yhat
from ..spec.layers import z as activation_z


@dataclass(frozen=True)
class Leaf:
    shape: tuple[int, ...]
    role: str  # "input" | "target" | "param"

    @property
    def batched(self) -> bool:
        return self.role != "param"


@dataclass
class SampleModel:
    name: str
    source: str
    leaves: dict[str, Leaf]
    labels: dict[str, int]  # targets holding class labels -> number of classes
    values: list[tuple[str, Term]]  # named values in order, each over earlier names
    loss: Term  # one sample's loss, shape ()
    reduction: str  # how the batch loss combines the samples' losses: "mean" | "sum"
    names: dict[str, Term] = field(default_factory=dict)  # what a formula may read
    aliases: dict[str, str] = field(default_factory=dict)  # another name -> a value's
    # a layer stack's delta^(k): its name in claims -> the value it is the adjoint of
    deltas: dict[str, str] = field(default_factory=dict)

    @property
    def coupled(self) -> bool:
        """Whether a sample's values read the batch (batch normalization)."""
        terms = [t for _, t in self.values] + [self.loss]
        return any(has_term(t, lambda u: u.op == "batch_mean") for t in terms)

    def adjoint_names(self) -> dict[str, str]:
        """What a claim's formula calls an adjoint -> the value's name: d_NAME for every
        value but class labels, d_ALIAS, deltaK."""
        names = {f"d_{n}": n for n in [*self.leaves, *(v for v, _ in self.values)]}
        names = {a: n for a, n in names.items() if n not in self.labels}
        names |= {f"d_{alias}": n for alias, n in self.aliases.items()}
        return names | self.deltas

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.leaves:
            return self.leaves[name].shape
        return dict(self.values)[name].shape

    def batched(self, name: str) -> bool:
        if name in self.leaves:
            return self.leaves[name].batched
        return dict(self.values)[name].batched


def has_term(term: Term, found) -> bool:
    """Whether ``found`` holds for ``term`` or any term below it (each shared term once)."""
    seen: set[int] = set()

    def walk(t: Term) -> bool:
        if id(t) in seen:
            return False
        seen.add(id(t))
        return found(t) or any(walk(a) for a in t.args)

    return walk(term)


def sample_model(spec) -> SampleModel:
    if isinstance(spec, TensorModel):
        return _tensor(spec)
    if isinstance(spec, ExpressionSpec):
        return _expression(spec)
    if isinstance(spec, LayerSpec):
        return _layers(spec)
    raise TypeError(f"not a model: {type(spec).__name__}")


def _tensor(spec: TensorModel) -> SampleModel:
    if spec.recur:  # its terms read a loop over time, which the sample's algebra has not
        raise SpecError(
            spec.source,
            "model",
            "claims about a recurrence cannot be verified yet; `symbp check` compares its"
            " gradients with finite differences",
        )
    leaves = {x: Leaf(s, "input") for x, s in spec.inputs.items()}
    leaves |= {t: Leaf(s, "target") for t, s in spec.targets.items()}
    leaves |= {p: Leaf(s, "param") for p, s in spec.params.items()}
    names = {n: ops.name(n, leaf.shape, leaf.batched) for n, leaf in leaves.items()}
    values = [(n, term) for n, term, _ in spec.lets]
    model = SampleModel(
        spec.name, spec.source, leaves, dict(spec.labels), values, spec.loss, spec.reduction
    )
    model.names = _with_leaves(names, values)
    return model


def _with_leaves(names: dict[str, Term], values) -> dict[str, Term]:
    return {**names, **dict(values)}


def _scalar_term(expr: sp.Expr, env: dict[sp.Symbol, Term]) -> Term:
    """A scalar formula as one elementwise term over the terms of its free names."""
    free = sorted(expr.free_symbols, key=lambda s: s.name)
    if not free:
        return ops.const(expr)
    args = [env[s] for s in free]
    if len(free) == 1 and expr == free[0]:
        return args[0]

    def func(*values, expr=expr, free=free):
        return expr.xreplace(dict(zip(free, values, strict=True)))

    return ops.elementwise(func, args, str(expr))


def _expression(spec: ExpressionSpec) -> SampleModel:
    leaves = {x: Leaf((), "input") for x in spec.inputs}
    leaves |= {t: Leaf((), "target") for t in spec.targets}
    leaves |= {p: Leaf((), "param") for p in spec.params}
    env = {sp.Symbol(n, real=True): ops.name(n, (), leaf.batched) for n, leaf in leaves.items()}
    names = {s.name: t for s, t in env.items()}
    values = []
    for name, expr in [*spec.lets, *spec.outputs]:
        term = _scalar_term(expr, env)
        if term.op in ("name", "const"):  # an alias: a value of its own all the same
            term = ops.elementwise(lambda v: v, [term], name)
        env[sp.Symbol(name, real=True)] = term
        values.append((name, term))
    loss = _scalar_term(spec.loss, env)
    model = SampleModel(spec.name, spec.source, leaves, {}, values, loss, "mean")
    model.names = _with_leaves(names, values)
    return model


def _layers(spec: LayerSpec) -> SampleModel:
    shapes = spec.param_shapes()
    leaves = {"x": Leaf(tuple(spec.shapes[0]), "input")}
    leaves |= {p: Leaf(shapes[p], "param") for p in spec.params}
    # the cross-entropy's targets are class labels (the module takes them one-hot)
    labels = {"y": spec.outputs} if spec.loss == "cross_entropy" else {}
    leaves["y"] = Leaf(() if labels else (spec.outputs,), "target")
    names = {n: ops.name(n, leaf.shape, leaf.batched) for n, leaf in leaves.items()}
    values: list[tuple[str, Term]] = []
    deltas: dict[str, str] = {}  # delta^(k), the course's dl/dz^(k)
    current = names["x"]
    for layer in spec.layers:
        k = layer.index
        bias = names.get(f"b{k}")
        if layer.op == "conv2d":
            current = ops.conv2d(current, names[f"W{k}"], bias, layer.stride, layer.padding)
            values.append((f"z{k}", current))
            deltas[f"delta{k}"] = f"z{k}"
        elif layer.has_params:
            current = ops.matmul(names[f"W{k}"], current)
            if bias is not None:
                current = ops.elementwise(lambda a, b: a + b, [current, bias], "+")
            values.append((f"z{k}", current))
            deltas[f"delta{k}"] = f"z{k}"
        elif layer.op in ("maxpool2d", "avgpool2d"):
            current = ops.pool2d(layer.op, current, layer.kernel, layer.stride)
            values.append((f"a{k}", current))
        elif layer.op == "flatten":
            current = ops.flatten(current)
            values.append((f"a{k}", current))
        if layer.activation == "softmax":
            current = TENSOR_FUNCTIONS["softmax"].build([current], {})
            values.append((f"a{k}", current))
        elif layer.formula is not None and layer.activation != "identity":

            def f(v, formula=layer.formula):
                return formula.xreplace({activation_z: v})

            current = ops.elementwise(f, [current], layer.text or "activation")
            values.append((f"a{k}", current))
    target = names["y"]
    if spec.loss == "cross_entropy":
        loss = LOSSES["cross_entropy"].build([current, target], {"label_smoothing": 0})
    elif spec.custom_loss is not None:

        def element(p, t, formula=spec.custom_loss):
            return formula.xreplace({loss_yhat: p, loss_y: t})

        each = ops.elementwise(element, [current, target], "loss")
        loss = ops.reduce_sum(each, (0,))
    else:
        loss = LOSSES[spec.loss].build([current, target], {})
    model = SampleModel(spec.name, spec.source, leaves, labels, values, loss, "mean")
    model.names = _with_leaves(names, values)
    last = values[-1][0]
    model.names["yhat"] = dict(values)[last]
    model.aliases["yhat"] = last
    model.deltas = deltas
    return model
