"""A program statement as the documents and pictures write it: LaTeX or plain text."""

from __future__ import annotations

import re

import sympy as sp

from ..ad.tensor_rules import NOTATION
from ..program.statements import Assign, BatchMean, BatchSum, Call, Loop, Statement
from .notation import latex_name, latex_named


def symbol_tex(symbol: sp.Symbol, user: set[str], adjoint_of: dict) -> str:
    """A program value in the document's notation: an adjoint as its value barred,
    user names as the course writes them, temporaries as italic words; ``user`` may map
    names to their LaTeX (a recurrence's values at a time step: h_{t-1})."""
    if isinstance(user, dict) and user.get(symbol.name):
        return user[symbol.name]
    if symbol in adjoint_of:
        value, per_sample = adjoint_of[symbol]
        tex = rf"\bar{{{symbol_tex(value, user, adjoint_of)}}}"
        return tex + "_{n}" if per_sample else tex
    name = symbol.name
    if name in user or name in ("l_n", "L", "N"):
        return latex_name(name)
    match = re.fullmatch(r"([A-Za-z]+?)(\d*)", name)  # typography only: prod2 -> prod_2
    if not match:
        return rf"\mathit{{{name.replace('_', '')}}}"
    stem, number = match.groups()
    return rf"\mathit{{{stem}}}" + (f"_{{{number}}}" if number else "")


def statement_tex(stmt: Statement, user: set[str], adjoint_of: dict) -> tuple[str, str]:
    """(left side, right side) of a program statement in LaTeX."""

    def tex(symbol: sp.Symbol) -> str:
        return symbol_tex(symbol, user, adjoint_of)

    if isinstance(stmt, Loop):
        return _loop_tex(stmt, tex)
    if isinstance(stmt, Assign):
        names = {s: tex(s) for s in stmt.expr.free_symbols}
        rhs = latex_named(stmt.expr, names)
    elif isinstance(stmt, Call):
        args = [tex(a) for a in stmt.args]
        if stmt.op in NOTATION:
            rhs = NOTATION[stmt.op]["tex"](args, dict(stmt.attrs))
        else:
            escaped = stmt.op.replace("_", r"\_")
            rhs = rf"\operatorname{{{escaped}}}({', '.join(args)})"
    elif isinstance(stmt, BatchSum):
        rhs = rf"\textstyle\sum_{{n}} {tex(stmt.source)}"
    elif isinstance(stmt, BatchMean):
        rhs = rf"\frac{{1}}{{N}} \textstyle\sum_{{n}} {tex(stmt.source)}"
    return tex(stmt.target), rhs


def _loop_tex(loop: Loop, tex) -> tuple[str, str]:
    """A loop over time as one row: what it gives, and how."""
    if loop.reverse:
        given = [tex(outer) for outer, _, _ in loop.accumulates]
        if loop.joined:
            given.append(tex(loop.target))
        return ", ".join(given), r"\text{backpropagation through time, } t = T, \ldots, 1"
    return tex(loop.target), r"\text{the recurrence, } t = 1, \ldots, T"


def statement_text(stmt: Statement) -> str:
    if isinstance(stmt, Loop):
        if stmt.reverse:
            given = [outer.name for outer, _, _ in stmt.accumulates]
            given += [stmt.target.name] if stmt.joined else []
            return f"{', '.join(given)} = backpropagation through time, t = T..1"
        return f"{stmt.target} = the recurrence, t = 1..T"
    if isinstance(stmt, Assign):
        return f"{stmt.target} = {sp.sstr(stmt.expr, order='none')}"
    if isinstance(stmt, Call):
        args = [a.name for a in stmt.args]
        if stmt.op in NOTATION:
            return f"{stmt.target} = {NOTATION[stmt.op]['text'](args, dict(stmt.attrs))}"
        return f"{stmt.target} = {stmt.op}({', '.join(args)})"
    if isinstance(stmt, BatchSum):
        return f"{stmt.target} = sum over the batch of {stmt.source}"
    return f"{stmt.target} = mean over the batch of {stmt.source}"


def defined_text(stmt: Statement, symbol: sp.Symbol) -> str:
    """How ``stmt`` defines ``symbol``: the statement, or for a loop over time the sum
    over the steps that gives it."""
    if isinstance(stmt, Loop) and symbol != stmt.target:
        for outer, inner, _ in stmt.accumulates:
            if outer == symbol:
                return f"{outer} = sum over t = T..1 of {inner} (backpropagation through time)"
        return f"{symbol} = kept for each step t by the loop over time"
    return statement_text(stmt)
