"""Operation counts: the derived program stays within a constant factor of the forward
loss while naive per-parameter differentiation grows superlinearly with depth."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy as sp

from symbp.documents.chain import full_loss
from symbp.functions import apply_kink_conventions
from symbp.spec import builtin_names, load, parse_spec
from symbp.spec.expression import ExpressionSpec
from symbp.stats import (
    NaiveDiff,
    OpStats,
    dag_ops,
    deep_chain_spec,
    format_scaling,
    format_stats,
    op_stats,
    scaling_table,
    size_warning,
    tree_ops,
)

x, y, z = sp.symbols("x y z", real=True)
N = sp.Symbol("N", positive=True, integer=True)
DEPTHS = (5, 10, 20, 40, 80)
BOUND = 5  # generated <= BOUND * forward

# expression models only: layer stacks are tested in tests/test_layers.py
EXPRESSION_BUILTINS = [n for n in builtin_names() if isinstance(load(n), ExpressionSpec)]


def model_spec(output: str, inputs=("x",)) -> object:
    names = ", ".join(f'"{n}"' for n in inputs)
    text = f'name = "m"\n[model]\ninputs = [{names}]\ntargets = ["t"]\n'
    text += f'output = "{output}"\nloss = "(yhat - t)**2"\n'
    return parse_spec(text, "m.toml")


@pytest.fixture(scope="module")
def scaling():
    return {row.depth: row for row in scaling_table(DEPTHS)}


# --- the counter --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, ops",
    [
        (x, 0),
        (sp.Integer(3), 0),
        (x + y, 1),
        (x + y + z, 2),
        (x - y, 1),  # a subtraction, not an add and a negation
        (-x - y, 2),
        (-x - 1, 1),
        (-x, 1),
        (x * y * z, 2),
        (x / y, 1),
        (1 / x, 1),
        (2 * x / y, 2),
        (-x / y, 2),
        (-1 / x, 1),
        (y / x**2, 2),
        (x**2, 1),
        (sp.sqrt(x), 1),
        (1 / sp.sqrt(x), 2),
        (sp.tanh(x), 1),
        (sp.exp(x * y), 2),
        (sp.Max(x, y, z), 2),
        (sp.Heaviside(x, 0), 1),
        (sp.Piecewise((x, x > 0), (y, True)), 2),  # a select and a comparison
        (sp.Mul(2, x - y, evaluate=False) / N, 3),
    ],
)
def test_operation_counts(expr, ops):
    assert dag_ops(expr) == ops
    assert tree_ops(expr) == ops


def test_dag_counts_shared_subexpressions_once_and_tree_repeats_them():
    t = sp.tanh(x * y)
    expr = t**2 + t
    assert dag_ops(expr) == 4  # x*y, tanh, **2, +
    assert tree_ops(expr) == 6


def test_tree_count_of_a_doubling_dag_does_not_expand():
    expr = x
    for _ in range(200):
        expr = sp.Mul(expr, expr + 1, evaluate=False)
    assert dag_ops(expr) == 400
    assert tree_ops(expr) == 2**201 - 2  # far beyond anything one could expand


# --- naive derivatives match sympy.diff ---------------------------------------------------


FORMULAS = [
    "sigmoid(a*x + b)*relu(c*x) + softplus(d*x)",
    "Max(a*x, b) + Abs(c - x) + sqrt(d*x**2 + 1)",
    "exp(-a*x**2)/(1 + b*x) + log(1 + c**2*x**2)",
    "leaky_relu(a*x + b, 0.1)*sign(c*x) + atan(d*x)",
    "exp(a*x)*exp(b*x) + x**a + sin(c*x)**3",
    "(a*x + b)**3/(c + x**2)**2 + sqrt(a**2 + 1)*2**b",
]


def random_formula(rng: random.Random, depth: int) -> str:
    if depth == 0:
        return rng.choice(["x", "a", "b", "c", "2", "0.5"])
    kind = rng.choice(["+", "-", "*", "/", "**2", "f"])
    inner = random_formula(rng, depth - 1)
    if kind == "f":
        return f"{rng.choice(['tanh', 'exp', 'sigmoid', 'log', 'sqrt', 'sin', 'relu'])}({inner})"
    if kind == "**2":
        return f"({inner})**2"
    return f"({inner} {kind} {random_formula(rng, depth - 1)})"


def naive_samples() -> list:
    rng = random.Random(1)
    formulas = FORMULAS + [random_formula(rng, 4) for _ in range(20)]
    specs = [deep_chain_spec(3), deep_chain_spec(8), *(load(n) for n in EXPRESSION_BUILTINS)]
    specs += [model_spec(f) for f in formulas]
    return [s for s in specs if s.params]


@pytest.mark.parametrize("spec", naive_samples(), ids=lambda s: f"{s.name}-{len(s.params)}")
def test_naive_derivatives_are_sympys(spec):
    loss = full_loss(spec)
    diff = NaiveDiff()
    rng = random.Random(0)
    for name in spec.params:
        p = spec.symbol(name)
        mine, reference = diff(loss, p), apply_kink_conventions(sp.diff(loss, p))
        assert tree_ops(mine) == tree_ops(reference), (mine, reference)
        point = {s: rng.uniform(0.3, 1.5) for s in loss.free_symbols}
        assert np.isclose(complex(mine.xreplace(point)), complex(reference.xreplace(point)))


# --- the bound ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPRESSION_BUILTINS)
def test_generated_within_bound_for_builtin_examples(name):
    stats = op_stats(load(name))
    assert 0 < stats.forward
    assert stats.generated == stats.generated_forward + stats.generated_backward
    assert stats.generated <= BOUND * stats.forward, format_stats(stats, name)


@pytest.mark.parametrize("depth", DEPTHS)
def test_generated_within_bound_for_deep_chains(scaling, depth):
    row = scaling[depth]
    assert row.forward == 2 * depth + 2  # depth tanh and products, a subtraction, a square
    assert row.generated <= BOUND * row.forward


def test_naive_grows_superlinearly_and_generated_linearly(scaling):
    assert scaling[80].naive / scaling[10].naive > 20
    assert 6 <= scaling[80].generated / scaling[10].generated <= 10
    depths = np.array(DEPTHS, dtype=float)
    generated = np.array([scaling[d].generated for d in DEPTHS], dtype=float)
    slope, intercept = np.polyfit(depths, generated, 1)
    residual = generated - (slope * depths + intercept)
    assert np.max(np.abs(residual) / generated) < 0.02


def test_quadratic_counts():
    stats = op_stats(load("quadratic"))
    # (w1*x**2 + w2*x + b - y)**2: x**2, two products, three adds, the square
    assert stats.forward == 7
    assert stats.params == 3
    # the loss (7) and 2*x**2*(...) (9), 2*x*(...) (8), 2*b + 2*w1*x**2 + ... (10)
    assert stats.naive == 34
    # forward 7 + the batch mean; 2*t2/N, two products and three batch sums
    assert (stats.generated_forward, stats.generated_backward) == (8, 7)


# --- reports ------------------------------------------------------------------------------


def test_format_stats_shows_counts_and_ratios():
    stats = OpStats(10, 55, 23, 0.5, 11, 12, 9, 2)
    text = format_stats(stats, "demo")
    assert text.splitlines()[0].startswith("demo")
    assert "5.50x forward" in text and "2.30x forward" in text
    assert "0.500 s" in text


def test_format_scaling_has_a_row_per_depth(scaling):
    text = format_scaling(list(scaling.values()))
    assert len(text.splitlines()) == 2 + len(DEPTHS)
    assert "        80 " in text


def test_deep_chain_spec_is_a_chain():
    spec = deep_chain_spec(3)
    assert sorted(spec.params) == ["w1", "w2", "w3"]
    assert str(spec.outputs[0][1]) == "tanh(w3*tanh(w2*tanh(w1*x)))"
    assert spec.inputs == ["x"] and spec.targets == ["y"]


# --- the size warning --------------------------------------------------------------------


def test_no_warning_for_small_models():
    for name in EXPRESSION_BUILTINS:
        assert size_warning(load(name)) is None
    assert size_warning(deep_chain_spec(40)) is None


def test_warning_names_the_largest_field_and_the_size():
    lets = "\n".join(f'h{i} = "h{i - 1} + v{i}*tanh(w{i}*x + b{i})"' for i in range(1, 601))
    text = (
        f'name = "big"\n[model]\ninputs = ["x"]\noutput = "h600"\n[model.let]\nh0 = "x"\n{lets}\n'
    )
    message = size_warning(parse_spec(text, "big.toml"))
    assert message is not None and "\n" not in message
    assert message.startswith("model.let.h1: 5 operations (3000 in all, 1800 parameters);")
    assert message.endswith(" s")
