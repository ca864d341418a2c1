"""Parse a tensor formula into a :class:`Term` tree, never evaluating any Python.

The text is screened and ``^`` rewritten exactly as for scalar formulas
(:mod:`symbp.spec.formula`); ``ast.parse`` builds a syntax tree and a whitelist walk
turns it into terms: numbers, declared names, ``+ - * / ** @``, ``.T``, integer
indices and slices of vectors, the elementwise functions and the tensor functions and
losses of :mod:`symbp.language.library` (keyword arguments only where a function
declares them). Every problem is a one-line :class:`SpecError` naming the field and
the column; a shape problem names both shapes.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import replace

import sympy as sp

from ..errors import SpecError, way_out
from ..functions import CONSTANTS
from ..spec.formula import _too_large_power, syntax_tree
from . import ops
from .library import ELEMENTWISE, TENSOR_FUNCTIONS, known_functions
from .ops import ShapeError
from .terms import Term, shape_text

_BINARY = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: a / b),
    ast.Pow: ("**", lambda a, b: a**b),
}


def parse_formula(
    text: object,
    names: Mapping[str, Term],
    *,
    source: str,
    field: str,
    functions: Mapping[str, tuple] | None = None,
    indexed: Mapping[str, Mapping[str, Term]] | None = None,
) -> Term:
    """The term of ``text`` over ``names`` (every name a formula may read, with its term);
    ``functions`` adds elementwise functions to the language's (name -> (SymPy callable,
    arities)), as claims about derivatives add the step function. ``indexed`` holds the
    names read only at a time step: a sequence input as ``x[t]``, a recurrent state as
    ``h[t-1]``, ``h[t]`` or ``h[T]`` (name -> {"t": term, "t-1": term, "T": term}, the
    ones this formula may read)."""
    tree, column = syntax_tree(text, source=source, field=field)
    walker = _Walker(names, source, field, column)
    walker.indexed = dict(indexed or {})
    walker.functions = {**ELEMENTWISE, **(functions or {})}
    try:
        return walker.visit(tree.body)
    except RecursionError:
        raise SpecError(source, field, "formula is too deeply nested") from None


class _Walker:
    def __init__(self, names, source, field, column):
        self.names = names
        self.source = source
        self.field = field
        self.column = column
        self.functions = ELEMENTWISE
        self.indexed: dict[str, Mapping[str, Term]] = {}

    def fail(self, problem: str, node: ast.AST | None = None) -> SpecError:
        where = f" at column {self.column(node.col_offset)}" if node is not None else ""
        return SpecError(self.source, self.field, problem + where)

    def shaped(self, node: ast.AST, build):
        """``build()``, with a shape problem reported at ``node``."""
        try:
            return build()
        except ShapeError as err:
            raise self.fail(str(err), node) from None

    def visit(self, node: ast.AST) -> Term:
        method = getattr(self, f"visit_{type(node).__name__.lower()}", None)
        if method is None:
            raise self.fail(f"'{type(node).__name__}' is not allowed in a formula", node)
        return method(node)

    def visit_constant(self, node):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"unsupported constant {value!r}", node)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail("number too large (beyond float64)", node)
        return ops.const(sp.Integer(value) if isinstance(value, int) else sp.Float(value))

    def visit_name(self, node):
        name = node.id
        if name in self.indexed:
            raise self.fail(f"'{name}' is read at a time step: {self._steps(name)}", node)
        if name in self.names:
            return self.names[name]
        if name in CONSTANTS:
            return ops.const(CONSTANTS[name])
        if name in self.functions or name in TENSOR_FUNCTIONS:
            raise self.fail(f"function '{name}' used without a call", node)
        choices = [n for n in self.names if not n.startswith("_")]
        raise self.fail(
            f"unknown name '{name}'{way_out(name, choices, list_them=len(choices) <= 12)}", node
        )

    def visit_binop(self, node):
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.MatMult):
            return self.shaped(node, lambda: ops.matmul(left, right))
        entry = _BINARY.get(type(node.op))
        if entry is None:
            raise self.fail(f"operator '{type(node.op).__name__}' is not allowed", node)
        text, func = entry
        if isinstance(node.op, ast.Pow):
            if right.batched or right.shape:
                raise self.fail("an exponent must be a number or a scalar parameter", node)
            a, b = left.attr("value"), right.attr("value")
            if a is not None and b is not None and _too_large_power(a, b):
                raise self.fail("number too large (beyond float64)", node)
        if isinstance(node.op, ast.Div) and right.op == "const" and right.attr("value") == 0:
            raise self.fail("division by zero", node)
        if left.op == "const" and right.op == "const":
            value = func(left.attr("value"), right.attr("value"))
            if value.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
                raise self.fail("formula is undefined (division by zero or infinity)", node)
            return ops.const(value)
        return self.shaped(node, lambda: ops.elementwise(func, [left, right], f"'{text}'"))

    def visit_unaryop(self, node):
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.USub):
            if operand.op == "const":
                return ops.const(-operand.attr("value"))
            return ops.elementwise(lambda a: -a, [operand], "'-'")
        raise self.fail(f"operator '{type(node.op).__name__}' is not allowed", node)

    def visit_attribute(self, node):
        if node.attr != "T":
            raise self.fail(
                f"attribute '.{node.attr}' is not allowed (only .T, the transpose)", node
            )
        return ops.transpose(self.visit(node.value))

    def _integer(self, node) -> int | None:
        if node is None:
            return None
        term = self.visit(node)
        value = term.attr("value") if term.op == "const" else None
        if value is None or not value.is_Integer:
            raise self.fail("an index must be an integer", node)
        return int(value)

    def _steps(self, name: str) -> str:
        steps = [f"{name}[{k}]" for k in self.indexed[name]]
        if steps:
            return " or ".join(steps)
        return "not in this formula (a sequence is read as x[t] in a [model.recur] step)"

    def _time_step(self, node) -> str | None:
        """``t``, ``t-1`` or ``T`` for an index of those forms; None for any other."""
        if isinstance(node, ast.Name) and node.id in ("t", "T"):
            return node.id
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Sub)
            and isinstance(node.left, ast.Name)
            and node.left.id == "t"
            and isinstance(node.right, ast.Constant)
            and node.right.value == 1
            and not isinstance(node.right.value, bool)
        ):
            return "t-1"
        return None

    def visit_subscript(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in self.indexed:
            name = node.value.id
            step = self._time_step(node.slice)
            if step is None or step not in self.indexed[name]:
                raise self.fail(f"'{name}' is read as {self._steps(name)}", node)
            return self.indexed[name][step]
        vector = self.visit(node.value)
        if len(vector.shape) != 1:
            raise self.fail(
                f"only vectors can be indexed, got shape {shape_text(vector.shape)}", node
            )
        size = vector.shape[0]
        if isinstance(node.slice, ast.Slice):
            if node.slice.step is not None:
                raise self.fail("a slice with a step is not supported", node)
            lower = self._integer(node.slice.lower)
            upper = self._integer(node.slice.upper)
            start, stop, _ = slice(lower, upper).indices(size)
            if stop <= start:
                raise self.fail(f"the slice is empty for a vector of {size}", node)
            return ops.index(vector, start, stop, squeeze=False)
        position = self._integer(node.slice)
        if not -size <= position < size:
            raise self.fail(f"index {position} is out of range for a vector of {size}", node)
        position %= size
        return ops.index(vector, position, position + 1, squeeze=True)

    def visit_call(self, node):
        if not isinstance(node.func, ast.Name):
            raise self.fail("only named functions can be called", node)
        name = node.func.id
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            raise self.fail("starred arguments are not allowed", node)
        count = len(node.args)
        if name in ("max", "Max") and count == 1:  # one argument: the reduction
            return self._tensor_call(TENSOR_FUNCTIONS["amax"], node, shown=name)
        if name in ("min", "Min") and count == 1:
            return self._tensor_call(TENSOR_FUNCTIONS["amin"], node, shown=name)
        if name in TENSOR_FUNCTIONS:
            return self._tensor_call(TENSOR_FUNCTIONS[name], node)
        if name not in self.functions:
            raise self.fail(
                f"unknown function '{name}'"
                + way_out(name, sorted({*known_functions(), *self.functions})),
                node.func,
            )
        func, arities = self.functions[name]
        self._check_arity(name, arities, count, node)
        if node.keywords:
            raise self.fail(f"'{name}' takes no keyword arguments", node)
        args = [self.visit(a) for a in node.args]
        if name == "leaky_relu" and (args[1].batched or args[1].shape):
            raise self.fail("leaky_relu's slope must be a number or a scalar parameter", node)
        if arities is None:  # Max(a, b, c) = Max(Max(a, b), c), as nested torch.maximum

            def nested(*xs):
                result = func(xs[0], xs[1], evaluate=False)
                for x in xs[2:]:
                    result = func(result, x, evaluate=False)
                return result

            return self.shaped(node, lambda: ops.elementwise(nested, args, f"{name}(...)"))
        return self.shaped(node, lambda: ops.elementwise(func, args, f"{name}(...)"))

    def _check_arity(self, name, arities, count, node):
        if arities is None and count < 2:
            raise self.fail(f"'{name}' needs at least 2 arguments, got {count}", node)
        if arities is not None and count not in arities:
            want = " or ".join(str(a) for a in arities)
            raise self.fail(f"'{name}' takes {want} argument(s), got {count}", node)

    def _tensor_call(self, function, node, shown: str | None = None):
        name = function.name
        self._check_arity(name, function.arity, len(node.args), node)
        kw = dict(function.keywords)
        for keyword in node.keywords:
            if keyword.arg not in function.keywords:
                hint = way_out(keyword.arg, list(function.keywords))
                takes = "no keyword arguments" if not function.keywords else "no keyword"
                raise self.fail(f"'{name}' takes {takes} '{keyword.arg}'{hint}", keyword.value)
            kw[keyword.arg] = self._keyword_value(keyword)
        args = [self.visit(a) for a in node.args]
        term = self.shaped(node, lambda: function.build(args, kw))
        given = tuple((k.arg, kw[k.arg]) for k in node.keywords)
        # how the formula wrote it, for the documents: mean(x), not sum(x)/6
        call = (shown or name, tuple(args), given)
        return replace(term, attrs=(*term.attrs, ("call", call)))

    def _keyword_value(self, keyword):
        value = keyword.value
        if keyword.arg in ("axis", "stride", "padding"):
            if isinstance(value, ast.Tuple):
                return tuple(self._integer(v) for v in value.elts)
            return self._integer(value)
        term = self.visit(value)
        if term.op != "const":
            raise self.fail(f"'{keyword.arg}' must be a number", value)
        return term.attr("value")
