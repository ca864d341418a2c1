"""Layer stacks ([model].layers): the generated NumPy module against PyTorch (loss,
gradients, optimizer steps), finite differences on random stacks, numerical stability,
bad input through the command line, and XOR trained to 100%."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_strategies import (
    CUSTOM_LOSSES,
    LOSSES,
    NAMED_ACTIVATIONS,
    LayerDef,
    Stack,
    random_batch,
    random_params,
    relative_difference,
    stacks,
    torch_forward,
    torch_loss_and_grads,
    torch_tensors,
)
from support import import_file, torch_float64

from symbp import cli
from symbp.check import TOLERANCE, check
from symbp.derive import derive
from symbp.errors import SpecError
from symbp.spec import parse_spec
from symbp.targets.numpy.module import render_module

try:
    import torch
except ImportError:  # pragma: no cover - torch is in the test environment
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

TORCH_TOLERANCE = 1e-6
_unique = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("layers")


def build(stack: Stack | str, folder, dtype: str = "float64"):
    """Generate the module of ``stack`` (or of a TOML text) into ``folder``; import it."""
    text = stack if isinstance(stack, str) else stack.toml()
    code = render_module(derive(parse_spec(text, "m.toml")), dtype)
    path = folder / f"layers_{dtype}_{next(_unique)}.py"
    path.write_text(code, encoding="utf-8")
    return import_file(path)


def assert_matches_torch(module, stack, params, X, Y, tolerance=TORCH_TOLERANCE, dtype="float64"):
    value, grads = module.loss_and_grads(params, X, Y)
    expected_value, expected = torch_loss_and_grads(stack, params, X, Y, dtype)
    assert np.isfinite(value) and np.isfinite(expected_value)
    assert relative_difference(value, expected_value) < tolerance, (value, expected_value)
    assert relative_difference(module.loss(params, X, Y), expected_value) < tolerance
    assert sorted(grads) == sorted(expected)
    for name, grad in expected.items():
        assert grads[name].shape == grad.shape, name
        assert np.all(np.isfinite(grads[name])), name
        assert relative_difference(grads[name], grad) < tolerance, (name, grads[name], grad)


# --- 1. every activation x every loss against autograd -----------------------------------

ACTIVATIONS = (*NAMED_ACTIVATIONS, "z*sigmoid(z)", "log(1 + exp(z))")
OPTIONS = {"leaky_relu": (("negative_slope", 0.1),), "elu": (("alpha", 0.7),)}


def activation_stack(activation: str, loss: str) -> Stack:
    """3 -> 5 -> 4 -> out; bce gets a sigmoid output, cross_entropy 3 classes."""
    options = OPTIONS.get(activation, ())
    out = 3 if loss == "cross_entropy" else 2
    final = "sigmoid" if loss == "bce" else None
    return Stack(
        3,
        (
            LayerDef(5, activation, True, options),
            LayerDef(4, activation, True, options),
            LayerDef(out, final),
        ),
        loss,
    )


def structure_stack(loss: str) -> Stack:
    """Layers without bias and an activation-only layer: 3 -> 4 relu (no bias) -> tanh
    (activation only) -> 3 elu -> out (no bias)."""
    out = 3 if loss == "cross_entropy" else 2
    final = "sigmoid" if loss == "bce" else None
    return Stack(
        3,
        (
            LayerDef(4, "relu", bias=False),
            LayerDef(None, "tanh"),
            LayerDef(3, "elu"),
            LayerDef(out, final, bias=False),
        ),
        loss,
    )


@needs_torch
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_and_loss_match_autograd(folder, activation, loss):
    stack = activation_stack(activation, loss)
    module = build(stack, folder)
    assert module.PARAM_SHAPES == stack.param_shapes
    assert module.LAYER_WIDTHS == stack.widths
    rng = np.random.default_rng(sum(map(ord, activation + loss)))
    for _ in range(2):
        params = random_params(stack, rng)
        X, Y = random_batch(stack, rng)
        assert_matches_torch(module, stack, params, X, Y)
        tX, _ = torch_tensors(stack, X, Y)
        tparams = {k: torch.as_tensor(v) for k, v in params.items()}
        expected = torch_forward(stack, tparams, tX).numpy()
        assert relative_difference(module.forward(params, X), expected) < TORCH_TOLERANCE


@needs_torch
@pytest.mark.parametrize("loss", LOSSES)
def test_no_bias_and_activation_only_layers_match_autograd(folder, loss):
    stack = structure_stack(loss)
    module = build(stack, folder)
    assert module.PARAM_SHAPES == {
        "W1": (4, 3),
        "W3": (3, 4),
        "b3": (3,),
        "W4": stack.param_shapes["W4"],
    }
    rng = np.random.default_rng(11)
    for _ in range(2):
        params = random_params(stack, rng)
        X, Y = random_batch(stack, rng)
        assert_matches_torch(module, stack, params, X, Y)


@needs_torch
def test_cross_entropy_takes_labels_or_one_hot_rows(folder):
    stack = activation_stack("tanh", "cross_entropy")
    module = build(stack, folder)
    rng = np.random.default_rng(3)
    params = random_params(stack, rng)
    X, labels = random_batch(stack, rng)
    one_hot = np.eye(stack.outputs)[labels]
    value, grads = module.loss_and_grads(params, X, labels)
    value_1h, grads_1h = module.loss_and_grads(params, X, one_hot)
    assert value == pytest.approx(value_1h, rel=1e-15)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_1h[name], rtol=1e-14, atol=1e-16)
    assert module.accuracy(params, X, labels) == module.accuracy(params, X, one_hot)


@needs_torch
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu", "z/(1 + Abs(z))"])
@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_kinks_at_zero_follow_torch(folder, activation, loss):
    """Z = 0 exactly (a zero input row, no bias) and yhat = y exactly (l1): the
    derivative's value at the kink is torch's (relu'(0) = 0, leaky_relu'(0) = slope,
    elu'(0) = alpha, d|u|/du = 0 at 0)."""
    options = OPTIONS.get(activation, ())
    stack = Stack(2, (LayerDef(3, activation, False, options), LayerDef(2, "tanh")), loss)
    module = build(stack, folder)
    rng = np.random.default_rng(4)
    params = random_params(stack, rng)
    X = np.array([[0.0, 0.0], [0.5, -1.0], [-0.3, 0.8], [0.0, 0.0]])
    Y = rng.normal(size=(4, 2))
    Y[1] = module.forward(params, X[1:2])[0]  # a residual of exactly 0
    assert_matches_torch(module, stack, params, X, Y, tolerance=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_init_params_are_torch_linear_shaped_and_seeded(folder, dtype):
    stack = structure_stack("mse")
    module = build(stack, folder, dtype)
    params = module.init_params(3)
    assert {k: v.shape for k, v in params.items()} == stack.param_shapes
    widths = stack.widths
    for name, value in params.items():
        assert value.dtype == np.dtype(dtype), name
        bound = 1 / np.sqrt(widths[int(name[1:]) - 1])
        assert np.all(np.abs(value) <= bound * (1 + 1e-6)), name
    again, other = module.init_params(3), module.init_params(4)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    assert not all(np.array_equal(params[k], other[k]) for k in params)


def test_bad_arrays_are_value_errors(folder):
    module = build(activation_stack("tanh", "cross_entropy"), folder)
    params = module.init_params(0)
    X = np.zeros((4, 3))
    with pytest.raises(ValueError, match="X must have shape"):
        module.forward(params, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="class labels"):
        module.loss(params, X, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="class labels"):
        module.loss(params, X, np.array([0, 1, -1, 0]))
    with pytest.raises(ValueError, match="Y must have shape"):
        module.loss(params, X, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="samples"):
        module.train(params, X, np.array([0, 1, 2]), epochs=1)


# --- 2. softmax layer + a loss on probabilities = fused cross_entropy ---------------------


def _custom_loss_supported() -> bool:
    text = Stack(2, (LayerDef(3, "softmax"),), "-y*log(yhat)").toml()
    try:
        parse_spec(text, "m.toml")
    except SpecError as err:
        assert err.field == "model.loss"
        return False
    return True


CUSTOM_LOSS_SUPPORTED = _custom_loss_supported()
needs_custom_loss = pytest.mark.skipif(
    not CUSTOM_LOSS_SUPPORTED, reason="custom layer losses not implemented yet"
)


@needs_torch
@needs_custom_loss
def test_softmax_layer_with_log_loss_equals_fused_cross_entropy(folder):
    """softmax(z) then -sum_k y_k log(yhat_k) (a formula, summed over the outputs of a
    sample, averaged over the batch) is cross_entropy on the logits z."""
    hidden = LayerDef(4, "tanh")
    separate = Stack(3, (hidden, LayerDef(3, "softmax")), "-y*log(yhat)")
    fused = Stack(3, (hidden, LayerDef(3)), "cross_entropy")
    module, fused_module = build(separate, folder), build(fused, folder)
    rng = np.random.default_rng(5)
    for _ in range(2):
        params = random_params(fused, rng, scale=2.0)
        X, labels = random_batch(fused, rng)
        one_hot = np.eye(3)[labels]
        value, grads = module.loss_and_grads(params, X, one_hot)
        fused_value, fused_grads = fused_module.loss_and_grads(params, X, labels)
        torch_value, torch_grads = torch_loss_and_grads(fused, params, X, labels)
        assert value == pytest.approx(fused_value, rel=1e-12)
        assert relative_difference(value, torch_value) < 1e-12
        for name in fused_grads:
            np.testing.assert_allclose(grads[name], fused_grads[name], rtol=1e-9, atol=1e-13)
            assert relative_difference(grads[name], torch_grads[name]) < 1e-12, name


@needs_torch
@needs_custom_loss
@pytest.mark.parametrize("formula", CUSTOM_LOSSES)
def test_custom_loss_matches_autograd(folder, formula):
    stack = Stack(3, (LayerDef(4, "gelu"), LayerDef(None, "softmax"), LayerDef(2, "tanh")), formula)
    module = build(stack, folder)
    rng = np.random.default_rng(len(formula))
    for _ in range(2):
        params = random_params(stack, rng)
        X, Y = random_batch(stack, rng)
        assert_matches_torch(module, stack, params, X, Y)


@needs_custom_loss
def test_custom_loss_sums_the_outputs_of_a_sample(folder):
    """(yhat - y)**2 as a formula is the sum over the outputs: mse times the width."""
    layers = (LayerDef(4, "tanh"), LayerDef(3))
    rng = np.random.default_rng(2)
    stack = Stack(2, layers, "mse")
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng)
    value, grads = build(Stack(2, layers, "(yhat - y)**2"), folder).loss_and_grads(params, X, Y)
    expected_value, expected = build(stack, folder).loss_and_grads(params, X, Y)
    assert value == pytest.approx(3 * expected_value, rel=1e-13)
    for name in expected:
        np.testing.assert_allclose(grads[name], 3 * expected[name], rtol=1e-12, atol=1e-15)


# --- 3. numerical stability ---------------------------------------------------------------

LOGITS = 1e4


def large_logit_case(loss: str):
    """2 -> relu(identity weights) -> logits of +-1e4 (and 0.5e4, 0)."""
    if loss == "bce_with_logits":
        stack = Stack(2, (LayerDef(2, "relu"), LayerDef(1)), loss)
        W2 = np.array([[1.0, -1.0]])
        Y = np.array([[0.0], [1.0], [1.0], [0.0]])
    else:
        stack = Stack(2, (LayerDef(2, "relu"), LayerDef(3)), loss)
        W2 = np.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]])
        Y = np.array([1, 0, 2, 0])
    params = {"W1": np.eye(2), "b1": np.zeros(2), "W2": W2, "b2": np.zeros(len(W2))}
    X = LOGITS * np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return stack, params, X, Y


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", ["bce_with_logits", "cross_entropy"])
def test_large_logits_give_finite_loss_and_gradients(folder, loss, dtype):
    stack, params, X, Y = large_logit_case(loss)
    module = build(stack, folder, dtype)
    params = {k: v.astype(dtype) for k, v in params.items()}
    X = X.astype(dtype)
    logits = module.forward(params, X)
    assert np.abs(logits).max() == LOGITS
    value, grads = module.loss_and_grads(params, X, Y)
    assert np.isfinite(value) and value > 1e3  # some samples are confidently wrong
    for name, grad in grads.items():
        assert grad.dtype == np.dtype(dtype), name
        assert np.all(np.isfinite(grad)), name
    tolerance = 1e-12 if dtype == "float64" else 1e-6
    assert_matches_torch(module, stack, params, X, Y, tolerance, dtype)


@needs_torch
def test_bce_on_saturated_sigmoid_gives_finite_gradients(folder):
    stack = Stack(1, (LayerDef(1, "sigmoid"),), "bce")
    module = build(stack, folder)
    params = {"W1": np.array([[1.0]]), "b1": np.array([0.0])}
    X = np.array([[40.0], [1.0]])  # sigmoid(40) == 1.0 in float64
    Y = np.array([[0.0], [0.0]])
    expected_value, expected = torch_loss_and_grads(stack, params, X, Y)
    assert all(np.all(np.isfinite(g)) for g in expected.values())  # torch: finite
    with np.errstate(all="ignore"):
        value, grads = module.loss_and_grads(params, X, Y)
    assert relative_difference(value, expected_value) < TORCH_TOLERANCE  # log clamped at -100
    for name, grad in grads.items():
        assert np.all(np.isfinite(grad)), (name, grad)


# --- 4. optimizers against torch.optim ----------------------------------------------------

OPTIMIZERS = {
    "sgd": ((), lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "sgd_nesterov": (
        (("momentum", 0.9), ("nesterov", True)),
        lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    ),
    "momentum": ((), lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "adagrad": ((), lambda p, lr: torch.optim.Adagrad(p, lr=lr)),
    "rmsprop": (
        (("centered", True), ("momentum", 0.9)),
        lambda p, lr: torch.optim.RMSprop(p, lr=lr, centered=True, momentum=0.9),
    ),
    "adam": (
        (("weight_decay", 0.01),),
        lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=0.01),
    ),
    "adam_amsgrad_maximize": (
        (("amsgrad", True), ("maximize", True)),
        lambda p, lr: torch.optim.Adam(p, lr=lr, amsgrad=True, maximize=True),
    ),
    "adamw": (
        (("amsgrad", True),),
        lambda p, lr: torch.optim.AdamW(p, lr=lr, amsgrad=True),
    ),
    "adamax": (
        (("weight_decay", 0.01),),
        lambda p, lr: torch.optim.Adamax(p, lr=lr, weight_decay=0.01),
    ),
    "adadelta": (
        (("rho", 0.8),),
        lambda p, lr: torch.optim.Adadelta(p, lr=lr, rho=0.8),
    ),
    "radam": (
        (("betas", (0.8, 0.9)),),
        lambda p, lr: torch.optim.RAdam(p, lr=lr, betas=(0.8, 0.9)),
    ),
    "nadam": (
        (("momentum_decay", 0.01),),
        lambda p, lr: torch.optim.NAdam(p, lr=lr, momentum_decay=0.01),
    ),
}


@needs_torch
@pytest.mark.parametrize("floats", [False, True], ids=["arrays", "floats"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_optimizer_steps_match_torch_optim(folder, case, steps, floats):
    """Both training paths: the array step and, this network being small, the float step."""
    options, make = OPTIMIZERS[case]
    name = case.split("_")[0]
    train = (("optimizer", name), *options)
    stack = Stack(3, (LayerDef(4, "tanh"), LayerDef(None, "sigmoid"), LayerDef(2)), "mse", train)
    module = build(stack, folder)
    assert module.OPTIMIZER == name
    assert module.FLOAT_BATCH_MAX >= 5  # what train() picks here by default: floats
    rng = np.random.default_rng(17)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng, n=5)
    lr = 0.05
    before = {k: v.copy() for k, v in params.items()}
    trained, losses = module.train(
        params, X, Y, epochs=steps, batch_size=len(X), lr=lr, shuffle=False, floats=floats
    )
    for k in params:  # the inputs are not modified
        np.testing.assert_array_equal(params[k], before[k])

    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = make(list(leaves.values()), lr)
    tX, tY = torch_tensors(stack, X, Y)
    expected_losses = []
    with torch_float64():
        for _ in range(steps):
            optimizer.zero_grad()
            value = torch.nn.functional.mse_loss(torch_forward(stack, leaves, tX), tY)
            value.backward()
            optimizer.step()
            expected_losses.append(value.item())
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10, atol=1e-12)
    assert sorted(trained) == sorted(leaves)
    for k, leaf in leaves.items():
        np.testing.assert_allclose(
            trained[k], leaf.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=k
        )
        assert not np.array_equal(trained[k], params[k]), k


@needs_torch
@pytest.mark.parametrize("floats", [False, True], ids=["arrays", "floats"])
@pytest.mark.parametrize(
    ("clip", "bound", "optimizer"),
    [("clip_grad_norm", 0.2, "adam"), ("clip_grad_value", 0.05, "rmsprop")],
)
def test_gradient_clipping_matches_torch_nn_utils(folder, clip, bound, optimizer, floats):
    """clip_grad_norm_ (over all parameters together) and clip_grad_value_ between
    backward and step, 3 epochs of batches of 2 over 5 samples; the bound is tight
    enough that clipping changes the run."""
    train = (("optimizer", optimizer), (clip, bound))
    stack = Stack(3, (LayerDef(4, "tanh"), LayerDef(2)), "mse", train)
    module = build(stack, folder)
    rng = np.random.default_rng(19)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng, n=5)
    lr = 0.05
    trained, losses = module.train(
        params, X, Y, epochs=3, batch_size=2, lr=lr, shuffle=False, floats=floats
    )
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.RMSprop
    opt = make(list(leaves.values()), lr=lr)
    apply = getattr(torch.nn.utils, f"{clip}_")
    tX, tY = torch_tensors(stack, X, Y)
    expected_losses, clipped = [], 0
    for _ in range(3):
        total = 0.0
        for start in range(0, 5, 2):
            opt.zero_grad()
            rows = slice(start, start + 2)
            value = torch.nn.functional.mse_loss(torch_forward(stack, leaves, tX[rows]), tY[rows])
            value.backward()
            norm = torch.sqrt(sum((leaf.grad**2).sum() for leaf in leaves.values()))
            largest = max(leaf.grad.abs().max() for leaf in leaves.values())
            clipped += bool(norm > bound if clip == "clip_grad_norm" else largest > bound)
            apply(list(leaves.values()), bound)
            opt.step()
            total += value.item() * len(X[rows])
        expected_losses.append(total / 5)
    assert clipped > 0
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10)
    for k, leaf in leaves.items():
        np.testing.assert_allclose(trained[k], leaf.detach().numpy(), rtol=1e-9, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_minibatches_match_torch_optim(folder, dtype):
    """Batches of 2 over 5 samples (the last one short), 2 epochs, SGD with momentum and
    cross_entropy on integer labels; epoch losses are the sample-weighted batch means."""
    train = (("optimizer", "sgd"), ("momentum", 0.5), ("weight_decay", 0.1))
    stack = Stack(3, (LayerDef(4, "relu"), LayerDef(3)), "cross_entropy", train)
    module = build(stack, folder, dtype)
    rng = np.random.default_rng(23)
    params = {k: v.astype(dtype) for k, v in random_params(stack, rng).items()}
    X, Y = random_batch(stack, rng, n=5)
    trained, losses = module.train(params, X, Y, epochs=2, batch_size=2, lr=0.1, shuffle=False)
    assert all(v.dtype == np.dtype(dtype) for v in trained.values())
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = torch.optim.SGD(list(leaves.values()), lr=0.1, momentum=0.5, weight_decay=0.1)
    tX, tY = torch_tensors(stack, X, Y, dtype)
    expected_losses = []
    for _ in range(2):
        total = 0.0
        for start in range(0, 5, 2):
            batch = slice(start, start + 2)
            optimizer.zero_grad()
            value = torch.nn.functional.cross_entropy(
                torch_forward(stack, leaves, tX[batch]), tY[batch]
            )
            value.backward()
            optimizer.step()
            total += value.item() * len(tY[batch])
        expected_losses.append(total / 5)
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-5, 1e-6)
    np.testing.assert_allclose(losses, expected_losses, rtol=rtol, atol=atol)
    for k, leaf in leaves.items():
        np.testing.assert_allclose(trained[k], leaf.detach().numpy(), rtol=rtol, atol=atol)


def test_shuffled_training_is_seeded(folder):
    stack = activation_stack("tanh", "mse")
    module = build(stack, folder)
    rng = np.random.default_rng(1)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng, n=7)
    kwargs = {"epochs": 2, "batch_size": 3, "lr": 0.05, "shuffle": True}
    first, losses = module.train(params, X, Y, seed=5, **kwargs)
    second, losses_again = module.train(params, X, Y, seed=5, **kwargs)
    third, _ = module.train(params, X, Y, seed=6, **kwargs)
    assert losses == losses_again
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not all(np.array_equal(first[k], third[k]) for k in first)


# --- 5. random stacks: finite differences and autograd ------------------------------------


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    stack=stacks(losses=(*LOSSES, *CUSTOM_LOSSES) if CUSTOM_LOSS_SUPPORTED else LOSSES),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_stack_gradients(folder, stack, seed):
    spec = parse_spec(stack.toml(), "random_stack.toml")
    derivation = derive(spec)
    result = check(derivation, points=3, seed=seed % 1000)
    assert result.points > 0
    worst = max(result.worst.values())
    assert worst <= TOLERANCE, result.worst
    if torch is None:
        return
    module = build(stack, folder)
    rng = np.random.default_rng(seed)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng)
    assert_matches_torch(module, stack, params, X, Y, tolerance=1e-8)


# --- 6. bad input through the command line ------------------------------------------------

XOR = Stack(2, (LayerDef(2, "relu"), LayerDef(1)), "bce_with_logits")
XOR_X = [[0, 0], [0, 1], [1, 0], [1, 1]]
XOR_Y = [[0], [1], [1], [0]]


def spec_text(layers: str, loss: str, X, Y, input_width: int = 2) -> str:
    return (
        'name = "m"\n[model]\n'
        f'input = {input_width}\nlayers = [{layers}]\nloss = "{loss}"\n'
        f"[data]\nX = {X}\nY = {Y}\n"
    )


HIDDEN = '{ dense = 2, activation = "relu" }'


def bad(case: str, text: str, field: str, marks=()):
    return pytest.param(text, field, id=case, marks=marks)


BAD_INPUT = [
    bad(
        "x_row_width",
        spec_text(f"{HIDDEN}, {{ dense = 1 }}", "mse", [[0, 0], [0, 1, 2], [1, 0]], [0, 1, 1]),
        "data.X[1]",
    ),
    bad(
        "x_value",
        spec_text(f"{HIDDEN}, {{ dense = 1 }}", "mse", [[0, 0], [0, "a"]], [0, 1]),
        "data.X[1][1]",
    ),
    bad(
        "y_row_width",
        spec_text(f"{HIDDEN}, {{ dense = 2 }}", "mse", [[0, 0], [0, 1]], [[0, 1], [1, 0, 1]]),
        "data.Y[1]",
    ),
    bad(
        "one_hot_row_width",
        spec_text(
            f"{HIDDEN}, {{ dense = 3 }}", "cross_entropy", [[0, 0], [0, 1]], [[1, 0, 0], [0, 1]]
        ),
        "data.Y[1]",
    ),
    bad(
        "one_hot_value",
        spec_text(
            f"{HIDDEN}, {{ dense = 3 }}",
            "cross_entropy",
            [[0, 0], [0, 1]],
            [[1, 0, 0], [0, 1, "a"]],
        ),
        "data.Y[1][2]",
    ),
    bad(
        "label_out_of_range",
        spec_text(
            f"{HIDDEN}, {{ dense = 3 }}", "cross_entropy", [[0, 0], [0, 1], [1, 1]], [0, 2, 3]
        ),
        "data.Y[2]",
    ),
    bad(
        "negative_label",
        spec_text(f"{HIDDEN}, {{ dense = 3 }}", "cross_entropy", [[0, 0], [0, 1]], [0, -1]),
        "data.Y[1]",
    ),
    bad(
        "float_label",
        spec_text(f"{HIDDEN}, {{ dense = 3 }}", "cross_entropy", [[0, 0], [0, 1]], [0, 1.5]),
        "data.Y[1]",
    ),
    bad(
        "cross_entropy_one_output",
        spec_text(f"{HIDDEN}, {{ dense = 1 }}", "cross_entropy", [[0, 0], [0, 1]], [0, 0]),
        "model.loss",
    ),
    bad("dense_zero", spec_text("{ dense = 0 }", "mse", [[0, 0]], [[0]]), "model.layers[1].dense"),
    bad(
        "dense_float",
        spec_text(f"{HIDDEN}, {{ dense = 1.5 }}", "mse", [[0, 0]], [[0]]),
        "model.layers[2].dense",
    ),
    bad(
        "unknown_activation",
        spec_text(f'{HIDDEN}, {{ dense = 1, activation = "swish" }}', "mse", [[0, 0]], [[0]]),
        "model.layers[2].activation",
    ),
    bad(
        "activation_without_z",
        spec_text('{ dense = 1, activation = "2*pi" }', "mse", [[0, 0]], [[0]]),
        "model.layers[1].activation",
    ),
    bad(
        "unknown_layer_field",
        spec_text('{ dense = 2, activation = "relu", dropout = 0.5 }', "mse", [[0, 0]], [[0, 0]]),
        "model.layers[1].dropout",
    ),
    bad(
        "bias_without_dense",
        spec_text('{ activation = "tanh", bias = false }', "mse", [[0, 0]], [[0, 0]]),
        "model.layers[1].bias",
    ),
    bad("no_layers", spec_text("", "mse", [[0, 0]], [[0, 0]]), "model.layers"),
    bad(
        "rows_differ",
        spec_text(f"{HIDDEN}, {{ dense = 1 }}", "mse", [[0, 0], [0, 1]], [[0]]),
        "data.Y",
    ),
    bad(
        "unknown_loss",
        spec_text(f"{HIDDEN}, {{ dense = 1 }}", "hinge", [[0, 0]], [[0]]),
        "model.loss",
    ),
]


@pytest.mark.parametrize(("text", "field"), BAD_INPUT)
def test_bad_layer_spec_is_one_line_and_status_2(tmp_path, capsys, text, field):
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out.py"
    status = cli.main(["generate", str(path), "-o", str(out)])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"m.toml: {field}: "), lines[0]
    assert captured.out == ""
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [path]


def xor_spec(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(XOR.toml("xor", data=(XOR_X, XOR_Y)), encoding="utf-8")
    return path


def test_generate_writes_a_layer_module(tmp_path, capsys):
    path = xor_spec(tmp_path)
    out = tmp_path / "xor_module.py"
    assert cli.main(["generate", str(path), "-o", str(out), "--dtype", "float64"]) == 0
    assert capsys.readouterr().err == ""
    module = import_file(out)
    assert module.LAYER_WIDTHS == [2, 2, 1]
    assert module.DTYPE is np.float64
    params = module.init_params(0)
    assert {k: v.shape for k, v in params.items()} == XOR.param_shapes
    assert np.isfinite(module.loss(params, XOR_X, XOR_Y))


def test_derive_a_layer_stack(tmp_path, capsys):
    assert cli.main(["derive", str(xor_spec(tmp_path))]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "xor" in captured.out and "W^(l)" in captured.out


def test_derive_stats_of_a_layer_stack(tmp_path, capsys):
    assert cli.main(["derive", str(xor_spec(tmp_path)), "--stats"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    # the 2-2-1 network: (2 + 1) x 2 + (2 + 1) x 1 = 9 parameters
    assert "9" in captured.out and "parameters" in captured.out.lower()


def test_derive_element_form_of_a_layer_stack(tmp_path, capsys):
    assert cli.main(["derive", str(xor_spec(tmp_path)), "--element"]) == 0
    with_index = capsys.readouterr().out
    assert cli.main(["derive", str(xor_spec(tmp_path))]) == 0
    without = capsys.readouterr().out
    assert "w_ij" in with_index and "w_ij" not in without


def test_generated_tests_of_a_layer_module_pass(tmp_path, capsys):
    out = tmp_path / "xor_module.py"
    args = ["generate", str(xor_spec(tmp_path)), "-o", str(out), "--tests", "--dtype", "float64"]
    assert cli.main(args) == 0
    capsys.readouterr()
    tests = import_file(tmp_path / "test_xor_module.py")
    tests.test_gradients_match_central_differences()
    tests.test_training_lowers_the_loss()


# --- 7. XOR -------------------------------------------------------------------------------


def test_xor_trains_to_full_accuracy(folder):
    train = (
        ("optimizer", "sgd"),
        ("lr", 0.1),
        ("epochs", 10000),
        ("batch_size", 4),
        ("seed", 0),
    )
    stack = Stack(XOR.input, XOR.layers, XOR.loss, train)
    module = build(stack.toml("xor", data=(XOR_X, XOR_Y)), folder)
    X, Y = np.array(module.DATA["X"]), np.array(module.DATA["Y"])
    np.testing.assert_array_equal(X, XOR_X)
    np.testing.assert_array_equal(Y, XOR_Y)
    defaults = module.TRAIN_DEFAULTS
    params = module.init_params(defaults["seed"])
    assert module.accuracy(params, X, Y) < 1.0
    trained, losses = module.train(params, X, Y, epochs=10000, batch_size=4, lr=0.1, shuffle=False)
    assert module.accuracy(trained, X, Y) == 1.0
    assert losses[-1] < 0.01 < losses[0]
    # the defaults are the spec's: the same run without arguments
    again, _ = module.train(params, X, Y)
    for k in trained:
        np.testing.assert_array_equal(again[k], trained[k])


# --- formula losses over the output vector ------------------------------------------------

VECTOR_LOSSES = [
    # (the spec's loss, the same loss of torch's (yhat, y) rows, averaged over the batch)
    ("-sum(y*log(yhat))", lambda p, t: -(t * torch.log(p)).sum(dim=1).mean()),
    ("mean((yhat - y)**2)", lambda p, t: torch.nn.functional.mse_loss(p, t)),
    (
        "(yhat1 - y1)**2 + (yhat2 - y2)**2 + (yhat3 - y3)**2",
        lambda p, t: ((p - t) ** 2).sum(dim=1).mean(),
    ),
    ("0.5*sum(abs(yhat - y)) + 1", lambda p, t: 0.5 * (p - t).abs().sum(dim=1).mean() + 1),
]


@needs_torch
@pytest.mark.parametrize(("loss", "reference"), VECTOR_LOSSES, ids=[v[0] for v in VECTOR_LOSSES])
def test_formula_loss_over_the_output_vector_matches_torch(folder, loss, reference):
    """sum and mean over the outputs, or the outputs by component: loss, gradients and
    3 epochs of training against torch (softmax outputs, target rows of probabilities)."""
    text = (
        'name = "vector_loss"\n[model]\ninput = 4\nlayers = [{ dense = 5, activation = "tanh" },'
        f' {{ dense = 3, activation = "softmax" }}]\nloss = "{loss}"\n[train]\noptimizer = "adam"\n'
    )
    module = build(text, folder)
    rng = np.random.default_rng(12)
    params = module.init_params(4)
    X = rng.normal(size=(6, 4))
    Y = rng.dirichlet(np.ones(3), size=6)

    def torch_loss(leaves, x, t):
        h = torch.tanh(x @ leaves["W1"].T + leaves["b1"])
        return reference(torch.softmax(h @ leaves["W2"].T + leaves["b2"], dim=1), t)

    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    value = torch_loss(leaves, torch.tensor(X), torch.tensor(Y))
    value.backward()
    got, grads = module.loss_and_grads(params, X, Y)
    assert got == pytest.approx(value.item(), rel=1e-12)
    for k, leaf in leaves.items():
        np.testing.assert_allclose(grads[k], leaf.grad.numpy(), rtol=1e-10, atol=1e-13)
    trained, losses = module.train(params, X, Y, epochs=3, batch_size=4, lr=0.01, shuffle=False)
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.Adam(list(leaves.values()), lr=0.01)
    expected = []
    for _ in range(3):
        total = 0.0
        for start in range(0, 6, 4):
            x, t = torch.tensor(X[start : start + 4]), torch.tensor(Y[start : start + 4])
            opt.zero_grad()
            step_loss = torch_loss(leaves, x, t)
            step_loss.backward()
            opt.step()
            total += step_loss.item() * len(x)
        expected.append(total / 6)
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    for k, leaf in leaves.items():
        np.testing.assert_allclose(trained[k], leaf.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("loss", "problem"),
    [
        ("(yhat1 - y1)**2 + 2*(yhat2 - y2)**2", "output 2's part, 2*(-y + yhat)**2, is not"),
        ("sum(yhat)*sum(y)", "mixes outputs [1, 2]"),
        ("sum(yhat1)", "sum and mean take yhat and y, not their components"),
        ("yhat + sum(y)", "uses yhat or y outside sum and mean beside their components"),
        ("(yhat3 - y3)**2", "unknown name 'yhat3'"),
    ],
)
def test_formula_losses_that_are_not_per_output_are_one_line(tmp_path, capsys, loss, problem):
    from symbp.cli import main

    path = tmp_path / "m.toml"
    path.write_text(
        f'name = "m"\n[model]\ninput = 2\nlayers = [{{ dense = 2 }}]\nloss = "{loss}"\n',
        encoding="utf-8",
    )
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("m.toml: model.loss: ") and problem in err


def test_a_formula_losss_document_carries_one_over_n():
    """A formula sums over the outputs, so dL/dA(K) carries 1/N (torch's named losses
    average over all N d_K elements and carry 1/(N d_K))."""
    from symbp.documents import render_document

    text = (
        'name = "vector_loss"\n[model]\ninput = 4\nlayers = [{ dense = 5, activation = "tanh" },'
        ' { dense = 3, activation = "softmax" }]\nloss = "-sum(y*log(yhat))"\n'
    )
    md = render_document(derive(parse_spec(text, "v.toml")), "markdown")
    assert "carries the $\\frac{1}{N}$ of the mean" in md
    assert "&= \\frac{1}{N} \\frac{\\partial}{\\partial A^{(2)}}" in md
    assert "\\frac{1}{3 N}" not in md
    mse = render_document(
        derive(parse_spec(text.replace('"-sum(y*log(yhat))"', '"mse"'), "v.toml")), "markdown"
    )
    assert "carries the $\\frac{1}{N d_{K}}$ of the mean" in mse
