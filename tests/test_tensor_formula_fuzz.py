"""Random formula text in a tensor model: every string either loads, derives, generates
a module whose loss_and_grads runs and returns gradients of the parameters' shapes, or
is one SpecError line; no other exception, whatever the tokens say."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from symbp.check import random_point
from symbp.derive import derive
from symbp.errors import SpecError
from symbp.spec import parse_spec
from symbp.targets.numpy.module import render_module

TOKENS = [
    "x",
    "u",
    "W",
    "b",
    "c",
    "K",
    "img",
    "h",
    "y",
    "1",
    "2",
    "0",
    "-1",
    "0.5",
    "1e-5",
    "+",
    "-",
    "*",
    "/",
    "**",
    "@",
    "^",
    ".T",
    ".U",
    "(",
    ")",
    "[",
    "]",
    ":",
    ",",
    "=",
    "sum(",
    "mean(",
    "var(",
    "norm(",
    "max(",
    "min(",
    "softmax(",
    "log_softmax(",
    "logsumexp(",
    "dot(",
    "outer(",
    "concat(",
    "tanh(",
    "relu(",
    "exp(",
    "log(",
    "batch_mean(",
    "batch_var(",
    "conv2d(",
    "maxpool2d(",
    "flatten(",
    "layer_norm(",
    "cross_entropy(",
    "mse(",
    "axis=",
    "axis=(0, 0)",
    "stride=",
    "padding=",
    "delta=",
]

HEADER = """name = "fuzz"
[model]
inputs = { x = [3], img = [1, 4, 4] }
targets = { y = [2] }
output = "h"
loss = "sum(h) * c + sum(W) + sum(b) + sum(u) + sum(K) + sum(y)"
[model.params]
W = [2, 3]
b = [2]
c = []
u = [3]
K = [2, 1, 2, 2]
[model.let]
h = "%s"
"""


LEAVES = ["x", "u", "W", "b", "c", "img", "y", "1", "0", "2.5", "-1", "1e300"]
UNARY = [
    "tanh({})",
    "relu({})",
    "exp({})",
    "log({})",
    "sqrt({})",
    "sum({})",
    "mean({})",
    "var({})",
    "norm({})",
    "max({})",
    "min({})",
    "softmax({})",
    "logsumexp({})",
    "flatten({})",
    "{}.T",
    "{}[0]",
    "{}[1:]",
    "{}[5]",
    "{}[2:1]",
    "batch_mean({})",
    "batch_var({})",
    "layer_norm({})",
    "sum({}, axis=1)",
    "maxpool2d({}, 2)",
    "conv2d({}, K)",
    "conv2d({}, K, b, padding=1)",
    "-{}",
    "({})**2",
    "({})**x",
    "abs({})",
    "sigmoid({})",
]
BINARY = [
    "{} + {}",
    "{} - {}",
    "{} * {}",
    "{} / {}",
    "{} @ {}",
    "dot({}, {})",
    "outer({}, {})",
    "concat({}, {})",
    "Max({}, {})",
    "mse({}, {})",
    "cross_entropy({}, {})",
    "huber({}, {}, delta=0)",
]

formulas = st.recursive(
    st.sampled_from(LEAVES),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(UNARY), inner).map(lambda t: t[0].format(t[1])),
        st.tuples(st.sampled_from(BINARY), inner, inner).map(lambda t: t[0].format(t[1], t[2])),
    ),
    max_leaves=6,
)


@settings(max_examples=300)
@given(
    st.one_of(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12).map(" ".join), formulas)
)
def test_random_formulas_load_or_fail_in_one_line(formula):
    formula = formula.replace('"', "")
    try:
        spec = parse_spec(HEADER % formula, "fuzz.toml")
    except SpecError as err:
        assert "\n" not in str(err) and str(err).startswith("fuzz.toml: ")
        return
    # what loads derives, generates and runs: gradients of every parameter's shape
    source = render_module(derive(spec))
    namespace: dict = {}
    exec(compile(source, "fuzz.py", "exec"), namespace)  # the generated module, not the spec
    params, X, Y = random_point(SimpleNamespace(**namespace), np.random.default_rng(0), 3)
    with np.errstate(all="ignore"):
        _, grads = namespace["loss_and_grads"](params, X, Y)
    assert {k: np.shape(v) for k, v in grads.items()} == namespace["PARAM_SHAPES"]
