"""The float step of tiny layer stacks (symbp.targets.numpy.float_step): the same training as
the array step, on Python floats, and chosen only where it has a scalar form."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_strategies import LOSSES, LayerDef, Stack, random_batch, random_params, stacks
from support import import_file

from symbp.derive import derive
from symbp.spec import parse_spec
from symbp.targets.numpy.float_step import MAX_PARAMS, MAX_WIDTH
from symbp.targets.numpy.module import render_module

_unique = itertools.count()

TRAIN = [  # optimizer settings of [train], each with a learning rate that keeps it stable
    (("optimizer", "sgd"),),
    (("optimizer", "sgd"), ("momentum", 0.9), ("nesterov", True), ("weight_decay", 0.01)),
    (("optimizer", "adagrad"),),
    (("optimizer", "rmsprop"), ("centered", True), ("momentum", 0.5)),
    (("optimizer", "adam"), ("weight_decay", 0.01)),
]


def build(stack: Stack, folder, dtype: str = "float64"):
    code = render_module(derive(parse_spec(stack.toml(), "m.toml")), dtype)
    path = folder / f"floats_{next(_unique)}.py"
    path.write_text(code, encoding="utf-8")
    return import_file(path)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    stack=stacks(losses=LOSSES),
    train=st.sampled_from(TRAIN),
    seed=st.integers(0, 2**32 - 1),
    shuffle=st.booleans(),
)
def test_float_step_trains_as_the_array_step(tmp_path_factory, stack, train, seed, shuffle):
    stack = Stack(stack.input, stack.layers, stack.loss, train)
    module = build(stack, tmp_path_factory.mktemp("floats"))
    if not hasattr(module, "_train_floats"):  # softmax, cross-entropy: no scalar form
        assert "floats" not in module.train.__kwdefaults__
        return
    rng = np.random.default_rng(seed)
    params = random_params(stack, rng, scale=0.5)
    X, Y = random_batch(stack, rng, n=7)
    # 7 samples in batches of 3: the last batch is short; shuffled or in order
    kwargs = {"epochs": 3, "batch_size": 3, "lr": 0.01, "seed": seed % 1000, "shuffle": shuffle}
    arrays, array_losses = module.train(params, X, Y, floats=False, **kwargs)
    floats, float_losses = module.train(params, X, Y, floats=True, **kwargs)
    np.testing.assert_allclose(float_losses, array_losses, rtol=1e-9, atol=1e-12)
    for name, value in arrays.items():
        assert floats[name].dtype == value.dtype and floats[name].shape == value.shape
        np.testing.assert_allclose(floats[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def test_xor_trains_on_floats_by_default(tmp_path, monkeypatch):
    stack = Stack(2, (LayerDef(2, "relu"), LayerDef(1)), "bce_with_logits")
    module = build(stack, tmp_path, "float32")
    assert module.FLOAT_BATCH_MAX >= 4
    calls = []
    original = module._train_floats
    monkeypatch.setattr(module, "_train_floats", lambda *a: calls.append(a) or original(*a))
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    Y = np.array([[0], [1], [1], [0]], np.float32)
    params = module.init_params(5)
    trained, losses = module.train(params, X, Y, epochs=3, batch_size=4, lr=0.1)
    assert len(calls) == 1 and len(losses) == 3
    assert all(v.dtype == np.float32 for v in trained.values())
    module.train(params, X, Y, epochs=1, batch_size=module.FLOAT_BATCH_MAX + 1, lr=0.1)
    assert len(calls) == 1  # a batch above the limit: the array step


@pytest.mark.parametrize(
    "layers",
    [
        (LayerDef(3, "softmax"), LayerDef(1)),  # softmax: a row operation
        (LayerDef(MAX_WIDTH + 1, "tanh"), LayerDef(1)),  # a layer too wide to unroll
        (LayerDef(8, "tanh"), LayerDef(8, "tanh"), LayerDef(1)),  # over MAX_PARAMS
    ],
)
def test_no_float_step_where_it_does_not_fit(tmp_path, layers):
    stack = Stack(1, layers, "mse")
    assert sum(int(np.prod(s)) for s in stack.param_shapes.values()) > MAX_PARAMS or any(
        layer.activation == "softmax" or (layer.dense or 0) > MAX_WIDTH for layer in layers
    )
    module = build(stack, tmp_path)
    assert not hasattr(module, "_train_floats") and not hasattr(module, "FLOAT_BATCH_MAX")


def test_float_printing_keeps_a_square_in_a_denominator():
    """x**2 prints as x*x (faster on floats); after a division sign it needs parentheses."""
    import sympy as sp

    from symbp.targets.numpy.printer import ScalarPrinter

    a, c, z = sp.symbols("a c z", real=True)
    printer = ScalarPrinter()
    for expr in (a / c**2, a - z * sp.sign(z) / c**2, -a / c**2, 1 - c**2, c**2 / 2):
        text = printer.doprint(expr).replace("_math_sign", "sign")
        value = eval(text, {"sign": lambda v: float(np.sign(v))}, {"a": 1.5, "c": 3.0, "z": -2.0})  # noqa: S307
        expected = float(expr.subs({a: 1.5, c: 3.0, z: -2.0}))
        assert value == pytest.approx(expected, rel=1e-15), text
