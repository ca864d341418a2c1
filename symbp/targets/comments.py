"""What generated code cites of its derivation, for every target: the chain-rule step
each adjoint's line implements (the document's numbering) and the model's definitions
for a file's header."""

from __future__ import annotations

import textwrap

import sympy as sp

from ..derive import Derivation
from ..documents.chain import chain_steps
from ..documents.graph import backward_groups, readers


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


def _recurrence_lines(model) -> list[str]:
    """[model.recur] as the docstring states it: each step's values and states."""
    if not model.recur:
        return []
    starts = [
        f"{name}[0] = {'0' if entry[1] == 'zeros' else entry[1]}"
        for name, entry in model.recur.items()
        if not isinstance(entry, str)
    ]
    lines = [f"for each step t = 1..T of the sequence, from {', '.join(starts)}:"]
    for name, entry in model.recur.items():
        lines.append(
            f"    {name} = {entry}" if isinstance(entry, str) else f"    {name}[t] = {entry[2]}"
        )
    return lines


def graph_model_lines(model) -> list[str]:
    """A tensor model's definitions, for a file's header: recurrence, lets, loss."""
    return (
        _recurrence_lines(model)
        + [f"{n} = {text}" for n, _, text in model.lets]
        + [f"l = {model.loss_text}", f"L = {model.reduction} of l over the batch"]
    )


def graph_comments(derivation) -> dict[str, tuple[str, ...]]:
    """A comment before each run of backward statements that completes a named value's
    adjoint, citing section 3 of the derivation document and who reads the value."""
    model = derivation.spec
    user = {*model.inputs, *model.targets, *model.params, *(n for n, _, _ in model.lets)}
    read_by = readers(derivation)
    comments = {}
    for group in backward_groups(derivation, user):
        value = group["value"]
        if value is None or value not in user:
            continue
        recurrence = "_".join(model.states) + "_T" if model.recur else None
        by = ", ".join(
            "the recurrence" if r == recurrence else r if r in user else "l"
            for r in read_by.get(value, [])
        )
        first = group["statements"][0].target.name
        comments[first] = (f"dL/d{value}, read by {by} (derivation, section 3)",)
    return comments
