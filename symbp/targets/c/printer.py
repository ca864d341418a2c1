"""The C printer: the program's elementwise SymPy expressions as C99, shared by the C
target (plain functions) and the CUDA target (the same text in ``__host__ __device__``
functions, which compile for the GPU and, unchanged, for the CPU).

One printer per dtype: float32 prints ``expf``/``fmaxf`` and literals with an ``F``
suffix, float64 prints ``exp``/``fmax`` and plain literals. Functions that need a
numerically stable form (sigmoid, softplus) are printed as calls to small helpers whose
bodies live in each target's templates, as the NumPy printer does; the printer records
which helpers it used in ``self.helpers``. Kinks follow the conventions that
:func:`symbp.functions.apply_kink_conventions` fixed for every target (the program the
printer reads already has them): Heaviside(x, 0) is ``x > 0``, relu'(0) = 0,
leaky_relu'(0) = slope, ties of max/min split by Heaviside's value at 0.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from ...ir.graph import N

C_TYPES = {"float32": "float", "float64": "double"}

# Every program value is printed with this prefix: a model's names then live apart from
# everything else in the source (C, C++ and CUDA keywords, the math functions the printer
# calls, the macros of <cmath> and <cstdio> such as NAN, EOF or errno, symbp's own
# helpers, kernels and buffers), whatever a user calls them. A list of reserved words
# could never be complete; a namespace of one's own is.
NAME_PREFIX = "v_"


class CPrinter(C99CodePrinter):
    """SymPy expressions as C99 of one floating-point type."""

    def __init__(self, dtype: str = "float32", prefix: str = NAME_PREFIX):
        if dtype not in C_TYPES:
            raise ValueError(f"dtype must be one of {tuple(C_TYPES)}")
        alias = float32 if dtype == "float32" else float64
        super().__init__({"type_aliases": {real: alias}})
        self.dtype = dtype
        self.ctype = C_TYPES[dtype]
        self.suffix = "F" if dtype == "float32" else ""
        self.fsuffix = "f" if dtype == "float32" else ""  # expf vs exp
        self.helpers: set[str] = set()
        self.prefix = prefix  # "" only for symbp's own code (the optimizer's functions)
        # constants as literals of the printer's type, never <math.h>'s M_PI or
        # M_2_SQRTPI: those are POSIX, not C99 (strict -std=c99 does not define them)
        self.math_macros = {}

    # --- names ---------------------------------------------------------------------

    def name(self, symbol: sp.Symbol | str) -> str:
        """The C identifier of a program value: its name in the derivation, prefixed
        (``w1`` is ``v_w1``), so that no model name can collide with the source's own."""
        text = symbol if isinstance(symbol, str) else symbol.name
        return self.prefix + text

    def _print_Symbol(self, expr):
        if expr == N:  # the batch size is an int at run time; the math is in real
            return f"(({self.ctype})N)"
        return self.name(expr)

    # --- numbers -------------------------------------------------------------------

    def literal(self, value: float) -> str:
        """A floating-point literal of the printer's type, exactly Python's repr."""
        text = repr(float(value))
        if text in ("inf", "-inf", "nan"):
            return {"inf": "INFINITY", "-inf": "-INFINITY", "nan": "NAN"}[text]
        if "." not in text and "e" not in text:
            text += ".0"
        return text + self.suffix

    def _print_Float(self, expr):
        return self.literal(float(expr))

    def _print_Rational(self, expr):
        return f"{self.literal(expr.p)}/{self.literal(expr.q)}"

    def _print_Exp1(self, expr):
        return self.literal(float(sp.E))

    def _print_Pi(self, expr):
        return self.literal(float(sp.pi))

    def _print_Infinity(self, expr):
        return "INFINITY"

    def _print_NegativeInfinity(self, expr):
        return "-INFINITY"

    # --- arithmetic ----------------------------------------------------------------

    def _print_Mul(self, expr):
        """A rational coefficient becomes a division, as a person writes it: x*x/2."""
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_Rational and not coeff.is_Integer and rest != 1:
            if coeff.is_negative:
                return "-" + self.parenthesize(-expr, PRECEDENCE["Mul"])
            numerator = coeff.p * rest
            text = self.parenthesize(numerator if coeff.p != 1 else rest, precedence(expr))
            return f"{text}/{self.literal(coeff.q)}"
        return super()._print_Mul(expr)

    def _print_Pow(self, expr, rational=False):
        base, power = expr.args
        if power.is_Integer and 1 < abs(int(power)) <= 3:
            factor = self.parenthesize(base, PRECEDENCE["Mul"] + 1)
            # parenthesized: after a division sign, a/c*c would divide by c and multiply by it
            product = "(" + "*".join([factor] * abs(int(power))) + ")"
            return product if power > 0 else f"{self.literal(1)}/{product}"
        if power == -1:
            return f"{self.literal(1)}/{self.parenthesize(base, PRECEDENCE['Mul'] + 1)}"
        if power == sp.S.Half:
            return f"sqrt{self.fsuffix}({self._print(base)})"
        if power == -sp.S.Half:
            return f"{self.literal(1)}/sqrt{self.fsuffix}({self._print(base)})"
        exponent = self.literal(float(power)) if power.is_Number else self._print(power)
        return f"pow{self.fsuffix}({self._print(base)}, {exponent})"

    # --- choices and steps ---------------------------------------------------------

    def _choice(self, cond: str, a: str, b: str) -> str:
        return f"(({cond}) ? {a} : {b})"

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError("a Piecewise without a default branch")
        text = self._print(last)
        for value, condition in reversed(pieces):
            text = self._choice(self._print(condition), self._print(value), text)
        return text

    def _print_Heaviside(self, expr):
        """The step at 0 takes the value the program chose (relu'(0) = 0 as PyTorch)."""
        x = self._print(expr.args[0])
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        one, zero = self.literal(1), self.literal(0)
        if h0 == 0:
            return self._choice(f"{x} > 0", one, zero)
        at_zero = self._choice(f"{x} == 0", self._print(sp.Float(h0)), zero)
        return self._choice(f"{x} > 0", one, at_zero)

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        return f"(({self.ctype})(({x} > 0) - ({x} < 0)))"

    def _minmax(self, name: str) -> str:
        """The function of the max or min of two values: libm's fmax/fmin."""
        return f"f{name}{self.fsuffix}"

    def _print_MinMax(self, expr, name):
        args = list(expr.args)
        text = self._print(args[0])
        for arg in args[1:]:
            text = f"{self._minmax(name)}({text}, {self._print(arg)})"
        return text

    def _print_Max(self, expr):
        return self._print_MinMax(expr, "max")

    def _print_Min(self, expr):
        return self._print_MinMax(expr, "min")

    # --- symbp's functions (symbp.functions) ----------------------------------------

    def _helper(self, name: str, *args) -> str:
        self.helpers.add(name)
        return f"symbp_{name}({', '.join(self._print(a) for a in args)})"

    def _print_sigmoid(self, expr):
        return self._helper("sigmoid", expr.args[0])

    def _print_softplus(self, expr):
        return self._helper("softplus", expr.args[0])

    def _print_relu(self, expr):
        return f"{self._minmax('max')}({self._print(expr.args[0])}, {self.literal(0)})"

    def _print_leaky_relu(self, expr):
        z, slope = expr.args
        return self._choice(f"{self._print(z)} > 0", self._print(z), self._print(slope * z))

    def _print_clamped_log(self, expr):
        """log(max(x, e^-100)): torch.nn.BCELoss's clamp of the log at -100."""
        floor = self.literal(float(expr.FLOOR))
        maximum = self._minmax("max")
        return f"log{self.fsuffix}({maximum}({self._print(expr.args[0])}, {floor}))"

    def _print_Relational(self, expr):
        lhs, rhs = (self._print(a) for a in expr.args)
        return f"{lhs} {expr.rel_op} {rhs}"


class HostPrinter(CPrinter):
    """The C target's printer: CPrinter with max and min as inline helpers. On a CPU
    libm's fmax is a function call (the compiler inlines it only where NaN may be
    ignored); symbp_max has fmax's semantics (the other operand where one is NaN) in a
    compare and a select. The helpers' bodies live in templates/_helpers.j2."""

    def _minmax(self, name: str) -> str:
        self.helpers.add(name)
        return f"symbp_{name}"
