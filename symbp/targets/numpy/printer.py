"""Printers for Python targets: NumPy arrays and plain ``math`` floats.

Both print the same SymPy expressions; they differ only in which function computes
what (``np.exp`` on arrays, ``math.exp`` on floats) and in how a choice is written
(``np.where`` vs a conditional expression). Functions that need a numerically stable
form are printed as calls to small helpers, whose bodies live in the templates; the
printer records which helpers a module needs in ``self.helpers``.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.pycode import PythonCodePrinter

from ...ir.graph import N
from .conv_kernels import ConvCalls
from .tensor_kernels import TensorCalls


class _PythonTarget(PythonCodePrinter):
    """Shared printing rules; subclasses name the functions."""

    FUNCS: dict[str, str] = {}
    HELPER_PREFIX = "_"

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "standard": "python3", "order": "none"})
        self.helpers: set[str] = set()

    def _helper(self, name: str, *args: sp.Expr) -> str:
        self.helpers.add(name)
        return f"{self.HELPER_PREFIX}{name}({', '.join(self._print(a) for a in args)})"

    def _call(self, key: str, *args: sp.Expr) -> str:
        return f"{self.FUNCS[key]}({', '.join(self._print(a) for a in args)})"

    def _print_Float(self, expr):
        """A float64 literal; past float64's range (exp(1e300) in a derivative) the value
        is an infinity, written as one rather than as a bare inf."""
        value = float(expr)
        if value != value:
            return self.FUNCS["nan"]
        if value in (float("inf"), float("-inf")):
            return ("-" if value < 0 else "") + self.FUNCS["inf"]
        return repr(value)

    def _print_Infinity(self, expr):
        return self.FUNCS["inf"]

    def _print_NegativeInfinity(self, expr):
        return "-" + self.FUNCS["inf"]

    def _print_NaN(self, expr):
        return self.FUNCS["nan"]

    def _print_Rational(self, expr):
        return f"{expr.p}/{expr.q}"

    def _print_Mul(self, expr):
        """A rational coefficient becomes a division, as a person writes it: x**2/2."""
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_Rational and not coeff.is_Integer and rest != 1:
            if coeff.is_negative:
                return "-" + self._print_Mul(-expr)
            numerator = coeff.p * rest
            text = self.parenthesize(numerator, precedence(expr)) if coeff.p != 1 else None
            if text is None:
                text = self.parenthesize(rest, precedence(expr))
            return f"{text}/{coeff.q}"
        return super()._print_Mul(expr)

    def _print_Exp1(self, expr):
        return self.FUNCS["e"]

    def _print_Pi(self, expr):
        return self.FUNCS["pi"]

    def _print_Pow(self, expr, rational=False):
        base, power = expr.args
        if power.is_Integer and power < -1:
            return f"1/{self._print(base**-power)}"
        if power == sp.S.Half:
            return self._call("sqrt", base)
        if power == -sp.S.Half:
            return f"1/{self._call('sqrt', base)}"
        if power == -1:
            return f"1/{self.parenthesize(base, sp.printing.precedence.PRECEDENCE['Pow'])}"
        return super()._print_Pow(expr, rational=rational)

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name in self.FUNCS:
            return self._call(name, *expr.args)
        return super()._print_Function(expr)

    _print_exp = _print_log = _print_sin = _print_cos = _print_tan = _print_Function
    _print_tanh = _print_sinh = _print_cosh = _print_asinh = _print_atan = _print_Function

    def _print_Abs(self, expr):
        return self._call("Abs", expr.args[0])

    def _print_sigmoid(self, expr):
        return self._helper("sigmoid", expr.args[0])

    def _print_softplus(self, expr):
        return self._helper("softplus", expr.args[0])

    def _print_sign(self, expr):
        return self._helper("sign", expr.args[0])

    def _print_erf(self, expr):
        return self._helper("erf", expr.args[0])

    def _print_MinMax(self, expr, key):
        args = list(expr.args)
        text = self._print(args[0])
        for arg in args[1:]:
            text = f"{self.FUNCS[key]}({text}, {self._print(arg)})"
        return text

    def _print_Max(self, expr):
        return self._print_MinMax(expr, "Max")

    def _print_Min(self, expr):
        return self._print_MinMax(expr, "Min")

    def _print_relu(self, expr):
        return self._print_MinMax(sp.Max(expr.args[0], 0, evaluate=False), "Max")

    def _print_clamped_log(self, expr):
        floor = repr(float(expr.FLOOR))
        return f"{self.FUNCS['log']}({self.FUNCS['Max']}({self._print(expr.args[0])}, {floor}))"

    def _print_leaky_relu(self, expr):
        z, slope = expr.args
        return self._choice(z > 0, z, slope * z)

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError("a Piecewise without a default branch")
        text = self._print(last)
        for value, condition in reversed(pieces):
            text = self._choice_text(self._print(condition), self._print(value), text)
        return text

    def _choice(self, cond, a, b) -> str:
        return self._choice_text(self._print(cond), self._print(a), self._print(b))

    def _print_Heaviside(self, expr):
        x = expr.args[0]
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return self._step(x, h0)


class NumpyPrinter(ConvCalls, TensorCalls, _PythonTarget):
    """Expressions over NumPy arrays (a batch at a time)."""

    FUNCS = {
        "exp": "np.exp",
        "log": "np.log",
        "sqrt": "np.sqrt",
        "sin": "np.sin",
        "cos": "np.cos",
        "tan": "np.tan",
        "tanh": "np.tanh",
        "sinh": "np.sinh",
        "cosh": "np.cosh",
        "asinh": "np.arcsinh",
        "atan": "np.arctan",
        "Abs": "np.abs",
        "Max": "np.maximum",
        "Min": "np.minimum",
        "e": "np.e",
        "pi": "np.pi",
        "inf": "np.inf",
        "nan": "np.nan",
    }

    def _choice_text(self, cond: str, a: str, b: str) -> str:
        return f"np.where({cond}, {a}, {b})"

    def _step(self, x, h0) -> str:
        if h0 == 0:
            return f"({self._print(x)} > 0)"
        return f"np.heaviside({self._print(x)}, {self._print(h0)})"

    def _print_sign(self, expr):
        return f"np.sign({self._print(expr.args[0])})"

    # tensor operations (program.Call), by op name
    def call(self, op: str, args: tuple[str, ...], attrs: tuple = ()) -> str:
        return getattr(self, f"_call_{op}")(*args, **dict(attrs))

    def _call_linear(self, a, w, b=None):
        return f"{a} @ {w}.T" + (f" + {b}" if b else "")

    def _call_matmul(self, g, w):
        return f"{g} @ {w}"

    def _call_matmul_tn(self, g, a):
        return f"{g}.T @ {a}"

    def _call_sum_rows(self, g):
        return f"{g}.sum(axis=0)"

    def _call_softmax(self, z):
        self.helpers.add("softmax")
        return f"_softmax({z})"

    def _call_softmax_vjp(self, s, g):
        self.helpers.add("softmax_vjp")
        return f"_softmax_vjp({s}, {g})"

    def _call_cross_entropy(self, z, y):
        self.helpers.add("cross_entropy")
        return f"_cross_entropy({z}, {y})"

    def _call_cross_entropy_vjp(self, z, y, g):
        self.helpers |= {"softmax", "cross_entropy_vjp"}
        return f"_cross_entropy_vjp({z}, {y}, {g})"


class ScalarPrinter(_PythonTarget):
    """Expressions over Python floats (one sample at a time, N = 1)."""

    HELPER_PREFIX = "_math_"

    FUNCS = {
        "exp": "math.exp",
        "log": "math.log",
        "sqrt": "math.sqrt",
        "sin": "math.sin",
        "cos": "math.cos",
        "tan": "math.tan",
        "tanh": "math.tanh",
        "sinh": "math.sinh",
        "cosh": "math.cosh",
        "asinh": "math.asinh",
        "atan": "math.atan",
        "Abs": "abs",
        "Max": "max",
        "Min": "min",
        "e": "math.e",
        "pi": "math.pi",
        "inf": "math.inf",
        "nan": "math.nan",
    }

    def doprint(self, expr, assign_to=None):
        return super().doprint(sp.sympify(expr).xreplace({N: sp.S.One}), assign_to)

    def _choice_text(self, cond: str, a: str, b: str) -> str:
        return f"({a} if {cond} else {b})"

    def _print_MinMax(self, expr, key):
        """max(0, z) as (z if z > 0 else 0.0): a comparison is a few times cheaper than
        a call of the builtin max, and a float step makes one per unit and sample."""
        args = list(expr.args)
        numbers = [a for a in args if a.is_Number]
        names = [a for a in args if a.is_Symbol]
        if len(args) == 2 and len(numbers) == 1 and len(names) == 1:
            name, bound = self._print(names[0]), repr(float(numbers[0]))
            relation = ">" if key == "Max" else "<"
            return f"({name} if {name} {relation} {bound} else {bound})"
        return super()._print_MinMax(expr, key)

    def _print_Pow(self, expr, rational=False):
        if self._as_product(expr):  # a float product is faster than ** in CPython
            name = self._print(expr.base)
            return f"{name}*{name}"
        return super()._print_Pow(expr, rational=rational)

    @staticmethod
    def _as_product(expr) -> bool:
        return isinstance(expr, sp.Pow) and expr.exp == 2 and expr.base.is_Symbol

    def parenthesize(self, item, level, strict=False):
        """x**2 printed as x*x binds like a product: in one, a/(x*x), it needs parentheses
        (a/x*x would divide by x and multiply by it)."""
        # a product with a negative coefficient asks at the precedence of a sum
        if self._as_product(item) and level >= PRECEDENCE["Add"]:
            return f"({self._print(item)})"
        return super().parenthesize(item, level, strict)

    def _step(self, x, h0) -> str:
        x = self._print(x)
        if h0 == 0:
            return f"(1.0 if {x} > 0 else 0.0)"
        return f"(1.0 if {x} > 0 else ({self._print(h0)} if {x} == 0 else 0.0))"

    def _print_erf(self, expr):
        return f"math.erf({self._print(expr.args[0])})"


def wrap(text: str, indent: int, start: int, width: int = 99) -> str:
    """Break a long printed expression at top-level ``+``/``-`` (then a conditional's
    ``if``/``else``, then ``*`` and ``/``) inside parentheses so that generated lines stay
    within ``width`` columns. ``indent`` is the
    statement's indentation, ``start`` the column where the expression begins. A whole
    expression in parentheses, ``-(a + b)``, is broken inside them."""
    if start + len(text) <= width:
        return text
    opening, body, closing = "(", text, ")"
    outer = re.match(r"^(-?[\w.]*\()(.*)\)$", text, re.S)
    # a sum in parentheses scaled by a name, (a - b)/N: broken inside the parentheses
    scaled = re.match(r"^\((.*)\)([*/][\w.]+)$", text, re.S)
    if outer and _balanced(outer.group(2)) and len(_split_top_level(text, (" + ", " - "))) == 1:
        opening, body = outer.group(1), outer.group(2)
    elif scaled and _balanced(scaled.group(1)):
        body, closing = scaled.group(1), ")" + scaled.group(2)
    # any token boundary inside parentheses is a safe place to break a line
    for separators in ((" + ", " - "), (" if ", " else "), ("*", "/")):
        pieces = _split_top_level(body, separators)
        if len(pieces) > 1:
            break
    else:
        return text
    pad = " " * (indent + 4)
    lines, current = [], ""
    for piece in pieces:
        if current and len(pad) + len(current) + len(piece) > width:
            lines.append(current.rstrip())
            current = piece.lstrip()
        else:
            current += piece
    lines.append(current)
    # a piece still too long (a - b*c/(d + e)) is broken inside, one level deeper
    for k, line in enumerate(lines):
        if len(pad) + len(line) > width:
            sign = line[:2] if line[:2] in ("+ ", "- ") else ""
            inner = wrap(line[len(sign) :], indent + 4, len(pad) + len(sign) + 1, width)
            if inner != line[len(sign) :]:
                lines[k] = sign + (inner if inner.startswith("(") else f"({inner})")
    return opening + "\n" + "\n".join(pad + line for line in lines) + "\n" + " " * indent + closing


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _split_top_level(text: str, separators: tuple[str, ...]) -> list[str]:
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and i > 0:
            for sep in separators:
                if text.startswith(sep, i) and not text.startswith("**", i) and text[i - 1] != "*":
                    pieces.append(text[start:i])
                    start = i
                    i += len(sep) - 1
                    break
        i += 1
    pieces.append(text[start:])
    return pieces
