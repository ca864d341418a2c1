"""A derivation in a notebook: its one-line repr, its Markdown view (the document), its
LaTeX view (the program as equations MathJax renders, not a document), its graph
picture (SVG where Graphviz is installed, a Mermaid flowchart otherwise), and
docs/notebook.ipynb, committed without outputs and executed headlessly (nbclient)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from symbp.documents import render_document
from symbp.notebook import derive
from symbp.spec import builtin_names, load

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"
DOT = shutil.which("dot")
PDFLATEX = shutil.which("pdflatex")
# what the LaTeX view may use: commands MathJax's TeX input (with its AMS macros) knows
MATHJAX_COMMANDS = {
    *("bar", "hat", "frac", "sqrt", "sum", "textstyle", "text", "left", "right", "cdot"),
    *("begin", "end", "mathit", "mathrm", "mathbf", "operatorname", "top", "max", "min"),
    *("log", "exp", "tanh", "sin", "cos", "theta", "alpha", "beta", "gamma", "mu", "sigma"),
    *("delta", "lambda", "epsilon", "eta", "rho", "tau", "omega", "pi", "phi", "xi"),
    *("allowbreak", "lvert", "rvert", "quad", "sign", "ldots"),
}


@pytest.fixture(scope="module")
def derivations():
    return {name: derive(load(name)) for name in builtin_names()}


def test_repr_is_one_short_line(derivations):
    assert repr(derivations["quadratic"]) == (
        "<Derivation of 'quadratic': expression model, 3 parameters (3 values), 11 statements>"
    )
    assert repr(derivations["digits_cnn"]) == (
        "<Derivation of 'digits_cnn': layer stack, 4 parameters (2,730 values), 20 statements>"
    )
    for name, d in derivations.items():
        text = repr(d)
        assert text.startswith(f"<Derivation of {name!r}: ")
        assert "\n" not in text and len(text) < 120, text
        assert f" {len(d.program.statements)} statements>" in text
        assert f" {len(d.graph.params)} parameter" in text
    assert "tensor model" in repr(derivations["residual_digits"])


@pytest.mark.parametrize("name", ["quadratic", "xor_mlp", "residual_digits"])
def test_markdown_view_is_the_document(name, derivations):
    assert derivations[name]._repr_markdown_() == render_document(derivations[name], "markdown")


@pytest.mark.parametrize("name", builtin_names())
def test_latex_view_is_the_program_for_mathjax(name, derivations):
    d = derivations[name]
    text = d._repr_latex_()
    assert text.startswith("$$\n\\begin{aligned}\n")
    assert "\\documentclass" not in text and "\\usepackage" not in text
    blocks = re.findall(r"\$\$\n(.*?)\n\$\$", text, re.S)
    assert len(blocks) == 2  # the forward pass, the backward pass
    rows = [row for block in blocks for row in block.split(" \\\\\n")]
    assert len(rows) == len(d.program.statements) + 2  # and one title row each
    assert set(re.findall(r"\\([a-zA-Z]+)", text)) <= MATHJAX_COMMANDS
    for block in blocks:
        assert block.count("{") == block.count("}")


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed")
@pytest.mark.parametrize("name", ["quadratic", "digits_cnn", "residual_digits"])
def test_latex_view_is_valid_latex(name, derivations, tmp_path):
    display = r"\\[\n\1\n\\]"  # each $$ block as LaTeX's own display math
    body = re.sub(r"\$\$\n(.*?)\n\$\$", display, derivations[name]._repr_latex_(), flags=re.S)
    source = (
        "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
        f"{body}\\end{{document}}\n"
    )
    (tmp_path / "v.tex").write_text(source)
    run = subprocess.run(
        [PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "v.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:]


@pytest.mark.skipif(DOT is None, reason="Graphviz's dot not installed")
def test_graph_picture_is_svg_with_graphviz(derivations):
    shown = derivations["residual_digits"].graph_picture(backward=True)
    svg = shown._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "h1 = relu(b1 + prod1)" in svg
    assert shown._repr_markdown_() is None
    assert repr(shown) == "<GraphPicture of 'residual_digits' (backward): 24 values, 25 edges>"


def test_graph_picture_is_mermaid_without_graphviz(derivations, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    shown = derivations["tied_autoencoder"].graph_picture()
    assert shown._repr_svg_() is None
    markdown = shown._repr_markdown_()
    assert markdown.startswith("```mermaid\nflowchart TB\n") and markdown.endswith("```\n")
    assert "class n2 fanout" in markdown  # W, read as W x and as W^T


# --- docs/notebook.ipynb -------------------------------------------------------------------


def test_the_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def verify_importable() -> bool:
    return importlib.util.find_spec("symbp.verify") is not None


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run by a fresh kernel (nbclient), without its verify cell where
    symbp.verify does not exist yet; its cells by id, and the seconds it took."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    if not verify_importable():
        notebook.cells = [c for c in notebook.cells if "verify" not in c.metadata.get("tags", [])]
    folder = tmp_path_factory.mktemp("notebook")
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": folder}}
    )
    client.execute()
    return {c.id: c for c in notebook.cells}, time.perf_counter() - start


def outputs(cell) -> dict:
    """Mime type -> content of a cell's outputs (stdout as text/stdout)."""
    found = {}
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == "stdout":
            found["text/stdout"] = found.get("text/stdout", "") + output.text
        elif output.output_type == "error":
            found["error"] = output.ename
        found.update(output.get("data", {}))
    return found


def test_the_notebook_runs_quickly(executed):
    _, seconds = executed
    assert seconds < 60  # about 5 s here, kernel start included


def test_the_notebook_shows_the_derivation(executed, derivations):
    cells, _ = executed
    shown = outputs(cells["derive"])
    d = derivations["quadratic"]
    assert shown["text/stdout"] == repr(d) + "\n"
    assert shown["text/plain"] == repr(d)
    assert shown["text/markdown"] == render_document(d, "markdown")
    assert outputs(cells["equations"])["text/latex"] == d._repr_latex_()
    picture = outputs(cells["graph"])
    if DOT:
        assert "<svg" in picture["image/svg+xml"]
    else:
        assert picture["text/markdown"].startswith("```mermaid\n")


def test_the_notebook_trains_and_plots(executed):
    cells, _ = executed
    printed = outputs(cells["train"])["text/stdout"]
    # the README's numbers for the quadratic model
    assert printed == "{'w1': 2.98, 'w2': 2.16, 'b': 2.78}\nprediction at x = 6: 122.9\n"
    assert "image/png" in outputs(cells["plot"])


def test_the_notebook_verifies_a_claim(executed):
    if not verify_importable():
        pytest.skip("symbp.verify is not there yet: the notebook ran without its verify cell")
    cells, _ = executed
    shown = outputs(cells["verify"])
    assert "error" not in shown
    assert "1 proved" in shown["text/stdout"]
