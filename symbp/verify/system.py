"""A model's values and the chain rule's steps, element by element, for a few samples.

Every element of every named value gets a symbol (``h1[3]``, ``z2[0|1]`` for sample 0
of a batch) defined by one step of the forward pass over the symbols it reads, and an
adjoint symbol (``d_h1[3]``) defined by one step of the chain rule: the sum, over the
values that read it, of the local derivative times the reader's adjoint (the course's
generalized backprop, dz/dx = J^T dz/dy, one element at a time). The local derivatives
come from ``sympy.diff`` with symbp's kink conventions (:mod:`symbp.functions`).

Adjoints are scaled as the derivation document writes them: for a value that varies
over the batch, ``d_v`` is dl/dv, the sample's own loss's (N times dL/dv_n when the
batch loss is the mean); for a value shared by the batch (a parameter, a batch
statistic), ``d_v`` is dL/dv, the batch loss's.
"""

from __future__ import annotations

from collections import defaultdict

import mpmath
import numpy as np
import sympy as sp

from ..functions import apply_kink_conventions
from .elements import Array, Evaluator, symbols
from .sample_model import SampleModel

PRECISION = 30  # significant digits of the numeric checks


class System:
    def __init__(self, model: SampleModel, samples: int):
        self.model = model
        self.samples = samples
        self.scale = samples if model.reduction == "mean" else 1
        # name -> one array per sample (the same array for a value shared by the batch)
        self.arrays: dict[str, list[Array]] = {}
        self.adjoints: dict[str, list[Array]] = {}
        self.owner: dict[sp.Symbol, tuple[str, int, tuple]] = {}
        self.defs: dict[sp.Symbol, sp.Expr] = {}  # forward: one step
        self.adjoint_defs: dict[sp.Symbol, sp.Expr] = {}  # backward: one step
        self.order = [*model.leaves, *(n for n, _ in model.values)]
        self.indicators: list[tuple[str, int, list[sp.Symbol]]] = []  # class labels
        self._leaves()
        self._forward()
        self._backward()
        self._full_forward: dict[sp.Symbol, sp.Expr] = {}
        self._full_adjoint: dict[sp.Symbol, sp.Expr] = {}

    # -- building ---------------------------------------------------------------------

    def _per_sample(self, name: str, shape: tuple, batched: bool, prefix: str = "") -> list:
        if not batched:
            one = symbols(prefix + name, shape)
            return [one] * self.samples
        if self.samples == 1:
            return [symbols(prefix + name, shape)]
        return [symbols(prefix + name, shape, sample=n) for n in range(self.samples)]

    def _own(self, name: str, arrays: list[Array]) -> None:
        for n, values in enumerate(arrays):
            for index in np.ndindex(*values.shape):
                self.owner.setdefault(values[index], (name, n, index))

    def _leaves(self) -> None:
        for name, leaf in self.model.leaves.items():
            if name in self.model.labels:
                self.arrays[name] = [self._one_hot(name, n) for n in range(self.samples)]
                continue
            self.arrays[name] = self._per_sample(name, leaf.shape, leaf.batched)
            self._own(name, self.arrays[name])

    def _one_hot(self, name: str, n: int) -> Array:
        """A class label as its one-hot vector, generic: [y=k] symbols for all classes but
        the last, whose indicator is 1 minus theirs, so that what holds for these
        symbols holds for every label."""
        classes = self.model.labels[name]
        tag = f"{name}[{n}|" if self.samples > 1 else f"{name}["
        marks = [sp.Symbol(f"{tag}={k}]", real=True) for k in range(classes - 1)]
        self.indicators.append((name, n, marks))
        return np.array([*marks, 1 - sp.Add(*marks)], dtype=object)

    def cutter(self, owners: dict[int, str]):
        """A term's own array where it is a leaf or one of ``owners`` (term id -> the
        value it names), None where it is to be evaluated."""

        def leaf(term, n):
            if term.op == "name":
                return self.arrays[term.attr("name")][n]
            name = owners.get(id(term))
            return None if name is None else self.arrays[name][n]

        return leaf

    def _forward(self) -> None:
        owners: dict[int, str] = {}
        for name, term in self.model.values:
            evaluator = Evaluator(self.cutter(owners), self.samples)
            arrays = self._per_sample(name, term.shape, term.batched)
            for n in range(self.samples if term.batched else 1):
                value = evaluator.value(term, n)
                for index in np.ndindex(*term.shape):
                    self.defs[arrays[n][index]] = exact(sp.sympify(value[index]))
            self.arrays[name] = arrays
            self._own(name, arrays)
            owners.setdefault(id(term), name)
        self.term_owners = owners  # every named value's term -> its name
        evaluator = Evaluator(self.cutter(owners), self.samples)
        self.sample_losses = [
            exact(sp.sympify(evaluator.value(self.model.loss, n)[()])) for n in range(self.samples)
        ]

    def batched(self, name: str) -> bool:
        return self.model.batched(name)

    def _t(self, symbol: sp.Symbol) -> sp.Expr:
        """dL/d(symbol), through the adjoint symbol of its value."""
        name, n, index = self.owner[symbol]
        adjoint = self.adjoints[name][n][index]
        return adjoint / self.scale if self.batched(name) else adjoint

    def _backward(self) -> None:
        for name in self.order:
            if name in self.model.labels:
                continue
            shape = self.model.shape(name)
            self.adjoints[name] = self._per_sample(name, shape, self.batched(name), "d_")
        weight = sp.Integer(1) / self.samples if self.model.reduction == "mean" else 1
        contributions: dict[sp.Symbol, list[sp.Expr]] = defaultdict(list)
        wanted = self.owner.keys()
        for loss in self.sample_losses:
            for s, local in partials(loss, wanted).items():
                contributions[s].append(weight * apply_kink_conventions(local))
        for value, expr in self.defs.items():
            if expr.free_symbols & wanted:
                t = self._t(value)
                for s, local in partials(expr, wanted).items():
                    contributions[s].append(apply_kink_conventions(local) * t)
        self.adjoint_owner: dict[sp.Symbol, tuple[str, int, tuple]] = {}
        for symbol, (name, n, index) in self.owner.items():
            adjoint = self.adjoints[name][n][index]
            if adjoint in self.adjoint_owner:
                continue
            total = sp.Add(*contributions.get(symbol, []))
            self.adjoint_defs[adjoint] = self.scale * total if self.batched(name) else total
            self.adjoint_owner[adjoint] = (name, n, index)

    # -- expansions ---------------------------------------------------------------------

    def full_adjoint(self, adjoint: sp.Symbol) -> sp.Expr:
        """The adjoint written over forward symbols alone (every chain-rule step after it
        substituted)."""
        if adjoint not in self._full_adjoint:
            expr = self.adjoint_defs[adjoint]
            inner = expr.free_symbols & self.adjoint_defs.keys()
            self._full_adjoint[adjoint] = expr.xreplace({a: self.full_adjoint(a) for a in inner})
        return self._full_adjoint[adjoint]

    def full_forward(self, symbol: sp.Symbol) -> sp.Expr:
        """A forward value written over the leaves alone."""
        if symbol not in self._full_forward:
            expr = self.defs[symbol]
            inner = expr.free_symbols & self.defs.keys()
            self._full_forward[symbol] = expr.xreplace({s: self.full_forward(s) for s in inner})
        return self._full_forward[symbol]

    def without_adjoints(self, expr: sp.Expr) -> sp.Expr:
        inner = expr.free_symbols & self.adjoint_defs.keys()
        return expr.xreplace({a: self.full_adjoint(a) for a in inner})

    def over_leaves(self, expr: sp.Expr) -> sp.Expr:
        inner = expr.free_symbols & self.defs.keys()
        return expr.xreplace({s: self.full_forward(s) for s in inner})

    # -- numbers --------------------------------------------------------------------------

    def leaf_symbols(self) -> list[sp.Symbol]:
        return [s for s, (name, _, _) in self.owner.items() if name in self.model.leaves]

    def numeric(self, leaves: dict[sp.Symbol, object]):
        """A function evaluating expressions of forward and adjoint symbols at ``leaves``
        (mpmath numbers of PRECISION digits): every value computed once, in order."""
        with mpmath.workdps(PRECISION):
            values: dict[sp.Basic, object] = dict(leaves)
            for symbol, expr in self.defs.items():
                values[symbol] = _mp(expr, values)
            for a in reversed(list(self.adjoint_defs)):  # readers come after what they read
                values[a] = _mp(self.adjoint_defs[a], values)

        def evaluate(expr: sp.Expr):
            with mpmath.workdps(PRECISION):
                return _mp(sp.sympify(expr), values)

        return evaluate


def exact(expr: sp.Expr) -> sp.Expr:
    """Decimal constants as the exact fractions they write (1e-5 = 1/100000): floating
    point arithmetic would leave 1e-21 where a proof needs 0."""
    floats = expr.atoms(sp.Float)
    return expr.xreplace({f: sp.Rational(str(f)) for f in floats}) if floats else expr


def partials(expr: sp.Expr, wanted) -> dict[sp.Symbol, sp.Expr]:
    """d expr / d s for each symbol s of ``wanted`` that expr reads: sums and products
    taken apart by hand (a dense layer's W x + b is a sum of products, where sympy.diff
    spends most of its time on assumptions), anything else by ``sympy.diff``."""
    if expr in wanted:
        return {expr: sp.Integer(1)}
    found: dict[sp.Symbol, list[sp.Expr]] = defaultdict(list)
    if expr.is_Add:
        for term in expr.args:
            if term.free_symbols & wanted:
                for s, d in partials(term, wanted).items():
                    found[s].append(d)
    elif expr.is_Mul:
        factors = expr.args
        for i, factor in enumerate(factors):
            if factor.free_symbols & wanted:
                rest = sp.Mul(*factors[:i], *factors[i + 1 :])
                for s, d in partials(factor, wanted).items():
                    found[s].append(rest * d)
    elif expr.is_Pow and not expr.exp.free_symbols & wanted:
        outer = expr.exp * expr.base ** (expr.exp - 1)
        for s, d in partials(expr.base, wanted).items():
            found[s].append(outer * d)
    elif expr.is_Function and all(isinstance(a, sp.Expr) for a in expr.args):
        # the chain rule through f(u, ...): f's own derivative once, times u's partials
        slots = [sp.Dummy(real=True) for _ in expr.args]
        inner = dict(zip(slots, expr.args, strict=True))
        for slot, arg in inner.items():
            if arg.free_symbols & wanted:
                outer = sp.diff(expr.func(*slots), slot).xreplace(inner)
                for s, d in partials(arg, wanted).items():
                    found[s].append(outer * d)
    else:
        return {s: sp.diff(expr, s) for s in expr.free_symbols & wanted}
    return {s: sp.Add(*ds) for s, ds in found.items()}


def _mp(expr: sp.Basic, values: dict):
    """``expr`` at ``values`` in mpmath arithmetic (memoized in ``values``); a function
    SymPy evaluates itself, at PRECISION digits."""
    known = values.get(expr)
    if known is not None:
        return known
    if expr.is_Number:
        result = mpmath.mpf(expr.p) / expr.q if expr.is_Rational else mpmath.mpf(expr)
    elif expr.is_Add:
        result = mpmath.fsum(_mp(a, values) for a in expr.args)
    elif expr.is_Mul:
        result = mpmath.fprod(_mp(a, values) for a in expr.args)
    elif expr.is_Pow:
        base, exponent = _mp(expr.base, values), _mp(expr.exp, values)
        result = mpmath.power(base, exponent) if base != 0 or exponent > 0 else mpmath.inf
    elif expr.is_Symbol:
        raise KeyError(expr.name)
    elif expr.is_Function and all(isinstance(a, sp.Expr) for a in expr.args):
        args = [sp.Float(_mp(a, values), PRECISION) for a in expr.args]
        result = _number(expr.func(*args).evalf(PRECISION))
    else:  # a choice (Piecewise), a comparison: SymPy decides it at the numbers
        numbers = {s: sp.Float(_mp(s, values), PRECISION) for s in expr.free_symbols}
        result = _number(expr.xreplace(numbers).evalf(PRECISION))
    values[expr] = result
    return result


def _number(value: sp.Basic):
    if value.is_Number and value.is_real:
        return mpmath.mpf(value) if not value.is_Rational else mpmath.mpf(value.p) / value.q
    if value in (sp.oo, -sp.oo):
        return mpmath.inf if value == sp.oo else -mpmath.inf
    return mpmath.nan
