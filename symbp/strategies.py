"""Hypothesis strategies that draw random models with their specs, for property tests
of your own autodiff engine or backprop code against symbp's derivations.

Four strategies, one per kind of spec:

- :func:`expression_models`: scalar formulas in the spec's grammar (1-3 inputs, 1-4
  parameters, let-names, a shared subexpression, a loss formula, several outputs or
  none); ``functions=`` restricts the functions drawn to those an engine implements.
- :func:`layer_stacks`: dense networks (depth 1-4, widths 1-6, named and custom
  activations, named and custom losses); ``losses=`` and ``activations=`` restrict them.
- :func:`tensor_graphs`: random graphs in the model language (matrix products, tied
  weights, slices, concat, softmax, reductions, fan-out).
- :func:`recurrent_models`: random recurrences over sequences (``[model.recur]`` cells
  of one or two states, gated or not, with per-step values and learned initial states,
  and the ``{ rnn }``, ``{ lstm }``, ``{ gru }`` layer sugar).

Each draws a model object whose common interface is:

- ``kind``: ``"expression"``, ``"layers"``, ``"tensor"`` or ``"recurrent"``;
- ``spec_text``: the TOML spec; ``spec``: it parsed by :func:`symbp.spec.parse_spec`;
- ``param_shapes``, ``input_shapes``, ``target_shapes`` (name -> per-sample shape) and
  ``classes`` (targets that hold class labels -> number of classes);
- ``random_point(seed=0, batch=8)`` -> ``(params, X, Y)``: float64 arrays suited to the
  model, drawn as ``symbp check`` draws them (:func:`symbp.check.random_point`);
- ``reference(params, X, Y)`` -> ``(loss, grads)``: the batch loss and its gradients by
  symbp's derived program (the generated NumPy module, float64, rendered once per spec);
- ``module``: that generated module itself (``forward``, ``loss``, ``PARAM_SHAPES``...).

The layout of X and Y is the generated module's: for expression models X is
``(batch, len(inputs))`` and Y ``(batch, len(targets))``, one column per name in order;
for layer stacks X is ``(batch, input)`` and Y ``(batch, outputs)``, or ``(batch,)``
integer class labels under ``cross_entropy``; for tensor graphs X and Y are dicts of
``(batch, *shape)`` arrays by name (a recurrent model's sequence ``x`` is ``(batch, T,
features)``: ``random_point`` draws 2 to 6 steps, ``random_point(steps=...)`` says how
many). The batch loss is the mean of the per-sample losses.

Hypothesis is an optional dependency (``pip install 'symbp[strategies]'``); symbp itself
never imports this module.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import re
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "symbp.strategies needs Hypothesis: pip install 'symbp[strategies]'"
        " (or pip install hypothesis)"
    ) from error

from .check import random_point as _check_random_point
from .derive import derive
from .functions import FUNCTIONS
from .spec import parse_spec
from .spec.layers import NAMED_ACTIVATIONS as SPEC_ACTIVATIONS
from .targets.numpy.module import render_module

__all__ = [
    "ACTIVATIONS",
    "CUSTOM_ACTIVATIONS",
    "CUSTOM_LOSSES",
    "EXPRESSION_FUNCTIONS",
    "NAMED_ACTIVATIONS",
    "NAMED_LOSSES",
    "ExpressionModel",
    "LayerDef",
    "LayerStack",
    "TensorGraph",
    "expression_models",
    "formulas",
    "layer_defs",
    "layer_stacks",
    "reference_module",
    "tensor_graphs",
]

# --- the reference: symbp's generated NumPy module, once per spec text -------------------

_CACHE_SIZE = 512
_unique = itertools.count()
_folder: tempfile.TemporaryDirectory | None = None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parsed(text: str):
    return parse_spec(text, "drawn.toml")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def reference_module(text: str):
    """The float64 NumPy module that symbp generates from the spec ``text``, imported
    from a file in a temporary folder kept until the interpreter exits (so tracebacks
    show its lines); cached per text."""
    global _folder
    if _folder is None:
        _folder = tempfile.TemporaryDirectory(prefix="symbp_strategies_")
    spec = _parsed(text)
    name = f"_symbp_reference_{spec.name}_{next(_unique)}"
    path = Path(_folder.name) / f"{name}.py"
    path.write_text(render_module(derive(spec), "float64"), encoding="utf-8")
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and the like look their module up
    try:
        loader_spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


class _DrawnModel:
    """What every drawn model offers: its spec, names and shapes, data and reference."""

    kind: ClassVar[str] = ""

    @property
    def spec_text(self) -> str:  # pragma: no cover - every kind defines it
        raise NotImplementedError

    @property
    def spec(self):
        """The spec parsed by :func:`symbp.spec.parse_spec` (cached per text)."""
        return _parsed(self.spec_text)

    @property
    def module(self):
        """symbp's generated float64 NumPy module for this spec (cached per text)."""
        return reference_module(self.spec_text)

    @property
    def classes(self) -> dict[str, int]:
        return {}

    def random_point(self, seed: int = 0, batch: int = 8):
        """(params, X, Y) for this model, drawn with ``numpy.random.default_rng(seed)``
        as ``symbp check`` draws its points (:func:`symbp.check.random_point`)."""
        return _check_random_point(self.module, np.random.default_rng(seed), batch)

    def reference(self, params, X, Y) -> tuple[float, dict[str, np.ndarray]]:
        """(batch loss, {parameter: gradient}) by symbp's derived program, float64."""
        value, grads = self.module.loss_and_grads(params, X, Y)
        return float(value), {k: np.asarray(g, dtype=np.float64) for k, g in grads.items()}


# --- expression models ---------------------------------------------------------------------

INPUTS = ("x1", "x2", "x3")
PARAMS = ("w1", "w2", "w3", "w4")
LETS = ("h1", "h2", "h3")
CONSTANTS = ("0.5", "2", "1.5", "0.25", "3")

SMOOTH = (
    "sin({})",
    "cos({})",
    "tanh({})",
    "sigmoid({})",
    "softplus({})",
    "atan({})",
    "asinh({})",
    "erf({})",
    "exp({})",
    "log(1 + ({})**2)",
    "log(exp({}))",
    "sqrt(1 + ({})**2)",
    "sqrt(({})**2 + 0.5)",
    "({})**2",
    "({})**3",
)
KINKED = ("relu({})", "leaky_relu({}, 0.1)", "leaky_relu({}, 0.25)", "Abs({})")
BINARY = (
    "({}) + ({})",
    "({}) - ({})",
    "({})*({})",
    "({})/(1 + ({})**2)",
    "Max({}, {})",
    "Min({}, {})",
)
LOSS_FORMULAS = (
    "(yhat - y)**2",
    "log(1 + (yhat - y)**2)",
    "softplus(yhat - y) + softplus(y - yhat)",
    "Abs(yhat - y) + 0.5*(yhat - y)**2",
    "(yhat - y)**2 + 0.01*{p}**2",
)
TWO_OUTPUT_LOSSES = ("mse", "(yhat1 - y1)**2 + Abs(yhat2 - y2)")
OBJECTIVES = (None, "log(1 + yhat**2)")  # None: the output is the objective
_KINDS = ("smooth", "smooth", "kinked", "binary", "binary")

_CALL = re.compile(r"([A-Za-z_]\w*)\(")


def _calls(template: str | None) -> set[str]:
    return set(_CALL.findall(template or ""))


@dataclass(frozen=True)
class _Grammar:
    """The templates an expression model is drawn from."""

    smooth: tuple[str, ...] = SMOOTH
    kinked: tuple[str, ...] = KINKED
    binary: tuple[str, ...] = BINARY
    losses: tuple[str, ...] = LOSS_FORMULAS
    two_output_losses: tuple[str, ...] = TWO_OUTPUT_LOSSES
    objectives: tuple[str | None, ...] = OBJECTIVES

    @property
    def kinds(self) -> tuple[str, ...]:
        return _KINDS if self.kinked else tuple(k for k in _KINDS if k != "kinked")

    @classmethod
    def restricted(cls, functions: Collection[str] | None) -> _Grammar:
        """Every template whose function calls are all in ``functions`` (None: all)."""
        if functions is None:
            return cls()
        if isinstance(functions, str):
            raise TypeError("functions: expected a collection of names, not one string")
        allowed = set(functions)
        unknown = sorted(allowed - set(FUNCTIONS))
        if unknown:
            raise ValueError(
                f"functions: {', '.join(map(repr, unknown))} not a spec function"
                f" (valid: {', '.join(sorted(FUNCTIONS))})"
            )

        def keep(templates):
            return tuple(t for t in templates if _calls(t) <= allowed)

        return cls(*(keep(getattr(cls(), f)) for f in cls.__dataclass_fields__))


_FULL = _Grammar()
EXPRESSION_FUNCTIONS = frozenset().union(
    *(_calls(t) for t in (*SMOOTH, *KINKED, *BINARY, *LOSS_FORMULAS, *TWO_OUTPUT_LOSSES))
)


@dataclass(frozen=True)
class ExpressionModel(_DrawnModel):
    """A random expression model: its TOML text and the names it declares."""

    kind: ClassVar[str] = "expression"
    toml: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]

    def __str__(self) -> str:  # shown by hypothesis on failure
        return self.toml

    @property
    def spec_text(self) -> str:
        return self.toml

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Scalar parameters, in order of first appearance (the spec's order)."""
        return {p: () for p in self.spec.params}

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {x: () for x in self.inputs}

    @property
    def target_shapes(self) -> dict[str, tuple[int, ...]]:
        return {y: () for y in self.targets}


@st.composite
def formulas(draw, leaves: tuple[str, ...], depth: int, grammar: _Grammar = _FULL) -> str:
    """A formula over ``leaves`` with at most ``depth`` levels of operations."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(leaves))
    kind = draw(st.sampled_from(grammar.kinds))
    if kind == "binary":
        template = draw(st.sampled_from(grammar.binary))
        left = draw(formulas(leaves, depth - 1, grammar))
        right = draw(formulas(leaves, depth - 1, grammar))
        return template.format(left, right)
    template = draw(st.sampled_from(grammar.smooth if kind == "smooth" else grammar.kinked))
    return template.format(draw(formulas(leaves, depth - 1, grammar)))


def _uses(text: str, name: str) -> bool:
    return re.search(rf"\b{name}\b", text) is not None


def expression_models(
    *, max_depth: int = 3, functions: Collection[str] | None = None
) -> st.SearchStrategy[ExpressionModel]:
    """Random expression models written in the spec's grammar.

    A model has 1-3 inputs (``x1``...), 1-4 parameters (``w1``...), 0-3 let-names
    (``h1``..., each over the inputs, the parameters and earlier let-names), an output
    that reuses one sub-formula twice (a shared subexpression), and a loss: ``mse``, a
    custom per-sample formula, two outputs, or no targets at all (the output is the
    objective). Every formula is defined for all real inputs: logarithms and square roots
    only see positive arguments, and divisions divide by something at least 1.

    ``functions``: the spec functions (``tanh``, ``exp``, ``relu``, ``Max``...) that may
    appear; None (the default) draws from all of them. Templates calling anything else
    are left out; ``+ - * /``, powers and numeric constants are always drawn, as are
    ``mse`` and an output that is its own objective. Formulas are as written: SymPy's
    automatic simplification may still rewrite them (``log(exp(w1))`` is ``w1``).
    """
    return _expression_models(max_depth, _Grammar.restricted(functions))


@st.composite
def _expression_models(draw, max_depth: int, grammar: _Grammar) -> ExpressionModel:
    inputs = INPUTS[: draw(st.integers(1, 3))]
    params = PARAMS[: draw(st.integers(1, 4))]
    # the constants in CONSTANTS' order: a set's order would follow the strings' hashes,
    # which differ from one process to the next (PYTHONHASHSEED), and so would the draws
    constants = draw(st.sets(st.sampled_from(CONSTANTS), max_size=2))
    leaves = (*inputs, *params, *sorted(constants, key=CONSTANTS.index))
    lets: list[tuple[str, str]] = []
    for name in LETS[: draw(st.integers(0, 3))]:
        formula = draw(formulas(leaves, draw(st.integers(1, max_depth - 1)), grammar))
        # a let-name uses a parameter and, when there is one, the previous let-name
        if not any(_uses(formula, p) for p in params):
            formula = f"{draw(st.sampled_from(params))}*({formula})"
        if lets and not _uses(formula, lets[-1][0]):
            formula = f"({formula}) + {draw(st.sampled_from(params))}*{lets[-1][0]}"
        lets.append((name, formula))
        leaves = (*leaves, name)

    # one sub-formula written twice in the output: a shared subexpression
    shared = draw(formulas(leaves, 2, grammar))
    outer = draw(st.sampled_from(grammar.smooth + grammar.kinked))
    rest = draw(formulas((*leaves, f"({shared})"), max_depth, grammar))
    output = f"{outer.format(shared)} + {params[0]}*({rest}) + ({shared})*{params[-1]}"
    if lets:
        output += f" + {lets[-1][0]}"

    loss_kind = draw(st.sampled_from(("mse", "formula", "formula", "two outputs", "objective")))
    outputs: list[str] = [output]
    targets: tuple[str, ...] = ("y",)
    loss: str | None
    if loss_kind == "mse":
        loss = "mse"
    elif loss_kind == "formula":
        loss = draw(st.sampled_from(grammar.losses)).format(p=params[0])
    elif loss_kind == "two outputs":
        second = draw(formulas(leaves, 2, grammar))
        outputs.append(f"{params[-1]}*({second})")
        targets = ("y1", "y2")
        loss = draw(st.sampled_from(grammar.two_output_losses))
    else:
        targets = ()
        loss = draw(st.sampled_from(grammar.objectives))
    return ExpressionModel(_expression_toml(inputs, targets, lets, outputs, loss), inputs, targets)


def _quote(values) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _expression_toml(inputs, targets, lets, outputs, loss) -> str:
    lines = ['name = "random_model"', "[model]", f"inputs = {_quote(inputs)}"]
    lines.append(f"targets = {_quote(targets)}")
    lines.append(f'output = "{outputs[0]}"' if len(outputs) == 1 else f"output = {_quote(outputs)}")
    if loss is not None:
        lines.append(f'loss = "{loss}"')
    if lets:
        lines.append("[model.let]")
        lines += [f'{name} = "{formula}"' for name, formula in lets]
    return "\n".join(lines) + "\n"


# --- layer stacks ----------------------------------------------------------------------------

# the named activations a layer may have, as the spec reads them
NAMED_ACTIVATIONS = SPEC_ACTIVATIONS
# custom activations: a formula in z, applied elementwise
CUSTOM_ACTIVATIONS = (
    "z*sigmoid(z)",
    "log(1 + exp(z))",
    "sin(z)",
    "tanh(z) + 0.1*z",
    "z/(1 + Abs(z))",
    "exp(-z**2)",
    "leaky_relu(z, 0.2)",
    "softplus(z) - 1",
)
ACTIVATIONS = (*NAMED_ACTIVATIONS, *CUSTOM_ACTIVATIONS)
NAMED_LOSSES = ("mse", "l1", "bce", "bce_with_logits", "cross_entropy")
# custom losses: a formula in yhat and y per output, summed over the outputs of a
# sample, then averaged over the batch; each is defined for every real yhat and y
CUSTOM_LOSSES = (
    "(yhat - y)**2",
    "log(cosh(yhat - y))",
    "softplus(yhat) - y*yhat",
    "Abs(yhat - y) + 0.5*(yhat - y)**2",
    "yhat**2",
)


@dataclass(frozen=True)
class LayerDef:
    """One entry of [model].layers: a dense layer of ``dense`` outputs (None: an
    activation alone), its activation (None: none) and the activation's options."""

    dense: int | None = None
    activation: str | None = None
    bias: bool = True
    options: tuple[tuple[str, float], ...] = ()  # negative_slope, alpha

    def toml(self) -> str:
        parts = []
        if self.dense is not None:
            parts.append(f"dense = {self.dense}")
        if self.activation is not None:
            parts.append(f'activation = "{self.activation}"')
        if not self.bias:
            parts.append("bias = false")
        parts += [f"{k} = {v!r}" for k, v in self.options]
        return "{ " + ", ".join(parts) + " }"


@dataclass(frozen=True)
class LayerStack(_DrawnModel):
    """A dense network: an input width, its layers and a loss (named or a formula in
    yhat and y). Parameters are W{l} (out, in) and b{l} (out,), l counted from 1 over
    all layers; a layer applies W x + b, then its activation."""

    kind: ClassVar[str] = "layers"
    input: int
    layers: tuple[LayerDef, ...]
    loss: str
    train: tuple[tuple[str, object], ...] = field(default=())

    @property
    def widths(self) -> list[int]:
        widths = [self.input]
        for layer in self.layers:
            widths.append(layer.dense if layer.dense is not None else widths[-1])
        return widths

    @property
    def outputs(self) -> int:
        return self.widths[-1]

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """W{l} (out, in) and b{l} (out,), l counted from 1 over all layers."""
        widths, shapes = self.widths, {}
        for index, layer in enumerate(self.layers, 1):
            if layer.dense is not None:
                shapes[f"W{index}"] = (layer.dense, widths[index - 1])
                if layer.bias:
                    shapes[f"b{index}"] = (layer.dense,)
        return shapes

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"X": (self.input,)}

    @property
    def target_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"Y": () if self.loss == "cross_entropy" else (self.outputs,)}

    @property
    def classes(self) -> dict[str, int]:
        return {"Y": self.outputs} if self.loss == "cross_entropy" else {}

    @property
    def spec_text(self) -> str:
        return self.toml()

    def toml(self, name: str = "stack", data=None) -> str:
        layers = ",\n".join(f"  {layer.toml()}" for layer in self.layers)
        lines = [
            f'name = "{name}"',
            "[model]",
            f"input = {self.input}",
            f"layers = [\n{layers},\n]",
            f'loss = "{self.loss}"',
        ]
        if self.train:
            lines.append("[train]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in self.train]
        if data is not None:
            X, Y = data
            lines += ["[data]", f"X = {_toml_value(X)}", f"Y = {_toml_value(Y)}"]
        return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


@st.composite
def layer_defs(
    draw, last: bool = False, loss: str = "mse", activations: tuple[str, ...] = ACTIVATIONS
) -> LayerDef:
    """A dense layer (width 1-6, with or without a bias and an activation) or, one time
    in four, an activation alone."""
    kind = draw(st.sampled_from(("dense", "dense", "dense", "activation")))
    activation = draw(st.sampled_from((None, *activations)))
    options: tuple[tuple[str, float], ...] = ()
    if activation == "leaky_relu":
        options = (("negative_slope", draw(st.sampled_from((0.01, 0.1, 0.3)))),)
    elif activation == "elu":
        options = (("alpha", draw(st.sampled_from((1.0, 0.5, 1.7)))),)
    if kind == "activation" and activations:
        fallback = "tanh" if "tanh" in activations else activations[0]
        return LayerDef(None, activation or fallback, True, options)
    width = draw(st.integers(1, 6))
    return LayerDef(width, activation, draw(st.booleans()), options)


def layer_stacks(
    *, losses: Collection[str] | None = None, activations: Collection[str] | None = None
) -> st.SearchStrategy[LayerStack]:
    """Random dense networks: input width 1-6, depth 1-4, widths 1-6.

    ``losses``: named losses (``mse l1 bce bce_with_logits cross_entropy``) or custom
    per-output formulas in yhat and y; None (the default) draws from NAMED_LOSSES and
    CUSTOM_LOSSES. ``activations``: named activations (NAMED_ACTIVATIONS) or custom
    formulas in z; None draws from all of ACTIVATIONS, an empty collection gives dense
    layers without activations (``leaky_relu`` and ``elu`` get a random slope / alpha).
    The last layer is dense; under ``bce`` it ends in a sigmoid whatever
    ``activations`` says, and ``cross_entropy`` gets at least 2 outputs."""
    if isinstance(losses, str) or isinstance(activations, str):
        raise TypeError("losses, activations: expected collections of names, not one string")
    losses = (*NAMED_LOSSES, *CUSTOM_LOSSES) if losses is None else tuple(losses)
    if not losses:
        raise ValueError("losses: expected at least one loss")
    chosen = ACTIVATIONS if activations is None else tuple(activations)
    return _layer_stacks(losses, chosen)


@st.composite
def _layer_stacks(draw, losses: tuple[str, ...], activations: tuple[str, ...]) -> LayerStack:
    loss = draw(st.sampled_from(losses))
    depth = draw(st.integers(1, 4))
    layers = [draw(layer_defs(activations=activations)) for _ in range(depth - 1)]
    width = draw(st.integers(2 if loss == "cross_entropy" else 1, 6))
    if loss == "bce":
        activation = "sigmoid"
    else:
        activation = draw(st.sampled_from((None, *activations)))
    layers.append(LayerDef(width, activation, draw(st.booleans())))
    return LayerStack(draw(st.integers(1, 6)), tuple(layers), loss)


# --- tensor graphs -----------------------------------------------------------------------------

TENSOR_SMOOTH = ("tanh({})", "sigmoid({})", "softplus({})", "sin({})", "atan({})", "({})**2")


@dataclass
class TensorGraph(_DrawnModel):
    """A random model in the model language: vector inputs, parameters by shape, named
    values (name, formula, shape) in order, a per-sample loss and its target (None: no
    target; (): class labels; (n,): a vector)."""

    kind: ClassVar[str] = "tensor"
    inputs: dict[str, int]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    lets: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    loss: str = ""
    target: tuple[int, ...] | None = None  # None: no target; (): class labels

    @property
    def spec_text(self) -> str:
        return self.toml()

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.params)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {x: (n,) for x, n in self.inputs.items()}

    @property
    def target_shapes(self) -> dict[str, tuple[int, ...]]:
        return {} if self.target is None else {"y": self.target}

    @property
    def classes(self) -> dict[str, int]:
        return {"y": self.lets[-1][2][0]} if self.target == () else {}

    def toml(self, name: str = "random_tensor") -> str:
        inputs = ", ".join(f"{k} = [{n}]" for k, n in self.inputs.items())
        lines = [f'name = "{name}"', "[model]", f"inputs = {{ {inputs} }}"]
        if self.target is not None:
            lines.append(f"targets = {{ y = {list(self.target)} }}")
        lines += [f'output = "{self.lets[-1][0]}"', f'loss = "{self.loss}"', "[model.params]"]
        lines += [f"{p} = {list(s)}" for p, s in self.params.items()]
        lines.append("[model.let]")
        lines += [f'{n} = "{formula}"' for n, formula, _ in self.lets]
        return "\n".join(lines) + "\n"


def tensor_graphs() -> st.SearchStrategy[TensorGraph]:
    """Random tensor models in the model language.

    A model has one or two vector inputs (``x``, ``u``) and builds 2-6 named values
    (``h1``...), each from earlier ones (inputs, parameters, values: reuse gives fan-out)
    by a random operation: a matrix parameter times a vector (``W @ v``), the transpose of
    an earlier matrix (``W.T @ v``: a tied weight), a smooth elementwise function, a sum
    or product with a value of the same shape or a scalar, ``dot``, ``outer`` then a
    matrix product, a slice, ``concat``, ``softmax``, ``logsumexp``, ``sum``, ``mean``,
    ``norm`` of a shifted vector, ``var``, ``max``. The output is the last value times a
    scalar parameter; the loss is a squared error against a vector target ``y``, a
    cross-entropy against class labels ``y``, or a sum (no target). Products are
    squashed by tanh, so that values stay moderate and every formula is smooth at the
    scale of a central difference's step."""
    return _tensor_graphs()


@st.composite
def _tensor_graphs(draw) -> TensorGraph:
    case = TensorGraph({"x": draw(st.integers(2, 4))})
    if draw(st.booleans()):
        case.inputs["u"] = draw(st.integers(1, 3))
    vectors: dict[str, int] = dict(case.inputs)  # name -> length
    matrices: dict[str, tuple[int, int]] = {}

    def param(shape: tuple[int, ...]) -> str:
        name = f"P{len(case.params) + 1}"
        case.params[name] = shape
        if len(shape) == 2:
            matrices[name] = shape
        return name

    for k in range(draw(st.integers(2, 6))):
        names = sorted(vectors)
        v = draw(st.sampled_from(names))
        n = vectors[v]
        kind = draw(
            st.sampled_from(
                [
                    "matvec",
                    "tied",
                    "smooth",
                    "add",
                    "scale",
                    "dot",
                    "outer",
                    "slice",
                    "concat",
                    "softmax",
                    "reduce",
                ]
            )
        )
        if kind == "matvec" or (kind == "tied" and not matrices):
            m = draw(st.integers(1, 4))
            formula, size = f"{param((m, n))} @ {v}", m
            if draw(st.booleans()):
                formula += f" + {param((m,))}"
        elif kind == "tied":
            tied = [w for w, (rows, _) in matrices.items() if rows == n]
            if tied:
                w = draw(st.sampled_from(tied))
                formula, size = f"{w}.T @ {v}", matrices[w][1]
            else:
                w = draw(st.sampled_from(sorted(matrices)))
                formula, size = f"{w} @ {param((matrices[w][1],))} * sum({v})", matrices[w][0]
        elif kind == "smooth":
            formula, size = draw(st.sampled_from(TENSOR_SMOOTH)).format(v), n
        elif kind == "add":
            same = [w for w in names if vectors[w] == n]
            w = draw(st.sampled_from(same))
            op = draw(st.sampled_from(["+", "-", "*"]))
            formula, size = f"{v} {op} {w}", n
        elif kind == "scale":
            s = param(())
            formula, size = f"{s} * {v} + tanh({s})", n
        elif kind == "dot":
            same = [w for w in names if vectors[w] == n]
            w = draw(st.sampled_from(same))
            formula, size = f"tanh(dot({v}, {w})) * {v}", n
        elif kind == "outer":
            w = draw(st.sampled_from(names))
            c = param((vectors[w],))
            formula, size = f"tanh(outer({v}, {w})) @ {c}", n
        elif kind == "slice" and n >= 2:
            start = draw(st.integers(0, n - 2))
            formula, size = f"{v}[{start}:] * {v}[{start}]", n - start
        elif kind == "concat":
            w = draw(st.sampled_from(names))
            formula, size = f"concat({v}, tanh({w}))", n + vectors[w]
        elif kind == "softmax":
            formula, size = draw(st.sampled_from([f"softmax({v})", f"log_softmax({v})"])), n
        else:
            reduce = draw(
                st.sampled_from(
                    [
                        f"sum({v})",
                        f"mean({v})",
                        f"logsumexp({v})",
                        f"norm({v} + 2)",
                        f"var({v})",
                        f"max({v})",
                    ]
                )
            )
            formula, size = f"{v} * tanh({reduce})", n
        name = f"h{k + 1}"
        case.lets.append((name, formula, (size,)))
        vectors[name] = size
    # the output, scaled by a parameter: the loss depends on one whatever was drawn
    last, size = case.lets[-1][0], case.lets[-1][2][0]
    out = f"h{len(case.lets) + 1}"
    case.lets.append((out, f"{param(())} * {last}", (size,)))
    kind = draw(st.sampled_from(["mse", "labels", "sum"]))
    if kind == "mse":
        case.target, case.loss = (size,), f"sum(({out} - y)**2)"
    elif kind == "labels" and size >= 2:
        case.target, case.loss = (), f"cross_entropy({out}, y)"
    else:
        case.target, case.loss = None, f"sum(tanh({out}))"
    return case


# --- recurrent models ---------------------------------------------------------------------

RECURRENT_SMOOTH = ("tanh", "sigmoid", "sin", "softplus")


@dataclass(frozen=True)
class RecurrentModel(_DrawnModel):
    """A recurrence over one sequence input ``x`` of ``features`` per step, with a scalar
    target ``y``: its spec text as drawn (a ``[model.recur]`` cell, or layer sugar)."""

    kind: ClassVar[str] = "recurrent"
    text: str
    features: int

    @property
    def spec_text(self) -> str:
        return self.text

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.spec.params)

    @property
    def input_shapes(self) -> dict[str, tuple]:
        return dict(self.spec.inputs)

    @property
    def target_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.spec.targets)

    def random_point(self, seed: int = 0, batch: int = 8, steps: int | None = None):
        """(params, X, Y) as :meth:`_DrawnModel.random_point`, with sequences of ``steps``
        steps (None: 2 to 6, drawn)."""
        params, X, Y = super().random_point(seed, batch)
        if steps is not None:
            rng = np.random.default_rng(seed + 1)
            X = {"x": rng.normal(size=(batch, steps, self.features))}
            if self.target_shapes.get("y", ())[:1] == ("T",):  # a target at every step
                Y = {"y": rng.uniform(0.0, 1.0, size=(batch, steps, 1))}
        return params, X, Y


def recurrent_models() -> st.SearchStrategy[RecurrentModel]:
    """Random recurrent models over sequences of 1 to 3 features.

    Two thirds are ``[model.recur]`` cells: a state of 1 to 3 units whose step is a
    smooth activation of its input and previous-state products (directly, or through a
    value of the step), optionally mixed with its previous value by a sigmoid gate, from
    a zero or a learned initial state; optionally a second state reading the first at
    the same step; a loss of one or both last states (a squared error or BCE with
    logits against a scalar target), or, one time in four, the output at every step and
    its squared error summed over the steps against a target sequence, divided by a
    state that counts them. The others are layer sugar: ``{ rnn }`` (tanh or
    relu), ``{ lstm }`` or ``{ gru }`` of 1 to 4 units, one or two of them, then a dense
    layer of one output. Every formula is smooth but relu's kink, which a random point
    misses."""
    return _recurrent_models()


@st.composite
def _recurrent_models(draw) -> RecurrentModel:
    features = draw(st.integers(1, 3))
    if draw(st.integers(0, 2)) == 0:
        layers = []
        for _ in range(draw(st.integers(1, 2))):
            kind = draw(st.sampled_from(["rnn", "lstm", "gru"]))
            size = draw(st.integers(1, 4))
            extra = ', nonlinearity = "relu"' if kind == "rnn" and draw(st.booleans()) else ""
            layers.append(f"{{ {kind} = {size}{extra} }}")
        layers.append("{ dense = 1 }")
        loss = draw(st.sampled_from(["mse", "bce_with_logits"]))
        text = (
            f'name = "drawn_stack"\n[model]\ninput = ["T", {features}]\n'
            f'layers = [{", ".join(layers)}]\nloss = "{loss}"\n'
        )
        return RecurrentModel(text, features)
    size = draw(st.integers(1, 3))
    act = draw(st.sampled_from(RECURRENT_SMOOTH))
    params = {"Wx": [size, features], "Wh": [size, size], "b": [size]}
    recur = []
    pre = "Wx @ x[t] + Wh @ h[t-1] + b"
    if draw(st.booleans()):  # a value of the step, read by name
        recur.append(f'a = "{pre}"')
        pre = "a"
    step = f"{act}({pre})"
    if draw(st.booleans()):  # gated: h = u h[t-1] + (1 - u) f(...)
        params["Wu"] = [size, features]
        step = f"sigmoid(Wu @ x[t]) * h[t-1] + (1 - sigmoid(Wu @ x[t])) * {step}"
    init = ""
    if draw(st.booleans()):
        params["h0"] = [size]
        init = 'init = "h0", '
    recur.append(f'h = {{ shape = [{size}], {init}step = "{step}" }}')
    last, width = "h[T]", size
    if draw(st.booleans()):  # a second state reading the first at this step
        other, act2 = draw(st.integers(1, 2)), draw(st.sampled_from(RECURRENT_SMOOTH))
        params.update({"Wc": [other, size], "Uc": [other, other]})
        recur.append(f'c = {{ shape = [{other}], step = "{act2}(Wc @ h[t] + Uc @ c[t-1])" }}')
        if draw(st.booleans()):
            last, width = "concat(h[T], c[T])", size + other
        else:
            last, width = "c[T]", other
    params["w"] = [width]
    target, lets = "[]", ["[model.let]", f'yhat = "dot(w, {last})"']
    loss = draw(st.sampled_from(["mse(yhat, y)", "bce_with_logits(yhat, y)"]))
    if draw(st.integers(0, 3)) == 0:  # a target and an output at every step
        params["w"] = [size]
        target, lets = '["T", 1]', []
        recur.append('yhat = "dot(w, h[t])"')
        recur.append('se = { shape = [1], step = "se[t-1] + (yhat - y[t])**2" }')
        recur.append('n = { shape = [1], step = "n[t-1] + 1" }')
        loss = "sum(se[T]) / sum(n[T])"
        params.pop("Wc", None), params.pop("Uc", None)
        recur = [r for r in recur if not r.startswith("c = ")]
    lines = [
        'name = "drawn_cell"',
        "[model]",
        f'inputs = {{ x = ["T", {features}] }}',
        f"targets = {{ y = {target} }}",
        'output = "yhat"',
        f'loss = "{loss}"',
        "[model.params]",
        *(f"{k} = {v}" for k, v in params.items()),
        "[model.recur]",
        *recur,
        *lets,
    ]
    return RecurrentModel("\n".join(lines) + "\n", features)
