"""Parse formula strings from a spec into SymPy without evaluating any Python.

The text is first screened as characters: one line of printable ASCII, no ``#``
comment (so nothing a formula says can hide from the parser, or reach a generated file
as anything but the formula). ``^`` is then rewritten to ``**`` so that it binds as
power does (Python's ``^`` is XOR, looser than ``+``). The text goes through
``ast.parse`` (which only builds a syntax tree) and then a whitelist walk: numbers,
known names, + - * / **, parentheses and the functions of :mod:`symbp.functions`.
Anything else is a :class:`SpecError` naming the column.
"""

from __future__ import annotations

import ast
import keyword
import math
from collections.abc import Callable, Mapping

import sympy as sp

from ..errors import SpecError
from ..functions import CONSTANTS, FUNCTIONS

_BINOPS: dict[type, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}

MAX_LENGTH = 100_000
MAX_NUMBER_BITS = 1024  # numbers in a formula must fit a float64 (about 1.8e308)


def is_identifier(name: str) -> bool:
    """A plain name usable in generated code: an identifier, not a keyword, no dunder."""
    return (
        isinstance(name, str)
        and name.isidentifier()
        and name.isascii()
        and not keyword.iskeyword(name)
        and not name.startswith("__")
    )


def parse_expression(
    text: object,
    names: Mapping[str, sp.Expr],
    *,
    source: str,
    field: str,
    allow_new_names: bool = False,
    reductions: Mapping[str, Callable[[sp.Expr], sp.Expr]] | None = None,
) -> tuple[sp.Expr, list[str]]:
    """Return (SymPy expression, names first seen here, in order of appearance).

    ``names`` maps every name already known (inputs, targets, earlier let-names,
    parameters) to its SymPy value. With ``allow_new_names`` an unknown name becomes a
    new real symbol (a parameter); otherwise it is an error. ``reductions`` are further
    functions of one argument the caller defines (a layer stack's loss: sum, mean).
    """

    def fail(problem: str, node: ast.AST | None = None) -> SpecError:
        where = f" at column {column(node.col_offset)}" if node is not None else ""
        return SpecError(source, field, problem + where)

    tree, column = syntax_tree(text, source=source, field=field)

    new_names: list[str] = []
    table: dict[str, sp.Expr] = dict(names)

    def visit(node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail(f"unsupported constant {value!r}", node)
            if isinstance(value, float) and not math.isfinite(value):
                raise fail("number too large (beyond float64)", node)
            return sp.Integer(value) if isinstance(value, int) else sp.Float(value)
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("__"):
                raise fail(f"name '{name}' is not allowed", node)
            if name in table:
                return table[name]
            if name in CONSTANTS:
                return CONSTANTS[name]
            if name in FUNCTIONS:
                raise fail(f"function '{name}' used without a call", node)
            if not is_identifier(name):
                raise fail(f"'{name}' is not a valid name", node)
            if not allow_new_names:
                raise fail(f"unknown name '{name}'", node)
            symbol = sp.Symbol(name, real=True)
            table[name] = symbol
            new_names.append(name)
            return symbol
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise fail(f"operator '{type(node.op).__name__}' is not allowed", node)
            left, right = visit(node.left), visit(node.right)
            if isinstance(node.op, ast.Pow) and _too_large_power(left, right):
                raise fail("number too large (beyond float64)", node)
            return op(left, right)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -visit(node.operand)
            if isinstance(node.op, ast.UAdd):
                return visit(node.operand)
            raise fail(f"operator '{type(node.op).__name__}' is not allowed", node)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                if isinstance(node.func, ast.Attribute):
                    raise fail("attribute access is not allowed", node.func)
                raise fail("only named functions can be called", node)
            name = node.func.id
            if name.startswith("__"):
                raise fail(f"name '{name}' is not allowed", node.func)
            if reductions and name in reductions:
                if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
                    raise fail(f"'{name}' takes one argument", node)
                return reductions[name](visit(node.args[0]))
            if name not in FUNCTIONS:
                raise fail(f"unknown function '{name}'", node.func)
            if node.keywords:
                raise fail(f"'{name}' takes no keyword arguments", node)
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise fail("starred arguments are not allowed", node)
            func, arities = FUNCTIONS[name]
            count = len(node.args)
            if arities is None and count < 2:
                raise fail(f"'{name}' needs at least 2 arguments, got {count}", node)
            if arities is not None and count not in arities:
                want = " or ".join(str(a) for a in arities)
                raise fail(f"'{name}' takes {want} argument(s), got {count}", node)
            args = [visit(a) for a in node.args]
            if arities is None:
                # Max(a, b, c) is Max(Max(a, b), c), kept nested (SymPy would flatten it)
                # so that ties split as nested torch.maximum/torch.minimum do
                result = func(args[0], args[1], evaluate=False)
                for arg in args[2:]:
                    result = func(result, arg, evaluate=False)
                return result
            return func(*args)
        if isinstance(node, ast.Attribute):
            raise fail("attribute access is not allowed", node)
        kind = type(node).__name__
        raise fail(f"'{kind}' is not allowed in a formula", node)

    try:
        expr = visit(tree.body)
    except SpecError:
        raise
    except RecursionError:
        raise SpecError(source, field, "formula is too deeply nested") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as err:
        raise SpecError(source, field, f"cannot build formula: {err}") from None
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise SpecError(source, field, "formula is undefined (division by zero or infinity)")
    constant = _beyond_float64(expr)
    if constant is not None:
        text = str(constant) if len(str(constant)) <= 30 else str(constant)[:24] + "..."
        raise SpecError(source, field, f"number too large (beyond float64): {text}")
    if any(s.is_number and s.is_extended_real is False for s in sp.preorder_traversal(expr)):
        raise SpecError(source, field, "formula is not real (a constant is a complex number)")
    return expr, new_names


def syntax_tree(text: object, *, source: str, field: str) -> tuple[ast.Expression, Callable]:
    """The syntax tree of a formula (after screening it and rewriting ``^``), and the map
    from an offset in the parsed text to the user's column; every problem a one-line
    SpecError. Both formula languages (scalar and tensor) start here."""
    if not isinstance(text, str):
        raise SpecError(source, field, f"expected a formula string, got {type(text).__name__}")
    if not text.strip():
        raise SpecError(source, field, "empty formula")
    if len(text) > MAX_LENGTH:
        raise SpecError(source, field, f"formula longer than {MAX_LENGTH} characters")
    _screen(text, source, field)
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    python_text, column = _power_carets(stripped, lead)
    try:
        tree = ast.parse(python_text, mode="eval")
    except SyntaxError as err:
        col = f" at column {column(err.offset - 1)}" if err.offset else ""
        raise SpecError(source, field, f"syntax error{col}: {err.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError(source, field, "formula is too deeply nested or malformed") from None
    return tree, column


def _screen(text: str, source: str, field: str) -> None:
    """Refuse what a one-line formula never needs: line breaks, control and format
    characters, non-ASCII letters (Python would NFKC-fold them into other names) and
    ``#``, which would make the rest of the line a comment the parser never sees."""
    for index, ch in enumerate(text):
        where = f" at column {index + 1}"
        if ch in "\n\r":
            raise SpecError(source, field, "a formula is one line: line break" + where)
        if ch == "#":
            raise SpecError(source, field, "'#' (a comment) is not allowed in a formula" + where)
        if ch == "\t":
            continue
        if not ch.isascii():
            raise SpecError(
                source, field, f"non-ASCII character U+{ord(ch):04X}{where}: names are ASCII"
            )
        if not ch.isprintable():
            raise SpecError(source, field, f"control character U+{ord(ch):04X}{where}")


def _power_carets(text: str, lead: int) -> tuple[str, Callable[[int], int]]:
    """``text`` with each ``^`` written ``**`` (power, right-associative, tighter than
    unary minus, exactly as ``**``), and a map from a 0-based offset in the rewritten
    text to the 1-based column in what the user wrote (``lead`` stripped spaces)."""
    carets = [i for i, ch in enumerate(text) if ch == "^"]
    rewritten = text.replace("^", "**")

    def column(offset: int) -> int:
        shift = 0
        for i in carets:  # each earlier caret grew the text by one character
            if i + shift < offset:
                shift += 1
        return offset - shift + lead + 1

    return rewritten, column


def _beyond_float64(expr: sp.Expr) -> sp.Expr | None:
    """The first constant subexpression (a number, exp(1000), cosh(800), 2**1024 - 1)
    whose value the generated code could not hold in a float64, or None."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if node.is_number:
            if node.is_Rational and max(abs(node.p).bit_length(), node.q.bit_length()) > 1100:
                return node  # far out of range: no need to evaluate it
            try:
                value = complex(node.evalf(20))
            except (OverflowError, TypeError, ValueError):
                return node
            if not (math.isfinite(value.real) and math.isfinite(value.imag)):
                return node
            continue
        stack.extend(node.args)
    return None


def _too_large_power(base: sp.Expr, exponent: sp.Expr) -> bool:
    """Whether folding ``base**exponent`` of two numbers would leave the float64 range
    (checked before folding: 9**9**9**9 would never finish)."""
    if not (base.is_Number and exponent.is_Number) or abs(base) in (0, 1):
        return False
    return abs(float(exponent)) * abs(math.log2(abs(float(base)))) > MAX_NUMBER_BITS
