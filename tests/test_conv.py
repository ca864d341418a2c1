"""Convolutional layer stacks (conv2d, maxpool2d, avgpool2d, flatten): the generated
NumPy module against central finite differences (fixed and random stacks) and PyTorch
autograd, max-pooling's tie rule, bad input through the command line, and the digits
CNN's held-out accuracy.

The references are independent of symbp: finite differences of the module's own loss,
and torch.nn.functional networks written here from the same layer descriptions."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from support import import_file

from symbp import cli
from symbp.derive import derive
from symbp.spec import parse_spec
from symbp.targets.numpy.module import render_module

try:
    import torch
except ImportError:  # pragma: no cover - torch is in the test environment
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")
_unique = itertools.count()


@dataclass(frozen=True)
class Net:
    """A convolutional stack: input (C, H, W), layers as (kind, settings) and a loss."""

    input: tuple[int, int, int]
    layers: tuple[tuple[str, tuple], ...]
    loss: str = "cross_entropy"

    def toml(self) -> str:
        entries = []
        for kind, settings in self.layers:
            options = dict(settings)
            value = options.pop("value")
            parts = [f"{kind} = {_toml(value)}"]
            parts += [f"{key} = {_toml(v)}" for key, v in options.items()]
            entries.append("{ " + ", ".join(parts) + " }")
        return (
            f'name = "cnn"\n[model]\ninput = {list(self.input)}\nlayers = [\n  '
            + ",\n  ".join(entries)
            + f'\n]\nloss = "{self.loss}"\n'
        )

    @property
    def outputs(self) -> int:
        return dict(self.layers[-1][1])["value"]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)


def build(net: Net, folder, dtype: str = "float64"):
    code = render_module(derive(parse_spec(net.toml(), "cnn.toml")), dtype)
    path = folder / f"cnn_{dtype}_{next(_unique)}.py"
    path.write_text(code, encoding="utf-8")
    return import_file(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("conv")


def batch(net: Net, n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, *net.input))
    if net.loss == "cross_entropy":
        return X, rng.integers(0, net.outputs, n)
    return X, rng.standard_normal((n, net.outputs))


def finite_difference_error(module, params, X, Y, h=1e-6) -> float:
    """max over parameters of |analytic - central difference| / max(1, |central|)."""
    _, grads = module.loss_and_grads(params, X, Y)
    worst = 0.0
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[name][index] = value[index] + h
            up = module.loss(shifted, X, Y)
            shifted[name][index] = value[index] - h
            down = module.loss(shifted, X, Y)
            numeric[index] = (up - down) / (2 * h)
        scale = max(1.0, float(np.abs(numeric).max()))
        worst = max(worst, float(np.abs(grads[name] - numeric).max()) / scale)
    return worst


def conv(channels, kernel, stride=1, padding=0, activation=None, bias=True):
    settings = {"value": channels, "kernel": kernel, "stride": stride, "padding": padding}
    if activation:
        settings["activation"] = activation
    if not bias:
        settings["bias"] = False
    return ("conv2d", tuple(settings.items()))


def pool(kind, kernel, stride=None):
    settings = {"value": kernel}
    if stride is not None:
        settings["stride"] = stride
    return (kind, tuple(settings.items()))


FLATTEN = ("flatten", (("value", True),))


def dense(width, activation=None):
    settings = {"value": width}
    if activation:
        settings["activation"] = activation
    return ("dense", tuple(settings.items()))


# stride, padding, non-square kernels, overlapping and floor-dropping pooling windows
FIXED = {
    "stride_padding": Net(
        (2, 7, 6),
        (
            conv(3, (3, 2), stride=(2, 1), padding=(1, 0), activation="tanh"),
            pool("maxpool2d", 2, 1),
            FLATTEN,
            dense(3),
        ),
    ),
    "two_convs_avgpool": Net(
        (1, 9, 9),
        (
            conv(2, 3, activation="sigmoid"),
            pool("avgpool2d", (2, 3), (2, 2)),
            conv(3, (2, 1), padding=1, bias=False),
            FLATTEN,
            dense(2, "tanh"),
            dense(3),
        ),
    ),
    "maxpool_floor_then_conv": Net(
        (3, 7, 7),
        (
            conv(4, 2, activation="elu"),
            pool("maxpool2d", 2),
            conv(2, 2, stride=2),
            FLATTEN,
            dense(2),
        ),
        "mse",
    ),
}


@pytest.mark.parametrize("case", list(FIXED))
def test_gradients_match_finite_differences(folder, case):
    net = FIXED[case]
    module = build(net, folder)
    X, Y = batch(net, 3, seed=1)
    params = module.init_params(2)
    assert finite_difference_error(module, params, X, Y) < 1e-6


# --- random stacks ------------------------------------------------------------------------


@st.composite
def cnn_stacks(draw):
    c = draw(st.integers(1, 2))
    h = draw(st.integers(4, 8))
    w = draw(st.integers(4, 8))
    layers = []
    shape = (c, h, w)
    for _ in range(draw(st.integers(1, 2))):
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        ph, pw = draw(st.integers(0, min(1, kh - 1))), draw(st.integers(0, min(1, kw - 1)))
        ho, wo = (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1
        if ho < 1 or wo < 1:
            continue
        out = draw(st.integers(1, 3))
        activation = draw(st.sampled_from([None, "tanh", "softplus", "sigmoid"]))
        layers.append(conv(out, (kh, kw), (sh, sw), (ph, pw), activation, draw(st.booleans())))
        shape = (out, ho, wo)
        if shape[1] >= 2 and shape[2] >= 2 and draw(st.booleans()):
            kind = draw(st.sampled_from(["maxpool2d", "avgpool2d"]))
            k = draw(st.integers(1, 2))
            s = draw(st.integers(1, 2))
            layers.append(pool(kind, k, s))
            shape = (out, (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
    layers += [FLATTEN, dense(draw(st.integers(2, 3)))]
    return Net((c, h, w), tuple(layers), draw(st.sampled_from(["cross_entropy", "mse"])))


@hypothesis_settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(net=cnn_stacks(), seed=st.integers(0, 2**16))
def test_random_cnn_gradients_match_finite_differences(folder, net, seed):
    module = build(net, folder)
    X, Y = batch(net, 2, seed)
    params = module.init_params(seed)
    assert finite_difference_error(module, params, X, Y) < 1e-6, net.toml()


# --- PyTorch autograd -------------------------------------------------------------------


def torch_loss_and_grads(net: Net, params, X, Y):
    """The same network in torch.nn.functional (NCHW, torch's layouts), float64."""
    F = torch.nn.functional
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    a = torch.tensor(X)
    for index, (kind, settings) in enumerate(net.layers, 1):
        s = dict(settings)
        if kind == "conv2d":
            a = F.conv2d(
                a, t[f"W{index}"], t.get(f"b{index}"), stride=s["stride"], padding=s["padding"]
            )
        elif kind == "dense":
            a = F.linear(a, t[f"W{index}"], t.get(f"b{index}"))
        elif kind == "maxpool2d":
            a = F.max_pool2d(a, s["value"], s.get("stride", s["value"]))
        elif kind == "avgpool2d":
            a = F.avg_pool2d(a, s["value"], s.get("stride", s["value"]))
        elif kind == "flatten":
            a = a.flatten(1)
        activation = s.get("activation")
        if activation == "relu":
            a = F.relu(a)
        elif activation == "tanh":
            a = torch.tanh(a)
        elif activation == "sigmoid":
            a = torch.sigmoid(a)
        elif activation == "elu":
            a = F.elu(a)
        elif activation == "softplus":
            a = F.softplus(a)
        elif activation is not None:
            raise ValueError(activation)
    if net.loss == "cross_entropy":
        loss = F.cross_entropy(a, torch.tensor(Y))
    else:
        loss = F.mse_loss(a, torch.tensor(Y))
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in t.items()}


TORCH_NETS = {
    **FIXED,
    "course_shape_small": Net(
        (1, 12, 12),
        (conv(4, 3, padding=1, activation="relu"), pool("maxpool2d", 2), FLATTEN, dense(10)),
    ),
    "relu_maxpool_stride3_overlap": Net(
        (2, 11, 10),
        (
            conv(3, (3, 2), stride=1, padding=(0, 1), activation="relu"),
            pool("maxpool2d", 3, 2),
            conv(2, 2, activation="relu"),
            pool("avgpool2d", 2, 1),
            FLATTEN,
            dense(4, "relu"),
            dense(3),
        ),
    ),
}


@needs_torch
@pytest.mark.parametrize("case", list(TORCH_NETS))
def test_loss_and_gradients_equal_torch_autograd(folder, case):
    net = TORCH_NETS[case]
    module = build(net, folder)
    X, Y = batch(net, 5, seed=3)
    params = module.init_params(4)
    value, grads = module.loss_and_grads(params, X, Y)
    expected_value, expected = torch_loss_and_grads(net, params, X, Y)
    assert abs(value - expected_value) / abs(expected_value) < 1e-6
    assert sorted(grads) == sorted(expected)
    for name, grad in expected.items():
        assert grads[name].shape == grad.shape
        scale = float(np.abs(grad).max())
        assert scale > 0, name  # a gradient that vanished would compare nothing
        assert float(np.abs(grads[name] - grad).max()) / scale < 1e-6, name


@needs_torch
def test_parameters_have_torch_layouts_and_init_bounds(folder):
    net = TORCH_NETS["relu_maxpool_stride3_overlap"]
    module = build(net, folder, "float32")
    params = module.init_params(0)
    assert params["W1"].shape == (3, 2, 3, 2) and params["b1"].shape == (3,)
    assert params["W3"].shape == (2, 3, 2, 2)
    reference = torch.nn.Conv2d(2, 3, (3, 2))
    assert params["W1"].shape == tuple(reference.weight.shape)
    bound = 1 / np.sqrt(2 * 3 * 2)  # torch.nn.Conv2d: uniform in +-1/sqrt(C kh kw)
    assert np.abs(params["W1"]).max() <= bound and np.abs(params["W1"]).max() > 0.8 * bound
    assert params["W1"].dtype == np.float32


@needs_torch
def test_training_steps_match_torch_adam(folder):
    text = FIXED["stride_padding"].toml() + (
        '[train]\noptimizer = "adam"\nlr = 0.01\nepochs = 1\nbatch_size = 4\nshuffle = false\n'
    )
    path = folder / f"cnn_adam_{next(_unique)}.py"
    path.write_text(render_module(derive(parse_spec(text, "cnn.toml")), "float64"))
    module = import_file(path)
    net = FIXED["stride_padding"]
    X, Y = batch(net, 8, seed=5)
    params = module.init_params(1)
    trained, _ = module.train(params, X, Y)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = torch.optim.Adam(list(t.values()), lr=0.01)
    F = torch.nn.functional
    for start in (0, 4):
        x, y = torch.tensor(X[start : start + 4]), torch.tensor(Y[start : start + 4])
        a = F.conv2d(x, t["W1"], t["b1"], stride=(2, 1), padding=(1, 0))
        a = F.max_pool2d(torch.tanh(a), 2, 1).flatten(1)
        loss = F.cross_entropy(F.linear(a, t["W4"], t["b4"]), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in t.items():
        np.testing.assert_allclose(trained[name], value.detach().numpy(), rtol=1e-7, atol=1e-9)


# --- max-pooling ties -------------------------------------------------------------------


def test_maxpool_sends_the_gradient_to_the_first_maximum(folder):
    module = build(FIXED["maxpool_floor_then_conv"], folder)
    a = np.array([[5.0, 5.0, 1.0], [5.0, 2.0, 7.0], [7.0, 7.0, 0.0]])[None, :, :, None]
    p = module._maxpool2d(a, kernel=(2, 2), stride=(1, 1))
    assert p[0, :, :, 0].tolist() == [[5.0, 7.0], [7.0, 7.0]]
    g = np.array([[1.0, 10.0], [100.0, 1000.0]])[None, :, :, None]
    d = module._maxpool2d_vjp(a, p, g, kernel=(2, 2), stride=(1, 1))
    # window (0,0): first 5 at (0,0); (0,1): 7 at (1,2); (1,0): first 7 at (2,0);
    # (1,1): 7 at (1,2) before the 7 at (2,1)
    assert d[0, :, :, 0].tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1010.0], [100.0, 0.0, 0.0]]


@needs_torch
def test_maxpool_ties_follow_torch(folder):
    module = build(FIXED["maxpool_floor_then_conv"], folder)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, size=(4, 3, 9, 8)).astype(np.float64)  # many ties
    for kernel, stride in (((2, 2), (2, 2)), ((3, 2), (1, 2)), ((2, 3), (2, 1))):
        x = torch.tensor(a, requires_grad=True)
        out = torch.nn.functional.max_pool2d(x, kernel, stride)
        g = rng.standard_normal(out.shape)
        out.backward(torch.tensor(g))
        nhwc = a.transpose(0, 2, 3, 1)
        p = module._maxpool2d(nhwc, kernel=kernel, stride=stride)
        np.testing.assert_array_equal(p, out.detach().numpy().transpose(0, 2, 3, 1))
        d = module._maxpool2d_vjp(nhwc, p, g.transpose(0, 2, 3, 1), kernel=kernel, stride=stride)
        # overlapping windows add in another order than torch's: equal to rounding
        np.testing.assert_allclose(d.transpose(0, 3, 1, 2), x.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_first_layer_computes_no_input_gradient(folder):
    net = TORCH_NETS["course_shape_small"]
    code = render_module(derive(parse_spec(net.toml(), "cnn.toml")), "float32")
    assert "_fold(" not in code and "_conv2d_input_grad(" not in code
    two = render_module(derive(parse_spec(FIXED["two_convs_avgpool"].toml(), "c.toml")))
    assert "d_A2 = _fold(" in two  # the second convolution's input gradient


# --- bad input --------------------------------------------------------------------------

BAD = [
    ("[1, 4, 4]", "{ conv2d = 2, kernel = 5 }", "model.layers[1]", "kernel 5x5 is larger"),
    ("[1, 4, 4]", "{ conv2d = 2, kernel = 7, padding = 1 }", "model.layers[1]", "padded to 6x6"),
    ("16", "{ conv2d = 2, kernel = 3 }", "model.layers[1]", "needs an image input"),
    ("16", "{ maxpool2d = 2 }", "model.layers[1]", "maxpool2d needs an image input"),
    ("[1, 4, 4]", "{ flatten = true }, { flatten = true }", "model.layers[2]", "flatten needs"),
    ("[1, 4, 4]", "{ conv2d = 2, kernel = 3 }, { dense = 3 }", "model.layers[2]", "flat input"),
    (
        "[2, 6, 6]",
        "{ maxpool2d = 2 }, { flatten = true }, { dense = 3, in_features = 20 }",
        "model.layers[3].in_features",
        "flatten gives 18 = 2 x 3 x 3",
    ),
    ("[1, 4, 4]", "{ maxpool2d = 2 }", "model.layers", "ends with an image"),
    ("[1, 4]", "{ flatten = true }", "model.input", "[channels, height, width]"),
    ("[1, 4, 4]", "{ conv2d = 2, kernel = 0 }", "model.layers[1].kernel", "positive"),
    ("[1, 4, 4]", "{ conv2d = 2, kernel = 3, stride = [1, 2, 3] }", "model.layers[1].stride", ""),
    ("[1, 4, 4]", "{ conv2d = 2 }", "model.layers[1].kernel", "missing"),
    ("[1, 4, 4]", "{ avgpool2d = 2, padding = 1 }", "model.layers[1].padding", ""),
    (
        "[1, 4, 4]",
        '{ conv2d = 2, kernel = 3, activation = "softmax" }',
        "model.layers[1].activation",
        "softmax needs a flat input",
    ),
]


@pytest.mark.parametrize(("shape", "layers", "field", "message"), BAD)
def test_bad_cnn_spec_is_one_line_and_status_2(tmp_path, capsys, shape, layers, field, message):
    if "ends with" not in message and "flatten = true }, { flatten" not in layers:
        tail = ", { flatten = true }, { dense = 3 }" if "dense" not in layers else ""
    else:
        tail = ""
    if "flatten" in layers and "dense" not in layers and "ends with" not in message:
        tail = ", { dense = 3 }"
    spec = tmp_path / "bad.toml"
    spec.write_text(
        f'name = "bad"\n[model]\ninput = {shape}\nlayers = [{layers}{tail}]\n'
        'loss = "cross_entropy"\n'
    )
    out = tmp_path / "bad.py"
    status = cli.main(["generate", str(spec), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"bad.toml: {field}: "), err
    assert message in err
    assert not out.exists()


# --- the built-ins ----------------------------------------------------------------------


def test_digits_cnn_reaches_97_percent_held_out(tmp_path, capsys):
    pytest.importorskip("sklearn")
    status = cli.main(["run", "digits_cnn", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    line = next(x for x in out.splitlines() if x.startswith("held-out accuracy:"))
    accuracy = float(line.split(":")[1].strip().rstrip("%")) / 100
    assert accuracy >= 0.97, line


def test_mnist_cnn_trains_on_data_the_user_supplies(tmp_path, capsys):
    from symbp.spec import load

    path = tmp_path / "mnist_cnn.py"
    path.write_text(render_module(derive(load("mnist_cnn"))), encoding="utf-8")
    module = import_file(path)
    assert module.PARAM_SHAPES == {"W1": (32, 1, 3, 3), "b1": (32,), "W4": (10, 6272), "b4": (10,)}
    rng = np.random.default_rng(0)
    X = rng.random((32, 1, 28, 28)).astype(np.float32)
    Y = rng.integers(0, 10, 32)
    data = tmp_path / "data.npz"
    np.savez(data, X=X, Y=Y)
    assert module.main(["--data", str(data), "--epochs", "2", "--batch-size", "16"]) == 0
    assert "final loss" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        module.main([])  # no data bundled


# --- an activation's mask applied before max-pooling's routing --------------------------


def _routing_program(mask_of_a):
    """r = maxpool2d_vjp(a, p, g); d = r * mask(a), with d the program's only gradient."""
    import sympy as sp

    from symbp.program.statements import Assign, Call, Program

    a, p, g, r, d, w = (sp.Symbol(n, real=True) for n in ("a", "p", "g", "r", "d", "w"))
    attrs = (("kernel", (2, 2)), ("stride", (2, 2)))
    statements = [
        Call(r, "maxpool2d_vjp", (a, p, g), ("N", 4, 4, 2), "backward", attrs=attrs),
        Assign(d, r * mask_of_a(a), ("N", 4, 4, 2), "backward"),
    ]
    program = Program(statements, [a, p, g], [], [w], [], w, w, {w: d})
    return program, (a, p, g, r, d)


def test_mask_before_routing_moves_a_finite_mask_to_the_pooled_size():
    import sympy as sp

    from symbp.ad.rules import ROUTING
    from symbp.program.statements import Assign, Call, mask_before_routing

    program, (a, p, g, r, d) = _routing_program(lambda a: 1 - a**2)
    m = sp.Symbol("m", real=True)
    out = mask_before_routing(program, ROUTING, lambda g: m).statements
    assert len(out) == 2
    assert isinstance(out[0], Assign) and out[0].target == m and out[0].expr == g * (1 - p**2)
    assert isinstance(out[1], Call) and out[1].target == d and out[1].args == (a, p, m)


@pytest.mark.parametrize("mask", [lambda a: 1 / a, lambda a: a * sp_symbol("other")])
def test_mask_before_routing_leaves_unsafe_masks(mask):
    """1/a may be infinite where r is zero (0 * inf is not 0); a factor that reads
    anything but a has no value at p to move to."""
    from symbp.ad.rules import ROUTING
    from symbp.program.statements import mask_before_routing

    program, _ = _routing_program(mask)
    before = list(program.statements)
    assert mask_before_routing(program, ROUTING, lambda g: None).statements == before


def sp_symbol(name):
    import sympy as sp

    return sp.Symbol(name, real=True)


def test_relu_then_maxpool_masks_at_the_pooled_size():
    """In the course's shape (relu, then 2x2 max-pool) no statement works at the
    activation's full size between the routing and the kernel gradient."""
    from symbp.program.statements import Assign, Call

    program = derive(parse_spec(TORCH_NETS["course_shape_small"].toml(), "cnn.toml")).program
    (route,) = [s for s in program.statements if isinstance(s, Call) and s.op == "maxpool2d_vjp"]
    assert route.target.name == "d_Z1" and route.args[2].name == "d_A2_masked"
    masked = next(s for s in program.statements if s.target == route.args[2])
    assert isinstance(masked, Assign) and masked.shape[1:] == (6, 6, 4)
    backward = [s for s in program.statements if s.phase == "backward"]
    assert not any(isinstance(s, Assign) and s.shape == route.shape for s in backward)


@needs_torch
def test_relu_maxpool_with_many_ties_equals_torch(folder):
    """Most pre-activations negative (a bias lowered by 0.4): windows of relu zeros, ties
    everywhere; the masked, routed gradients still equal torch's, in loss_and_grads and
    in one SGD step of train()."""
    for net in (TORCH_NETS["relu_maxpool_stride3_overlap"], TORCH_NETS["course_shape_small"]):
        module = build(net, folder)
        X, Y = batch(net, 6, seed=8)
        params = module.init_params(2)
        params["b1"] = params["b1"] - 0.4
        value, grads = module.loss_and_grads(params, X, Y)
        expected_value, expected = torch_loss_and_grads(net, params, X, Y)
        assert value == pytest.approx(expected_value, rel=1e-10)
        assert np.count_nonzero(expected["W1"]) > 0
        for name, grad in expected.items():
            np.testing.assert_allclose(grads[name], grad, rtol=1e-9, atol=1e-12, err_msg=name)
        trained, _ = module.train(params, X, Y, epochs=1, batch_size=len(X), lr=0.5)
        for name, grad in expected.items():  # the built nets train with SGD: p - lr g
            np.testing.assert_allclose(
                trained[name], params[name] - 0.5 * grad, rtol=1e-9, atol=1e-12, err_msg=name
            )
