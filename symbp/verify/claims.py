"""Claimed formulas for gradients and adjoints, proved or refuted against the derivation.

A claims file maps what the derivation names to a formula in the model language::

    [claims]
    "dl/dw1" = "2*(yhat - y)*x**2"      # a parameter's gradient for one sample
    "dL/dW1" = "batch_mean(outer(delta1, x))"   # the batch's gradient
    "delta2" = "a2 - y"                  # a layer stack's delta^(2) = dl/dz2
    "d_h1"   = "W2.T @ d_h2 * (1 - h1**2)"      # any named value's adjoint
    "yhat"   = "w1*x**2 + w2*x + b"      # a forward value

A formula reads the model's names (inputs, targets, parameters, named values), the
batch size ``N``, and the derivation's own adjoints (``d_NAME``, ``deltaK``), so that a
claim about one step of the chain rule is checked given the steps after it, and the
first wrong step of a derivation is found. Each claim is:

- **refuted** where, at a seeded random point, its value differs from the derivation's
  (both computed with 30 significant digits); the point, the element and both values
  are reported;
- **proved** where the difference simplifies to 0, with every symbol free (which
  holds whatever the values are), after substituting the chain rule's later steps,
  then the forward pass;
- **not decided** otherwise, equal at every seeded point (stated as such).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import mpmath
import numpy as np
import sympy as sp

from ..errors import SpecError, way_out
from ..functions import relu
from ..language import ops
from ..language.formula import parse_formula
from ..language.terms import Term, shape_text
from .elements import Evaluator
from .sample_model import SampleModel, has_term, sample_model
from .system import PRECISION, System, exact

POINTS = 3  # seeded random points of the numeric check
AGREE = mpmath.mpf(10) ** (10 - PRECISION)  # relative: what 30 digits leave of rounding
# a claim that writes decimals (0.7071 for sqrt(1/2)) is held to what they can say: the
# 15 or so significant digits a number typed in the claim keeps
AGREE_DECIMALS = mpmath.mpf(10) ** -12
EXPANSION_LIMIT = 20000  # nodes an expanded difference may have; beyond: not decided
SHOWN = 8  # leaf values a refutation prints
# what a claim may write besides the model language: the derivative of relu, [z > 0],
# with symbp's (and PyTorch's) convention at the kink, step(0) = 0; and the derivative
# of max(a, b) in a, heaviside(a - b), which splits a tie evenly (heaviside(0) = 1/2), as
# torch.maximum does
CLAIM_FUNCTIONS = {
    "step": (lambda z: sp.Heaviside(z, 0), (1,)),
    "heaviside": (lambda z: sp.Heaviside(z, sp.S.Half), (1,)),
}


@dataclass
class Claim:
    key: str  # as the claims file writes it
    formula: str
    kind: str  # "adjoint" (dl/dv), "batch" (dL/dv), "value"
    name: str  # the value it speaks of

    @property
    def what(self) -> str:
        if self.kind == "value":
            return self.name
        return f"{'dl' if self.kind == 'adjoint' else 'dL'}/d{self.name}"


@dataclass
class ClaimResult:
    claim: Claim
    status: str  # "proved" | "refuted" | "not decided"
    detail: str  # how it was decided, or where it fails
    first_wrong: bool = False  # the first wrong step, from the loss back
    point: dict[str, object] = field(default_factory=dict)  # a refutation's leaf values
    index: tuple = ()
    claimed: float | None = None
    derived: float | None = None

    def line(self) -> str:
        head = f"{self.status:<12} {self.claim.key} = {self.claim.formula}"
        tail = f"\n{'':13}{self.detail}" if self.detail else ""
        if self.first_wrong:
            tail += f"\n{'':13}the first wrong step, from the loss back"
        return head + tail


@dataclass
class Verification:
    model: str
    results: list[ClaimResult]

    @property
    def ok(self) -> bool:
        """Every claim proved."""
        return all(r.status == "proved" for r in self.results)

    @property
    def refuted(self) -> list[ClaimResult]:
        return [r for r in self.results if r.status == "refuted"]

    @property
    def exit_code(self) -> int:
        return 1 if self.refuted else 0

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        return f"{self.model}: {len(self.results)} claim(s): {parts}"

    def text(self) -> str:
        return "\n".join([*(r.line() for r in self.results), self.summary()])

    def __repr__(self) -> str:
        return f"<Verification {self.summary()}>"

    def _repr_markdown_(self) -> str:
        rows = ["| claim | formula | result |", "| --- | --- | --- |"]
        for r in self.results:
            status = f"**{r.status}**" + (" (first wrong step)" if r.first_wrong else "")
            detail = f": {r.detail}" if r.detail else ""
            rows.append(f"| `{r.claim.key}` | `{r.claim.formula}` | {status}{detail} |")
        return "\n".join([f"**{self.summary()}**", "", *rows])


STATUSES = ("proved", "refuted", "not decided")


# -- reading claims ---------------------------------------------------------------------------

_ADJOINT = re.compile(r"^d(l|L)\s*/\s*d\s*([A-Za-z_][A-Za-z0-9_]*)$")
_DELTA = re.compile(r"^(?:delta|δ)[_^]?\(?(\d+)\)?$")


def read_claims(path: str | Path) -> dict[str, str]:
    source = str(path)
    try:
        with open(path, "rb") as handle:
            doc = tomllib.load(handle)
    except FileNotFoundError:
        raise SpecError(source, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(source, "", f"cannot read the file ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(source, "", f"not valid TOML: {err}") from None
    table = doc.get("claims", doc) if isinstance(doc.get("claims"), dict) else doc
    where = "claims." if table is not doc else ""
    for key, value in table.items():
        if not isinstance(value, str):
            raise SpecError(
                source,
                f"{where}{key}",
                f"expected a formula in quotes, got {type(value).__name__}",
            )
    if not table:
        raise SpecError(source, "claims", 'no claims (write "dl/dw" = "formula" lines)')
    return dict(table)


def _claim(model: SampleModel, key: str, formula: str, source: str) -> Claim:
    names = [*model.leaves, *(n for n, _ in model.values)]
    text = key.strip()
    adjoint = _ADJOINT.match(text)
    delta = _DELTA.match(text)
    if text.startswith("d_") and text[2:] in names + list(model.aliases):
        kind, name = "adjoint", text[2:]
    elif adjoint:
        kind, name = ("adjoint" if adjoint.group(1) == "l" else "batch"), adjoint.group(2)
    elif delta:
        kind, name = "adjoint", model.deltas.get(f"delta{delta.group(1)}", "")
        if not name:
            raise SpecError(
                source,
                f'claims."{key}"',
                f"the model has no delta{delta.group(1)} (delta^(k) is a layer stack's"
                f" dl/dz^(k)){way_out(f'delta{delta.group(1)}', list(model.deltas))}",
            )
    elif text in names or text in model.aliases:
        kind, name = "value", text
    else:
        choices = [f"dl/d{n}" for n in names] + [n for n, _ in model.values]
        raise SpecError(
            source,
            f'claims."{key}"',
            "not a gradient, adjoint or value of the model (write dl/dNAME, dL/dNAME,"
            f" d_NAME, deltaK or a value's name){way_out(text, choices, list_them=False)}",
        )
    name = model.aliases.get(name, name)
    if name not in names:
        raise SpecError(
            source, f'claims."{key}"', f"the model has no value '{name}'{way_out(name, names)}"
        )
    if kind == "value" and name in model.leaves:
        raise SpecError(source, f'claims."{key}"', f"'{name}' is given, not computed")
    if kind == "adjoint" and name in model.labels:
        raise SpecError(source, f'claims."{key}"', f"'{name}' holds class labels: no gradient")
    return Claim(key, formula, kind, name)


def _step_order(model: SampleModel, claim: Claim) -> float:
    """When the derivation completes what the claim speaks of, from the loss back: the
    adjoints of later values first; a leaf's with its earliest reader's."""
    position = {n: i for i, (n, _) in enumerate(model.values)}
    if claim.kind == "value":
        return -1e9 + position[claim.name]
    if claim.name in position:
        return -position[claim.name]

    def reads(t: Term) -> bool:
        return t.op == "name" and t.attr("name") == claim.name

    readers = [i for i, (_, t) in enumerate(model.values) if has_term(t, reads)]
    return -(min(readers) if readers else 0) + 0.5


# -- checking -------------------------------------------------------------------------------


def verify_claims(spec, claims, *, seed: int = 0, source: str = "claims") -> Verification:
    """Check ``claims`` (a mapping of key -> formula, or the path of a claims TOML file)
    about ``spec`` (a path, a built-in example's name, a loaded spec or a derivation)."""
    spec = getattr(spec, "spec", spec)  # a Derivation: its model
    if isinstance(spec, (str, Path)):
        from ..spec import load

        spec = load(str(spec))
    if isinstance(claims, (str, Path)):
        source = str(claims)
        claims = read_claims(claims)
    model = sample_model(spec)
    parsed = [_claim(model, k, v, source) for k, v in claims.items()]
    parsed.sort(key=lambda c: _step_order(model, c))
    checker = _Checker(model, parsed, seed, source)
    results = [checker.check(c) for c in parsed]
    wrong = [r for r in results if r.status == "refuted"]
    if wrong and len(results) > 1:
        wrong[0].first_wrong = True
    return Verification(model.name, results)


class _Checker:
    def __init__(self, model: SampleModel, claims: list[Claim], seed: int, source: str):
        self.model = model
        self.seed = seed
        self.source = source
        if model.coupled:
            for c in claims:
                if c.kind == "adjoint" and not model.batched(c.name):
                    raise SpecError(
                        source,
                        f'claims."{c.key}"',
                        f"{c.name} is shared by the batch and the model reads batch"
                        f" statistics, so one sample has no gradient of its own: claim"
                        f" dL/d{c.name}",
                    )
        self._systems: dict[int, System] = {}
        self._points: dict[int, list] = {}
        self._evaluators: dict[tuple[int, int], object] = {}

    def samples_for(self, claim: Claim) -> int:
        """One sample for what one sample's loss says; two for the batch's (so that a
        missing 1/N shows); three when the samples meet in batch statistics."""
        if self.model.coupled:
            return 3
        return 2 if claim.kind == "batch" else 1

    def system(self, samples: int) -> System:
        if samples not in self._systems:
            self._systems[samples] = System(self.model, samples)
        return self._systems[samples]

    def points(self, system: System) -> list[dict[sp.Symbol, sp.Float]]:
        if system.samples not in self._points:
            self._points[system.samples] = [self._point(system, k) for k in range(POINTS)]
        return self._points[system.samples]

    def evaluator(self, system: System, k: int):
        key = (system.samples, k)
        if key not in self._evaluators:
            self._evaluators[key] = system.numeric(self.points(system)[k])
        return self._evaluators[key]

    def _point(self, system: System, k: int) -> dict[sp.Symbol, sp.Float]:
        rng = np.random.default_rng([self.seed, k])
        values = {}
        for s in system.leaf_symbols():
            role = self.model.leaves[system.owner[s][0]].role
            low, high = (0.05, 0.95) if role == "target" else (-1.0, 1.0)
            values[s] = mpmath.mpf(float(rng.uniform(low, high)))
        for _, _, marks in system.indicators:  # a class label drawn: one-hot indicators
            label = int(rng.integers(0, len(marks) + 1))
            values |= {m: mpmath.mpf(int(k == label)) for k, m in enumerate(marks)}
        return values

    # -- the claim's and the derivation's elements ---------------------------------------

    def _names(self, samples: int) -> dict[str, Term]:
        names = dict(self.model.names)
        for target, classes in self.model.labels.items():  # a claim reads labels one-hot
            label = ops.name(target, (), True)
            names[target] = Term("one_hot", (label,), (classes,), True, (("classes", classes),))
        if "N" not in names:
            names["N"] = ops.const(sp.Integer(samples))
        for alias, name in self.model.adjoint_names().items():
            shape, batched = self.model.shape(name), self.model.batched(name)
            names.setdefault(alias, ops.name(alias, shape, batched))
        return names

    def _claimed(self, system: System, term: Term, samples: int) -> list:
        """The claim's elements per sample, over the system's symbols."""
        adjoint_names = self.model.adjoint_names()
        cut = system.cutter(system.term_owners)

        def leaf(t: Term, n: int):
            if t.op == "name" and t.attr("name") not in system.arrays:
                return system.adjoints[adjoint_names[t.attr("name")]][n]
            return cut(t, n)

        evaluator = Evaluator(leaf, system.samples)
        return [evaluator.value(term, n) for n in range(samples)]

    def _derived(self, system: System, claim: Claim, samples: int) -> list:
        name = claim.name
        out = []
        for n in range(samples):
            if claim.kind == "value":
                pick = np.vectorize(lambda s: system.defs[s], otypes=[object])
                out.append(np.asarray(pick(system.arrays[name][n]), dtype=object))
                continue
            pick = np.vectorize(lambda a: system.adjoint_defs[a], otypes=[object])
            values = np.asarray(pick(system.adjoints[name][n]), dtype=object)
            if claim.kind == "batch" and self.model.batched(name):
                values = np.asarray(values / system.scale, dtype=object)  # dL/dv_n
            out.append(values)
        return out

    # -- deciding -----------------------------------------------------------------------

    def check(self, claim: Claim) -> ClaimResult:
        field_name = f'claims."{claim.key}"'
        count = self.samples_for(claim)
        names = self._names(count)
        term = parse_formula(
            claim.formula, names, source=self.source, field=field_name, functions=CLAIM_FUNCTIONS
        )
        shape = self.model.shape(claim.name)
        if term.shape != shape:
            return ClaimResult(
                claim,
                "refuted",
                f"the formula has shape {shape_text(term.shape)}, {claim.what} has shape"
                f" {shape_text(shape)}",
            )
        if term.batched and claim.kind == "batch" and not self.model.batched(claim.name):
            return ClaimResult(
                claim,
                "refuted",
                f"the formula varies from sample to sample; {claim.what} is one value for"
                " the batch (average a per-sample formula with batch_mean(...))",
            )
        system = self.system(count)
        samples = count if (term.batched or self.model.batched(claim.name)) else 1
        claimed = self._claimed(system, term, samples)
        derived = self._derived(system, claim, samples)
        decimals = any(sp.sympify(v).has(sp.Float) for values in claimed for v in np.ravel(values))
        refutation = self._refute(system, claim, claimed, derived, decimals)
        if refutation is not None:
            return refutation
        if not self._proved(system, claimed, derived):
            digits = 12 if decimals else PRECISION - 10
            written = " (the claim writes decimals)" if decimals else ""
            return ClaimResult(
                claim,
                "not decided",
                f"not proved symbolically; equal at {POINTS} seeded points to"
                f" {digits} significant digits{written}",
            )
        return ClaimResult(claim, "proved", "")

    def _refute(self, system, claim, claimed, derived, decimals) -> ClaimResult | None:
        agree = AGREE_DECIMALS if decimals else AGREE
        for k, point in enumerate(self.points(system)):
            evaluate = self.evaluator(system, k)
            for n, (c_values, d_values) in enumerate(zip(claimed, derived, strict=True)):
                c_values = np.broadcast_to(c_values, d_values.shape)
                for index in np.ndindex(*d_values.shape):
                    c = evaluate(exact(sp.sympify(c_values[index])))
                    d = evaluate(sp.sympify(d_values[index]))
                    if not (_finite(c) and _finite(d)):
                        if _finite(c) != _finite(d):
                            return self._refuted(claim, system, point, k, n, index, c, d)
                        continue
                    if abs(c - d) > agree * max(1, abs(d)):
                        return self._refuted(claim, system, point, k, n, index, c, d)
        return None

    def _refuted(self, claim, system, point, k, n, index, c, d) -> ClaimResult:
        batched = self.model.batched(claim.name)
        shown: dict[str, object] = {}
        for name, sample, marks in system.indicators:
            if batched and sample != n:
                continue
            ones = [k for k, m in enumerate(marks) if point[m] == 1]
            label = name + (f"[n={sample}]" if system.samples > 1 else "")
            shown[label] = ones[0] if ones else len(marks)
        for s, v in point.items():
            if s not in system.owner:
                continue  # a class label's indicator: shown as the label below
            name, sample, i = system.owner[s]
            if batched and sample != n and system.batched(name):
                continue  # one sample's value reads that sample's leaves alone
            label = name
            if system.samples > 1 and system.batched(name):
                label += f"[n={sample}]"
            if i:
                label += f"[{','.join(map(str, i))}]"
            shown[label] = float(v)
        text = ", ".join(f"{key} = {value:.6g}" for key, value in list(shown.items())[:SHOWN])
        text = text.replace(".0e", "e")
        if len(shown) > SHOWN:
            text += f", ... ({len(shown) - SHOWN} more)"
        element = f"[{','.join(map(str, index))}]" if index else ""
        where = f" of sample {n}" if system.samples > 1 and batched else ""
        detail = (
            f"at {text} (seeded point {k}): {claim.what}{element}{where} is"
            f" {_shown(d, c)}, the claim gives {_shown(c, d)}"
        )
        return ClaimResult(
            claim,
            "refuted",
            detail,
            point=shown,
            index=index,
            claimed=_float(c),
            derived=_float(d),
        )

    def _proved(self, system: System, claimed, derived) -> bool:
        for c_values, d_values in zip(claimed, derived, strict=True):
            c_values = np.broadcast_to(c_values, d_values.shape)
            for index in np.ndindex(*d_values.shape):
                if not _zero(system, sp.sympify(c_values[index]), sp.sympify(d_values[index])):
                    return False
        return True


def _zero(system: System, claimed: sp.Expr, derived: sp.Expr) -> bool:
    """Whether claimed - derived is 0 whatever its symbols' values. Each rewriting below
    replaces symbols by what they stand for, so 0 in any form is a proof:

    1. as it stands;
    2. the derivation's adjoints written down to those the claim reads (the chain
       rule's later steps), then forward values substituted one value at a time, the
       latest first, down to what both sides share (zhat = (z - mu)/sigma, then mu =
       batch_mean(z): what cs231n's batchnorm backward needs, and no more);
    3. everything over the leaves alone, functions written out by their definitions."""
    claimed = exact(claimed)
    difference = claimed - derived
    if sp.expand(difference) == 0:
        return True
    frontier = claimed.free_symbols & system.adjoint_defs.keys()
    for _ in range(len(system.order) + 1):  # each round reaches one value further back
        later = (difference.free_symbols & system.adjoint_defs.keys()) - frontier
        if not later:
            break
        difference = difference.xreplace({a: system.adjoint_defs[a] for a in later})
        if not _small(difference, EXPANSION_LIMIT):
            break
    if sp.expand(difference) == 0:
        return True
    position = {name: k for k, name in enumerate(system.order)}
    while _small(difference, EXPANSION_LIMIT):
        present = difference.free_symbols & system.defs.keys()
        if not present:
            break
        latest = max(position[system.owner[s][0]] for s in present)
        step = {s: system.defs[s] for s in present if position[system.owner[s][0]] == latest}
        difference = _masks(difference.xreplace(step))
        if sp.expand(difference) == 0:
            return True
    full = _masks(system.over_leaves(system.without_adjoints(claimed - derived)))
    if not _small(full, EXPANSION_LIMIT):
        return False
    if sp.expand(full) == 0:
        return True
    written = _definitions(full)
    return _small(written, 400) and sp.simplify(written) == 0


def _small(expr: sp.Expr, limit: int) -> bool:
    """At most ``limit`` nodes (counted until the limit is passed)."""
    for count, _ in enumerate(sp.preorder_traversal(expr)):
        if count >= limit:
            return False
    return True


def _masks(expr: sp.Expr) -> sp.Expr:
    """relu's mask read from the stored value, [relu(z) > 0] = [z > 0], as the
    derivation itself reads it."""
    return expr.replace(
        lambda e: isinstance(e, sp.Heaviside) and isinstance(e.args[0], relu),
        lambda e: sp.Heaviside(e.args[0].args[0], *e.args[1:]),
    )


def _definitions(expr: sp.Expr) -> sp.Expr:
    """symbp's functions (sigmoid, relu, softplus, ...) written out: sigmoid(z) = 1 / (1 +
    exp(-z)), so that a claim written either way compares."""
    return expr.replace(lambda e: hasattr(type(e), "definition"), lambda e: e.definition())


def _finite(value) -> bool:
    return isinstance(value, mpmath.mpf) and bool(mpmath.isfinite(value))


def _float(value) -> float | None:
    return float(value) if isinstance(value, mpmath.mpf) else None


def _shown(value, other=None) -> str:
    """10 significant digits, or as many as it takes (up to 20) to tell it from other."""
    number = _float(value)
    if number is None:
        return str(value)
    for digits in (10, 15, 20):
        text = mpmath.nstr(value, digits)
        if other is None or text != mpmath.nstr(other, digits):
            return text
    return text


__all__ = ["Claim", "ClaimResult", "Verification", "read_claims", "verify_claims"]
