"""The in-place training step: ufunc sequences that write into existing arrays give the
same values as NumPy's allocating expressions (also when the result overwrites an
operand), the memory plan never lets two live values share an array, and train()'s
step equals loss_and_grads on random stacks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_strategies import LOSSES, random_batch, random_params, stacks
from support import import_file

from symbp.derive import derive
from symbp.functions import relu, sigmoid, softplus
from symbp.program.memory import plan_buffers
from symbp.program.statements import Assign
from symbp.spec import parse_spec
from symbp.targets.numpy.inplace import Constants, InplacePrinter
from symbp.targets.numpy.module import render_module
from symbp.targets.numpy.printer import NumpyPrinter

NAMES = ("a", "b", "c", "d")
ARRAYS = [sp.Symbol(n, real=True) for n in NAMES]
SCALAR = sp.Symbol("s", real=True)  # a step scalar, such as Adam's step size
_unique = itertools.count()


def expressions(depth: int = 3):
    """Elementwise expressions over the arrays a..d, a scalar s and constants."""
    leaves = st.sampled_from([*ARRAYS, *ARRAYS, SCALAR, sp.Integer(2), sp.Float(0.5)])
    unary = [sp.exp, sp.tanh, sigmoid, softplus, relu, lambda x: sp.Abs(x), sp.sin]

    def extend(children):
        pair = st.tuples(children, children)
        return st.one_of(
            pair.map(lambda p: p[0] + p[1]),
            pair.map(lambda p: p[0] - p[1]),
            pair.map(lambda p: p[0] * p[1]),
            pair.map(lambda p: p[0] / (1 + p[1] ** 2)),
            pair.map(lambda p: sp.Max(p[0], p[1])),
            children.map(lambda e: e**2),
            children.map(lambda e: -e),
            children.map(lambda e: sp.sqrt(1 + e**2)),
            children.map(lambda e: sp.Heaviside(e, 0)),
            st.tuples(st.sampled_from(unary), children).map(lambda p: p[0](p[1])),
        )

    return st.recursive(leaves, extend, max_leaves=8).filter(
        lambda e: bool(e.free_symbols & set(ARRAYS))
    )


class FloatStepPrinter(NumpyPrinter):
    """The reference: [x > 0] as floats (a bool array squared is not a float array)."""

    def _step(self, x, h0) -> str:
        return f"np.where({self._print(x)} > 0, 1.0, 0.0)"


def _sigmoid_into(z, out):  # as the generated modules' helper
    np.negative(z, out=out)
    np.exp(out, out=out)
    np.add(out, 1, out=out)
    np.reciprocal(out, out=out)


HELPERS = {  # the generated modules' helpers, for the reference and for scalar parts
    "_sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "_sigmoid_into": _sigmoid_into,
    "_softplus": lambda z: np.logaddexp(0, z),
    "_sign": np.sign,
}


def numpy_value(expr: sp.Expr, env: dict) -> np.ndarray:
    text = FloatStepPrinter().doprint(expr)
    return np.broadcast_to(eval(text, {"np": np, **HELPERS, **env}), (6,))  # noqa: S307


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    expr=expressions(),
    overwrite=st.sampled_from([None, *NAMES]),
    seed=st.integers(0, 999),
    named=st.booleans(),
)
def test_inplace_sequence_equals_the_numpy_expression(expr, overwrite, seed, named):
    rng = np.random.default_rng(seed)
    env = {n: rng.standard_normal(6) for n in NAMES}
    env["s"] = 0.75
    with np.errstate(all="ignore"):
        expected = numpy_value(expr, env)
    arrays = {n: v.copy() for n, v in env.items() if n in NAMES}
    out = overwrite or "out"  # the result may overwrite an operand, as optimizer updates do
    if overwrite is None:
        arrays["out"] = np.full(6, np.nan)
    # named: number operands as 0-d arrays (the layer-stack step), s one too
    constants = Constants() if named else None
    arrays_for = {"s": "s_array"} if named else None
    printer = InplacePrinter({*NAMES, "out"}, lambda k: f"tmp{k}", None, constants, arrays_for)
    lines = printer.assign(out, expr)
    scope = {"np": np, **HELPERS, "s": 0.75, "s_array": np.asarray(0.75), **arrays}
    for name, literal in constants.definitions() if named else ():
        scope[name] = np.asarray(eval(literal), np.float64)  # noqa: S307
    scope |= {f"tmp{k}": np.full(6, np.nan) for k in range(printer.scratch_used)}
    with np.errstate(all="ignore"):
        for line in lines:
            exec(line, scope)  # noqa: S102
    assert all(line.endswith(")") for line in lines)
    np.testing.assert_allclose(scope[out], expected, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_optimizer_update_reads_its_state_before_overwriting_it():
    m, g = sp.symbols("m g", real=True)
    printer = InplacePrinter({"m", "g"}, lambda k: f"tmp{k}")
    lines = printer.assign("m", sp.Float(0.9) * m + sp.Float(0.1) * g)
    assert lines == [
        "np.multiply(g, 0.1, out=tmp0)",
        "np.multiply(m, 0.9, out=m)",
        "np.add(m, tmp0, out=m)",
    ]


def test_plan_reuses_dead_arrays_and_never_shares_live_ones():
    x, w, a, b, c, d = sp.symbols("x w a b c d", real=True)
    shape = ("N", 3)
    program = [
        Assign(a, x * w, shape, "forward"),
        Assign(b, sp.tanh(a), shape, "forward"),  # a dies here: b may take its array
        Assign(c, b * 2, shape, "forward"),
        Assign(d, b * c + x, shape, "forward"),  # b, c die here
    ]
    plan = plan_buffers(program, {x, w}, {}, lambda stmt, symbol: True)
    assert plan.home[b] == plan.home[a]  # tanh written over its dying input
    assert plan.home[c] != plan.home[b]  # b is still read by d
    assert len(plan.buffers) == 2
    never = plan_buffers(program, {x, w}, {}, lambda stmt, symbol: False)
    assert never.home[b] != never.home[a]
    assert never.home[c] == never.home[a]  # a is dead once b is written: c takes its array


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stack=stacks(losses=LOSSES), seed=st.integers(0, 2**32 - 1))
def test_inplace_step_equals_loss_and_grads(tmp_path_factory, stack, seed):
    code = render_module(derive(parse_spec(stack.toml(), "m.toml")), "float64")
    path = tmp_path_factory.mktemp("inplace") / f"inplace_{next(_unique)}.py"
    path.write_text(code, encoding="utf-8")
    module = import_file(path)
    rng = np.random.default_rng(seed)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng)
    loss, grads = module.loss_and_grads(params, X, Y)
    X, Y = module._inputs(X), module._targets(Y)
    flat, views = module._flat()  # the layout train() steps on
    for name in module.PARAM_SHAPES:
        views[name][...] = params[name]
    flat_grads, into = module._flat()
    flat_grads.fill(np.nan)
    buffers = module._buffers(len(X))
    for name, array in buffers.items():
        if name not in ("ones_N", "N_array"):  # constants: 1^T delta's ones, N
            array.fill(np.nan)  # nothing else may be read before it is written
    for _ in range(2):  # the second step reuses the arrays the first one wrote
        assert module._loss_and_grads_into(views, into, buffers, X, Y) == loss
        for name, grad in grads.items():
            np.testing.assert_allclose(into[name], grad, rtol=1e-12, atol=1e-15)
    assert not np.isnan(flat_grads).any()  # every gradient element written


# --- the memory-lean optimizer form ----------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.01, "betas": (0.8, 0.99)}])
def test_memory_lean_adam_is_torch_adam_with_scaled_moments(options):
    """Five steps of both forms from the same start: the same parameters to rounding,
    and the lean form's moments are torch's divided by (1 - beta)."""
    from symbp.optim import g, memory_lean, p, t, update_rule

    letter = update_rule("adam", options)
    lean = memory_lean(letter)
    assert lean.state == letter.state
    lr = sp.Symbol("lr", real=True)
    rng = np.random.default_rng(3)
    gradients = rng.normal(size=5)

    def run(rule):
        values = {p: 0.7, lr: 0.01, **{sp.Symbol(b, real=True): 0.0 for b in rule.state}}
        for step, grad in enumerate(gradients, start=1):
            values[t], values[g] = step, grad
            for symbol, expr in rule.step_scalars:
                values[symbol] = float(expr.subs(values))
            for symbol, expr in rule.updates:
                values[symbol] = float(expr.subs(values))
        return values

    a, b = run(letter), run(lean)
    beta1, beta2 = letter.options["betas"]
    assert b[p] == pytest.approx(a[p], rel=1e-14)
    assert a[p] != pytest.approx(0.7)
    m, v = (sp.Symbol(name, real=True) for name in ("exp_avg", "exp_avg_sq"))
    assert b[m] * (1 - beta1) == pytest.approx(a[m], rel=1e-14)
    assert b[v] * (1 - beta2) == pytest.approx(a[v], rel=1e-14)


def test_memory_lean_leaves_other_rules_alone():
    from symbp.optim import memory_lean, update_rule

    for name in ("sgd", "momentum", "adagrad", "rmsprop"):
        rule = update_rule(name, {})
        assert memory_lean(rule) is rule


RULES = [
    ("sgd", {}),
    ("momentum", {"dampening": 0.3, "weight_decay": 0.01}),
    ("momentum", {"nesterov": True}),
    ("adagrad", {"initial_accumulator_value": 0.1, "lr_decay": 0.01}),
    ("rmsprop", {"centered": True, "momentum": 0.5}),
    ("adam", {}),
    ("adam", {"weight_decay": 0.01}),
    ("adam", {"amsgrad": True, "maximize": True}),
    ("adamw", {"amsgrad": True}),
    ("adamax", {"weight_decay": 0.01}),
    ("adadelta", {"rho": 0.8}),
    ("radam", {"betas": (0.8, 0.9)}),
    ("nadam", {"momentum_decay": 0.01}),
    ("sgd", {"clip_grad_value": 0.5, "momentum": 0.5}),
]


def test_every_optimizer_has_a_rule_case():
    from symbp.optim import OPTIMIZERS

    assert {name for name, _ in RULES} == set(OPTIMIZERS)


@pytest.mark.parametrize("lean", [False, True], ids=["letter", "lean"])
@pytest.mark.parametrize(("name", "options"), RULES)
def test_first_and_only_step_forms_equal_the_rule_from_its_start(name, options, lean):
    """first_step is the rule on step 1 from the state's start, exactly, without reading
    the state; last_step of it leaves the same parameter and drops only copies."""
    from symbp.optim import first_step, g, last_step, memory_lean, p, t, update_rule

    rule = update_rule(name, options)
    rule = memory_lean(rule) if lean else rule
    first, only = first_step(rule), last_step(first_step(rule))
    states = {sp.Symbol(b, real=True) for b in rule.state}
    lr = sp.Symbol("lr", real=True)
    rng = np.random.default_rng(len(name))
    for grad, param in rng.normal(size=(4, 2)):

        def run(form, start, grad=grad, param=param):
            carried = {sp.Symbol(n, real=True): v for n, v in form.carried}  # NAdam's product
            values = {p: param, g: grad, lr: 0.01, t: 1, **carried, **start}
            for symbol, expr in form.step_scalars:
                values[symbol] = float(expr.subs(values))
            for symbol, expr in form.updates:  # an unset buffer read: float() raises
                values[symbol] = float(expr.subs(values))
            return values

        start = {s: rule.initial(s.name) for s in states}
        reference = run(rule, start)
        unread = run(first, {})  # raises if the first step reads a state buffer
        lean_only = run(only, {})
        assert unread[p] == reference[p]  # bit for bit
        assert all(unread[s] == reference[s] for s in states)
        assert lean_only[p] == reference[p]
    dropped = {t for t, _ in first.updates} - {t for t, _ in only.updates}
    assert all(dict(first.updates)[s].is_Symbol for s in dropped)  # only copies go
    if name == "adam" and lean:
        assert dropped == {sp.Symbol("exp_avg", real=True)}  # m' = g on the only step
