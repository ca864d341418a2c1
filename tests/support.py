"""Helpers shared by the tests: load generated modules and compute independent references.

Nothing here uses symbp's own checking code: finite differences, the SymPy reference
(``sympy.diff`` of the full per-sample loss) and the PyTorch reference (the spec's
formula text evaluated over torch tensors) are written from scratch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import math
import sys
import tomllib
from pathlib import Path

import numpy as np
import sympy as sp

from symbp.derive import derive
from symbp.documents.chain import full_loss
from symbp.spec.expression import ExpressionSpec
from symbp.targets.numpy.module import render_module

REPO = Path(__file__).resolve().parent.parent

_unique = itertools.count()


def import_file(path: Path):
    """Import a generated module from ``path`` under a fresh name (not left in sys.modules)."""
    name = f"_symbp_test_{path.stem}_{next(_unique)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def generate(spec: ExpressionSpec, folder: Path, dtype: str = "float64"):
    """Derive ``spec``, write its NumPy module into ``folder`` and import it. Every module
    gets a file of its own: a rewritten file of the same size within the same second
    could be imported from a stale __pycache__ entry."""
    path = folder / f"{spec.name}_{dtype}_{next(_unique)}.py"
    path.write_text(render_module(derive(spec), dtype), encoding="utf-8")
    return import_file(path)


def data_arrays(spec: ExpressionSpec) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) of the spec's [data], one column per input / target."""
    n = len(next(iter(spec.data.values())))
    X = np.array([spec.data[c] for c in spec.inputs], dtype=np.float64).T.reshape(n, -1)
    Y = np.array([spec.data[c] for c in spec.targets], dtype=np.float64).T.reshape(n, -1)
    return X, Y


# --- finite differences ---------------------------------------------------------------


def central_differences(loss, params: dict, step: float = 1e-4) -> dict[str, float]:
    """dL/dp by the fourth-order central difference
    (-L(p+2h) + 8 L(p+h) - 8 L(p-h) + L(p-2h)) / 12h, h relative to |p|."""
    grads = {}
    for name, value in params.items():
        value = float(value)
        h = step * max(1.0, abs(value))

        def at(delta, name=name, value=value):
            shifted = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
            shifted[name] = np.asarray(value + delta, dtype=np.float64)
            return loss(shifted)

        grads[name] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return grads


def relative_error(actual: float, expected: float) -> float:
    """|actual - expected| / max(1, |expected|)."""
    return abs(float(actual) - float(expected)) / max(1.0, abs(float(expected)))


# --- the SymPy reference --------------------------------------------------------------


def _definition(expr: sp.Expr) -> sp.Expr:
    """symbp's custom activations by their textbook definitions (written here, not
    taken from symbp.functions)."""
    name = type(expr).__name__
    args = expr.args
    if name == "sigmoid":
        return 1 / (1 + sp.exp(-args[0]))
    if name == "softplus":
        return sp.log(1 + sp.exp(args[0]))
    if name == "relu":
        return sp.Max(args[0], 0)
    if name == "leaky_relu":
        z, slope = args
        return sp.Piecewise((z, z > 0), (slope * z, True))
    raise AssertionError(name)


CUSTOM = ("sigmoid", "softplus", "relu", "leaky_relu")


def expand_custom(expr: sp.Expr) -> sp.Expr:
    return expr.replace(lambda e: type(e).__name__ in CUSTOM, _definition)


def kink_arguments(expr: sp.Expr) -> list[sp.Expr]:
    """Expressions that are zero exactly at the kinks of ``expr``."""
    found = []
    for node in sp.preorder_traversal(expr):
        name = type(node).__name__
        if name in ("relu", "leaky_relu", "Abs", "sign", "Heaviside"):
            found.append(expand_custom(node.args[0]))
        elif isinstance(node, (sp.Max, sp.Min)):
            pairs = itertools.combinations(node.args, 2)
            found += [expand_custom(a - b) for a, b in pairs]
    return found


def _heaviside(x, h0=0.5):
    return 1.0 if x > 0 else (h0 if x == 0 else 0.0)


MATH_MODULES = [{"Heaviside": _heaviside, "erf": math.erf}, "math"]


def _rows(spec: ExpressionSpec, params, X, Y):
    """Per sample: the values of the inputs, the targets and the parameters, as floats."""
    values = [float(params[p]) for p in spec.params]
    for x, y in zip(X, Y, strict=True):
        yield [*map(float, x), *map(float, y), *values]


def _symbols(spec: ExpressionSpec) -> list[sp.Symbol]:
    return [spec.symbol(n) for n in [*spec.inputs, *spec.targets, *spec.params]]


class Kinks:
    """Where the full per-sample loss has kinks (relu, leaky_relu, Abs, sign, Max, Min)."""

    def __init__(self, spec: ExpressionSpec):
        self.spec = spec
        kinks = kink_arguments(full_loss(spec))
        self.function = sp.lambdify(_symbols(spec), kinks, modules=MATH_MODULES) if kinks else None

    def distance(self, params, X, Y) -> np.ndarray:
        """Per sample, the smallest |argument| of a kink (inf if the model has none)."""
        if self.function is None:
            return np.full(len(X), np.inf)
        rows = _rows(self.spec, params, X, Y)
        return np.array([min(abs(float(v)) for v in self.function(*row)) for row in rows])


class SympyReference:
    """The per-sample loss over inputs, targets and parameters (symbp.documents.chain.full_loss),
    differentiated by ``sympy.diff`` and evaluated one sample at a time with ``math``."""

    def __init__(self, spec: ExpressionSpec):
        self.spec = spec
        loss = expand_custom(full_loss(spec))
        grads = [sp.diff(loss, spec.symbol(p)) for p in spec.params]
        self.function = sp.lambdify(_symbols(spec), [loss, *grads], modules=MATH_MODULES)

    def __call__(self, params, X, Y) -> tuple[float, dict[str, float]]:
        """Batch loss and gradients: the mean over the samples."""
        rows = [self.function(*row) for row in _rows(self.spec, params, X, Y)]
        mean = np.mean(np.array(rows, dtype=np.float64), axis=0)
        return float(mean[0]), dict(zip(self.spec.params, map(float, mean[1:]), strict=True))


# --- the PyTorch reference ------------------------------------------------------------


def torch_namespace(torch) -> dict:
    """The spec's functions over float64 tensors, with PyTorch's own gradients."""
    F = torch.nn.functional  # noqa: N806 - torch's conventional name

    def tensor(v):
        return v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)

    def unary(f):
        return lambda z: f(tensor(z))

    def fold(f):
        return lambda *args: functools.reduce(f, map(tensor, args))

    names = {
        "exp": torch.exp,
        "log": torch.log,
        "sqrt": torch.sqrt,
        "sin": torch.sin,
        "cos": torch.cos,
        "tan": torch.tan,
        "tanh": torch.tanh,
        "sinh": torch.sinh,
        "cosh": torch.cosh,
        "asinh": torch.asinh,
        "atan": torch.atan,
        "erf": torch.erf,
        "Abs": torch.abs,
        "abs": torch.abs,
        "sign": torch.sign,
        "sigmoid": torch.sigmoid,
        "relu": torch.relu,
        "softplus": lambda z: torch.logaddexp(z, torch.zeros_like(z)),
    }
    namespace = {k: unary(f) for k, f in names.items()}
    namespace["leaky_relu"] = lambda z, slope: F.leaky_relu(tensor(z), float(slope))
    for name in ("Max", "max"):
        namespace[name] = fold(torch.maximum)
    for name in ("Min", "min"):
        namespace[name] = fold(torch.minimum)
    namespace["pi"] = math.pi
    return namespace


def _evaluate(text: str, namespace: dict):
    code = compile(text.replace("^", "**"), "<formula>", "eval")
    return eval(code, {"__builtins__": {}}, namespace)  # test-side text only


class TorchModel:
    """A spec's formulas (the TOML text, read with tomllib) evaluated by PyTorch."""

    def __init__(self, toml_text: str, torch):
        self.torch = torch
        model = tomllib.loads(toml_text)["model"]
        self.inputs = list(_as_list(model.get("inputs", [])))
        self.targets = list(_as_list(model.get("targets", [])))
        self.lets = list(model.get("let", {}).items())
        output = model["output"]
        self.outputs = [output] if isinstance(output, str) else list(output)
        self.loss_text = model.get("loss")
        self.namespace = torch_namespace(torch)

    def batch_loss(self, params: dict, X, Y):
        """L = mean over the batch of the per-sample loss; ``params`` are tensors."""
        torch = self.torch
        X = torch.as_tensor(np.asarray(X, dtype=np.float64))
        Y = torch.as_tensor(np.asarray(Y, dtype=np.float64))
        names = dict(self.namespace)
        names.update(params)
        names.update({x: X[:, i] for i, x in enumerate(self.inputs)})
        names.update({y: Y[:, i] for i, y in enumerate(self.targets)})
        for name, formula in self.lets:
            names[name] = _evaluate(formula, names)
        outs = [_evaluate(f, names) for f in self.outputs]
        if len(outs) == 1:
            names["yhat"] = outs[0]
        else:
            names.update({f"yhat{i}": o for i, o in enumerate(outs, 1)})
        targets = [names[y] for y in self.targets]
        if self.loss_text is None:
            per_sample = outs[0]
        elif self.loss_text == "mse":
            per_sample = sum((o - y) ** 2 for o, y in zip(outs, targets, strict=True))
            per_sample = per_sample / len(outs)
        elif self.loss_text == "l1":
            per_sample = sum(torch.abs(o - y) for o, y in zip(outs, targets, strict=True))
            per_sample = per_sample / len(outs)
        else:
            per_sample = _evaluate(self.loss_text, names)
        per_sample = torch.as_tensor(per_sample, dtype=torch.float64)
        return torch.broadcast_to(per_sample, (X.shape[0],)).mean()

    def loss_and_grads(self, params: dict, X, Y) -> tuple[float, dict[str, float]]:
        torch = self.torch
        leaves = {
            k: torch.tensor(float(v), dtype=torch.float64, requires_grad=True)
            for k, v in params.items()
        }
        value = self.batch_loss(leaves, X, Y)
        if value.requires_grad:
            value.backward()
        grads = {k: 0.0 if leaf.grad is None else leaf.grad.item() for k, leaf in leaves.items()}
        return value.item(), grads


def _as_list(value):
    return [value] if isinstance(value, str) else value


# every optimizer of the registry (tests check that none is missing), with options
# that take each branch of its rule
OPTIMIZER_CASES = {
    "sgd": "momentum = 0.5\nnesterov = true\nweight_decay = 0.01\nmaximize = true\n",
    "momentum": "dampening = 0.2\n",
    "adagrad": "lr_decay = 0.1\ninitial_accumulator_value = 0.1\n",
    "rmsprop": "centered = true\nmomentum = 0.5\n",
    "adam": "amsgrad = true\nweight_decay = 0.01\n",
    "adamw": "amsgrad = true\n",
    "adamax": "weight_decay = 0.01\n",
    "adadelta": "rho = 0.8\n",
    "radam": "betas = [0.8, 0.9]\n",
    "nadam": "momentum_decay = 0.01\nweight_decay = 0.01\n",
}


@contextlib.contextmanager
def torch_float64():
    """torch's default dtype float64 for a block: torch.optim keeps some scalar state in
    it (NAdam's mu_product is float32 otherwise), symbp keeps it in double."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def optimizer_stack(name: str, extra: str = "") -> str:
    """A small tanh stack trained by optimizer ``name`` with its OPTIMIZER_CASES options
    (and ``extra`` lines of [train], such as clipping)."""
    return (
        'name = "opt"\n[model]\ninput = 3\nlayers = [{ dense = 4, activation = "tanh" },'
        ' { dense = 2 }]\nloss = "mse"\n[train]\n'
        f'optimizer = "{name}"\nlr = 0.05\n{OPTIMIZER_CASES[name]}{extra}'
    )


# every schedule of the registry (a test checks that none is missing), and a sequence:
# the [train] line, and torch.optim.lr_scheduler's equivalent on an optimizer
def _torch_schedules():
    import torch.optim.lr_scheduler as s

    return {
        "step": (
            'lr_schedule = { name = "step", step_size = 2, gamma = 0.5 }',
            lambda o: s.StepLR(o, step_size=2, gamma=0.5),
        ),
        "exponential": (
            'lr_schedule = { name = "exponential", gamma = 0.8 }',
            lambda o: s.ExponentialLR(o, gamma=0.8),
        ),
        "cosine": (
            'lr_schedule = { name = "cosine", T_max = 3, eta_min = 0.001 }',
            lambda o: s.CosineAnnealingLR(o, T_max=3, eta_min=0.001),
        ),
        "linear": (
            'lr_schedule = { name = "linear", start_factor = 0.25, total_iters = 3 }',
            lambda o: s.LinearLR(o, start_factor=0.25, total_iters=3),
        ),
        "sequence": (
            'lr_schedule = [{ name = "linear", start_factor = 0.1, total_iters = 2 },'
            ' { name = "cosine", T_max = 4, milestone = 2 },'
            ' { name = "step", step_size = 1, gamma = 0.5, milestone = 5 }]',
            lambda o: s.SequentialLR(
                o,
                [
                    s.LinearLR(o, start_factor=0.1, total_iters=2),
                    s.CosineAnnealingLR(o, T_max=4),
                    s.StepLR(o, step_size=1, gamma=0.5),
                ],
                milestones=[2, 5],
            ),
        ),
    }


def schedule_cases() -> dict:
    """name -> ([train] line, torch factory); needs torch."""
    return _torch_schedules()


SCHEDULE_NAMES = ("step", "exponential", "cosine", "linear", "sequence")
