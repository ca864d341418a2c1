"""Tensor models (the model language): gradients against torch autograd, float64.

Each case is a spec written in the language and the same model written with torch by
hand (torch.nn.functional's losses and normalizations, not symbp's formulas), compared
at seeded random points: the loss and every parameter's gradient to 1e-10 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import generate, torch_float64

from symbp.check import random_point
from symbp.derive import derive
from symbp.spec import parse_spec

torch = pytest.importorskip("torch")
F = torch.nn.functional

HEADER = 'name = "{name}"\n[model]\n'


def spec_of(name: str, body: str):
    return parse_spec(HEADER.format(name=name) + body, f"{name}.toml")


def compare(tmp_path, name, body, reference, points=3, batch=6, rtol=1e-10):
    module = generate(spec_of(name, body), tmp_path)
    rng = np.random.default_rng(7)
    for _ in range(points):
        params, X, Y = random_point(module, rng, batch)
        value, grads = module.loss_and_grads(params, X, Y)
        t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        tx = {k: torch.tensor(v) for k, v in (X or {}).items()}
        ty = {k: torch.tensor(v) for k, v in (Y or {}).items()}
        expected = reference(t, tx, ty)
        expected.backward()
        scale = max(1.0, abs(expected.item()))
        assert abs(value - expected.item()) <= rtol * scale, (value, expected.item())
        for k in params:
            ours, theirs = grads[k], t[k].grad.numpy()
            assert ours.shape == theirs.shape, k
            err = np.max(np.abs(ours - theirs), initial=0) / max(1.0, np.max(np.abs(theirs)))
            assert err <= rtol, f"{k}: {err:.2e}"
    return module


RESIDUAL = """
inputs  = { x = [4] }
targets = { y = [] }
output  = "yhat"
loss    = "cross_entropy(yhat, y)"
[model.params]
W1 = [8, 4]
b1 = [8]
W2 = [8, 8]
W3 = [3, 8]
b3 = [3]
[model.let]
h1   = "tanh(W1 @ x + b1)"
h2   = "h1 + relu(W2 @ h1)"
yhat = "W3 @ h2 + b3"
"""


def test_residual_mlp_matches_torch(tmp_path):
    def reference(t, x, y):
        h1 = torch.tanh(x["x"] @ t["W1"].T + t["b1"])
        h2 = h1 + torch.relu(h1 @ t["W2"].T)
        return F.cross_entropy(h2 @ t["W3"].T + t["b3"], y["y"])

    compare(tmp_path, "residual", RESIDUAL, reference)


def test_tied_autoencoder_matches_torch(tmp_path):
    body = """
inputs = { x = [5] }
output = "xhat"
loss = "mse(xhat, x)"
[model.params]
W = [3, 5]
b = [3]
c = [5]
[model.let]
h = "sigmoid(W @ x + b)"
xhat = "W.T @ h + c"
"""

    def reference(t, x, y):
        h = torch.sigmoid(x["x"] @ t["W"].T + t["b"])
        return F.mse_loss(h @ t["W"] + t["c"], x["x"])

    compare(tmp_path, "tied", body, reference)


def test_least_squares_matches_torch(tmp_path):
    body = """
inputs = { x = [4] }
targets = { y = [3] }
output = "W @ x"
loss = "sum((W @ x - y)**2)"
[model.params]
W = [3, 4]
"""

    def reference(t, x, y):
        return ((x["x"] @ t["W"].T - y["y"]) ** 2).sum(dim=1).mean()

    compare(tmp_path, "lsq", body, reference)


def test_layer_norm_as_a_formula_matches_torch(tmp_path):
    body = """
inputs = { x = [6] }
targets = { y = [6] }
output = "yhat"
loss = "mse(yhat, y)"
[model.params]
gamma = { shape = [6], init = "ones" }
beta = { shape = [6], init = "zeros" }
[model.let]
mu = "mean(x)"
xn = "(x - mu) / sqrt(var(x) + 1e-5)"
yhat = "gamma * xn + beta"
"""

    def reference(t, x, y):
        out = F.layer_norm(x["x"], (6,), t["gamma"], t["beta"], eps=1e-5)
        return F.mse_loss(out, y["y"])

    compare(tmp_path, "layernorm", body, reference)


def test_layer_norm_function_matches_torch(tmp_path):
    body = """
inputs = { x = [2, 5] }
targets = { y = [2, 5] }
output = "yhat"
loss = "mse(yhat, y)"
[model.params]
gamma = { shape = [5], init = "ones" }
beta = { shape = [5], init = "zeros" }
[model.let]
yhat = "gamma * layer_norm(x, eps=1e-3) + beta"
"""

    def reference(t, x, y):
        out = F.layer_norm(x["x"], (5,), t["gamma"], t["beta"], eps=1e-3)
        return F.mse_loss(out, y["y"])

    compare(tmp_path, "layer_norm_function", body, reference)


def test_batch_norm_matches_torch(tmp_path):
    body = """
inputs = { x = [4] }
targets = { y = [] }
output = "yhat"
loss = "cross_entropy(yhat, y)"
[model.params]
W1 = [5, 4]
gamma = { shape = [5], init = "ones" }
beta = { shape = [5], init = "zeros" }
W2 = [3, 5]
[model.let]
z = "W1 @ x"
zn = "(z - batch_mean(z)) / sqrt(batch_var(z) + 1e-5)"
a = "relu(gamma * zn + beta)"
yhat = "W2 @ a"
"""

    def reference(t, x, y):
        z = x["x"] @ t["W1"].T
        zn = F.batch_norm(z, None, None, t["gamma"], t["beta"], training=True, eps=1e-5)
        return F.cross_entropy(torch.relu(zn) @ t["W2"].T, y["y"])

    compare(tmp_path, "batchnorm", body, reference)


LOSS_CASES = {
    "mse(z, y)": lambda z, y: F.mse_loss(z, y),
    "l1(z, y)": lambda z, y: F.l1_loss(z, y),
    "huber(z, y, delta=0.3)": lambda z, y: F.huber_loss(z, y, delta=0.3),
    "smooth_l1(z, y, beta=0.4)": lambda z, y: F.smooth_l1_loss(z, y, beta=0.4),
    "bce_with_logits(z, y)": lambda z, y: F.binary_cross_entropy_with_logits(z, y),
    "bce(sigmoid(z), y)": lambda z, y: F.binary_cross_entropy(torch.sigmoid(z), y),
    "cross_entropy(z, y)": lambda z, y: F.cross_entropy(z, y),
}


@pytest.mark.parametrize("loss", sorted(LOSS_CASES))
def test_losses_on_vectors_match_torch_nn(tmp_path, loss):
    body = f"""
inputs = {{ x = [3] }}
targets = {{ y = [4] }}
output = "z"
loss = "{loss}"
[model.params]
W = [4, 3]
b = [4]
[model.let]
z = "W @ x + b"
"""

    def reference(t, x, y):
        z = x["x"] @ t["W"].T + t["b"]
        return LOSS_CASES[loss](z, y["y"])

    compare(tmp_path, "losses", body, reference)


@pytest.mark.parametrize(
    ("loss", "torch_loss"),
    [
        ("cross_entropy(z, y)", lambda z, y: F.cross_entropy(z, y)),
        (
            "cross_entropy(z, y, label_smoothing=0.1)",
            lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1),
        ),
        ("nll(log_softmax(z), y)", lambda z, y: F.nll_loss(F.log_softmax(z, dim=1), y)),
    ],
)
def test_class_label_losses_match_torch_nn(tmp_path, loss, torch_loss):
    body = f"""
inputs = {{ x = [3] }}
targets = {{ y = [] }}
output = "z"
loss = "{loss}"
[model.params]
W = [5, 3]
[model.let]
z = "W @ x"
"""

    def reference(t, x, y):
        return torch_loss(x["x"] @ t["W"].T, y["y"])

    compare(tmp_path, "labels", body, reference)


def test_indexing_concat_dot_outer_and_reductions_match_torch(tmp_path):
    body = """
inputs = { x = [5] }
targets = { y = [] }
output = "yhat"
loss = "(yhat - y)**2"
[model.params]
W = [2, 5]
a = [4]
c = [2]
M = [2, 3]
[model.let]
u = "x[1:3]"
z = "concat(u, tanh(W @ x))"
s = "dot(z, a) + x[-1] * x[0]"
o = "outer(c, u)"
yhat = "s + sum(o) + mean(M.T @ c) + norm(z) + logsumexp(z) + max(z[0], z[1])"
"""

    def reference(t, x, y):
        xx = x["x"]
        u = xx[:, 1:3]
        z = torch.cat([u, torch.tanh(xx @ t["W"].T)], dim=1)
        s = z @ t["a"] + xx[:, -1] * xx[:, 0]
        o = t["c"][None, :, None] * u[:, None, :]
        m = (t["M"].T @ t["c"]).mean()
        yhat = (
            s
            + o.sum(dim=(1, 2))
            + m
            + torch.linalg.vector_norm(z, dim=1)
            + torch.logsumexp(z, dim=1)
            + torch.maximum(z[:, 0], z[:, 1])
        )
        return ((yhat - y["y"]) ** 2).mean()

    compare(tmp_path, "mixed", body, reference)


def test_rosenbrock_without_inputs_derives_checks_and_trains(tmp_path):
    body = """
inputs = []
output = "(1 - a)**2 + 100*(b - a**2)**2"
[model.params]
a = { shape = [], init = -1.5 }
b = { shape = [], init = 2.0 }
[train]
optimizer = "adam"
lr = 0.05
epochs = 2000
"""

    def reference(t, x, y):
        return (1 - t["a"]) ** 2 + 100 * (t["b"] - t["a"] ** 2) ** 2

    module = compare(tmp_path, "rosenbrock", body, reference)
    value, grads = module.loss_and_grads(module.init_params())
    assert value == pytest.approx(2.5**2 + 100 * (2.0 - 2.25) ** 2)
    assert grads["a"] == pytest.approx(-2 * 2.5 - 400 * (2.0 - 2.25) * -1.5)
    params, losses = module.train(module.init_params())
    assert len(losses) == 2000
    assert losses[-1] < 1e-3 * losses[0]
    assert float(params["a"]) == pytest.approx(1.0, abs=0.05)


MICROGRAD_MORE_OPS = """
inputs = []
output = "g2"
[model.params]
a = { shape = [], init = -4.0 }
b = { shape = [], init = 2.0 }
[model.let]
c0 = "a + b"
d0 = "a * b + b**3"
c1 = "c0 + c0 + 1"
c2 = "c1 + 1 + c1 + (-a)"
d1 = "d0 + d0 * 2 + relu(b + a)"
d2 = "d1 + 3 * d1 + relu(b - a)"
e = "c2 - d2"
f = "e**2"
g = "f / 2.0"
g2 = "g + 10.0 / f"
"""


def test_micrograd_test_more_ops_published_values(tmp_path):
    """micrograd's test_more_ops: g = 24.70408163265306, dg/da = 138.83381924198252,
    dg/db = 645.5772594752186 (the values its test asserts, from torch)."""
    module = generate(spec_of("more_ops", MICROGRAD_MORE_OPS), tmp_path)
    value, grads = module.loss_and_grads(module.init_params())
    assert value == pytest.approx(24.70408163265306, rel=1e-14)
    assert float(grads["a"]) == pytest.approx(138.83381924198252, rel=1e-14)
    assert float(grads["b"]) == pytest.approx(645.5772594752186, rel=1e-14)


def test_micrograd_sanity_check_published_values(tmp_path):
    """micrograd's test_sanity_check: y = -20 and dy/dx = 46 at x = -4."""
    body = """
inputs = []
output = "y"
[model.params]
x = { shape = [], init = -4.0 }
[model.let]
z = "2 * x + 2 + x"
q = "relu(z) + z * x"
h = "relu(z * z)"
y = "h + q + q * x"
"""
    module = generate(spec_of("sanity", body), tmp_path)
    value, grads = module.loss_and_grads(module.init_params())
    assert value == -20.0
    assert float(grads["x"]) == 46.0


def test_a_shared_value_sums_the_adjoints_of_both_paths(tmp_path):
    """h1 feeds the skip connection and W2's branch: d_h1 is one sum of two terms."""
    program = derive(spec_of("residual", RESIDUAL)).program
    (d_h1,) = [s for s in program.statements if s.target.name == "d_h1"]
    assert len(d_h1.expr.args) == 2


OPTIMIZERS = {
    "sgd": ("", lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "sgd_nesterov": (
        "momentum = 0.9\nnesterov = true\nweight_decay = 0.01\n",
        lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "momentum": ("", lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "adagrad": ("", lambda p, lr: torch.optim.Adagrad(p, lr=lr)),
    "rmsprop": (
        "centered = true\nmomentum = 0.9\n",
        lambda p, lr: torch.optim.RMSprop(p, lr=lr, centered=True, momentum=0.9),
    ),
    "adam": ("weight_decay = 0.01\n", lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=0.01)),
    "adam_amsgrad": (
        "amsgrad = true\nmaximize = true\n",
        lambda p, lr: torch.optim.Adam(p, lr=lr, amsgrad=True, maximize=True),
    ),
    "adamw": ("", lambda p, lr: torch.optim.AdamW(p, lr=lr)),
    "adamax": ("", lambda p, lr: torch.optim.Adamax(p, lr=lr)),
    "adadelta": ("rho = 0.8\n", lambda p, lr: torch.optim.Adadelta(p, lr=lr, rho=0.8)),
    "radam": (
        "weight_decay = 0.01\n",
        lambda p, lr: torch.optim.RAdam(p, lr=lr, weight_decay=0.01),
    ),
    "nadam": ("", lambda p, lr: torch.optim.NAdam(p, lr=lr)),
}


def _residual_epoch(t, optimizer, X, Y, order_rng, shuffle) -> float:
    """One epoch of the residual model in torch, batches of 4: its mean loss."""
    order = order_rng.permutation(10) if shuffle else np.arange(10)
    total = 0.0
    for start in range(0, 10, 4):
        rows = order[start : start + 4]
        x, y = torch.tensor(X[rows]), torch.tensor(Y[rows])
        optimizer.zero_grad()
        h1 = torch.tanh(x @ t["W1"].T + t["b1"])
        h2 = h1 + torch.relu(h1 @ t["W2"].T)
        value = F.cross_entropy(h2 @ t["W3"].T + t["b3"], y)
        value.backward()
        optimizer.step()
        total += value.item() * len(rows)
    return total / 10


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_training_follows_torch_optim_batch_by_batch(tmp_path, case, shuffle):
    """3 epochs of train() on the residual model, batches of 4 over 10 samples (the last
    one short), against torch.optim over the same batches: parameters and per-epoch
    losses, float64."""
    options, make = OPTIMIZERS[case]
    name = case.split("_")[0]
    train = f'[train]\noptimizer = "{name}"\n{options}'
    module = generate(spec_of("residual", RESIDUAL + train), tmp_path)
    rng = np.random.default_rng(5)
    params = module.init_params(3)
    X, Y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    lr = 0.05
    trained, losses = module.train(
        params, X, Y, epochs=3, batch_size=4, lr=lr, shuffle=shuffle, seed=11
    )
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = make(list(t.values()), lr)
    order_rng = np.random.default_rng(11)
    with torch_float64():  # NAdam's mu_product in double, as symbp's
        expected = [_residual_epoch(t, optimizer, X, Y, order_rng, shuffle) for _ in range(3)]
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    for k, leaf in t.items():
        np.testing.assert_allclose(trained[k], leaf.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("clip", "bound"), [("clip_grad_norm", 0.3), ("clip_grad_value", 0.02)])
def test_gradient_clipping_follows_torch_nn_utils(tmp_path, clip, bound):
    """AdamW on the residual model with torch.nn.utils' clipping between backward and
    step: 3 epochs of batches of 4 over 10 samples, float64."""
    train = f'[train]\noptimizer = "adamw"\n{clip} = {bound}\n'
    module = generate(spec_of("residual", RESIDUAL + train), tmp_path)
    rng = np.random.default_rng(8)
    params = module.init_params(2)
    X, Y = rng.normal(size=(10, 4)), rng.integers(0, 3, 10)
    trained, losses = module.train(params, X, Y, epochs=3, batch_size=4, lr=0.05, shuffle=False)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    optimizer = torch.optim.AdamW(list(t.values()), lr=0.05)
    apply = getattr(torch.nn.utils, f"{clip}_")
    expected, clipped = [], 0
    for _ in range(3):
        total = 0.0
        for start in range(0, 10, 4):
            x, y = torch.tensor(X[start : start + 4]), torch.tensor(Y[start : start + 4])
            optimizer.zero_grad()
            h1 = torch.tanh(x @ t["W1"].T + t["b1"])
            h2 = h1 + torch.relu(h1 @ t["W2"].T)
            value = F.cross_entropy(h2 @ t["W3"].T + t["b3"], y)
            value.backward()
            before = [leaf.grad.clone() for leaf in t.values()]
            apply(list(t.values()), bound)
            pairs = zip(before, t.values(), strict=True)
            clipped += any(not torch.equal(b, leaf.grad) for b, leaf in pairs)
            optimizer.step()
            total += value.item() * len(x)
        expected.append(total / 10)
    assert clipped > 0
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    for k, leaf in t.items():
        np.testing.assert_allclose(trained[k], leaf.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_max_of_one_argument_is_a_reduction_whose_ties_share_the_gradient(tmp_path):
    body = """
inputs = { x = [4] }
output = "m"
loss = "m * m"
[model.params]
w = [4]
[model.let]
m = "max(relu(w) * x) + amax(x * w, axis=0) + min(x * w)"
"""
    module = generate(spec_of("maxred", body), tmp_path)
    params = {"w": np.array([1.0, 1.0, -2.0, 0.5])}
    X = np.array([[2.0, 2.0, 1.0, 0.0], [0.0, 1.0, 3.0, 8.0]])
    value, grads = module.loss_and_grads(params, X)
    t = torch.tensor(params["w"], requires_grad=True)
    x = torch.tensor(X)
    m = torch.amax(torch.relu(t) * x, dim=1) + torch.amax(x * t, dim=1) + torch.amin(x * t, dim=1)
    expected = (m * m).mean()
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-14)
    np.testing.assert_allclose(grads["w"], t.grad.numpy(), rtol=1e-14)


def test_image_functions_match_torch(tmp_path):
    """conv2d (stride, padding, bias), relu, max- and average-pooling and flatten as
    functions of the language, against torch.nn.functional."""
    body = """
inputs = { x = [2, 7, 6] }
targets = { y = [] }
output = "z"
loss = "cross_entropy(z, y)"
[model.params]
K1 = [3, 2, 3, 3]
c1 = [3]
K2 = [4, 3, 2, 2]
W = [5, 8]
[model.let]
a1 = "relu(conv2d(x, K1, c1, padding=1))"
p1 = "maxpool2d(a1, 2, stride=(2, 1))"
a2 = "tanh(conv2d(p1, K2, stride=2))"
p2 = "avgpool2d(a2, 1)"
z = "W @ flatten(p2)"
"""

    def reference(t, x, y):
        a1 = torch.relu(F.conv2d(x["x"], t["K1"], t["c1"], padding=1))
        p1 = F.max_pool2d(a1, 2, stride=(2, 1))
        a2 = torch.tanh(F.conv2d(p1, t["K2"], stride=2))
        p2 = F.avg_pool2d(a2, 1)
        return F.cross_entropy(p2.flatten(1) @ t["W"].T, y["y"])

    module = compare(tmp_path, "cnn", body, reference)
    assert module.INIT["K1"] == ("uniform", pytest.approx(1 / np.sqrt(18)))
    assert module.INIT["c1"] == ("uniform", pytest.approx(1 / np.sqrt(18)))


def test_an_image_model_derives_a_document_in_every_format():
    from symbp.documents import render_document

    body = """
inputs = { x = [1, 6, 6] }
targets = { y = [] }
output = "z"
loss = "cross_entropy(z, y)"
[model.params]
K = [2, 1, 3, 3]
W = [3, 8]
[model.let]
a = "relu(conv2d(x, K))"
z = "W @ flatten(maxpool2d(a, 2))"
"""
    derivation = derive(spec_of("image_doc", body))
    for fmt in ("text", "markdown", "latex"):
        text = render_document(derivation, fmt)
        assert "conv2d" in text
    assert r"\operatorname{unfold}(x)" in render_document(derivation, "markdown")


def test_matrix_samples_batched_products_and_axis_reductions_match_torch(tmp_path):
    """Each sample a matrix: products of a parameter with it, of it with itself and
    its transpose, reductions over one axis, softmax and logsumexp of each row."""
    body = """
inputs = { x = [4, 3] }
targets = { y = [2] }
output = "yhat"
loss = "mse(yhat, y)"
[model.params]
A = [2, 4]
v = [3]
B = [3, 3]
[model.let]
m = "A @ x"
g = "x.T @ x + B"
s = "softmax(m) * sum(x, axis=0) + mean(x.T, axis=1)[0:3]"
yhat = "m @ (g @ v) + logsumexp(m) + max(s, axis=1) + norm(x @ v)"
"""

    def reference(t, x, y):
        def sample(xs):
            m = t["A"] @ xs
            g = xs.T @ xs + t["B"]
            s = torch.softmax(m, dim=-1) * xs.sum(dim=0) + xs.T.mean(dim=1)[0:3]
            return (
                m @ (g @ t["v"])
                + torch.logsumexp(m, dim=-1)
                + torch.amax(s, dim=1)
                + torch.linalg.vector_norm(xs @ t["v"])
            )

        return F.mse_loss(torch.func.vmap(sample)(x["x"]), y["y"])

    compare(tmp_path, "matrices", body, reference)


def test_found_by_the_formula_fuzz_scalar_parameters_over_images_and_folded_formulas(tmp_path):
    """A scalar parameter broadcast over an image sums its adjoint over the image's axes
    (not over the batch and two of them); x + b - x, which SymPy folds to b, keeps the
    formula's per-sample shape; mse(v, v) folds to an array of zeros."""
    body = """
inputs = { x = [3], img = [1, 4, 4] }
output = "h"
loss = "sum(h**2) + sum((c * img + c)**2) + mse(x + b, x + b)"
[model.params]
b = [3]
c = []
[model.let]
h = "x + b - x"
"""

    def reference(t, x, y):
        h = t["b"].expand(x["x"].shape)
        per_sample = (h**2).sum(dim=1) + ((t["c"] * x["img"] + t["c"]) ** 2).sum(dim=(1, 2, 3))
        return per_sample.mean()

    compare(tmp_path, "folded", body, reference)
