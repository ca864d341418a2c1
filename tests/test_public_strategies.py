"""symbp.strategies as a user would use it: property tests of one's own autodiff engine
(a micrograd-style scalar engine, written here) and of hand-written NumPy backprop for
dense networks, against the gradients of symbp's derived programs; the interface every
drawn model offers; and the one-line ImportError without Hypothesis."""

from __future__ import annotations

import math
import pkgutil
import re
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import symbp
from symbp.functions import relu
from symbp.strategies import (
    EXPRESSION_FUNCTIONS,
    NAMED_ACTIVATIONS,
    NAMED_LOSSES,
    LayerDef,
    LayerStack,
    expression_models,
    layer_stacks,
    recurrent_models,
    reference_module,
    tensor_graphs,
)

TOLERANCE = 1e-9


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max(1, max |expected|)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


# --- a micrograd-style scalar autodiff engine --------------------------------------------


class Value:
    """A scalar and its gradient; each operation records how to pass its gradient back."""

    def __init__(self, data: float, children: tuple[Value, ...] = ()):
        self.data = float(data)
        self.grad = 0.0
        self._backward = lambda: None
        self._prev = children

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k: float):  # a constant exponent
        out = Value(self.data**k, (self,))

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    def _unary(self, value: float, slope: float) -> Value:
        out = Value(value, (self,))

        def _backward():
            self.grad += slope * out.grad

        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        return self._unary(t, 1 - t * t)

    def exp(self):
        e = math.exp(self.data)
        return self._unary(e, e)

    def relu(self):  # relu'(0) = 0, as in PyTorch
        return self._unary(max(self.data, 0.0), float(self.data > 0))

    __radd__ = __add__
    __rmul__ = __mul__

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other**-1

    def backward(self):
        order, seen = [], set()

        def visit(v):
            if v not in seen:
                seen.add(v)
                for child in v._prev:
                    visit(child)
                order.append(v)

        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()


# --- the model's formulas over Values: a walk over the SymPy trees of the parsed spec -------

ENGINE_FUNCTIONS = {sp.tanh: Value.tanh, sp.exp: Value.exp, relu: Value.relu}


def evaluate(expr: sp.Expr, env: dict[str, Value]) -> Value:
    """``expr`` over Values: numbers, names, +, *, constant powers and the engine's
    functions; anything else is an error (the strategy drew what the engine lacks)."""
    if expr.is_Symbol:
        return env[expr.name]
    if expr.is_number:
        return Value(float(expr))
    if expr.is_Pow and expr.exp.is_number:
        return evaluate(expr.base, env) ** float(expr.exp)
    if expr.is_Add or expr.is_Mul:
        args = [evaluate(a, env) for a in expr.args]
        result = args[0]
        for a in args[1:]:
            result = result + a if expr.is_Add else result * a
        return result
    if expr.func in ENGINE_FUNCTIONS and len(expr.args) == 1:
        return ENGINE_FUNCTIONS[expr.func](evaluate(expr.args[0], env))
    raise NotImplementedError(f"the engine has no {expr.func.__name__}: {expr}")


def engine_loss_and_grads(spec, params: dict, X, Y):
    """The batch loss (mean of the per-sample losses) and its gradients by the engine."""
    leaves = {p: Value(float(params[p])) for p in spec.params}
    losses = []
    for row, target in zip(X, Y, strict=True):
        env = dict(leaves)
        env |= {x: Value(v) for x, v in zip(spec.inputs, row, strict=True)}
        env |= {y: Value(v) for y, v in zip(spec.targets, target, strict=True)}
        for name, expr in (*spec.lets, *spec.outputs):
            env[name] = evaluate(expr, env)
        losses.append(evaluate(spec.loss, env))
    total = losses[0]
    for sample in losses[1:]:
        total = total + sample
    loss = total * (1.0 / len(losses))
    loss.backward()
    return loss.data, {p: v.grad for p, v in leaves.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=expression_models(functions={"tanh", "exp", "relu"}), seed=st.integers(0, 2**32 - 1))
def test_micrograd_engine_matches_symbp_on_random_expression_models(model, seed):
    params, X, Y = model.random_point(seed)
    expected_loss, expected = model.reference(params, X, Y)
    assume(np.isfinite(expected_loss) and abs(expected_loss) < 1e8)
    assume(all(np.isfinite(g).all() for g in expected.values()))
    try:
        loss, grads = engine_loss_and_grads(model.spec, params, X, Y)
    except OverflowError:  # math.exp of an intermediate that NumPy takes to inf
        assume(False)
    assert relative_error(loss, expected_loss) <= TOLERANCE
    assert sorted(grads) == sorted(expected) == sorted(model.param_shapes)
    for name, grad in grads.items():
        assert relative_error(grad, expected[name]) <= TOLERANCE, (name, grad, expected[name])


def test_the_engine_rejects_what_it_does_not_implement():
    """The interpreter is no pass-through: a function outside the engine is an error, so
    the test above shows that the strategy drew only tanh, exp and relu."""
    x = sp.Symbol("x", real=True)
    with pytest.raises(NotImplementedError, match="sin"):
        evaluate(sp.sin(x), {"x": Value(0.5)})


def test_functions_restricts_the_draws_and_rejects_unknown_names():
    allowed = {"tanh", "exp", "relu"}

    @settings(max_examples=60, deadline=None, database=None)
    @given(expression_models(functions=allowed))
    def only_allowed(model):
        for _, expr in (*model.spec.lets, *model.spec.outputs, ("loss", model.spec.loss)):
            names = {type(f).__name__ for f in expr.atoms(sp.Function)}
            assert names <= allowed, (names, model.toml)

    only_allowed()
    with pytest.raises(ValueError, match="'Relu' not a spec function"):
        expression_models(functions={"Relu"})
    with pytest.raises(TypeError):
        expression_models(functions="tanh")


def test_the_default_strategy_draws_every_function():
    """Breadth: without ``functions`` every template function is drawn."""
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(expression_models())
    def collect(model):
        seen.update(EXPRESSION_FUNCTIONS.intersection(re.findall(r"(\w+)\(", model.toml)))

    collect()
    assert seen == EXPRESSION_FUNCTIONS


# --- hand-written NumPy backprop for dense networks ---------------------------------------


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


_erf = np.vectorize(math.erf)


def activation_forward(layer, z):
    options = dict(layer.options)
    name = layer.activation
    if name in (None, "identity"):
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, options.get("negative_slope", 0.01) * z)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return np.logaddexp(0.0, z)
    if name == "elu":
        return np.where(z > 0, z, options.get("alpha", 1.0) * np.expm1(z))
    if name == "gelu":
        return 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0)))
    if name == "silu":
        return z * _sigmoid(z)
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise NotImplementedError(name)


def activation_backward(layer, z, out, g):
    """dL/dz from dL/d(out)."""
    options = dict(layer.options)
    name = layer.activation
    if name in (None, "identity"):
        return g
    if name == "relu":
        return g * (z > 0)
    if name == "leaky_relu":
        return g * np.where(z > 0, 1.0, options.get("negative_slope", 0.01))
    if name == "sigmoid":
        return g * out * (1.0 - out)
    if name == "tanh":
        return g * (1.0 - out**2)
    if name == "softplus":
        return g * _sigmoid(z)
    if name == "elu":
        return g * np.where(z > 0, 1.0, options.get("alpha", 1.0) * np.exp(z))
    if name == "gelu":
        cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
        return g * (cdf + z * np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi))
    if name == "silu":
        s = _sigmoid(z)
        return g * s * (1.0 + z * (1.0 - s))
    if name == "softmax":
        return out * (g - (g * out).sum(axis=1, keepdims=True))
    raise NotImplementedError(name)


LOG_FLOOR = math.exp(-100)  # torch.nn.BCELoss clamps its logarithms at -100


def loss_forward_backward(loss: str, a, Y):
    """(batch loss, dL/da) of a named loss, reduced by the mean as torch.nn does."""
    if loss == "cross_entropy":
        n = len(Y)
        shifted = a - a.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        onehot = np.eye(a.shape[1])[Y]
        return -np.mean(log_p[np.arange(n), Y]), (np.exp(log_p) - onehot) / n
    size = a.size
    if loss == "mse":
        return np.mean((a - Y) ** 2), 2.0 * (a - Y) / size
    if loss == "l1":
        return np.mean(np.abs(a - Y)), np.sign(a - Y) / size
    if loss == "bce_with_logits":
        value = np.maximum(a, 0.0) - a * Y + np.log1p(np.exp(-np.abs(a)))
        return np.mean(value), (_sigmoid(a) - Y) / size
    if loss == "bce":
        up, down = a > LOG_FLOOR, 1.0 - a > LOG_FLOOR
        log_a = np.log(np.maximum(a, LOG_FLOOR))
        log_1a = np.log(np.maximum(1.0 - a, LOG_FLOOR))
        value = -np.mean(Y * log_a + (1.0 - Y) * log_1a)
        grad = -(
            Y * up / np.maximum(a, LOG_FLOOR) - (1.0 - Y) * down / np.maximum(1.0 - a, LOG_FLOOR)
        )
        return value, grad / size
    raise NotImplementedError(loss)


def dense_backprop(stack, params: dict, X, Y, backward=activation_backward):
    """Forward through the layers (W x + b, then the activation), back by the chain rule."""
    a, cache = X, []
    for index, layer in enumerate(stack.layers, 1):
        z = a
        if layer.dense is not None:
            z = a @ params[f"W{index}"].T
            if layer.bias:
                z = z + params[f"b{index}"]
        out = activation_forward(layer, z)
        cache.append((a, z, out))
        a = out
    value, g = loss_forward_backward(stack.loss, a, Y)
    grads = {}
    for index in range(len(stack.layers), 0, -1):
        layer, (a_in, z, out) = stack.layers[index - 1], cache[index - 1]
        g = backward(layer, z, out, g)
        if layer.dense is not None:
            grads[f"W{index}"] = g.T @ a_in
            if layer.bias:
                grads[f"b{index}"] = g.sum(axis=0)
            g = g @ params[f"W{index}"]
    return float(value), grads


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stack=layer_stacks(losses=NAMED_LOSSES, activations=NAMED_ACTIVATIONS),
    seed=st.integers(0, 2**32 - 1),
)
def test_hand_written_dense_backprop_matches_symbp_on_random_stacks(stack, seed):
    params, X, Y = stack.random_point(seed)
    expected_loss, expected = stack.reference(params, X, Y)
    loss, grads = dense_backprop(stack, params, X, Y)
    assert relative_error(loss, expected_loss) <= TOLERANCE, stack.spec_text
    assert sorted(grads) == sorted(expected) == sorted(stack.param_shapes)
    for name, grad in grads.items():
        assert grad.shape == stack.param_shapes[name]
        assert relative_error(grad, expected[name]) <= TOLERANCE, (name, stack.spec_text)


def test_a_wrong_backprop_is_caught():
    """The comparison has teeth: tanh' taken as 1 - tanh (not 1 - tanh**2) fails."""
    stack = LayerStack(3, (LayerDef(4, "tanh"), LayerDef(2)), "mse")
    params, X, Y = stack.random_point(1)
    _, expected = stack.reference(params, X, Y)
    _, grads = dense_backprop(stack, params, X, Y)
    assert relative_error(grads["W1"], expected["W1"]) <= TOLERANCE

    def wrong(layer, z, out, g):
        if layer.activation == "tanh":
            return g * (1.0 - out)
        return activation_backward(layer, z, out, g)

    _, grads = dense_backprop(stack, params, X, Y, backward=wrong)
    assert relative_error(grads["b2"], expected["b2"]) <= TOLERANCE  # above the bug
    assert relative_error(grads["W1"], expected["W1"]) > 1e-3


# --- what every drawn model offers ----------------------------------------------------------


@pytest.mark.parametrize(
    "strategy", [expression_models(), layer_stacks(), tensor_graphs(), recurrent_models()]
)
def test_every_drawn_model_describes_itself_and_its_reference(strategy):
    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(model=strategy, seed=st.integers(0, 2**16))
    def describes(model, seed):
        module = model.module
        assert module is reference_module(model.spec_text)  # one module per spec text
        assert {k: tuple(v) for k, v in module.PARAM_SHAPES.items()} == model.param_shapes
        params, X, Y = model.random_point(seed, batch=3)
        again = model.random_point(seed, batch=3)
        for name, shape in model.param_shapes.items():
            assert params[name].dtype == np.float64 and params[name].shape == shape
            assert np.array_equal(params[name], again[0][name])
        if model.kind == "recurrent":
            assert dict(module.INPUTS) == model.input_shapes == {"x": ("T", model.features)}
            assert X["x"].shape[0] == 3 and X["x"].shape[2] == model.features
            assert model.random_point(seed, batch=3, steps=7)[1]["x"].shape == (
                3,
                7,
                model.features,
            )
        elif model.kind == "tensor":
            assert dict(module.INPUTS) == model.input_shapes
            assert dict(module.TARGETS) == model.target_shapes
            assert dict(module.CLASSES) == model.classes
            assert {k: v.shape for k, v in X.items()} == {
                k: (3, *s) for k, s in model.input_shapes.items()
            }
        elif model.kind == "expression":
            assert tuple(module.INPUTS) == model.inputs == tuple(model.input_shapes)
            assert tuple(module.TARGETS) == model.targets == tuple(model.target_shapes)
            assert X.shape == (3, len(model.inputs)) and Y.shape == (3, len(model.targets))
        else:
            assert model.kind == "layers"
            assert X.shape == (3, *model.input_shapes["X"])
            assert Y.shape == (3, *model.target_shapes["Y"])
            assert list(module.LAYER_WIDTHS) == model.widths
            labels = model.loss == "cross_entropy"
            assert model.classes == ({"Y": model.outputs} if labels else {})
        value, grads = model.reference(params, X, Y)
        assert isinstance(value, float)
        if np.isfinite(value):
            assert value == pytest.approx(module.loss(params, X, Y), rel=1e-12, abs=1e-12)
        assert {k: g.shape for k, g in grads.items()} == model.param_shapes

    describes()


# --- Hypothesis is optional -------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_without_hypothesis_the_import_error_says_what_to_install():
    result = _run("import sys; sys.modules['hypothesis'] = None; import symbp.strategies")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "ImportError: symbp.strategies needs Hypothesis: pip install 'symbp[strategies]'"
        " (or pip install hypothesis)"
    ), result.stderr


def test_symbp_itself_never_imports_hypothesis():
    names = [
        m.name
        for m in pkgutil.walk_packages(symbp.__path__, "symbp.")
        if m.name not in ("symbp.strategies", "symbp.__main__")
    ]
    code = (
        "import importlib, sys\n"
        "sys.modules['hypothesis'] = None\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "assert 'symbp.strategies' not in sys.modules\n"
        "print('ok')\n"
    )
    result = _run(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
