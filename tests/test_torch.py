"""The generated NumPy modules against PyTorch: loss and gradients by autograd, the
conventions at kinks, and every optimizer's steps against torch.optim (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import models
from support import Kinks, TorchModel, data_arrays, generate, relative_error, torch_float64

from symbp.spec import builtin_names, load, parse_spec, resolve
from symbp.spec.expression import ExpressionSpec

torch = pytest.importorskip("torch")

TOLERANCE = 1e-9

# expression models only: layer stacks are tested in tests/test_layers.py
EXPRESSION_BUILTINS = [n for n in builtin_names() if isinstance(load(n), ExpressionSpec)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("torch")


def assert_same_loss_and_grads(module, reference: TorchModel, params, X, Y):
    value, grads = module.loss_and_grads(params, X, Y)
    expected_value, expected = reference.loss_and_grads(params, X, Y)
    assert relative_error(value, expected_value) < TOLERANCE
    assert sorted(grads) == sorted(expected)
    for name in expected:
        assert relative_error(grads[name], expected[name]) < TOLERANCE, name


# --- loss and gradients ----------------------------------------------------------------


@pytest.mark.parametrize("name", EXPRESSION_BUILTINS)
def test_builtin_example_matches_autograd(folder, name):
    spec = load(name)
    module = generate(spec, folder)
    reference = TorchModel(resolve(name)[1], torch)
    X, Y = data_arrays(spec)
    rng = np.random.default_rng(7)
    for _ in range(3):
        params = {k: np.asarray(v + rng.normal(0.0, 0.5)) for k, v in module.init_params(0).items()}
        assert_same_loss_and_grads(module, reference, params, X, Y)
        # and on a sub-batch, as mini-batch training sees it
        assert_same_loss_and_grads(module, reference, params, X[1:4], Y[1:4])


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(model=models(), seed=st.integers(0, 2**32 - 1))
def test_random_model_matches_autograd(folder, model, seed):
    spec = parse_spec(model.toml, "random_model.toml")
    module = generate(spec, folder)
    kinks = Kinks(spec)
    rng = np.random.default_rng(seed)
    params = {p: np.asarray(rng.uniform(-1.5, 1.5)) for p in spec.params}
    X = rng.uniform(-2.0, 2.0, size=(8, len(spec.inputs)))
    Y = rng.uniform(-2.0, 2.0, size=(8, len(spec.targets)))
    keep = kinks.distance(params, X, Y) > 1e-6
    assume(keep.sum() >= 2)
    X, Y = X[keep], Y[keep]
    value = module.loss(params, X, Y)
    assume(np.isfinite(value) and abs(value) < 1e8)
    assert_same_loss_and_grads(module, TorchModel(model.toml, torch), params, X, Y)


# --- kinks -----------------------------------------------------------------------------


def objective(formula: str) -> str:
    """A model with one input and no targets: the batch loss is the mean of ``formula``."""
    return f'name = "kink"\n[model]\ninputs = ["x"]\noutput = "{formula}"\n'


KINKS = [
    # formula, parameters, x, the gradient PyTorch gives at the kink
    ("relu(w1 - x)", {"w1": 1.0}, 1.0, {"w1": 0.0}),
    ("Abs(w1 - x)", {"w1": 1.0}, 1.0, {"w1": 0.0}),
    ("abs(w1*x)", {"w1": 0.0}, 2.0, {"w1": 0.0}),
    ("leaky_relu(w1 - x, 0.2)", {"w1": 1.0}, 1.0, {"w1": 0.2}),
    ("leaky_relu(w1*x, 0.05)", {"w1": 0.0}, 3.0, {"w1": 0.15}),
    ("Max(w1*x, w2)", {"w1": 1.0, "w2": 2.0}, 2.0, {"w1": 1.0, "w2": 0.5}),
    ("Min(w1*x, w2)", {"w1": 1.0, "w2": 2.0}, 2.0, {"w1": 1.0, "w2": 0.5}),
    ("max(w1, x)", {"w1": 1.0}, 1.0, {"w1": 0.5}),
    ("sign(w1 - x)*w2", {"w1": 1.0, "w2": 3.0}, 1.0, {"w1": 0.0, "w2": 0.0}),
]


@pytest.mark.parametrize(("formula", "params", "x", "expected"), KINKS, ids=[k[0] for k in KINKS])
def test_kink_conventions_match_pytorch(folder, formula, params, x, expected):
    text = objective(formula)
    module = generate(parse_spec(text, "kink.toml"), folder)
    X, Y = np.array([[x]]), np.zeros((1, 0))
    arrays = {k: np.asarray(v) for k, v in params.items()}
    _, torch_grads = TorchModel(text, torch).loss_and_grads(params, X, Y)
    assert torch_grads == pytest.approx(expected, abs=1e-15)
    _, grads = module.loss_and_grads(arrays, X, Y)
    assert {k: float(v) for k, v in grads.items()} == pytest.approx(expected, abs=1e-15)
    # the per-sample float path (batch size 1): one SGD step with lr = 1 moves p by -g
    trained, _ = module.train(arrays, X, Y, epochs=1, batch_size=1, lr=1.0)
    moved = {k: params[k] - float(trained[k]) for k in params}
    assert moved == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("function", ["Max", "Min"])
def test_three_way_tie_splits_like_nested_torch_maximum(folder, function):
    """Max(a, b, c) is Max(Max(a, b), c): at a three-way tie the gradient splits as
    torch.maximum(torch.maximum(a, b), c) splits it."""
    text = objective(f"{function}(w1, w2, w3*x)")
    module = generate(parse_spec(text, "tie.toml"), folder)
    params = {"w1": np.asarray(2.0), "w2": np.asarray(2.0), "w3": np.asarray(1.0)}
    X, Y = np.array([[2.0]]), np.zeros((1, 0))
    pair = torch.maximum if function == "Max" else torch.minimum
    leaves = {
        k: torch.tensor(float(v), dtype=torch.float64, requires_grad=True)
        for k, v in params.items()
    }
    pair(pair(leaves["w1"], leaves["w2"]), leaves["w3"] * 2.0).backward()
    expected = {k: leaf.grad.item() for k, leaf in leaves.items()}
    assert expected == pytest.approx({"w1": 1 / 4, "w2": 1 / 4, "w3": 1.0})
    _, grads = module.loss_and_grads(params, X, Y)
    assert {k: float(v) for k, v in grads.items()} == pytest.approx(expected, rel=1e-12)


# --- optimizers ------------------------------------------------------------------------

MODEL = """name = "opt"
[model]
inputs = ["x"]
targets = ["y"]
output = "a*tanh(b*x + c) + d*x"
loss = "mse"
[params]
a = 0.7
b = -0.4
c = 0.3
d = 0.2
[data]
x = [-1.5, -0.5, 0.25, 0.8, 1.3, 2.0]
y = [-1.0, -0.2, 0.4, 0.9, 1.1, 1.8]
"""

OPTIMIZERS = [
    # id, spec optimizer, spec options (torch.optim names), lr
    ("sgd", "sgd", {}, 0.1),
    (
        "sgd-momentum-dampening-wd",
        "sgd",
        {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        0.1,
    ),
    ("sgd-nesterov", "sgd", {"momentum": 0.8, "nesterov": True}, 0.1),
    ("sgd-nesterov-wd", "sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, 0.05),
    ("momentum", "momentum", {}, 0.1),
    ("momentum-dampening", "momentum", {"momentum": 0.5, "dampening": 0.5}, 0.1),
    ("adagrad", "adagrad", {}, 0.1),
    (
        "adagrad-lr_decay-wd-init",
        "adagrad",
        {"lr_decay": 0.1, "weight_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-8},
        0.1,
    ),
    ("rmsprop", "rmsprop", {}, 0.01),
    ("rmsprop-centered", "rmsprop", {"centered": True}, 0.01),
    ("rmsprop-momentum", "rmsprop", {"momentum": 0.5}, 0.01),
    (
        "rmsprop-centered-momentum-alpha-wd",
        "rmsprop",
        {"centered": True, "momentum": 0.5, "alpha": 0.9, "weight_decay": 0.01, "eps": 1e-6},
        0.01,
    ),
    ("adam", "adam", {}, 0.05),
    ("adam-wd", "adam", {"weight_decay": 0.01}, 0.05),
    ("adam-betas-eps", "adam", {"betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1}, 0.05),
    ("adam-amsgrad-wd", "adam", {"amsgrad": True, "weight_decay": 0.01}, 0.05),
    ("adam-maximize", "adam", {"maximize": True}, 0.01),
    (
        "sgd-maximize-momentum-wd",
        "sgd",
        {"maximize": True, "momentum": 0.5, "weight_decay": 0.1},
        0.01,
    ),
    ("adamw", "adamw", {}, 0.05),
    (
        "adamw-amsgrad-wd-betas",
        "adamw",
        {"amsgrad": True, "weight_decay": 0.1, "betas": [0.8, 0.9]},
        0.05,
    ),
    ("adamax", "adamax", {}, 0.05),
    (
        "adamax-wd-betas-eps",
        "adamax",
        {"weight_decay": 0.01, "betas": [0.8, 0.99], "eps": 1e-4},
        0.05,
    ),
    ("adadelta", "adadelta", {}, 1.0),
    ("adadelta-rho-wd-eps", "adadelta", {"rho": 0.5, "weight_decay": 0.01, "eps": 1e-4}, 0.5),
    ("radam", "radam", {}, 0.05),  # per sample, the rectified step from t = 6 on
    ("radam-betas-wd", "radam", {"betas": [0.8, 0.9], "weight_decay": 0.01}, 0.05),
    ("nadam", "nadam", {}, 0.05),
    (
        "nadam-decay-wd-betas",
        "nadam",
        {"momentum_decay": 0.01, "weight_decay": 0.01, "betas": [0.8, 0.9]},
        0.05,
    ),
    ("adam-clip_grad_norm", "adam", {"clip_grad_norm": 0.5}, 0.05),
    ("sgd-momentum-clip_grad_value", "sgd", {"momentum": 0.9, "clip_grad_value": 0.3}, 0.1),
]
CLIPPING = {  # [train] options that torch applies with torch.nn.utils, not the optimizer
    "clip_grad_norm": lambda leaves, c: torch.nn.utils.clip_grad_norm_(leaves, c),
    "clip_grad_value": lambda leaves, c: torch.nn.utils.clip_grad_value_(leaves, c),
}

TORCH_OPTIMIZERS = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", {"momentum": 0.9}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "adamax": ("Adamax", {}),
    "adadelta": ("Adadelta", {}),
    "radam": ("RAdam", {}),
    "nadam": ("NAdam", {}),
}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(repr, value)) + "]"
    return repr(value)


def spec_with_optimizer(optimizer: str, options: dict, lr: float) -> str:
    lines = ["[train]", f'optimizer = "{optimizer}"', f"lr = {lr!r}"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in options.items()]
    return MODEL + "\n".join(lines) + "\n"


def torch_training(text: str, optimizer: str, options: dict, lr: float, steps, batch_size):
    """Parameters after each epoch of torch.optim training, samples in order."""
    spec = parse_spec(text, "opt.toml")
    X, Y = data_arrays(spec)
    reference = TorchModel(text, torch)
    leaves = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in spec.init.items()
    }
    name, defaults = TORCH_OPTIMIZERS[optimizer]
    kwargs = {**defaults, **{k: v for k, v in options.items() if k not in CLIPPING}}
    clips = [(CLIPPING[k], v) for k, v in options.items() if k in CLIPPING]
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    opt = getattr(torch.optim, name)(list(leaves.values()), lr=lr, foreach=False, **kwargs)
    history = []
    for _ in range(steps):
        for start in range(0, len(X), batch_size):
            opt.zero_grad()
            reference.batch_loss(
                leaves, X[start : start + batch_size], Y[start : start + batch_size]
            ).backward()
            for clip, bound in clips:
                clip(list(leaves.values()), bound)
            opt.step()
        history.append({k: leaf.item() for k, leaf in leaves.items()})
    return history


@pytest.mark.parametrize(
    ("optimizer", "options", "lr"), [o[1:] for o in OPTIMIZERS], ids=[o[0] for o in OPTIMIZERS]
)
@pytest.mark.parametrize("per_sample", [False, True], ids=["whole-batch", "batch-size-1"])
def test_optimizer_steps_match_torch_optim(folder, optimizer, options, lr, per_sample):
    text = spec_with_optimizer(optimizer, options, lr)
    spec = parse_spec(text, "opt.toml")
    module = generate(spec, folder)
    X, Y = data_arrays(spec)
    batch_size = 1 if per_sample else len(X)
    with torch_float64():
        expected = torch_training(text, optimizer, options, lr, 3, batch_size)
    for epochs in (1, 3):
        params, losses = module.train(
            module.init_params(0), X, Y, epochs=epochs, batch_size=batch_size, shuffle=False
        )
        assert len(losses) == epochs
        got = {k: float(v) for k, v in params.items()}
        assert got == pytest.approx(expected[epochs - 1], rel=1e-10, abs=1e-14)
