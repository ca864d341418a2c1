"""symbp.testing: hand-written backprop checked against symbp's derivation.

The hand-written code here is the course's: column vectors, one sample per column,
z(l) = W(l) a(l-1) + b(l), a(l) = f(z(l)); backward
delta(L) = dl/da(L) o f'(z(L)), delta(l) = (W(l+1))^T delta(l+1) o f'(z(l)),
dL/dW(l) = delta(l) a(l-1)^T averaged over the batch, dL/db(l) = the mean of delta(l).
Each bug a student makes (a transposed product, a dropped 1/N, a wrong derivative)
must fail, naming the parameter and the entry, with both values as they are.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from symbp.derive import derive
from symbp.errors import SpecError
from symbp.spec import load, resolve
from symbp.testing import (
    MAX_ENTRIES,
    Verification,
    VerificationError,
    assert_forward,
    assert_gradients,
    assert_torch_gradients,
    reference,
)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# activation: (f(z), f'(z) written from z and a = f(z))
ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a**2),
    "sigmoid": (sigmoid, lambda z, a: a * (1.0 - a)),
    "identity": (lambda z: z, lambda z, a: np.ones_like(z)),
}

# the built-in dense stacks: each layer's activation and the loss
STACKS = {
    "xor_mlp": (["relu", "identity"], "bce_with_logits"),
    "xor_sigmoid": (["tanh", "sigmoid"], "bce"),
    "digits_mlp": (["relu", "identity"], "cross_entropy"),
}


def output_loss(loss: str, a, Y):
    """(the batch loss, dl/da per sample): a and the result's columns are samples; the
    loss is the mean over the batch (and over the output units, as torch.nn's)."""
    if loss == "cross_entropy":  # a: logits (classes, N); Y: labels (N,)
        onehot = np.eye(a.shape[0])[:, Y]
        shifted = a - a.max(axis=0)
        logp = shifted - np.log(np.exp(shifted).sum(axis=0))
        return -np.mean(np.sum(onehot * logp, axis=0)), np.exp(logp) - onehot
    y = Y.T
    k = a.shape[0]
    if loss == "bce_with_logits":
        return np.mean(np.logaddexp(0.0, a) - y * a), (sigmoid(a) - y) / k
    if loss == "bce":
        each = -(y * np.log(a) + (1 - y) * np.log(1 - a))
        return np.mean(each), (a - y) / (a * (1 - a)) / k
    raise AssertionError(loss)


def course_backprop(name, *, transposed=None, drop_mean=False, derivative=None):
    """The course's backprop for the built-in stack ``name``, with an optional bug:
    ``transposed`` a layer whose dL/dW is (delta a^T)^T, ``drop_mean`` the sums without
    the 1/N, ``derivative`` an activation -> a wrong f'(z, a)."""
    activations, loss = STACKS[name]

    def fn(params, X, Y):  # k is the course's layer index l
        L, N = len(activations), len(X)
        W = [None] + [params[f"W{k}"] for k in range(1, L + 1)]
        b = [None] + [params[f"b{k}"][:, None] for k in range(1, L + 1)]
        z, a = [None], [X.T]
        for k in range(1, L + 1):
            z.append(W[k] @ a[k - 1] + b[k])
            a.append(ACTIVATIONS[activations[k - 1]][0](z[k]))

        def fprime(k):
            kind = activations[k - 1]
            return ((derivative or {}).get(kind) or ACTIVATIONS[kind][1])(z[k], a[k])

        value, dl_da = output_loss(loss, a[L], Y)
        delta = dl_da * fprime(L)
        grads = {}
        scale = 1.0 if drop_mean else 1.0 / N
        for k in range(L, 0, -1):
            dW = delta @ a[k - 1].T * scale
            grads[f"W{k}"] = dW.T if k == transposed else dW
            grads[f"b{k}"] = delta.sum(axis=1) * scale
            if k > 1:
                delta = (W[k].T @ delta) * fprime(k - 1)
        return float(value), grads

    return fn


def course_forward(name, *, skip_bias=False):
    activations, _ = STACKS[name]

    def fn(params, X):
        a = X.T
        for k, kind in enumerate(activations, start=1):
            z = params[f"W{k}"] @ a + (0.0 if skip_bias else params[f"b{k}"][:, None])
            a = ACTIVATIONS[kind][0](z)
        return a.T

    return fn


LINE = re.compile(
    r"^  (\w+)(?:\[([\d, ]*)\])?: relative error (\S+) at point (\d+):"
    r" yours (\S+), symbp's (\S+) \((.*)\)$",
    re.M,
)


def failing(message: str) -> dict[str, dict]:
    """The failing arrays of a VerificationError's message: name -> its fields."""
    found = {}
    for name, index, error, point, yours, theirs, entries in LINE.findall(message):
        found[name] = {
            "index": tuple(int(i) for i in index.split(", ")) if index else (),
            "error": float(error),
            "point": int(point),
            "yours": float(yours),
            "symbp": float(theirs),
            "entries": entries,
        }
    return found


def assert_values_are_the_real_ones(spec, fn, message, seed=0, batch=4):
    """Every value a failure reports is what fn and symbp give at that point and entry."""
    ref = reference(spec)
    for name, row in failing(message).items():
        params, X, Y = ref.random_point(seed, row["point"], batch)
        yours = fn(params, X, Y)[1][name][row["index"]]
        theirs = ref.loss_and_grads(params, X, Y)[1][name][row["index"]]
        assert yours == pytest.approx(row["yours"], rel=1e-9, abs=1e-12), name
        assert theirs == pytest.approx(row["symbp"], rel=1e-9, abs=1e-12), name


# --- dense stacks, by the course's formulas -------------------------------------------


@pytest.mark.parametrize("name", sorted(STACKS))
def test_the_course_backprop_passes(name):
    result = assert_gradients(name, course_backprop(name))
    assert isinstance(result, Verification) and result.ok
    assert result.points == 3
    assert list(result.comparisons) == ["loss", *reference(name).param_shapes]
    assert all(c.error < 1e-12 for c in result.comparisons.values()), result


def test_a_large_gradient_is_sampled_and_says_so():
    result = assert_gradients("digits_mlp", course_backprop("digits_mlp"))
    w1 = result.comparisons["W1"]
    assert (w1.compared, w1.size) == (MAX_ENTRIES, 64 * 64)
    assert w1.entries == f"sampled {MAX_ENTRIES} of 4096 entries"
    assert result.comparisons["b2"].entries == "all 10 entries"
    everything = assert_gradients("digits_mlp", course_backprop("digits_mlp"), max_entries=None)
    assert everything.comparisons["W1"].compared == 4096
    assert "W1 " in repr(result) and f"({MAX_ENTRIES}/4096)" in repr(result)


def test_a_transposed_product_fails_naming_the_entry():
    fn = course_backprop("xor_mlp", transposed=1)  # W1 is 2 x 2: the shape hides it
    with pytest.raises(VerificationError) as caught:
        assert_gradients("xor_mlp", fn)
    message = str(caught.value)
    assert message.startswith("xor_mlp: gradients differ from symbp's (rtol 1e-06")
    rows = failing(message)
    assert list(rows) == ["W1"]
    assert rows["W1"]["index"] in {(0, 1), (1, 0)}  # the diagonal agrees
    assert rows["W1"]["entries"] == "all 4 entries"
    assert "matching: loss (" in message and "b1 (" in message and "W2 (" in message
    assert_values_are_the_real_ones("xor_mlp", fn, message)
    assert caught.value.result.failures[0].name == "W1"
    assert not caught.value.result.ok


def test_a_transposed_product_of_the_wrong_shape_fails_in_one_line():
    with pytest.raises(VerificationError) as caught:
        assert_gradients("digits_mlp", course_backprop("digits_mlp", transposed=2))
    assert str(caught.value) == (
        "digits_mlp: fn's grads['W2'] has shape (64, 10); symbp's parameter W2 has shape (10, 64)"
    )


def test_a_dropped_mean_fails_in_every_parameter_by_the_batch_size():
    fn = course_backprop("xor_sigmoid", drop_mean=True)
    with pytest.raises(VerificationError) as caught:
        assert_gradients("xor_sigmoid", fn, batch=5)
    rows = failing(str(caught.value))
    assert sorted(rows) == ["W1", "W2", "b1", "b2"]
    for row in rows.values():  # N g against g: |N g - g| / max |g| at the largest entry
        assert row["error"] == pytest.approx(4.0, rel=1e-3)
        assert row["yours"] == pytest.approx(5 * row["symbp"], rel=1e-9)
    assert "matching: loss" in str(caught.value)
    assert_values_are_the_real_ones("xor_sigmoid", fn, str(caught.value), batch=5)


def test_a_wrong_activation_derivative_fails_below_that_layer_only():
    fn = course_backprop("xor_sigmoid", derivative={"tanh": lambda z, a: 1.0 - a})
    with pytest.raises(VerificationError) as caught:
        assert_gradients("xor_sigmoid", fn)
    rows = failing(str(caught.value))
    assert sorted(rows) == ["W1", "b1"]  # tanh is layer 1's: W2 and b2 are right
    assert rows["W1"]["index"] and rows["b1"]["index"]
    assert_values_are_the_real_ones("xor_sigmoid", fn, str(caught.value))


def test_the_points_are_reproducible_and_the_code_gets_copies():
    seen = []
    correct = course_backprop("xor_mlp")

    def fn(params, X, Y):
        seen.append((params, X.copy(), Y.copy()))
        value, grads = correct(params, X, Y)
        params["W1"][...] = 0.0  # the user's code may scribble on its inputs
        X[...] = 0.0
        return value, grads

    assert_gradients("xor_mlp", fn, seed=3, points=2, batch=6)
    ref = reference("xor_mlp")
    for point, (_, X, Y) in enumerate(seen):
        again = ref.random_point(seed=3, point=point, batch=6)
        assert np.array_equal(again[1], X) and np.array_equal(again[2], Y)
        assert X.shape == (6, 2) and Y.shape == (6, 1)
        assert again[0]["W1"].dtype == np.float64
    assert not np.array_equal(seen[0][1], seen[1][1])  # two points, two batches
    assert assert_gradients("xor_mlp", fn, seed=3, points=2, batch=6).ok  # still right


def test_the_tolerances_are_relative_to_the_largest_entry_and_absolute_below_atol():
    """An entry matches when |yours - symbp's| <= max(atol, rtol * max |symbp's|)."""

    def off_by(relative=0.0, absolute=0.0):
        def fn(params, X, Y):
            value, grads = course_backprop("xor_sigmoid")(params, X, Y)
            return value, {k: g * (1 + relative) + absolute for k, g in grads.items()}

        return fn

    with pytest.raises(VerificationError):
        assert_gradients("xor_sigmoid", off_by(relative=1e-5))
    assert assert_gradients("xor_sigmoid", off_by(relative=1e-5), rtol=1e-4).ok
    assert assert_gradients("xor_sigmoid", off_by(absolute=1e-7), rtol=1e-12, atol=1e-6).ok
    with pytest.raises(VerificationError):
        assert_gradients("xor_sigmoid", off_by(absolute=1e-7), rtol=1e-12, atol=1e-8)


# --- the expression model: quadratic ---------------------------------------------------


def quadratic(params, X, Y):
    x, y = X[:, 0], Y[:, 0]
    r = params["w1"] * x**2 + params["w2"] * x + params["b"] - y
    grads = {"w1": np.mean(2 * r * x**2), "w2": np.mean(2 * r * x), "b": np.mean(2 * r)}
    return np.mean(r**2), grads


def test_the_quadratic_by_hand_passes():
    result = assert_gradients("quadratic", quadratic, points=5)
    assert result.ok and result.points == 5
    assert result.comparisons["w1"].entries == "the one entry"
    assert repr(result).startswith("<Verification gradients of quadratic: ok, 5 point(s);")


def test_a_sign_bug_in_the_quadratic_fails():
    def sign_bug(params, X, Y):
        value, grads = quadratic(params, X, Y)
        return value, {**grads, "w2": -grads["w2"]}

    with pytest.raises(VerificationError) as caught:
        assert_gradients("quadratic", sign_bug)
    rows = failing(str(caught.value))
    assert list(rows) == ["w2"] and rows["w2"]["index"] == ()
    assert rows["w2"]["error"] == pytest.approx(2.0)
    assert rows["w2"]["yours"] == pytest.approx(-rows["w2"]["symbp"])
    assert "quadratic: gradients differ" in str(caught.value)


def test_a_wrong_loss_fails_as_the_loss():
    def halved(params, X, Y):
        value, grads = quadratic(params, X, Y)
        return value / 2, grads

    with pytest.raises(VerificationError) as caught:
        assert_gradients("quadratic", halved)
    assert list(failing(str(caught.value))) == ["loss"]


def test_a_spec_file_and_a_loaded_spec_work_and_are_derived_once(tmp_path):
    path = tmp_path / "quad.toml"
    path.write_text(resolve("quadratic")[1], encoding="utf-8")
    assert assert_gradients(path, quadratic).ok
    assert assert_gradients(str(path), quadratic).ok
    assert reference(path) is reference(str(path))
    assert reference("quadratic") is reference("quadratic")
    spec = load("quadratic")
    assert reference(spec) is reference(spec) is not reference("quadratic")
    derivation = derive(spec)
    assert reference(derivation).derivation is derivation
    assert reference(reference(spec)) is reference(spec)
    # a changed file is derived again: here a model whose gradient differs
    path.write_text(resolve("quadratic")[1].replace("w2*x + b", "w2*x + 2*b"), "utf-8")
    assert reference(path) is not reference("quadratic")
    with pytest.raises(VerificationError, match=r"\n  b: relative error"):
        assert_gradients(path, quadratic)


# --- a tensor model: the residual MLP ---------------------------------------------------


def residual(params, X, Y, *, skip_path=True):
    x, labels = X["x"], Y["y"]
    N = len(x)
    z1 = x @ params["W1"].T + params["b1"]
    h1 = np.maximum(z1, 0.0)
    z2 = h1 @ params["W2"].T + params["b2"]
    h2 = h1 + np.maximum(z2, 0.0)
    yhat = h2 @ params["W3"].T + params["b3"]
    shifted = yhat - yhat.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    onehot = np.eye(yhat.shape[1])[labels]
    d_yhat = (np.exp(logp) - onehot) / N
    d_h2 = d_yhat @ params["W3"]
    d_z2 = d_h2 * (z2 > 0)
    d_h1 = (d_h2 if skip_path else 0.0) + d_z2 @ params["W2"]  # two paths meet at h1
    d_z1 = d_h1 * (z1 > 0)
    grads = {
        "W1": d_z1.T @ x,
        "b1": d_z1.sum(axis=0),
        "W2": d_z2.T @ h1,
        "b2": d_z2.sum(axis=0),
        "W3": d_yhat.T @ h2,
        "b3": d_yhat.sum(axis=0),
    }
    return -np.mean(np.sum(onehot * logp, axis=1)), grads


def test_a_tensor_model_by_hand_passes_and_a_forgotten_path_fails():
    assert assert_gradients("residual_digits", residual, batch=6).ok
    with pytest.raises(VerificationError) as caught:
        assert_gradients("residual_digits", lambda p, X, Y: residual(p, X, Y, skip_path=False))
    rows = failing(str(caught.value))
    assert sorted(rows) == ["W1", "b1"]
    assert rows["W1"]["entries"] == f"sampled {MAX_ENTRIES} of 2048 entries"
    assert rows["b1"]["entries"] == "all 32 entries"


# --- assert_forward ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STACKS))
def test_the_course_forward_passes(name):
    result = assert_forward(name, course_forward(name))
    assert result.ok and list(result.comparisons) == ["output"]


def test_a_forward_without_bias_fails_naming_the_output_entry():
    with pytest.raises(VerificationError) as caught:
        assert_forward("digits_mlp", course_forward("digits_mlp", skip_bias=True), batch=3)
    message = str(caught.value)
    assert message.startswith("digits_mlp: outputs differ from symbp's")
    (name, index, *_), *_ = LINE.findall(message)
    assert name == "output" and len(index.split(", ")) == 2
    assert "(all 30 entries)" in message


def test_a_forward_of_the_wrong_shape_fails_in_one_line():
    with pytest.raises(VerificationError) as caught:
        assert_forward("xor_mlp", lambda params, X: course_forward("xor_mlp")(params, X)[:, 0])
    assert str(caught.value) == "xor_mlp: fn's output has shape (4,); symbp's forward gives (4, 1)"


def test_a_model_without_inputs_is_called_with_none():
    def g2(params, X):
        assert X is None
        a, b = params["a"], params["b"]
        c = a + b
        d = a * b + b**3
        c = 2 * c + 1
        c = 2 * c + 1 - a
        d = 3 * d + max(b + a, 0.0)
        d = 4 * d + max(b - a, 0.0)
        f = (c - d) ** 2
        return f / 2 + 10.0 / f

    assert assert_forward("micrograd_ops", g2).ok


# --- missing, extra and misshapen gradients; bad input ----------------------------------


def test_a_missing_gradient_fails_in_one_line():
    def missing(params, X, Y):
        value, grads = quadratic(params, X, Y)
        del grads["b"]
        return value, grads

    with pytest.raises(VerificationError) as caught:
        assert_gradients("quadratic", missing)
    assert str(caught.value) == "quadratic: fn's grads lack 'b' (symbp's parameters: w1, w2, b)"
    assert caught.value.result.problem == str(caught.value)


def test_an_extra_gradient_fails_in_one_line():
    def extra(params, X, Y):
        value, grads = quadratic(params, X, Y)
        return value, {**grads, "c": 0.0}

    with pytest.raises(VerificationError, match=r"^quadratic: fn's grads have 'c', which"):
        assert_gradients("quadratic", extra)


def test_a_nan_gradient_fails():
    def nan(params, X, Y):
        value, grads = quadratic(params, X, Y)
        return value, {**grads, "b": float("nan")}

    with pytest.raises(VerificationError) as caught:
        assert_gradients("quadratic", nan)
    rows = failing(str(caught.value))
    assert list(rows) == ["b"] and rows["b"]["error"] == float("inf")
    assert np.isnan(rows["b"]["yours"])


@pytest.mark.parametrize(
    ("returned", "problem"),
    [
        (0.0, "fn(params, X, Y) must return (loss, grads), got float"),
        ((0.0, [1.0]), "fn's grads must be a dict of parameter name -> array, got list"),
        (("high", {}), "fn's loss must be an array of numbers, got str"),
        (([1.0, 2.0], {}), "fn's loss must be a number, got an array of shape (2,)"),
    ],
)
def test_a_wrong_return_type_is_a_one_line_type_error(returned, problem):
    with pytest.raises(TypeError) as caught:
        assert_gradients("quadratic", lambda params, X, Y: returned)
    assert str(caught.value) == f"quadratic: {problem}"


def test_code_that_raises_is_named_with_the_point():
    def broken(params, X, Y):
        raise KeyError("W9")

    with pytest.raises(RuntimeError) as caught:
        assert_gradients("xor_mlp", broken, seed=7)
    assert str(caught.value) == "xor_mlp: fn(params, X, Y) raised KeyError: 'W9' (point 0, seed 7)"
    assert isinstance(caught.value.__cause__, KeyError)


def test_an_unknown_spec_is_a_spec_error():
    with pytest.raises(SpecError, match=r"^quadratc: no such file or built-in example"):
        assert_gradients("quadratc", quadratic)
    with pytest.raises(SpecError, match=r"no such file"):
        assert_gradients("missing/model.toml", quadratic)
    with pytest.raises(TypeError, match=r"^spec must be a spec file's path"):
        assert_gradients(42, quadratic)


def test_a_bad_spec_file_is_a_spec_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[model]\noutput = "foo(x)"\n', encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        reference(path)
    assert str(caught.value).startswith("bad.toml: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"points": 0}, "points must be an integer >= 1, got 0"),
        ({"batch": 2.5}, "batch must be an integer >= 1, got 2.5"),
        ({"rtol": 0}, "rtol must be a positive number, got 0"),
        ({"atol": -1.0}, "atol must be a non-negative number, got -1.0"),
        ({"max_entries": 0}, "max_entries must be an integer >= 1, got 0"),
    ],
)
def test_bad_settings_are_one_line_value_errors(options, problem):
    with pytest.raises(ValueError) as caught:
        assert_gradients("quadratic", quadratic, **options)
    assert str(caught.value) == problem


# --- the torch form: a custom autograd.Function's backward ------------------------------


def torch_relu_stack(backward_mask: bool = True):
    """xor_mlp in torch with ReLU as a custom autograd.Function; ``backward_mask=False``
    forgets the mask in its backward (the gradient of the identity)."""
    torch = pytest.importorskip("torch")

    class ReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return z.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            (z,) = ctx.saved_tensors
            return grad * (z > 0) if backward_mask else grad

    class Activation(torch.nn.Module):
        def forward(self, z):
            return ReLU.apply(z)

    return torch.nn.Sequential(torch.nn.Linear(2, 2), Activation(), torch.nn.Linear(2, 1))


def test_a_custom_function_with_the_right_backward_passes():
    module = torch_relu_stack()
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    result = assert_torch_gradients("xor_mlp", module, points=4)
    assert result.ok and result.points == 4
    assert result.mapping == {"W1": "0.weight", "b1": "0.bias", "W2": "2.weight", "b2": "2.bias"}
    assert list(result.comparisons) == ["loss", "output", "W1", "b1", "W2", "b2"]
    # the module checked was a float64 copy: the user's is as it was
    for k, v in module.state_dict().items():
        assert v.dtype == before[k].dtype and bool((v == before[k]).all()), k


def test_a_custom_function_with_a_wrong_backward_fails():
    with pytest.raises(VerificationError) as caught:
        assert_torch_gradients("xor_mlp", torch_relu_stack(backward_mask=False), points=5)
    message = str(caught.value)
    assert message.startswith("xor_mlp: torch gradients differ from symbp's")
    assert re.search(r"^  W1\[\d, \d\] \(0\.weight\): relative error", message, re.M), message
    assert "matching: loss (" in message and "output (" in message  # forward is right


def test_a_torch_module_by_parameter_map_with_the_spec_loss():
    torch = pytest.importorskip("torch")

    class Tanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            a = torch.tanh(z)
            ctx.save_for_backward(a)
            return a

        @staticmethod
        def backward(ctx, grad):
            (a,) = ctx.saved_tensors
            return grad * (1 - a**2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(2, 4)
            self.out = torch.nn.Linear(4, 1)

        def forward(self, x):
            return torch.sigmoid(self.out(Tanh.apply(self.hidden(x))))

    names = {"W1": "hidden.weight", "b1": "hidden.bias", "W2": "out.weight", "b2": "out.bias"}
    # the spec's loss (bce): the order of the module's parameters is the stack's too
    assert assert_torch_gradients("xor_sigmoid", Net()).mapping == names
    assert assert_torch_gradients("xor_sigmoid", Net(), param_map=names).ok
    swapped = {**names, "W1": "out.weight", "W2": "hidden.weight"}
    with pytest.raises(ValueError, match=r"module parameter 'out.weight' has shape \(1, 4\)"):
        assert_torch_gradients("xor_sigmoid", Net(), param_map=swapped)
    with pytest.raises(ValueError, match=r"param_map lacks symbp's b2 "):
        assert_torch_gradients(
            "xor_sigmoid", Net(), param_map={k: v for k, v in names.items() if k != "b2"}
        )
    with pytest.raises(ValueError, match=r"^xor_sigmoid: cannot match symbp's parameters"):
        assert_torch_gradients("xor_sigmoid", torch.nn.Linear(2, 1))


def test_a_torch_expression_model_needs_its_loss_fn():
    torch = pytest.importorskip("torch")

    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w1, self.w2, self.b = (torch.nn.Parameter(torch.tensor(0.0)) for _ in "abc")

        def forward(self, X):
            x = X[:, 0]
            return self.w1 * x**2 + self.w2 * x + self.b

    with pytest.raises(ValueError, match=r"loss '\(yhat - y\)\*\*2' .*pass loss_fn\(output, Y\)"):
        assert_torch_gradients("quadratic", Quadratic())
    result = assert_torch_gradients(
        "quadratic", Quadratic(), lambda out, Y: ((out - Y[:, 0]) ** 2).mean()
    )
    assert result.ok and result.mapping == {"w1": "w1", "w2": "w2", "b": "b"}
    with pytest.raises(VerificationError, match=r"\n  loss: relative error"):
        assert_torch_gradients(
            "quadratic", Quadratic(), lambda out, Y: ((out - Y[:, 0]) ** 2).sum()
        )


def test_a_torch_cnn_has_symbp_layouts():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    module = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 10)
    )
    result = assert_torch_gradients("digits_cnn", module)
    assert (
        result.ok and result.comparisons["W4"].entries == f"sampled {MAX_ENTRIES} of 2560 entries"
    )


def test_torch_bad_input_is_one_line():
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^module must be a torch.nn.Module, got function"):
        assert_torch_gradients("xor_mlp", lambda x: x)
    with pytest.raises(RuntimeError, match=r"^xor_mlp: loss_fn\(output, Y\) raised ZeroDivision"):
        assert_torch_gradients("xor_mlp", torch_relu_stack(), lambda out, Y: 1 / 0)


def test_without_torch_the_torch_form_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(ImportError, match=r"^assert_torch_gradients needs PyTorch"):
        assert_torch_gradients("xor_mlp", object())
