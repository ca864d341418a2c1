"""Every built-in's documents go through the tools readers use: pandoc reads the
Markdown and the LaTeX without a warning (an unescaped identifier such as unpool_max in
\\operatorname broke it, and pdflatex: tests/test_document.py compiles every built-in);
the Markdown is read as a web page shows it, every formula converted to MathML."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from symbp.derive import derive
from symbp.documents import render_document
from symbp.spec import builtin_names, load

needs_pandoc = pytest.mark.skipif(shutil.which("pandoc") is None, reason="pandoc not installed")


@pytest.fixture(scope="module")
def derivations():
    return {name: derive(load(name)) for name in builtin_names()}


@needs_pandoc
@pytest.mark.parametrize("fmt, reader", [("markdown", "markdown"), ("latex", "latex")])
@pytest.mark.parametrize("name", builtin_names())
def test_pandoc_reads_every_document_without_a_warning(name, fmt, reader, derivations):
    run = subprocess.run(
        ["pandoc", "--mathml", "-f", reader, "-t", "html", "-o", "/dev/null"],
        input=render_document(derivations[name], fmt),
        capture_output=True,
        text=True,
        timeout=300,
    )
    warnings = [w for w in run.stderr.split("[WARNING] ")[1:] if not known_limitation(w, fmt)]
    assert warnings == [], warnings[:3]


def known_limitation(warning: str, fmt: str) -> bool:
    """pandoc's math converter (texmath) has no \\allowbreak, which the LaTeX documents put
    between the factors of long inline formulas so that pdflatex can break the line
    there; pandoc then keeps that formula as TeX. Every other warning fails the test."""
    return (
        fmt == "latex"
        and warning.startswith("Could not convert TeX math")
        and ("\\allowbreak" in warning.split(", rendering as TeX")[0])
    )


@pytest.mark.parametrize("name", builtin_names())
def test_markdown_prose_is_wrapped(name, derivations):
    """Prose lines (not tables, headings, display math or code) stay within 100 columns:
    descriptions and long list items are wrapped."""
    fence = None
    for line in render_document(derivations[name], "markdown").split("\n"):
        stripped = line.strip()
        if fence:
            fence = None if stripped.startswith(fence) else fence
            continue
        if stripped.startswith(("$$", "```")):
            one_line = stripped.startswith("$$") and len(stripped) > 2 and stripped.endswith("$$")
            fence = None if one_line else stripped[:3].rstrip("$") or "$$"
            continue
        if stripped.startswith(("|", "#")) or line.startswith("    "):
            continue
        assert len(line) <= 100, line
