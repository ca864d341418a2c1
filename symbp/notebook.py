"""Derivations in Jupyter: the document as Markdown, the program as equations, the graph.

``symbp.notebook.derive(spec)`` is :func:`symbp.derive.derive` whose result displays
itself in a notebook. The display lives here, above the documents, so that the core
(``symbp.derive``) never imports what renders it.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .derive import Derivation
from .derive import derive as _derive


class NotebookDerivation(Derivation):
    """A :class:`~symbp.derive.Derivation` with Jupyter's rich views."""

    def _repr_markdown_(self) -> str:
        """Jupyter's Markdown view: the derivation document."""
        from .documents import render_document

        return render_document(self, "markdown")

    def _repr_latex_(self) -> str:
        """Jupyter's LaTeX view, which MathJax renders: the derived program as equations
        (forward, then backward), not a LaTeX document."""
        from .documents.picture import program_equations

        return program_equations(self)

    def graph_picture(self, backward: bool = False):
        """The computation graph as a picture for a notebook: SVG where Graphviz's dot
        is installed, a Mermaid flowchart (Markdown) otherwise. ``backward`` adds each
        value's adjoint and marks the values whose adjoint sums several contributions."""
        from .documents.picture import GraphPicture, picture

        return GraphPicture(picture(self, backward))


def derive(spec) -> NotebookDerivation:
    """The derivation of ``spec`` (a built-in's name, a spec file, or a loaded spec)."""
    if isinstance(spec, (str, Path)):
        from .spec import load

        spec = load(str(spec))
    plain = _derive(spec)
    return NotebookDerivation(**{f.name: getattr(plain, f.name) for f in fields(plain)})
