"""symbp's pytest plugin: the symbp marker, the symbp_model fixture and --symbp-report,
run on a test project of hand-written backprop in a temporary folder (pytester)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import symbp.testing  # noqa: F401 - imported here, its derivations are cached across the runs

pytest_plugins = ["pytester"]

HAND_WRITTEN = '''
import numpy as np
import pytest


def quadratic(params, X, Y):
    x, y = X[:, 0], Y[:, 0]
    r = params["w1"] * x**2 + params["w2"] * x + params["b"] - y
    grads = {"w1": np.mean(2 * r * x**2), "w2": np.mean(2 * r * x), "b": np.mean(2 * r)}
    return np.mean(r**2), grads


def xor_mlp(params, X, Y, transposed=False):
    """The course's backprop, columns as samples, for 2-2-1 ReLU with BCE on logits."""
    W1, b1, W2, b2 = (params[k] for k in ("W1", "b1", "W2", "b2"))
    N = len(X)
    a0 = X.T
    z1 = W1 @ a0 + b1[:, None]
    a1 = np.maximum(z1, 0.0)
    z2 = W2 @ a1 + b2[:, None]
    y = Y.T
    loss = np.mean(np.logaddexp(0.0, z2) - y * z2)
    d2 = 1.0 / (1.0 + np.exp(-z2)) - y
    d1 = (W2.T @ d2) * (z1 > 0)
    dW1 = d1 @ a0.T / N
    return loss, {
        "W1": dW1.T if transposed else dW1,
        "b1": d1.mean(axis=1),
        "W2": d2 @ a1.T / N,
        "b2": d2.mean(axis=1),
    }


def xor_forward(params, X):
    a1 = np.maximum(params["W1"] @ X.T + params["b1"][:, None], 0.0)
    return (params["W2"] @ a1 + params["b2"][:, None]).T
'''

PASSING = """
@pytest.mark.symbp("quadratic")
def test_quadratic(symbp_model):
    result = symbp_model.assert_gradients(quadratic)
    assert result.ok and result.points == 3


@pytest.mark.symbp(spec="xor_mlp")
def test_xor(symbp_model):
    symbp_model.assert_gradients(xor_mlp, points=4)
    symbp_model.assert_forward(xor_forward)


@pytest.mark.parametrize("symbp_model", ["quadratic", "xor_mlp"], indirect=True)
def test_by_parametrization(symbp_model):
    fn = quadratic if symbp_model.spec.name == "quadratic" else xor_mlp
    symbp_model.assert_gradients(fn, seed=1)


@pytest.mark.symbp("xor_mlp")
def test_the_reference_object(symbp_model):
    params, X, Y = symbp_model.random_point(seed=2)
    value, grads = symbp_model.loss_and_grads(params, X, Y)
    mine, my_grads = xor_mlp(params, X, Y)
    assert abs(value - mine) < 1e-12
    assert sorted(grads) == sorted(symbp_model.module.PARAM_SHAPES) == sorted(my_grads)
    assert symbp_model.derivation.spec is symbp_model.spec
"""

FAILING = """
@pytest.mark.symbp("xor_mlp")
def test_xor_transposed(symbp_model):
    symbp_model.assert_gradients(lambda p, X, Y: xor_mlp(p, X, Y, transposed=True))
"""


@pytest.fixture
def project(pytester):
    """The test project: its hand-written code and tests in test_backprop.py."""

    def write(*tests: str, **files: str):
        pytester.makepyfile(test_backprop=HAND_WRITTEN + "".join(tests), **files)
        return pytester

    return write


def test_correct_backprop_passes(project):
    result = project(PASSING).runpytest("--strict-markers")
    result.assert_outcomes(passed=5)
    assert "symbp verifications" not in result.stdout.str()  # only with --symbp-report


def test_a_bug_fails_naming_the_parameter_and_the_entry(project):
    result = project(PASSING, FAILING).runpytest()
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.re_match_lines(
        [
            r"E\s+symbp.testing.VerificationError: xor_mlp: gradients differ from symbp's.*",
            r"E\s+W1\[(0, 1|1, 0)\]: relative error \S+ at point \d: yours \S+, symbp's \S+"
            r" \(all 4 entries\)",
            r"E\s+matching: loss \(.*\), b1 \(.*\), W2 \(.*\), b2 \(.*\)",
        ],
        consecutive=True,
    )
    # pytest points at the test's line, not into symbp.testing
    result.stdout.fnmatch_lines(["test_backprop.py:*: VerificationError"])


def test_the_report_lists_every_verification(project):
    result = project(PASSING, FAILING).runpytest("--symbp-report")
    result.assert_outcomes(passed=5, failed=1)
    out = result.stdout.str()
    section = out[out.index("symbp verifications") :]
    result.stdout.re_match_lines(
        [
            r"=+ symbp verifications =+",
            r"PASS test_backprop.py::test_quadratic: gradients of quadratic, 3 point\(s\) of"
            r" batch 4, seed 0, rtol 1e-06",
            r"    loss +\d\.\d\de-\d\d +the one entry +ok",
            r"    w1 +\S+ +the one entry +ok",
            r"    w2 .*ok",
            r"    b .*ok",
            r"PASS test_backprop.py::test_xor: gradients of xor_mlp, 4 point\(s\) of batch 4,.*",
            r"    loss .*",
            r"    W1 +\S+ +all 4 entries +ok",
            r"    b1 +\S+ +all 2 entries +ok",
            r"    W2 .*",
            r"    b2 .*",
            r"PASS test_backprop.py::test_xor: outputs of xor_mlp, 3 point\(s\).*",
            r"    output +\S+ +all 4 entries +ok",
            r"PASS test_backprop.py::test_by_parametrization\[quadratic\]: gradients of"
            r" quadratic, 3 point\(s\) of batch 4, seed 1, .*",
        ],
        consecutive=True,
    )
    result.stdout.re_match_lines(
        [
            r"FAIL test_backprop.py::test_xor_transposed: gradients of xor_mlp, .*",
            r"    loss .* ok",
            r"    W1 +\d\.\d\de[+-]\d\d +all 4 entries +FAILED",
            r"    b1 .* ok",
        ]
    )
    assert section.count("PASS ") == 5 and section.count("FAIL ") == 1
    assert "5 passed, 1 failed" in section


def test_a_check_called_directly_is_reported_and_errors_too(project):
    direct = """
from symbp.testing import assert_gradients


def test_direct():
    assert_gradients("quadratic", quadratic, points=2)


def test_missing_gradient():
    assert_gradients("quadratic", lambda p, X, Y: (0.0, {"w1": 0.0}))


def test_raises():
    assert_gradients("quadratic", lambda p, X, Y: 1 / 0)
"""
    result = project(direct).runpytest("--symbp-report")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.re_match_lines(
        [
            r"PASS test_backprop.py::test_direct: gradients of quadratic, 2 point\(s\).*",
            r"FAIL test_backprop.py::test_missing_gradient: gradients of quadratic, 0 point\(s\).*",
            r"    quadratic: fn's grads lack 'w2', 'b' \(symbp's parameters: w1, w2, b\)",
            r"ERROR test_backprop.py::test_raises: gradients of quadratic: quadratic:"
            r" fn\(params, X, Y\) raised ZeroDivisionError: division by zero \(point 0, seed 0\)",
            r"1 passed, 2 failed",
        ]
    )


def test_a_spec_file_beside_the_test(project, pytester, monkeypatch):
    pytester.makefile(
        ".toml",
        quad='name = "quad"\n[model]\ninputs = ["x"]\ntargets = ["y"]\n'
        'output = "w1*x**2 + w2*x + b"\nloss = "(yhat - y)**2"\n'
        "[params]\nw1 = 1.0\nw2 = 1.0\nb = 1.0\n",
    )
    pytester.mkdir("elsewhere")
    tests = """
@pytest.mark.symbp("quad.toml")
def test_file(symbp_model):
    assert symbp_model.spec.name == "quad"
    symbp_model.assert_gradients(quadratic)
"""
    project(tests)
    # the spec resolves beside the test file, whatever the working directory
    monkeypatch.chdir(pytester.path / "elsewhere")
    result = pytester.runpytest(str(pytester.path / "test_backprop.py"))
    result.assert_outcomes(passed=1)


def test_misuse_is_one_line(project):
    tests = """
def test_no_spec(symbp_model):
    pass


@pytest.mark.symbp("quadratc")
def test_unknown_spec(symbp_model):
    pass


@pytest.mark.symbp("quadratic", "xor_mlp")
def test_two_specs(symbp_model):
    pass
"""
    result = project(tests).runpytest()
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*the symbp_model fixture needs a spec: mark the test @pytest.mark.symbp('quadratic')*",
            "*quadratc: no such file or built-in example (built-ins: *",
            "*@pytest.mark.symbp takes one spec*",
        ]
    )


def test_the_plugin_by_p_without_autoload(project, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    without = project(PASSING).runpytest()
    assert without.ret != 0  # no symbp_model: the plugin is what provides it
    without.stdout.fnmatch_lines(["*fixture 'symbp_model' not found*"])
    for name in ("symbp.pytest_plugin", "symbp"):  # the module, or the entry point's name
        with_p = project(PASSING).runpytest("-p", name, "--symbp-report")
        with_p.assert_outcomes(passed=5)
        with_p.stdout.fnmatch_lines(["*symbp verifications*", "5 passed, 0 failed"])


def test_the_marker_is_registered(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.symbp(spec): *"])
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--symbp-report*"])


def test_the_entry_point_is_installed():
    points = importlib.metadata.entry_points(group="pytest11")
    assert [p.value for p in points if p.name == "symbp"] == ["symbp.pytest_plugin"]


def test_the_plugin_is_light_at_import():
    heavy = ("numpy", "sympy", "jinja2", "symbp.testing")
    code = f"import sys, symbp.pytest_plugin; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
