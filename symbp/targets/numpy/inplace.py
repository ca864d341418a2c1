"""NumPy printing into preallocated arrays: every operation writes with ``out=``.

``Z = A W^T + b`` becomes ``np.matmul(A, W.T, out=Z)`` and ``np.add(Z, b, out=Z)``;
``d_Z1 = d_A1*(1 - A1**2)`` becomes a few ufunc calls through a scratch array. A
training step printed this way allocates nothing after its first step (see
:mod:`symbp.program.memory` for which arrays it writes).

The order of evaluation is chosen so that writing over an operand is safe: when ``out``
is also an operand of the expression (the optimizer's ``m <- beta m + (1 - beta) g``
updates m in place), every other part is computed into scratch arrays first, and the
part that reads ``out`` is computed into it last.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from .conv_kernels import CONV_OPS, conv_into
from .printer import NumpyPrinter

# one ufunc per SymPy function of one argument: the NumPy printer's, and sign
UNARY = {
    name: func for name, func in NumpyPrinter.FUNCS.items() if name not in ("Max", "Min", "e", "pi")
} | {"sign": "np.sign"}
RELATIONS = {
    sp.StrictGreaterThan: "np.greater",
    sp.GreaterThan: "np.greater_equal",
    sp.StrictLessThan: "np.less",
    sp.LessThan: "np.less_equal",
}


class Constants:
    """The number operands of the printed calls, each named once: the module defines
    them as 0-d arrays of its dtype. NumPy converts a Python number operand on every
    call, which costs about as much as a ufunc call on a small array; the value is the
    same either way, a Python number taking the array's dtype (NEP 50)."""

    def __init__(self) -> None:
        self.literals: dict[str, str] = {}  # name -> the number as printed

    def name(self, literal: str) -> str:
        spelled = literal.replace("-", "m").replace("+", "").replace(".", "_").replace("/", "_by_")
        name = f"K_{spelled}"
        self.literals[name] = literal
        return name

    def definitions(self) -> list[tuple[str, str]]:
        return sorted(self.literals.items())


class InplacePrinter:
    """Prints ``out = expr`` as ufunc calls. ``tensors`` are the names of arrays; a
    subexpression without them is a scalar and printed as a Python expression.
    ``scratch(k)`` names the k-th scratch array of ``out``'s shape."""

    def __init__(
        self,
        tensors: set[str],
        scratch: Callable[[int], str],
        ones: str | None = None,
        constants: Constants | None = None,
        arrays: dict[str, str] | None = None,
    ):
        self.tensors = tensors
        self.scratch = scratch
        self.ones = ones  # an array of N ones, for column sums of (N, d) matrices
        self.constants = constants  # where number operands get their names, if anywhere
        # scalar names with a 0-d array of the same value, used where one is an operand
        self.arrays = arrays or {}
        self.scalar = NumpyPrinter()
        self.lines: list[str] = []
        self.out_names: set[str] = set()
        self.scratch_used = 0

    @property
    def helpers(self) -> set[str]:
        return self.scalar.helpers

    def assign(self, out: str, expr: sp.Expr, aliases: frozenset[str] = frozenset()) -> list[str]:
        """The calls that leave ``expr``'s value in the array ``out``; ``aliases`` are
        other names of that array that ``expr`` reads (a value whose memory it takes)."""
        self.lines = []
        self.out_names = {out} | set(aliases)
        operand = self._into(expr, out, depth=0)
        if operand != out:  # a bare array or a scalar
            self.lines.append(f"np.copyto({out}, {operand})")
        return self.lines

    # -- helpers -------------------------------------------------------------------------

    def _is_tensor(self, expr: sp.Expr) -> bool:
        return any(s.name in self.tensors for s in expr.free_symbols)

    def _scratch(self, depth: int) -> str:
        self.scratch_used = max(self.scratch_used, depth + 1)
        return self.scratch(depth)

    def _operand(self, expr: sp.Expr, depth: int) -> str:
        """A name or literal holding ``expr``: computed into scratch ``depth`` if needed."""
        if not self._is_tensor(expr):
            return self._scalar_text(expr)
        if expr.is_Symbol:
            return expr.name
        return self._into(expr, self._scratch(depth), depth + 1)

    def _scalar_text(self, expr: sp.Expr) -> str:
        text = self.scalar.doprint(expr)
        if expr.is_Number:
            return self._number(text)
        if expr.is_Symbol and expr.name in self.arrays:
            return self.arrays[expr.name]
        return text if expr.is_Atom else f"({text})"

    def _number(self, literal: str) -> str:
        """A number operand: its name among the constants, or the literal itself."""
        return self.constants.name(literal) if self.constants is not None else literal

    def _emit(self, func: str, *args: str, out: str) -> str:
        self.lines.append(f"{func}({', '.join(args)}, out={out})")
        return out

    def _reads(self, expr: sp.Expr, out: str) -> bool:
        """Whether ``expr`` reads the array ``out`` (under any of its names)."""
        names = self.out_names if out in self.out_names else {out}
        return any(s.name in names for s in expr.free_symbols)

    def _operands(self, args: list[sp.Expr], out: str, depth: int) -> tuple[list[str], int]:
        """Operands of an n-ary operation whose result goes to ``out``: at most one
        computed part goes into ``out`` itself, computed last, and only when no other
        operand reads ``out`` after that."""
        computed = [a for a in args if self._is_tensor(a) and not a.is_Symbol]
        chain = None
        if computed:
            candidates = [a for a in computed if self._reads(a, out)] or computed
            chain = candidates[0]
            others = [a for a in args if a is not chain]
            if any(self._reads(a, out) for a in others):
                chain = None
        texts: dict[int, str] = {}
        for index, arg in enumerate(args):
            if arg is not chain:
                texts[index] = self._operand(arg, depth)
                if self._is_tensor(arg) and not arg.is_Symbol:
                    depth += 1
        for index, arg in enumerate(args):
            if arg is chain:
                texts[index] = self._into(arg, out, depth)
        return [texts[i] for i in range(len(args))], depth

    # -- the operations ------------------------------------------------------------------

    def _into(self, expr: sp.Expr, out: str, depth: int) -> str:
        """Compute ``expr`` into ``out`` (or return the operand that already holds it)."""
        if not self._is_tensor(expr):
            return self._scalar_text(expr)
        if expr.is_Symbol:
            return expr.name
        if isinstance(expr, sp.Add):
            return self._sum(expr, out, depth)
        if isinstance(expr, sp.Mul):
            return self._product(expr, out, depth)
        if isinstance(expr, sp.Pow):
            return self._power(expr, out, depth)
        name = type(expr).__name__
        if name in UNARY:
            (arg,) = expr.args
            return self._emit(UNARY[name], self._into(arg, out, depth), out=out)
        if type(expr) in RELATIONS:
            texts, _ = self._operands(list(expr.args), out, depth)
            return self._emit(RELATIONS[type(expr)], *texts, out=out)
        method = getattr(self, f"_into_{name}", None)
        if method is not None:
            return method(expr, out, depth)
        # anything else: NumPy's own (allocating) expression, copied into place
        self.lines.append(f"np.copyto({out}, {self.scalar.doprint(expr)})")
        return out

    def _sum(self, expr: sp.Add, out: str, depth: int) -> str:
        signs = [a.could_extract_minus_sign() for a in expr.args]
        magnitudes = [-a if negative else a for a, negative in zip(expr.args, signs, strict=True)]
        texts, _ = self._operands(magnitudes, out, depth)
        terms = self._out_first(list(zip(texts, signs, strict=True)), out)
        first = next((k for k, (_, negative) in enumerate(terms) if not negative), None)
        if terms[0][1] and terms[0][0] == out:  # out holds a subtracted part
            if first is None:  # nothing to subtract it from: negate it
                terms[0] = (self._emit("np.negative", out, out=out), False)
            else:  # b - out, into out: one call instead of negating out and adding b
                positive = terms.pop(first)[0]
                terms[0] = (self._emit("np.subtract", positive, out, out=out), False)
        elif terms[0][1]:  # start from a positive term
            if first is None:  # every term negative: -(a + b + ...)
                result = self._fold("np.add", [text for text, _ in terms], out)
                return self._emit("np.negative", result, out=out)
            terms.insert(0, terms.pop(first))
        result = terms[0][0]
        for text, negative in terms[1:]:
            result = self._emit("np.subtract" if negative else "np.add", result, text, out=out)
        return result

    @staticmethod
    def _out_first(items: list, out: str) -> list:
        """Operands with the one already in ``out`` first: combining the others first
        would write over it."""
        return sorted(items, key=lambda item: item[0] != out)

    def _fold(self, func: str, texts: list[str], out: str) -> str:
        texts = self._out_first([(t,) for t in texts], out)
        result = texts[0][0]
        for (text,) in texts[1:]:
            result = self._emit(func, result, text, out=out)
        return result

    def _product(self, expr: sp.Mul, out: str, depth: int) -> str:
        numerator, denominator = [], []
        for factor in expr.args:
            if isinstance(factor, sp.Pow) and factor.exp.is_Number and factor.exp < 0:
                denominator.append(factor.base ** (-factor.exp))
            else:
                numerator.append(factor)
        scale = sp.Mul(*[f for f in numerator if not self._is_tensor(f)])
        arrays = [f for f in numerator if self._is_tensor(f)]
        below = sp.Mul(*denominator)
        parts = arrays + ([below] if denominator else [])
        texts, _ = self._operands(parts, out, depth)
        factors = [(text, False) for text in texts[: len(arrays)]]
        if denominator:
            factors.append((texts[-1], True))
        factors = self._out_first(factors, out)
        text, divide = factors.pop(0)
        if divide:  # x / out: the numerator's first array, or the scale, over it
            if factors:
                top = factors.pop(0)[0]
            else:  # the scale is the numerator
                top, scale = self._scalar_text(scale), sp.S.One
            result = self._emit("np.divide", top, text, out=out)
        elif scale == -1 and not factors and text != out:
            return self._emit("np.negative", text, out=out)
        else:
            result = text
        for text, divide in factors:
            result = self._emit("np.divide" if divide else "np.multiply", result, text, out=out)
        if scale != 1:
            result = self._emit("np.multiply", result, self._scalar_text(scale), out=out)
        return result

    def _power(self, expr: sp.Pow, out: str, depth: int) -> str:
        base, power = expr.args
        operand = self._into(base, out, depth) if self._is_tensor(base) else None
        if operand is None:  # scalar ** array
            texts, _ = self._operands([power], out, depth)
            return self._emit("np.power", self._scalar_text(base), texts[0], out=out)
        if power == 2:
            return self._emit("np.square", operand, out=out)
        if power == sp.S.Half:
            return self._emit("np.sqrt", operand, out=out)
        if power == -1:
            return self._emit("np.reciprocal", operand, out=out)
        if self._is_tensor(power):
            raise NotImplementedError("array ** array")  # pragma: no cover - not in models
        return self._emit("np.power", operand, self._scalar_text(power), out=out)

    # symbp's own functions (symbp.functions), with the stable forms of the NumPy printer
    def _into_sigmoid(self, expr, out, depth):  # 1 / (1 + exp(-z)), as _sigmoid computes it
        self._helper_into("sigmoid", out, self._into(expr.args[0], out, depth))
        return out

    def _into_softplus(self, expr, out, depth):
        zero = self._number("0")
        return self._emit("np.logaddexp", zero, self._into(expr.args[0], out, depth), out=out)

    def _into_relu(self, expr, out, depth):
        zero = self._number("0")
        return self._emit("np.maximum", self._into(expr.args[0], out, depth), zero, out=out)

    def _into_Max(self, expr, out, depth):
        texts, _ = self._operands(list(expr.args), out, depth)
        return self._fold("np.maximum", texts, out)

    def _into_Min(self, expr, out, depth):
        texts, _ = self._operands(list(expr.args), out, depth)
        return self._fold("np.minimum", texts, out)

    def _into_clamped_log(self, expr, out, depth):  # log(max(x, e^-100))
        floor = self._number(repr(float(expr.FLOOR)))
        self._emit("np.maximum", self._into(expr.args[0], out, depth), floor, out=out)
        return self._emit("np.log", out, out=out)

    def _into_Heaviside(self, expr, out, depth):
        if len(expr.args) > 1 and expr.args[1] == 0:  # [x > 0], the kink convention
            zero = self._number("0")
            return self._emit("np.greater", self._into(expr.args[0], out, depth), zero, out=out)
        self.lines.append(f"np.copyto({out}, {self.scalar.doprint(expr)})")
        return out

    # -- tensor operations (program.Call), written into ``out`` --------------------------

    # which argument an operation may overwrite with its result (symbp.program.memory)
    OVERWRITES = {"cross_entropy_vjp": 0, "softmax": 0, "softmax_vjp": 1}

    @classmethod
    def overwritable(cls, op: str, attrs: tuple = ()) -> int | None:
        """The argument that ``op`` may write its result over, if any: max-pooling's
        adjoint over its input when the windows tile it (each element read, then
        written, by one window only)."""
        settings = dict(attrs)
        if op == "maxpool2d_vjp" and settings["kernel"] == settings["stride"]:
            return 0
        return cls.OVERWRITES.get(op)

    def call(self, op: str, out: str, args: tuple[str, ...], attrs: tuple = ()) -> list[str]:
        self.lines = []
        if op in CONV_OPS:  # the image ops: their helpers take out=
            self.lines.append(conv_into(self.scalar, op, out, args, attrs))
            return self.lines
        getattr(self, f"_call_{op}")(out, *args)
        return self.lines

    def _call_linear(self, out, a, w, b=None):
        self._emit("np.matmul", a, f"{w}.T", out=out)
        if b:
            self._emit("np.add", out, b, out=out)

    def _call_matmul(self, out, g, w):
        self._emit("np.matmul", g, w, out=out)

    def _call_matmul_tn(self, out, g, a):
        self._emit("np.matmul", f"{g}.T", a, out=out)

    def _call_sum_rows(self, out, g):
        if self.ones:  # 1^T g: one BLAS call, several times faster than a NumPy reduction
            self._emit("np.matmul", self.ones, g, out=out)
        else:
            self.lines.append(f"np.sum({g}, axis=0, out={out})")

    def _helper_into(self, name, out, *args):
        self.helpers.add(f"{name}_into")
        self.lines.append(f"_{name}_into({', '.join(args)}, out={out})")

    def _call_softmax(self, out, z):
        self._helper_into("softmax", out, z)

    def _call_softmax_vjp(self, out, s, g):
        self._helper_into("softmax_vjp", out, s, g)

    def _call_cross_entropy(self, out, z, y):
        self._helper_into("cross_entropy", out, z, y)

    def _call_cross_entropy_vjp(self, out, z, y, g):
        self.helpers.add("softmax_into")
        self._helper_into("cross_entropy_vjp", out, z, y, g)
