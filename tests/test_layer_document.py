"""The derivation document of a layer stack: the course's matrix form, the right closed
forms, the costs counted by hand, deterministic, and LaTeX that compiles."""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import shutil
import subprocess
import sys

import pytest
import sympy as sp

from symbp.cli import main
from symbp.derive import derive
from symbp.documents import render_document
from symbp.documents.layers import (
    As,
    N,
    Ys,
    Zs,
    activation_derivative,
    format_layer_costs,
    layer_costs,
    output_delta,
    render_layer_document,
    text_expr,
)
from symbp.functions import CUSTOM_FUNCTIONS
from symbp.spec import parse_spec
from symbp.spec.layers import ELEMENTWISE_LOSSES, y, yhat, z

FORMATS = ("text", "markdown", "latex")

XOR = """
name = "xor_mlp"
[model]
input  = 2
layers = [
  { dense = 2, activation = "relu" },
  { dense = 1 },
]
loss = "bce_with_logits"
[train]
optimizer = "sgd"
lr = 0.1
epochs = 10000
batch_size = 4
[data]
X = [[0, 0], [0, 1], [1, 0], [1, 1]]
Y = [[0], [1], [1], [0]]
"""

# input 3 -> tanh(4) -> 2 outputs, mse, N = 5: small enough to count by hand
SMALL = """
name = "small"
[model]
input = 3
layers = [{ dense = 4, activation = "tanh" }, { dense = 2 }]
loss = "mse"
[train]
batch_size = 5
"""

# softmax output under mse, a custom activation, a layer without bias, an activation alone
SOFTMAX_CUSTOM = """
name = "softmax_custom"
description = "odd characters: 100% & x^2 $5 #1 {a} ~ _"
[model]
input = 2
layers = [
  { dense = 3, activation = "tanh", bias = false },
  { dense = 2, activation = "z**2/2 + log(1 + exp(z))" },
  { activation = "elu" },
  { dense = 3, activation = "softmax" },
]
loss = "mse"
[train]
optimizer = "adam"
batch_size = 5
"""

CLASSIFIER = """
name = "classifier"
[model]
input = 3
layers = [
  { dense = 4, activation = "z*tanh(z)" },
  { dense = 3, activation = "sigmoid" },
  { dense = 3 },
]
loss = "cross_entropy"
[train]
optimizer = "momentum"
batch_size = 8
"""

PROBABILITIES = """
name = "probabilities"
[model]
input = 2
layers = [
  { dense = 3, activation = "leaky_relu", negative_slope = 0.1 },
  { dense = 2, activation = "gelu" },
  { dense = 1, activation = "sigmoid" },
]
loss = "bce"
[train]
batch_size = 4
"""

STACKS = {
    "xor": XOR,
    "small": SMALL,
    "softmax_custom": SOFTMAX_CUSTOM,
    "classifier": CLASSIFIER,
    "probabilities": PROBABILITIES,
}


def load(text: str):
    return parse_spec(text, "stack.toml")


@pytest.fixture(scope="module")
def xor():
    return derive(load(XOR))


def stack(activation: str, loss: str, width: int = 2) -> str:
    return f"""
name = "t"
[model]
input = 2
layers = [{{ dense = 3, activation = "tanh" }}, {{ dense = {width}, activation = "{activation}" }}]
loss = "{loss}"
[train]
batch_size = 2
"""


# --- the formulas -----------------------------------------------------------------------


def test_xor_states_the_output_delta_and_the_relu_step(xor):
    md = render_layer_document(xor, "markdown")
    delta = r"\frac{\operatorname{sigmoid}{\left(Z^{(2)} \right)} - Y}{N}"
    assert r"\delta^{(2)} = \frac{\partial L}{\partial Z^{(2)}}" in md
    assert f"&= {delta}" in md  # delta(K) = (sigmoid(Z) - Y)/N for bce_with_logits on logits
    assert r"\left[A^{(1)} > 0\right]" in md  # relu' = [Z > 0] = [A > 0]
    step = r"\left[A^{(1)} > 0\right]"
    assert (
        rf"\delta^{{(1)}} = \frac{{\partial L}}{{\partial Z^{{(1)}}}} &= G^{{(1)}} \circ {step}"
        in md
    )
    assert r"&= \left(\delta^{(2)} W^{(2)}\right) \circ \left[A^{(1)} > 0\right]" in md
    assert r"\frac{\partial L}{\partial W^{(1)}} &= \delta^{(1)T} X" in md
    assert r"\frac{\partial L}{\partial b^{(2)}} &= \mathbf{1}^{T} \delta^{(2)}" in md
    text = render_layer_document(xor, "text")
    assert "= (sigmoid(Z^(2)) - Y)/N" in text
    assert "delta^(1) = dL/dZ^(1) = G^(1) o [A^(1) > 0]" in text
    assert "max(yhat_ni, 0) - yhat_ni y_ni + log(1 + exp(-|yhat_ni|))" in text


def test_the_sections_come_in_the_course_order(xor):
    md = render_layer_document(xor, "markdown")
    headings = re.findall(r"^## (\d)\. ", md, flags=re.M)
    assert headings == ["1", "2", "3", "4", "5", "6"]
    assert md.index("Z^{(l)} &= A^{(l-1)} W^{(l)T} + b^{(l)}") < md.index("## 2.")
    text = render_layer_document(xor, "text")
    for heading in ("1. The network", "3. The output layer: delta^(2)", "6. The generated program"):
        assert heading in text


def test_output_delta_is_the_program_s_delta(xor):
    """delta(K) of the document is what the generated program computes as d_Z2."""
    program = {s.target.name: s for s in xor.program.statements}
    from symbp.ir import graph as ir

    ours = output_delta(xor.spec).xreplace(
        {Zs(2): sp.Symbol("Z2", real=True), Ys: sp.Symbol("Y", real=True), N: ir.N}
    )
    assert sp.simplify(ours - program["d_Z2"].expr) == 0


def _definitions(expr: sp.Expr) -> sp.Expr:
    """relu, sigmoid, softplus, leaky_relu by their formulas, for plain numeric evaluation."""
    while expr.has(*CUSTOM_FUNCTIONS):
        expr = expr.replace(lambda e: isinstance(e, CUSTOM_FUNCTIONS), lambda e: e.definition())
    return expr


@pytest.mark.parametrize(
    "loss, activation",
    [
        *itertools.product(
            ("mse", "l1", "bce_with_logits"),
            ("identity", "relu", "sigmoid", "tanh", "softplus", "gelu", "silu", "z*tanh(z)"),
        ),
        ("bce", "sigmoid"),
    ],
)
def test_output_delta_matches_finite_differences(loss, activation):
    """delta(K) = dL/dZ(K), against central differences of the mean loss through f."""
    spec = load(stack(activation, loss, width=3))
    delta = output_delta(spec)
    formula = spec.layers[-1].formula if spec.layers[-1].formula is not None else z
    per_element = _definitions(ELEMENTWISE_LOSSES[loss].xreplace({yhat: formula}))
    rng = random.Random(f"{loss}-{activation}")
    for _ in range(4):
        zv = rng.choice([-1, 1]) * rng.uniform(0.2, 2.0)
        yv = rng.uniform(0.05, 0.95) if loss.startswith("bce") else rng.uniform(-2, 2)
        h = 1e-6
        f = sp.lambdify(z, per_element.xreplace({y: yv}), "mpmath")
        numeric = (f(zv + h) - f(zv - h)) / (2 * h) / (4 * 3)  # N = 4, d_K = 3
        av = float(_definitions(formula).subs(z, zv).evalf())
        ours = _definitions(delta).subs({Zs(2): zv, As(2): av, Ys: yv, N: 4}).evalf()
        assert float(ours) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)


def test_cross_entropy_and_softmax_outputs():
    spec = load(CLASSIFIER)
    assert text_expr(output_delta(spec)) == "(softmax(Z^(3)) - Y)/N"
    md = render_layer_document(derive(spec), "markdown")
    assert r"\operatorname{softmax}\left(z_{n}\right)_{i} - y_{ni}" in md
    assert "logsumexp" in md and "m_{n} = \\max_{i} \\hat{y}_{ni}" in md
    softmax = load(SOFTMAX_CUSTOM)
    assert output_delta(softmax) is None  # a softmax output: the J^T product, no formula
    md = render_layer_document(derive(softmax), "markdown")
    assert r"J_{n}^{T} g_{n} = s_{n} \circ \left(g_{n} - \left(g_{n} \cdot s_{n}\right)" in md
    assert r"\frac{2 \left(A^{(4)} - Y\right)}{3 N}" in md  # G = dL/dA for mse over 3 outputs


def test_bce_states_the_clamped_and_unclamped_delta():
    spec = load(PROBABILITIES)
    assert text_expr(output_delta(spec, clamp=False)) == "(A^(3) - Y)/N"
    assert output_delta(spec).has(sp.Heaviside)  # the clamp at -100 stops the gradient
    md = render_layer_document(derive(spec), "markdown")
    assert r"\max\left(\log \hat{y}_{ni}, -100\right)" in md
    assert r"\delta^{(3)} = \frac{A^{(3)} - Y}{N}" in md


def test_activation_derivatives_read_the_stored_values():
    spec = load(SOFTMAX_CUSTOM)
    tanh_layer, custom, elu, softmax = spec.layers
    assert activation_derivative(tanh_layer, 1) == 1 - As(1) ** 2  # tanh' = 1 - A^2
    assert activation_derivative(custom, 2) == sp.diff(custom.formula, z).xreplace({z: Zs(2)})
    assert activation_derivative(elu, 3).has(sp.Piecewise)
    assert activation_derivative(softmax, 4) is None
    sig = load(PROBABILITIES).layers[-1]
    assert text_expr(activation_derivative(sig, 3)) == "A^(3)*(1 - A^(3))"
    assert text_expr(activation_derivative(load(XOR).layers[0], 1)) == "[A^(1) > 0]"


def test_element_form_is_optional(xor):
    plain = render_layer_document(xor, "markdown")
    assert "element by element" not in plain
    md = render_layer_document(xor, "markdown", element=True)
    dw = r"\frac{\partial L}{\partial w^{(1)}_{ij}}"
    assert rf"{dw} &= \sum_{{n=1}}^{{N}} \delta^{{(1)}}_{{ni}} x_{{nj}}" in md
    assert r"\frac{\partial L}{\partial b^{(2)}_{i}} &= \sum_{n=1}^{N} \delta^{(2)}_{ni}" in md
    row = (
        r"\delta^{(1)}_{ni} &= \left(\sum_{k=1}^{1} \delta^{(2)}_{nk} w^{(2)}_{ki}\right)"
        r" \left[a^{(1)}_{ni} > 0\right]"
    )
    assert row in md
    sigmoid = r"\operatorname{sigmoid}{\left(z^{(2)}_{ni} \right)}"
    assert rf"\delta^{{(2)}}_{{ni}} &= \frac{{{sigmoid} - y_{{ni}}}}{{N}}" in md
    text = render_layer_document(xor, "text", element=True)
    assert "dL/dw_ij^(1) = sum_n=1..N delta_ni^(1) x_nj" in text


# --- parameters and costs ---------------------------------------------------------------


def test_parameter_counts():
    costs = layer_costs(load(XOR))
    assert [layer["params"] for layer in costs["layers"]] == [6, 3]  # (2 + 1) x 2, (2 + 1) x 1
    assert costs["params"] == 9
    md = render_layer_document(derive(load(XOR)), "markdown")
    assert r"| 1 | 2 | 2 | relu | $2 \times 2$ | 2 | $(2 + 1) \times 2 = 6$ |" in md
    assert "| total | | | | | | 9 |" in md
    costs = layer_costs(load(SOFTMAX_CUSTOM))  # no bias: 2 x 3; an activation alone: 0
    assert [layer["params"] for layer in costs["layers"]] == [6, 8, 0, 9]


def test_costs_of_a_small_stack_by_hand():
    costs = layer_costs(load(SMALL))
    n = 5
    # forward: products 2 N in out, biases N out, tanh 1 op per element, no output activation
    layer1 = 2 * n * 3 * 4 + n * 4 + 1 * n * 4
    layer2 = 2 * n * 4 * 2 + n * 2
    assert [c["forward"]["total"] for c in costs["layers"]] == [layer1, layer2]
    assert costs["forward_flops"] == layer1 + layer2 == 250
    # the loss (yhat - y)**2: 2 ops per element, then the mean: 1 more
    assert costs["loss_flops"] == (2 + 1) * n * 2
    # backward: dL/dyhat = 2 (yhat - y) / (N d): 2 + 1 ops per element ...
    loss_back = 3 * n * 2
    # ... layer 2: dW2 and dA1 (2 N 4 2 each), db2 (N 2) ...
    back2 = 2 * (2 * n * 4 * 2) + n * 2
    # ... layer 1: tanh' = 1 - A**2 (2 ops) times G (1), dW1 (2 N 3 4), db1 (N 4), no dX
    back1 = 3 * n * 4 + 2 * n * 3 * 4 + n * 4
    assert [c["backward"]["total"] for c in costs["layers"]] == [back1, back2]
    assert costs["backward_flops"] == loss_back + back1 + back2 == 400
    params = (3 + 1) * 4 + (4 + 1) * 2
    assert costs["optimizer_flops"] == 2 * params  # sgd: p - lr g
    assert costs["step_flops"] == 250 + 30 + 400 + 52
    # memory: X (dW1 reads it), A1 (tanh' and dW2), and c1 = Z2 - Y, shared by the loss
    # and delta2 = c1/N; not Z1 (tanh' reads A1), nor Z2 and Y themselves
    kept = {c["name"]: (c["floats"], c["layer"]) for c in costs["cached"]}
    assert kept == {"X": (15, 0), "A1": (20, 1), "c1": (10, 3)}
    assert costs["training_floats"] == 45
    assert costs["training_bytes"] == 180
    assert costs["inference_floats"] == max(n * (3 + 4), n * (4 + 2)) == 35


@pytest.mark.parametrize("name", sorted(STACKS))
def test_a_step_costs_at_most_three_forward_passes(name):
    costs = layer_costs(load(STACKS[name]))
    forward = costs["forward_flops"] + costs["loss_flops"]
    assert costs["step_flops"] == forward + costs["backward_flops"] + costs["optimizer_flops"]
    assert costs["step_flops"] <= 3 * forward + costs["optimizer_flops"]
    assert costs["training_floats"] > costs["inference_floats"]  # training keeps more


def test_the_first_layer_computes_no_input_gradient():
    costs = layer_costs(load(XOR))
    first, second = costs["layers"]
    assert first["backward"]["input"] == 0
    assert second["backward"]["input"] == 2 * 4 * 2 * 1
    kept = {c["name"]: c["layer"] for c in costs["cached"]}
    # relu' = [Z > 0] = [A > 0]: layer 1 keeps A1 only, not Z1 as well
    assert kept == {"X": 0, "A1": 1, "Z2": 2, "Y": 3}


def test_format_layer_costs():
    costs = layer_costs(load(XOR))
    text = format_layer_costs(costs, "xor_mlp")
    assert f"{costs['step_flops']}" in text and "inference keeps" in text


def test_the_document_reports_the_costs(xor):
    md = render_layer_document(xor, "markdown")
    costs = layer_costs(xor.spec, xor)
    assert f"| training step | {costs['step_flops']} |" in md
    assert f"| total | | | {costs['training_floats']} | {costs['training_bytes']} bytes |" in md
    assert "training needs more memory than inference" in md


# --- the document -----------------------------------------------------------------------


def test_render_document_dispatches_layer_stacks(xor):
    for fmt in FORMATS:
        assert render_document(xor, fmt) == render_layer_document(xor, fmt)


def test_unknown_format_is_an_error(xor):
    with pytest.raises(ValueError, match="unknown document format"):
        render_layer_document(xor, "html")


def test_program_listing(xor):
    md = render_layer_document(xor, "markdown")
    assert "A1 = relu(Z1)  # cached for the backward pass" in md
    assert "Z1 = X @ W1.T + b1\n" in md  # relu's derivative reads A1: Z1 is not kept
    assert "d_Z2 = (-Y + sigmoid(Z2))/N  # delta^(2)" in md
    assert "d_W1 = d_Z1.T @ X" in md and "d_b1 = d_Z1.sum(axis=0)" in md


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_is_deterministic(fmt):
    derivation = derive(load(SOFTMAX_CUSTOM))
    first = render_layer_document(derivation, fmt, element=True)
    assert first == render_layer_document(derive(load(SOFTMAX_CUSTOM)), fmt, element=True)


def test_output_is_the_same_under_any_hash_seed(tmp_path):
    (tmp_path / "stack.toml").write_text(CLASSIFIER, encoding="utf-8")
    code = (
        "import hashlib, sys\n"
        "from symbp.derive import derive\n"
        "from symbp.spec import load\n"
        "from symbp.documents.layers import render_layer_document\n"
        "d = derive(load(sys.argv[1]))\n"
        "text = ''.join(render_layer_document(d, f, True) for f in ('text', 'markdown', 'latex'))\n"
        "print(hashlib.sha256(text.encode()).hexdigest())\n"
    )
    digests = set()
    for seed in ("0", "1", "12345"):
        run = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "stack.toml")],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            check=True,
        )
        digests.add(run.stdout.strip())
    assert len(digests) == 1
    assert hashlib.sha256(b"").hexdigest() not in digests


# --- LaTeX ------------------------------------------------------------------------------


needs_pdflatex = pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex not installed (texlive-latex-base)"
)


def compile_latex(source: str, folder) -> str:
    (folder / "doc.tex").write_text(source, encoding="utf-8")
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (folder / "doc.log").read_text(encoding="latin-1")
    assert run.returncode == 0, log[-3000:]
    assert (folder / "doc.pdf").stat().st_size > 0
    return log


@needs_pdflatex
@pytest.mark.parametrize("name", ["xor", "softmax_custom", "classifier", "probabilities"])
def test_latex_compiles(name, tmp_path):
    source = render_layer_document(derive(load(STACKS[name])), "latex", element=True)
    assert source.startswith("% The derivation symbp writes for stack.toml")
    assert source.rstrip().endswith(r"\end{document}")
    log = compile_latex(source, tmp_path)
    widths = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
    assert max(widths, default=0.0) < 10.0, widths


@pytest.mark.parametrize(
    "loss, activation",
    [("(yhat - y)**2", "identity"), ("log(cosh(yhat - y))", "tanh"), ("-y*log(yhat)", "sigmoid")],
)
def test_a_formula_loss_is_derived_and_documented(loss, activation, tmp_path, capsys):
    """A layer stack whose loss is a formula: summed over a sample's outputs, then the mean
    over the batch (not torch's mean over all elements), in every document and --stats."""
    text = stack(activation, loss, width=3)
    spec = load(text)
    delta = output_delta(spec)
    formula = spec.layers[-1].formula if spec.layers[-1].formula is not None else z
    per_element = _definitions(spec.element_loss.xreplace({yhat: formula}))
    rng = random.Random(loss)
    for _ in range(4):
        zv = rng.choice([-1, 1]) * rng.uniform(0.2, 2.0)
        yv = rng.uniform(0.05, 0.95)
        h = 1e-6
        f = sp.lambdify(z, per_element.xreplace({y: yv}), "mpmath")
        numeric = (f(zv + h) - f(zv - h)) / (2 * h) / 4  # N = 4; the 3 outputs are summed
        av = float(_definitions(formula).subs(z, zv).evalf())
        ours = _definitions(delta).subs({Zs(2): zv, As(2): av, Ys: yv, N: 4}).evalf()
        assert float(ours) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    for args in (["derive", str(path)], ["derive", str(path), "--stats"]):
        assert main(args) == 0
    md = render_layer_document(derive(spec), "markdown")
    assert "sums the formula over a sample's 3 outputs" in md
    assert r"L = \frac{1}{N} \sum_{n=1}^{N} \sum_{i=1}^{3} l_{ni}" in md
    for fmt in ("text", "latex"):
        render_layer_document(derive(spec), fmt)


# --- what the documents read: the IR's record of each value, never its name ----------


def test_statements_carry_their_origin(xor):
    origins = {name: t.origin for name, t in xor.graph.tensors.items() if t.origin}
    assert origins == {
        "W1": ("W", 1),
        "b1": ("b", 1),
        "Z1": ("Z", 1),
        "A1": ("A", 1),
        "W2": ("W", 2),
        "b2": ("b", 2),
        "Z2": ("Z", 2),
    }
    adjoints = {a.name: (v.name, each) for a, (v, each) in xor.program.adjoint_of.items()}
    assert adjoints["d_Z1"] == ("Z1", False) and adjoints["d_W2"] == ("W2", False)


def test_masked_adjoints_and_temporaries_are_recorded():
    from symbp.spec import load as load_builtin

    cnn = derive(load_builtin("mnist_cnn"))
    masked = {m.name: a.name for m, a in cnn.program.masked.items()}
    assert masked == {"d_A2_masked": "d_A2"}  # the max-pool routes a masked adjoint
    defined = {s.target for s in cnn.program.statements}
    assert set(cnn.program.masked) <= defined
    tanh = derive(load_builtin("tanh_units"))
    kinds = set(tanh.program.temporaries.values())
    assert kinds == {"adjoint", "t", "shared"}
    shared = [s for s, k in tanh.program.temporaries.items() if k == "shared"]
    assert all(re.fullmatch(r"c\d+", s.name) for s in shared)
    # the markdown states the shared subexpressions the program computes once
    md = render_document(tanh, "markdown")
    assert all(s.name in md for s in shared)
