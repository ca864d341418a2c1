"""What generated code cites of its derivation, for every target: the chain-rule step
each adjoint's line implements (the document's numbering) and the model's definitions
for a file's header."""

from __future__ import annotations

import textwrap

import sympy as sp

from ..derive import Derivation
from ..documents.chain import chain_steps


def comment_table(derivation: Derivation, batched: bool) -> dict[str, tuple[str, ...]]:
    """Comments for the adjoints of named values: the chain-rule step of the document
    (same numbers) that the line implements."""
    defined = {stmt.target.name for stmt in derivation.program.statements}
    table: dict[str, tuple[str, ...]] = {}
    for number, step in enumerate(chain_steps(derivation.spec), 1):
        terms = " + ".join(
            sp.sstr(local, order="none")
            if consumer == "l"
            else f"dl/d{consumer}*({sp.sstr(local, order='none')})"
            for consumer, local in step.terms
        )
        text = f"step {number}: dl/d{step.name} = {terms}"
        if step.kind != "param":
            note = " (over N: L is the mean of l)" if batched else ""
            table[f"d_{step.name}"] = wrapped(text + note)
        elif f"d_{step.name}_n" in defined:
            table[f"d_{step.name}_n"] = wrapped(text)
            table[f"d_{step.name}"] = (
                f"dL/d{step.name}: the sum of dl/d{step.name} over the batch",
            )
        else:
            table[f"d_{step.name}"] = wrapped(text + ", summed over the batch" if batched else text)
    return table


def wrapped(text: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(text, 80, subsequent_indent="    ", break_long_words=False))


def _shortened(text: str, limit: int = 300) -> str:
    """Very long formulas are cut in the docstring; the derivation document has them."""
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f" ... ({len(text)} characters in all)"


def model_lines(derivation: Derivation) -> list[str]:
    spec = derivation.spec
    defs = [*spec.lets, *spec.outputs, ("l", spec.loss)]
    lines = [_shortened(f"{name} = {sp.sstr(expr, order='none')}") for name, expr in defs]
    if spec.loss_text in ("mse", "l1"):
        lines[-1] += f"  ({spec.loss_text})"
    lines.append("L = mean of l over the batch")
    return lines
