"""symbp verify: claimed formulas proved, refuted at a point, or left undecided.

The verifier's reference is its own reading of the model (each value element by element,
the chain rule one step at a time through sympy.diff); it is checked here against the
generated module's gradients, so that "proved" means "equal to symbp's derivation".
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mpmath
import numpy as np
import pytest

from symbp.errors import SpecError
from symbp.spec import load, parse_spec
from symbp.testing import reference
from symbp.verify import verify_claims
from symbp.verify.sample_model import sample_model
from symbp.verify.system import System

# a correct claim for every parameter of every built-in (a convolution kernel's gradient,
# a correlation of the input with delta, has no formula in the model language: its
# bias's and the layers after it are claimed instead)
CORRECT = {
    "quadratic": {
        "dl/dyhat": "2*(yhat - y)",
        "dl/dw1": "2*(yhat - y)*x**2",
        "dl/dw2": "2*(yhat - y)*x",
        "dl/db": "2*(yhat - y)",
        "dL/dw1": "batch_mean(2*(yhat - y)*x**2)",
    },
    "logistic": {
        "dl/dz": "yhat - y",
        "dl/dw1": "(yhat - y)*x1",
        "dl/dw2": "(yhat - y)*x2",
        "dl/db": "d_z",
    },
    "tanh_units": {
        "dl/dyhat": "2*(yhat - y)",
        "dl/dh1": "d_yhat*(v1 + v3*h2)",
        "dl/da1": "d_h1*(1 - h1**2)*x",
        "dl/db1": "d_h1*(1 - h1**2)",
        "dl/da2": "d_yhat*(v2 + v3*h1)*(1 - h2**2)*x",
        "dl/db2": "d_yhat*(v2 + v3*h1)*(1 - h2**2)",
        "dl/dv1": "d_yhat*h1",
        "dl/dv2": "d_yhat*h2",
        "dl/dv3": "d_yhat*h1*h2",
        "dl/dc": "d_yhat",
    },
    "xor_mlp": {
        "delta2": "sigmoid(z2) - y",
        "delta1": "W2.T @ delta2 * step(z1)",
        "dl/dW1": "outer(delta1, x)",
        "dl/db1": "delta1",
        "dl/dW2": "outer(delta2, a1)",
        "dl/db2": "delta2",
    },
    "xor_sigmoid": {
        "delta2": "a2 - y",
        "delta1": "(W2.T @ delta2) * (1 - a1**2)",
        "dl/dW1": "outer(delta1, x)",
        "dl/db1": "delta1",
        "dl/dW2": "outer(delta2, a1)",
        "dl/db2": "delta2",
    },
    "digits_mlp": {
        "delta2": "softmax(z2) - y",
        "delta1": "W2.T @ delta2 * step(z1)",
        "dl/dW1": "outer(delta1, x)",
        "dl/db1": "delta1",
        "dl/dW2": "outer(delta2, a1)",
        "dl/db2": "delta2",
    },
    "digits_cnn": {
        "delta4": "softmax(z4) - y",
        "dl/dW4": "outer(delta4, a3)",
        "dl/db4": "delta4",
        "delta1": "d_a1 * step(z1)",
        "dl/db1": "sum(delta1, axis=(1, 2))",
    },
    "residual_digits": {
        "dl/dyhat": "softmax(yhat) - y",
        "dl/dW3": "outer(d_yhat, h2)",
        "dl/db3": "d_yhat",
        "dl/dh2": "W3.T @ d_yhat",
        "dl/dh1": "d_h2 + W2.T @ (d_h2 * step(h2 - h1))",
        "dl/dW2": "outer(d_h2 * step(W2 @ h1 + b2), h1)",
        "dl/db2": "d_h2 * step(W2 @ h1 + b2)",
        "dl/dW1": "outer(d_h1 * step(h1), x)",
        "dl/db1": "d_h1 * step(h1)",
    },
    "batchnorm_digits": {
        "dL/dW2": "batch_mean(outer(d_yhat, a))",
        "dL/db2": "batch_mean(d_yhat)",
        "dL/dgamma": "batch_mean(d_a * step(a) * zhat)",
        "dL/dbeta": "batch_mean(d_a * step(a))",
        "dl/dzhat": "d_a * step(a) * gamma",
        # cs231n's staged batchnorm backward: z's adjoint through mu, var and sigma
        "dl/dz": "(d_zhat - batch_mean(d_zhat) - zhat*batch_mean(d_zhat*zhat)) / sigma",
        "dL/dW1": "batch_mean(outer(d_z, x))",
    },
    "least_squares": {"dl/dW": "2*outer(W @ x - y, x)"},
    "tied_autoencoder": {
        "dl/dxhat": "2*(xhat - x)/6",
        "dl/dh": "W @ d_xhat",
        "dl/dW": "outer(h, d_xhat) + outer(d_h*(1 - h**2), x)",
        "dl/db": "d_h*(1 - h**2)",
        "dl/dc": "d_xhat",
    },
    "micrograd_ops": {
        "dl/dg": "1",
        "dl/df": "d_g/2 - 10/f**2",
        "dl/de": "2*e*d_f",
        "dl/da": "d_c0 + b*d_d0 - d_c2 + step(b + a)*d_d1 - step(b - a)*d_d2",
        "dl/db": "d_c0 + (a + 3*b**2)*d_d0 + step(b + a)*d_d1 + step(b - a)*d_d2",
    },
    "micrograd_sanity": {
        "dl/dq": "1 + x",
        "dl/dz": "d_q*(step(z) + x) + 2*z*d_h*step(z*z)",
        "dl/dx": "3*d_z + d_q*z + q",
    },
}


def _params(name: str) -> set[str]:
    model = sample_model(load(name))
    return {n for n, leaf in model.leaves.items() if leaf.role == "param"}


# binary cross-entropy clamps each log at -100 (torch.nn.BCELoss), so its derivative is
# a2 - y only where the clamp is not active: true at every point drawn, not an identity
NOT_DECIDED = {("xor_sigmoid", "delta2")}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_claims_are_proved(name):
    result = verify_claims(name, CORRECT[name])
    expected = [
        "not decided" if (name, r.claim.key) in NOT_DECIDED else "proved" for r in result.results
    ]
    assert [r.status for r in result.results] == expected, result.text()
    assert result.ok == (expected == ["proved"] * len(expected)) and result.exit_code == 0
    claimed = {r.claim.name for r in result.results}
    kernels = {p for p in _params(name) if name == "digits_cnn" and p == "W1"}
    assert _params(name) - kernels <= claimed


def _refutation(name, claims):
    result = verify_claims(name, claims)
    (wrong,) = result.refuted
    assert result.exit_code == 1 and not result.ok
    assert wrong.claimed is not None and wrong.derived is not None
    assert abs(wrong.claimed - wrong.derived) > 1e-6 * max(1.0, abs(wrong.derived))
    return result, wrong


def test_a_dropped_factor_is_refuted_at_a_point_where_the_values_differ():
    _, wrong = _refutation("quadratic", {"dl/dw1": "2*(yhat - y)*x"})
    p = wrong.point
    yhat = p["w1"] * p["x"] ** 2 + p["w2"] * p["x"] + p["b"]
    # an independent hand computation of the gradient at the reported point
    assert wrong.derived == pytest.approx(2 * (yhat - p["y"]) * p["x"] ** 2, rel=1e-12)
    assert wrong.claimed == pytest.approx(2 * (yhat - p["y"]) * p["x"], rel=1e-12)
    assert "dl/dw1 is" in wrong.detail and "the claim gives" in wrong.detail


def test_a_sign_error_is_refuted():
    _, wrong = _refutation("xor_mlp", {"delta2": "y - sigmoid(z2)"})
    assert wrong.claimed == pytest.approx(-wrong.derived, rel=1e-12)


def test_a_missing_one_over_n_is_refuted():
    # the batch loss's adjoint of a sample's output carries the mean's 1/N
    _, wrong = _refutation("quadratic", {"dL/dyhat": "2*(yhat - y)"})
    assert wrong.claimed == pytest.approx(2 * wrong.derived, rel=1e-12)  # N = 2 samples
    # and the mean over a sample's 6 outputs (mse) its 1/6
    _, wrong = _refutation("tied_autoencoder", {"dl/dxhat": "2*(xhat - x)"})
    assert wrong.claimed == pytest.approx(6 * wrong.derived, rel=1e-12)


def test_the_first_wrong_step_is_named():
    claims = {
        "dl/dW1": "outer(delta1, x)",  # right, given the derivation's delta1
        "delta1": "W2.T @ delta2",  # relu's mask forgotten: the wrong step
        "delta2": "sigmoid(z2) - y",
        "dl/dW2": "outer(delta2, z1)",  # also wrong, later in the chain
    }
    result = verify_claims("xor_mlp", claims)
    statuses = {r.claim.key: (r.status, r.first_wrong) for r in result.results}
    assert statuses == {
        "delta2": ("proved", False),
        "dl/dW2": ("refuted", True),
        "delta1": ("refuted", False),
        "dl/dW1": ("proved", False),
    }
    assert [r.claim.key for r in result.results] == ["delta2", "dl/dW2", "delta1", "dl/dW1"]
    assert "the first wrong step" in result.text()
    result = verify_claims("xor_mlp", {k: v for k, v in claims.items() if k != "dl/dW2"})
    assert [r.claim.key for r in result.results if r.first_wrong] == ["delta1"]


def test_a_transposed_or_per_sample_claim_is_refuted_with_the_reason():
    result = verify_claims("digits_mlp", {"dl/dW2": "outer(a1, delta2)"})
    assert result.results[0].status == "refuted"
    assert "shape (64, 10)" in result.results[0].detail
    result = verify_claims("digits_mlp", {"dL/dW2": "outer(delta2, a1)"})
    assert "varies from sample to sample" in result.results[0].detail


def test_a_true_claim_beyond_simplification_is_not_decided():
    # step(tanh(u)) = step(u): true, but not an identity SymPy's simplification knows
    claim = {"h1": "tanh(a1*x + b1) * (step(tanh(a1*x + b1)) + step(-(a1*x + b1)))"}
    result = verify_claims("tanh_units", claim)
    (r,) = result.results
    assert r.status == "not decided" and "3 seeded points" in r.detail
    assert result.exit_code == 0 and not result.ok


# -- the verifier's reference is symbp's derivation ---------------------------------------


def _fill(system: System, name: str, per_sample: list[np.ndarray], values: dict) -> None:
    for n, array in enumerate(system.arrays[name]):
        data = np.asarray(per_sample[n if len(per_sample) > 1 else 0], dtype=float)
        for index in np.ndindex(*array.shape):
            values[array[index]] = mpmath.mpf(float(data[index]))


@pytest.mark.parametrize(
    "name", ["quadratic", "tanh_units", "xor_sigmoid", "tied_autoencoder", "least_squares"]
)
def test_the_reference_gradients_equal_the_generated_module(name):
    ref = reference(name)
    params, X, Y = ref.random_point(seed=3, batch=3)
    loss, grads = ref.loss_and_grads(params, X, Y)
    model = sample_model(ref.spec)
    system = System(model, 3)
    values: dict = {}
    for leaf, info in model.leaves.items():
        if info.role == "param":
            _fill(system, leaf, [params[leaf]], values)
        elif hasattr(ref.module, "LAYER_WIDTHS"):  # a stack: X (N, d), Y (N, k)
            _fill(system, leaf, list(X if info.role == "input" else Y), values)
        elif isinstance(X, dict):
            _fill(system, leaf, list((X if info.role == "input" else Y)[leaf]), values)
        else:  # one array: (N, *shape), or the columns of scalar inputs and targets
            names = list(ref.module.INPUTS if info.role == "input" else ref.module.TARGETS)
            data = X if info.role == "input" else Y
            column = data[:, names.index(leaf)] if data.ndim == 2 and not info.shape else data
            _fill(system, leaf, list(column), values)
    evaluate = system.numeric(values)
    assert float(evaluate(sum(system.sample_losses) / 3)) == pytest.approx(loss, rel=1e-12)
    for param, grad in grads.items():
        array = system.adjoints[param][0]
        ours = np.array([float(evaluate(a)) for a in array.reshape(-1)]).reshape(array.shape)
        np.testing.assert_allclose(ours, grad, rtol=1e-10, atol=1e-12)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"dl/dyaht": "x"}, "did you mean 'yhat'"),
        ({"dl/dw3": "x"}, "(known: x, y, w1, w2, b, yhat)"),
        ({"dl/dq": "x"}, "the model has no value 'q'"),
        ({"delta": "x"}, "not a gradient, adjoint or value"),
        ({"dl/dw1": "2*(yhat - yy)"}, 'claims."dl/dw1"'),
        ({"dl/dw1": "__import__('os')"}, 'claims."dl/dw1"'),
        ({"x": "1"}, "'x' is given, not computed"),
    ],
)
def test_bad_claims_are_one_line_errors(claims, message):
    with pytest.raises(SpecError) as err:
        verify_claims("quadratic", claims)
    assert message in str(err.value) and "\n" not in str(err.value)


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "symbp", "verify", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_cli_exit_codes(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[claims]\n"dl/dw1" = "2*(yhat - y)*x**2"\n"dl/db" = "2*(yhat - y)"\n')
    run = _cli("quadratic", str(good))
    assert run.returncode == 0, run.stderr
    assert "proved" in run.stdout and "2 proved" in run.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('"dl/dw1" = "2*(yhat - y)*x"\n')  # claims as top-level keys
    run = _cli("quadratic", str(bad))
    assert run.returncode == 1 and "refuted" in run.stdout
    for text, problem in [
        ("[claims\n", "not valid TOML"),
        ('"dl/dw1" = 3\n', "expected a formula in quotes"),
        ("", "no claims"),
    ]:
        broken = tmp_path / "broken.toml"
        broken.write_text(text)
        run = _cli("quadratic", str(broken))
        assert run.returncode == 2 and problem in run.stderr
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    run = _cli("quadratic", str(tmp_path / "missing.toml"))
    assert run.returncode == 2 and "no such file" in run.stderr


def test_notebook_display():
    result = verify_claims("quadratic", {"dl/dw1": "2*(yhat - y)*x**2", "dl/db": "yhat"})
    assert repr(result) == "<Verification quadratic: 2 claim(s): 1 proved, 1 refuted>"
    markdown = result._repr_markdown_()
    assert "| `dl/dw1` | `2*(yhat - y)*x**2` | **proved** |" in markdown
    assert "| `dl/db` | `yhat` | **refuted** (first wrong step): at x = " in markdown


def test_a_spec_file_and_its_claims(tmp_path):
    spec = tmp_path / "rosenbrock.toml"
    spec.write_text(
        textwrap.dedent(
            """
            name = "rosenbrock"
            [model]
            inputs = []
            output = "r"
            [model.params]
            a = { shape = [], init = -1.0 }
            b = { shape = [], init = 1.0 }
            [model.let]
            r = "(1 - a)**2 + 100*(b - a**2)**2"
            [train]
            optimizer = "sgd"
            lr = 0.001
            epochs = 10
            """
        )
    )
    claims = {"dl/da": "-2*(1 - a) - 400*a*(b - a**2)", "dl/db": "200*(b - a**2)"}
    assert verify_claims(str(spec), claims).ok
    assert parse_spec(spec.read_text(), str(spec)).name == "rosenbrock"


# -- property: random models, claims written from sympy.diff --------------------------------

import sympy as sp  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from symbp.strategies import expression_models  # noqa: E402


def _formula(expr: sp.Expr) -> str:
    """A SymPy expression as a claim: relu's derivative written as step."""

    def mask(e):  # relu's [z > 0] is step; max's tie-splitting one heaviside
        tie = e.args[1] if len(e.args) > 1 else sp.S.Half
        return sp.Function("step" if tie == 0 else "heaviside")(e.args[0])

    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside), mask)
    return sp.sstr(expr, order="none")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression_models(max_depth=2), st.sampled_from([sp.Rational(3, 2), sp.Rational(-1)]))
def test_random_models_claims_from_sympy_diff_hold_and_a_wrong_factor_is_refuted(model, factor):
    spec = model.spec
    full = spec.loss
    for name, expr in reversed([*spec.lets, *spec.outputs]):
        full = full.xreplace({sp.Symbol(name, real=True): expr})
    for name, expr in reversed([*spec.lets, *spec.outputs]):  # lets read earlier lets
        full = full.xreplace({sp.Symbol(name, real=True): expr})
    grads = {p: sp.diff(full, sp.Symbol(p, real=True)) for p in spec.params}
    # a claim writes what the model language (and step, heaviside) can: leaky_relu's
    # derivative, a Piecewise, has no formula there
    grads = {p: g for p, g in grads.items() if g != 0 and not g.has(sp.Derivative, sp.Piecewise)}
    if not grads:
        return
    claims = {f"dl/d{p}": _formula(g) for p, g in grads.items()}
    result = verify_claims(spec, claims)
    assert not result.refuted, result.text()
    for r in result.results:
        # decimals printed from a float constant prove nothing exact; nor can SymPy always
        # rewrite one form of a derivative at a kink of min/max into another
        excused = "the claim writes decimals" in r.detail or grads[r.claim.name].has(sp.Min, sp.Max)
        assert r.status == "proved" or (r.status == "not decided" and excused), result.text()
    p, g = next(iter(grads.items()))
    wrong = verify_claims(spec, {f"dl/d{p}": _formula(factor * g)})
    assert [r.status for r in wrong.results] == ["refuted"], wrong.text()
