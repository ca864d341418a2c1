"""The derivation document: right formulas, the course's order, deterministic, compiles."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys

import pytest
import sympy as sp
from sympy.core.parameters import distribute

from symbp.derive import derive
from symbp.documents import expression as document
from symbp.documents import render_document
from symbp.documents.chain import full_loss
from symbp.documents.expression import closed_form
from symbp.documents.notation import latex, latex_name
from symbp.spec import builtin_names, load, parse_spec

FORMATS = ("text", "markdown", "latex")

LET_SPEC = r"""
name = "tanh_let"
description = "A let-name through tanh; odd characters: 100% & x^2 $5 #1 {a} ~ \\ | < > _"

[model]
inputs = ["x"]
targets = ["y"]
output = "w2*h + bias_term*h**2"
loss = "mse"

[model.let]
h = "tanh(w1*x)"

[params]
w1 = 0.5
w2 = -0.25
"""

RELU_SPEC = """
name = "relu_unit"

[model]
inputs = ["x"]
targets = ["y"]
output = "v*relu(w*x + b)"
loss = "mse"
"""


def S(name: str) -> sp.Symbol:  # noqa: N802 - reads like sympy.Symbol
    return sp.Symbol(name, real=True)


@pytest.fixture(scope="module")
def quadratic():
    return derive(load("quadratic"))


@pytest.fixture(scope="module")
def let_model():
    return derive(parse_spec(LET_SPEC, "t.toml"))


def step_names(markdown: str) -> list[str]:
    """The value each numbered chain-rule step is about, in document order."""
    return re.findall(r"^### Step \d+: the [a-z ]+ \$(.+)\$$", markdown, flags=re.M)


def test_quadratic_states_the_chain_rule_gradients(quadratic):
    md = render_document(quadratic, "markdown")
    x, y, yhat = S("x"), S("y"), S("yhat")
    assert f"= {latex(2 * x**2 * (yhat - y))}" in md  # dl/dw1 over named forward values
    assert f"= {latex(2 * x * (yhat - y))}" in md  # dl/dw2
    dl_dyhat = r"\frac{\partial l}{\partial \hat{y}}"
    with distribute(False):  # 2*(yhat - y) as the chain rule leaves it
        assert f"{dl_dyhat} = {latex(2 * (yhat - y))}" in md


def test_quadratic_closed_forms_match_sympy(quadratic):
    md = render_document(quadratic, "markdown")
    x, y, w1, w2, b = (S(n) for n in ("x", "y", "w1", "w2", "b"))
    residual = b + w1 * x**2 + w2 * x - y
    for param, expected in ((w1, 2 * x**2 * residual), (w2, 2 * x * residual)):
        lhs = rf"\frac{{\partial l}}{{\partial {latex_name(param.name)}}}"
        assert f"{lhs} = {latex(expected)}" in md
    # the closed form is sympy's derivative of the full loss, only rearranged
    loss = full_loss(quadratic.spec)
    for p in quadratic.spec.params:
        form, _ = closed_form(loss, S(p))
        assert sp.simplify(form - sp.diff(loss, S(p))) == 0


def test_quadratic_batch_gradient_is_the_mean_over_the_batch(quadratic):
    md = render_document(quadratic, "markdown")
    body = latex(2 * S("x") ** 2 * (S("yhat") - S("y")), batched=["x", "y", "yhat"])
    assert body == r"2 x_{n}^{2} \left(\hat{y}_{n} - y_{n}\right)"
    assert rf"\frac{{1}}{{N}} \sum_{{n=1}}^{{N}} {body}" in md
    assert r"L = \frac{1}{N} \sum_{n=1}^{N} l_{n}" in md


def test_steps_run_from_the_output_back_to_the_parameters(quadratic, let_model):
    assert step_names(render_document(quadratic, "markdown")) == [
        r"\hat{y}",
        "w_{1}",
        "w_{2}",
        "b",
    ]
    names = step_names(render_document(let_model, "markdown"))
    assert names == [r"\hat{y}", "h", "w_{1}", "w_{2}", r"bias_{term}"]


def test_sections_come_in_the_course_order(quadratic):
    md = render_document(quadratic, "markdown")
    headings = re.findall(r"^## (\d)\. ", md, flags=re.M)
    assert headings == ["1", "2", "3", "4", "5"]
    assert md.index("## 2. The forward pass") < md.index("cached") < md.index("## 3.")


def test_the_model_and_training_setup_are_stated(quadratic):
    md = render_document(quadratic, "markdown")
    assert r"\hat{y} = b + w_{1} x^{2} + w_{2} x" in md
    assert r"l = \left(\hat{y} - y\right)^{2}" in md
    assert "torch.optim.SGD" in md and "p <- p - lr g" in md
    assert "lr = 0.0005" in md and "10000 epochs" in md and "batch size 1" in md
    assert "| $w_{1}$ | 1.0 |" in md


def test_the_program_is_listed_statement_by_statement(quadratic):
    md = render_document(quadratic, "markdown")
    program = md[md.index("## 5.") :]
    for stmt in quadratic.program.statements:
        assert re.search(rf"^{re.escape(stmt.target.name)} = ", program, flags=re.M)
    assert "d_yhat = 2*t2/N  # step 1" in program
    assert "Conventions at kinks" not in md  # no kinks in a polynomial model


def test_let_names_go_through_the_chain_rule(let_model):
    md = render_document(let_model, "markdown")
    h, x, w2, b = S("h"), S("x"), S("w2"), S("bias_term")
    dh_dw1 = r"\frac{\partial h}{\partial w_{1}}"
    assert rf"\frac{{\partial l}}{{\partial h}} \cdot {dh_dw1}" in md
    # tanh' is written with the cached forward value h
    assert rf"\frac{{\partial l}}{{\partial h}} \cdot {latex(x * (1 - h**2))}" in md
    assert f"\\cdot \\left({latex(2 * b * h + w2)}\\right)" in md
    assert "- $h$: read by steps" in md
    loss = full_loss(let_model.spec)
    form, _ = closed_form(loss, S("w1"))
    assert f"= {latex(form)}" in md
    assert form.has(sp.tanh)


def test_text_format_is_plain(let_model):
    text = render_document(let_model, "text")
    assert text.isascii()
    assert "dl/dw1 = dl/dh * dh/dw1" in text
    assert "dl/dh * x*(1 - h**2)" in text
    assert "$" not in text.replace("$5", "") and "\\frac" not in text


def test_kink_conventions_only_for_functions_present():
    md = render_document(derive(parse_spec(RELU_SPEC, "t.toml")), "markdown")
    assert "relu'(0) = 0" in md
    assert r"\left[b + w x > 0\right]" in md
    assert "sign' = 0" not in md and "leaky_relu" not in md and "torch.abs" not in md


def test_enormous_closed_forms_are_described_not_printed(quadratic, monkeypatch):
    monkeypatch.setattr(document, "PRINT_MAX_OPS", 8)
    md = render_document(quadratic, "markdown")
    assert "has 9 operations in closed form (more than 8)" in md
    assert "has 10 operations in closed form" in md  # b
    assert r"\frac{\partial l}{\partial w_{2}} = 2 x" in md  # 8 operations: still printed


def test_unknown_format_is_refused(quadratic):
    with pytest.raises(ValueError, match="unknown document format"):
        render_document(quadratic, "html")


@pytest.mark.parametrize("fmt", FORMATS)
def test_rendering_is_deterministic(let_model, fmt):
    assert render_document(let_model, fmt) == render_document(let_model, fmt)


def test_rendering_does_not_depend_on_the_hash_seed():
    script = (
        "import hashlib\n"
        "from symbp.derive import derive\n"
        "from symbp.documents import render_document\n"
        "from symbp.spec import load\n"
        "d = derive(load('tanh_units'))\n"
        "text = ''.join(render_document(d, f) for f in ('text', 'markdown', 'latex'))\n"
        "print(hashlib.sha256(text.encode()).hexdigest())\n"
    )
    digests = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        digests.add(run.stdout.strip())
    assert len(digests) == 1
    expected = "".join(render_document(derive(load("tanh_units")), f) for f in FORMATS)
    assert digests == {hashlib.sha256(expected.encode()).hexdigest()}


def compile_latex(source: str, folder) -> str:
    """Run pdflatex as the docs promise it works; return the log."""
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


def assert_no_bad_overflow(log: str) -> None:
    widths = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
    assert max(widths, default=0.0) < 10.0, widths


needs_pdflatex = pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex not installed (texlive-latex-base)"
)


@needs_pdflatex
@pytest.mark.parametrize("name", builtin_names())
def test_latex_compiles_for_every_builtin(name, tmp_path):
    log = compile_latex(render_document(derive(load(name)), "latex"), tmp_path)
    assert_no_bad_overflow(log)


@needs_pdflatex
def test_latex_compiles_with_odd_names_and_descriptions(let_model, tmp_path):
    source = render_document(let_model, "latex")
    assert r"\texttt{tanh\_let}" in source
    assert_no_bad_overflow(compile_latex(source, tmp_path))


def test_closed_forms_past_the_budget_are_described_not_derived():
    """A product of 50 factors has 50 closed forms of about 200 operations each: those
    past the document's budget are described, so deriving the document stays bounded."""
    from symbp.documents.expression import CLOSED_FORMS_MAX_OPS

    product = "*".join(f"(x + p{i})" for i in range(50))
    text = (
        f'name = "p50"\n[model]\ninputs = ["x"]\ntargets = ["y"]\noutput = "{product}"\n'
        'loss = "mse"\n'
    )
    markdown = render_document(derive(parse_spec(text, "p50.toml")), "markdown")
    described = markdown.count("is not written out: the closed forms above")
    assert 0 < described < 50
    assert f"use up the document's {CLOSED_FORMS_MAX_OPS} operations" in markdown
    assert markdown.count(r"\frac{\partial l}{\partial p_{") >= 50 - described
