"""The notation of the derivation documents, shared by both: formulas in LaTeX and
plain text (:class:`LatexNotation`, :class:`TextNotation`), equations that break where
a page needs them (:class:`EquationBuilder`), the names of torch's optimizers and the
conventions at kinks. symbp.documents.expression (expression models) and symbp.documents.layers
(layer stacks) write through it, so neither needs the other.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
from sympy.core.parameters import distribute
from sympy.printing.latex import LatexPrinter

from ..functions import leaky_relu, relu
from ..optim import OPTIMIZERS

CODE_WIDTH = 88  # program listings and verbatim formulas fit an A4 page in \small
DISPLAY_CHARS = 160  # LaTeX rows longer than this would overflow a displayed equation
GROUP_CHARS = 140  # an unbreakable LaTeX group longer than this overflows a line
BREAKABLE_CHARS = 3000  # beyond this, a formula is clearer as wrapped plain text
# how documents name each optimizer, from the optimizer registry
TORCH_NAMES = {name: entry.described for name, entry in OPTIMIZERS.items()}


# --- notation ---------------------------------------------------------------------------


class _LatexPrinter(LatexPrinter):
    """SymPy's LaTeX, with the step functions of the kink conventions made explicit."""

    def _print_Heaviside(self, expr, exp=None):  # noqa: N802 - SymPy's dispatch name
        if len(expr.args) == 2 and expr.args[1] == 0:  # relu': 0 at the kink
            return _power(rf"\left[{self._print(expr.args[0])} > 0\right]", exp)
        return super()._print_Heaviside(expr, exp)

    def _print_leaky_relu(self, expr, exp=None):
        args = ", ".join(self._print(a) for a in expr.args)
        return _power(rf"\operatorname{{leaky\_relu}}{{\left({args} \right)}}", exp)


def _power(tex: str, exp: str | None) -> str:
    """``tex`` raised to ``exp``: how SymPy asks a function's printer for f(x)**2."""
    return tex if exp is None else f"{tex}^{{{exp}}}"


def _sample_tex(name: str) -> str:
    """``name`` with the sample index: w_{1} -> w_{1,n}, \\hat{y} -> \\hat{y}_{n}."""
    tex = _LatexPrinter().doprint(sp.Symbol(name, real=True))
    match = re.search(r"_\{([^{}]*)\}$", tex)
    if match:
        return f"{tex[: match.start()]}_{{{match.group(1)},n}}"
    return f"{{{tex}}}_{{n}}" if "^" in tex else f"{tex}_{{n}}"


def latex(expr: sp.Expr, batched: Iterable[str] = (), breakable: bool = False) -> str:
    """The document's LaTeX for ``expr``; symbols named in ``batched`` carry the index n.
    ``breakable`` allows line breaks between the factors of a product."""
    settings = {
        "symbol_names": {sp.Symbol(n, real=True): _sample_tex(n) for n in batched},
        "order": "none",
    }
    if breakable:
        settings["mul_symbol"] = r" \allowbreak "
    return _LatexPrinter(settings).doprint(expr)


def latex_named(expr: sp.Expr, names: dict[sp.Symbol, str]) -> str:
    """The document's LaTeX for ``expr`` with each symbol of ``names`` written as given."""
    return _LatexPrinter({"symbol_names": names, "order": "none"}).doprint(expr)


def latex_name(name: str, sample: bool = False) -> str:
    """The document's LaTeX for a value's name (``yhat`` -> ``\\hat{y}``, ``w1`` -> ``w_{1}``)."""
    if name in ("l", "L"):
        return f"{name}_{{n}}" if sample else name
    return _sample_tex(name) if sample else latex(sp.Symbol(name, real=True))


def _needs_parens(expr: sp.Expr) -> bool:
    """Whether ``expr`` must be parenthesized as a factor written after a derivative."""
    return bool(expr.is_Add or expr.could_extract_minus_sign() or isinstance(expr, sp.Piecewise))


class LatexNotation:
    """Formulas for Markdown ($...$) and LaTeX documents."""

    def __init__(self, breakable: bool = False):
        self.breakable = breakable

    def expr(self, expr: sp.Expr, batched: Iterable[str] = ()) -> str:
        return latex(expr, batched, self.breakable)

    def name(self, name: str, sample: bool = False) -> str:
        return latex_name(name, sample)

    def d(self, top: str, var: str, sample: bool = False) -> str:
        return rf"\frac{{\partial {self.name(top, sample)}}}{{\partial {self.name(var)}}}"

    def direct(self, var: str) -> str:
        """The explicit partial of l's own formula, beside paths through other values."""
        return rf"{self.d('l', var)}\Big|_{{\mathrm{{direct}}}}"

    def times(self, left: str, right: str) -> str:
        return rf"{left} \cdot {right}"

    def product(self, adjoint: str, local: sp.Expr) -> str:
        if local == 1:
            return adjoint
        text = self.expr(local)
        return self.times(adjoint, rf"\left({text}\right)" if _needs_parens(local) else text)

    def mean(self, body: str, parens: bool) -> str:
        body = rf"\left({body}\right)" if parens else body
        return rf"\frac{{1}}{{N}} \sum_{{n=1}}^{{N}} {body}"


@lru_cache(maxsize=64)
def _sample_names(batched: tuple[str, ...]) -> dict[sp.Symbol, sp.Symbol]:
    """x -> x_n for each batched name: the per-sample form of a batch formula."""
    return {sp.Symbol(n, real=True): sp.Symbol(f"{n}_n", real=True) for n in batched}


class TextNotation:
    """Formulas as SymPy prints them (str), for plain text and verbatim fallbacks."""

    def expr(self, expr: sp.Expr, batched: Iterable[str] = ()) -> str:
        mapping = _sample_names(tuple(batched))
        if mapping:
            # only the names this formula holds: a mapping of 600 batched names per formula
            # cost 4 s of a 600-parameter document
            names = expr.free_symbols
            mapping = {k: v for k, v in mapping.items() if k in names}
        with distribute(False):  # renaming must not re-expand 2*(yhat - y)
            expr = expr.xreplace(mapping)
        return sp.sstr(expr, order="none")

    def name(self, name: str, sample: bool = False) -> str:
        return f"{name}_n" if sample else name

    def d(self, top: str, var: str, sample: bool = False) -> str:
        return f"d{self.name(top, sample)}/d{var}"

    def direct(self, var: str) -> str:
        return f"{self.d('l', var)}|direct"

    def times(self, left: str, right: str) -> str:
        return f"{left} * {right}"

    def product(self, adjoint: str, local: sp.Expr) -> str:
        if local == 1:
            return adjoint
        text = self.expr(local)
        return self.times(adjoint, f"({text})" if _needs_parens(local) else text)

    def mean(self, body: str, parens: bool) -> str:
        return f"(1/N) * sum_n {f'({body})' if parens else body}"


Notation = LatexNotation | TextNotation
Rows = list[tuple[str, str]]


# --- equations and their layout ---------------------------------------------------------


@dataclass(frozen=True)
class Equation:
    """Aligned rows ``lhs = rhs`` (an empty lhs continues the row above).

    ``layout`` matters to the LaTeX template only: ``display`` (align*), ``breakable``
    (inline math that may wrap at + and =) or ``verbatim`` (wrapped plain ``lines``).
    """

    rows: tuple[tuple[str, str], ...]
    layout: str = "display"
    lines: tuple[str, ...] = ()


class EquationBuilder:
    """Builds each equation in the format's notation and picks its LaTeX layout."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.notation: Notation = TextNotation() if fmt == "text" else LatexNotation()

    def __call__(self, rows_for: Callable[[Notation], Rows]) -> Equation:
        rows = rows_for(self.notation)
        if self.fmt != "latex" or max(len(a) + len(b) for a, b in rows) <= DISPLAY_CHARS:
            return Equation(tuple(rows))
        texts = [_breakable(part) for row in rows_for(LatexNotation(True)) for part in row]
        if (
            sum(map(len, texts)) <= BREAKABLE_CHARS
            and max(map(_longest_group, texts)) <= GROUP_CHARS
        ):
            return Equation(tuple(zip(texts[::2], texts[1::2], strict=True)), "breakable")
        return Equation(tuple(rows), "verbatim", _verbatim(rows_for(TextNotation())))


def _breakable(tex: str) -> str:
    """Inline math that TeX may break after any + - = or product, even inside
    parentheses: plain delimiters instead of \\left...\\right (one unbreakable box),
    and function arguments out of their {...} group."""
    tex = _unbrace_calls(tex)
    for big, plain in (
        (r"\left(", "("),
        (r"\right)", ")"),
        (r"\left[", "["),
        (r"\right]", "]"),
        (r"\left|", r"\lvert "),
        (r"\right|", r"\rvert "),
    ):
        tex = tex.replace(big, plain)
    return tex


def _unbrace_calls(tex: str) -> str:
    """Drop the braces of each ``{\\left(...\\right)}`` group (how SymPy prints a
    function's arguments), leaving every other group as it is."""
    drop: set[int] = set()
    stack: list[tuple[int, bool]] = []
    for i, ch in enumerate(tex):
        if i and tex[i - 1] == "\\":
            continue
        if ch == "{":
            stack.append((i, tex.startswith(r"\left(", i + 1)))
        elif ch == "}" and stack:
            start, call = stack.pop()
            if call and tex.endswith(r"\right)", 0, i):
                drop |= {start, i}
    return "".join(ch for i, ch in enumerate(tex) if i not in drop)


def _longest_group(tex: str) -> int:
    """The length of the longest top-level {...} group (TeX never breaks inside one)."""
    longest, depth, start = 0, 0, 0
    for i, ch in enumerate(tex):
        if i and tex[i - 1] == "\\":
            continue
        if ch == "{":
            depth += 1
            if depth == 1:
                start = i
        elif ch == "}":
            depth -= 1
            if depth == 0:
                longest = max(longest, i - start)
    return longest


def _verbatim(rows: Rows) -> tuple[str, ...]:
    lines: list[str] = []
    for lhs, rhs in rows:
        first = f"{lhs} = " if lhs else "  = "
        lines += textwrap.wrap(
            first + rhs,
            CODE_WIDTH,
            subsequent_indent="      ",
            break_on_hyphens=False,
            break_long_words=True,
        )
    return tuple(lines)


# --- the sections -----------------------------------------------------------------------


def _option_value(value: object) -> str:
    """Options as a spec writes them (TOML): true/false, [0.9, 0.999]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


KINKS = (
    (relu, "relu", "relu'(0) = 0, as torch.relu"),
    (sp.Abs, "abs", "|x|'(0) = sign(0) = 0, as torch.abs"),
    (
        (sp.Max, sp.Min),
        "maxmin",
        "max/min split the gradient evenly between tied arguments, as torch.maximum and "
        "torch.minimum",
    ),
    (sp.sign, "sign", "sign' = 0 everywhere, as torch.sign"),
    (leaky_relu, "leaky_relu", "leaky_relu'(0) = slope, as torch.nn.functional.leaky_relu"),
)
