"""Random tensor models (tests/tensor_strategies.py): the derived gradients equal
central differences and torch autograd, float64. The torch reference evaluates each
per-sample formula with torch operations and torch.func.vmap over the batch, from the
formula text, independently of symbp's parser."""

from __future__ import annotations

import ast

import numpy as np
import pytest
from hypothesis import given, settings
from support import generate
from tensor_strategies import tensor_models

from symbp.check import random_point
from symbp.derive import derive
from symbp.program.flops import program_flops
from symbp.spec import parse_spec

torch = pytest.importorskip("torch")

FUNCS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": torch.nn.functional.softplus,
    "sin": torch.sin,
    "atan": torch.atan,
    "sum": torch.sum,
    "max": torch.amax,
    "mean": torch.mean,
    "var": lambda v: torch.var(v, unbiased=False),
    "norm": torch.linalg.vector_norm,
    "logsumexp": lambda v: torch.logsumexp(v, dim=-1),
    "softmax": lambda v: torch.softmax(v, dim=-1),
    "log_softmax": lambda v: torch.log_softmax(v, dim=-1),
    "dot": torch.dot,
    "outer": torch.outer,
    "concat": lambda *vs: torch.cat(vs),
}


def torch_eval(text: str, env: dict):
    """A formula over torch tensors: a walk over Python's syntax tree, nothing executed."""

    def visit(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.BinOp):
            a, b = visit(node.left), visit(node.right)
            return {
                ast.Add: lambda: a + b,
                ast.Sub: lambda: a - b,
                ast.Mult: lambda: a * b,
                ast.Div: lambda: a / b,
                ast.Pow: lambda: a**b,
                ast.MatMult: lambda: a @ b,
            }[type(node.op)]()
        if isinstance(node, ast.UnaryOp):
            return -visit(node.operand)
        if isinstance(node, ast.Attribute):
            return visit(node.value).T
        if isinstance(node, ast.Subscript):
            value = visit(node.value)
            if isinstance(node.slice, ast.Slice):
                return value[visit(node.slice.lower) :]
            return value[visit(node.slice)]
        if isinstance(node, ast.Call):
            return FUNCS[node.func.id](*[visit(a) for a in node.args])
        raise AssertionError(ast.dump(node))

    return visit(ast.parse(text, mode="eval").body)


def central_differences(loss, params: dict, h: float = 1e-4) -> dict[str, np.ndarray]:
    """Every entry's fourth-order central difference (-L(+2h) + 8L(+h) - 8L(-h) + L(-2h))/12h."""
    grads = {}
    for name, value in params.items():
        grad = np.zeros(np.shape(value))
        for index in np.ndindex(grad.shape):

            def at(delta, name=name, index=index):
                shifted = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
                shifted[name][index] += delta
                return loss(shifted)

            grad[index] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
        grads[name] = grad
    return grads


def torch_loss(case, params, X, Y):
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}

    def sample(xs, y):
        env = {**t, **xs}
        if y is not None:
            env["y"] = y
        for name, formula, _ in case.lets:
            env[name] = torch_eval(formula, env)
        if case.target == ():
            out = env[case.lets[-1][0]]
            return torch.logsumexp(out, 0) - out[y]
        return torch_eval(case.loss, env)

    xs = {k: torch.tensor(v) for k, v in X.items()}
    if case.target is None:
        losses = torch.func.vmap(lambda xs: sample(xs, None))(xs)
    else:
        y = torch.tensor(Y["y"])
        losses = torch.func.vmap(sample)(xs, y)
    loss = losses.mean()
    loss.backward()
    # a parameter of a value that the loss does not read: torch leaves its grad None
    return loss.item(), {
        k: np.zeros(v.shape) if v.grad is None else v.grad.numpy() for k, v in t.items()
    }


@settings(max_examples=80)
@given(case=tensor_models())
def test_random_tensor_models_match_torch_and_finite_differences(case, tmp_path_factory):
    folder = tmp_path_factory.mktemp("random_tensor")
    spec = parse_spec(case.toml(), "random.toml")
    module = generate(spec, folder)
    # the cheap-gradient bound, in flops: forward and backward at most 5 forward passes
    for n in (1, 5):
        flops = program_flops(derive(spec).program, n)
        assert flops["program"] <= 5 * flops["forward"], (n, flops, case.toml())
    rng = np.random.default_rng(3)
    params, X, Y = random_point(module, rng, batch=5)
    value, grads = module.loss_and_grads(params, X, Y)
    expected, expected_grads = torch_loss(case, params, X, Y)
    scale = max(1.0, abs(expected))
    assert abs(value - expected) <= 1e-10 * scale
    numeric = central_differences(lambda p: module.loss(p, X, Y), params)
    for k in params:
        theirs = expected_grads[k]
        err = np.max(np.abs(grads[k] - theirs), initial=0) / max(1.0, np.max(np.abs(theirs)))
        assert err <= 1e-9, (k, err, case.toml())
        # central differences round to about eps |L| / h: a large loss is checked coarser
        fd_scale = max(1.0, np.max(np.abs(theirs), initial=0), abs(expected) * 1e-6)
        fd = np.max(np.abs(grads[k] - numeric[k]), initial=0) / fd_scale
        assert fd <= 1e-5, (k, fd, case.toml())
