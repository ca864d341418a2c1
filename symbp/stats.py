"""Operation counts for ``symbp derive --stats``: what reverse mode saves over naive diff.

Three numbers, all operations per sample, from one counter:

- **forward**: the per-sample loss over inputs, targets and parameters
  (:func:`symbp.documents.chain.full_loss`) counted as a DAG, each distinct subexpression once:
  a fair forward evaluation that reuses what it has computed.
- **naive**: the loss plus one independent ``sympy.diff`` of it per parameter, each
  counted as a TREE (no sharing: the cost of evaluating each expression as written).
  Tree sizes come from a memoized walk over SymPy's shared DAG, never by expanding.
  The derivatives are the expressions ``sympy.diff`` returns, built by
  :class:`NaiveDiff` (``sympy.diff`` itself takes a minute at depth 80).
- **generated**: the derived program: each ``Assign``'s right-hand side as a tree (the
  statements already share what is shared), plus 1 per ``BatchSum`` and ``BatchMean``
  (an add per sample). ``N`` stays a symbol: the ``/N`` of the mean's adjoint is a
  division per sample in the generated code, so it is counted. Statements over
  parameters only run once per batch; they are counted as if per sample (an upper bound).

The counter (:func:`operation`) charges, per node:

- symbols and numbers: 0;
- ``Add`` of k terms: k - 1; a term with a negative coefficient is a subtraction
  (``a - b`` costs 1), and one negation is added if every term is subtracted;
- ``Mul``: one per multiplication or division between its factors (``a*b``, ``a/b``
  and ``1/b`` cost 1, ``2*a/b`` costs 2); a coefficient of -1 is a negation (1) unless
  the product is a subtracted term of an ``Add``;
- ``Pow``: 1 (``x**2``, ``sqrt(x)``, ``1/x``), 2 for other negative numeric exponents
  (power and reciprocal) outside a product;
- a function application (exp, tanh, sigmoid, Abs, Heaviside, ...): 1;
  ``Max``/``Min`` of k arguments: k - 1;
- ``Piecewise``: 1 per branch with a condition (a select), conditions counted too;
  a comparison: 1; ``And``/``Or`` of k arguments: k - 1; anything else: 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp
from sympy.core.parameters import distribute

from .derive import derive
from .documents.chain import full_loss
from .functions import apply_kink_conventions
from .program.statements import Assign, Program
from .spec import parse_spec
from .spec.expression import ExpressionSpec

# --- the counter ------------------------------------------------------------------------

Operation = tuple[int, tuple[sp.Basic, ...]]  # (own cost, operands still to compute)


def operation(expr: sp.Basic) -> Operation:
    """The cost of the operation at the top of ``expr`` and the operands it reads."""
    if expr.is_Atom:
        return 0, ()
    if expr.is_Add:
        return _add(expr)
    if expr.is_Mul:
        return _mul(expr)
    if expr.is_Pow:
        return _pow(expr)
    if isinstance(expr, (sp.Max, sp.Min, sp.And, sp.Or)):
        return max(len(expr.args) - 1, 1), expr.args
    if isinstance(expr, sp.Piecewise):
        pairs = expr.args
        selects = sum(1 for _, cond in pairs if cond is not sp.true)
        return max(selects, 1), tuple(part for pair in pairs for part in pair)
    return 1, expr.args


def _negated_term(term: sp.Basic) -> sp.Basic | None:
    """``-term`` built without evaluation when ``term`` has a negative coefficient (a
    subtraction in an Add); None otherwise. SymPy arithmetic would re-distribute."""
    if not (term.is_Mul and term.args[0].is_Number and term.args[0].is_negative):
        return None
    coeff, rest = -term.args[0], term.args[1:]
    factors = rest if coeff == 1 else (coeff, *rest)
    return factors[0] if len(factors) == 1 else sp.Mul._from_args(factors)


def _add(expr: sp.Add) -> Operation:
    operands = []
    subtracted = 0
    for term in expr.args:
        positive = _negated_term(term)
        subtracted += positive is not None
        operands.append(term if positive is None else positive)
    negation = 1 if subtracted == len(expr.args) else 0
    return len(expr.args) - 1 + negation, tuple(operands)


def _mul(expr: sp.Mul) -> Operation:
    coeff, factors = expr.as_coeff_mul()
    numerator, denominator = [], []
    for factor in factors:
        if factor.is_Pow and factor.exp.is_Number and factor.exp.is_negative:
            base, power = factor.args
            denominator.append(base if power == -1 else sp.Pow(base, -power, evaluate=False))
        else:
            numerator.append(factor)
    negation = 0
    if coeff == -1 and numerator:
        negation = 1
    elif coeff != 1:
        numerator.append(coeff)
    count = len(numerator) + len(denominator) - 1 + (0 if numerator else 1)
    return count + negation, tuple(numerator + denominator)


def _pow(expr: sp.Pow) -> Operation:
    base, power = expr.args
    if power.is_Number and power.is_negative:
        return (1 if power == -1 else 2), (base,)
    return 1, (base, power)


def dag_ops(*exprs: sp.Basic) -> int:
    """Operations to evaluate ``exprs`` computing each distinct subexpression once."""
    seen: set[sp.Basic] = set()
    stack = list(exprs)
    total = 0
    while stack:
        expr = stack.pop()
        if expr in seen:
            continue
        seen.add(expr)
        cost, operands = operation(expr)
        total += cost
        stack.extend(operands)
    return total


def postorder(root: sp.Basic, expand, combine, memo: dict) -> object:
    """Fold a DAG bottom-up without recursion (deep models overflow Python's stack).

    ``expand(node) -> (children, state)``; ``combine(node, state, child values)``;
    each distinct node is combined once and kept in ``memo``."""
    pending: dict = {}
    stack = [root]
    while stack:
        node = stack[-1]
        if node in memo:
            stack.pop()
        elif node not in pending:
            pending[node] = expand(node)
            stack.extend(child for child in pending[node][0] if child not in memo)
        else:
            children, state = pending.pop(node)
            memo[node] = combine(node, state, [memo[child] for child in children])
            stack.pop()
    return memo[root]


def tree_ops(expr: sp.Basic, memo: dict | None = None) -> int:
    """Operations to evaluate ``expr`` as written, repeating every repeated subexpression.

    Memoized by subexpression (pass one ``memo`` to share it between calls), so a huge
    tree over a small DAG costs time linear in the DAG."""
    return postorder(expr, _operands_and_cost, _tree_size, {} if memo is None else memo)


def _operands_and_cost(node: sp.Basic) -> tuple[tuple, int]:
    cost, operands = operation(node)
    return operands, cost


def _tree_size(node: sp.Basic, cost: int, operand_sizes: list[int]) -> int:
    return cost + sum(operand_sizes)


# --- naive derivatives --------------------------------------------------------------------


class NaiveDiff:
    """``d expr / d wrt`` as ``sympy.diff`` writes it, one parameter at a time, quickly.

    ``sympy.diff`` walks its whole result after every step and re-flattens ever longer
    products, so on a depth-80 tanh chain it needs a minute. Here each node's derivative
    is built once per parameter by SymPy's own rules (sum, product and chain rule, each
    function's ``fdiff``), and a product is only re-flattened by SymPy where flattening
    would change it (:func:`multiply`). Nothing is shared between parameters. Tree
    counts equal ``sympy.diff``'s (checked in tests/test_stats.py)."""

    def __init__(self) -> None:
        self.partials: dict[tuple[sp.Basic, int], sp.Expr] = {}  # shared by parameters

    def __call__(self, expr: sp.Expr, wrt: sp.Symbol) -> sp.Expr:
        return postorder(expr, self._expand, lambda e, _, ds: self._rule(e, wrt, ds), {})

    @staticmethod
    def _expand(expr: sp.Basic) -> tuple[tuple, None]:
        opaque = expr.is_Atom or isinstance(expr, sp.Piecewise)
        return (() if opaque else expr.args), None

    def _rule(self, expr: sp.Basic, wrt: sp.Symbol, ds: list[sp.Expr]) -> sp.Expr:
        if expr == wrt:
            return sp.S.One
        if isinstance(expr, sp.Piecewise):  # conditions are not differentiated
            return apply_kink_conventions(expr.diff(wrt))
        live = [(i, d) for i, d in enumerate(ds) if d is not sp.S.Zero]
        if not live:
            return sp.S.Zero
        if expr.is_Add:
            return sp.Add(*ds)
        if expr.is_Pow:
            return _power_rule(expr, *ds)
        args = expr.args
        if expr.is_Mul:
            return sp.Add(*[multiply(*args[:i], d, *args[i + 1 :]) for i, d in live])
        return sp.Add(*[multiply(self._partial(expr, i), d) for i, d in live])

    def _partial(self, expr: sp.Basic, index: int) -> sp.Expr:
        """The derivative of ``expr`` in its argument ``index``, over its arguments."""
        key = (expr, index)
        if key not in self.partials:
            self.partials[key] = apply_kink_conventions(_partial(expr, index))
        return self.partials[key]


def _power_rule(expr: sp.Pow, dbase: sp.Expr, dexp: sp.Expr) -> sp.Expr:
    """SymPy's ``b**e * (de*log(b) + db*e/b)``, multiplied in SymPy's order (which
    decides whether a number gets distributed over a sum)."""
    base, power = expr.args
    scaled = multiply(multiply(dbase, power), sp.Pow(base, -1))
    return multiply(expr, sp.Add(multiply(dexp, sp.log(base)), scaled))


def _partial(expr: sp.Basic, index: int) -> sp.Expr:
    if isinstance(expr, sp.Function) and type(expr)._eval_derivative is _FUNCTION_RULE:
        return expr.fdiff(index + 1)
    # a function with its own rule (Abs, Max, ...): apply it to a placeholder
    args = expr.args
    dummies = [a if a.is_Number else sp.Dummy(real=True) for a in args]
    local = expr.func(*dummies).diff(dummies[index])
    with distribute(False):
        return local.xreplace(dict(zip(dummies, args, strict=True)))


_FUNCTION_RULE = sp.Function._eval_derivative


def multiply(*factors: sp.Expr) -> sp.Expr:
    """``sympy.Mul(*factors)`` in time linear in the number of factors.

    SymPy's product folds numbers, merges factors with a common base (``x*x``,
    ``s/s``, ``exp(a)*exp(b)``) and distributes a number over a lone sum; it also sorts
    and re-checks every factor, which is what makes long products slow. Here only the
    factors that share a base go through SymPy; unusual cases go to SymPy whole."""
    coeff, groups = sp.S.One, {}
    for factor in factors:
        for arg in sp.Mul.make_args(factor):
            if arg.is_Number:
                coeff *= arg
            else:
                groups.setdefault(arg.as_base_exp()[0], []).append(arg)
    if any(base.is_Number for base in groups) or not coeff.is_finite:
        return sp.Mul(*factors)
    args = []
    for same in groups.values():
        merged = same[0] if len(same) == 1 else sp.Mul(*same)
        if merged.is_Number:
            coeff *= merged
        elif merged.is_Mul:
            return sp.Mul(*factors)
        else:
            args.append(merged)
    if coeff == 0 or not args:
        return coeff
    if coeff != 1 and len(args) == 1 and args[0].is_Add:
        return sp.Mul(coeff, args[0])  # SymPy distributes: 2*(a + b) -> 2*a + 2*b
    args = args if coeff == 1 else [coeff, *args]
    return args[0] if len(args) == 1 else sp.Mul._from_args(args)


# --- the three numbers -------------------------------------------------------------------


@dataclass
class OpStats:
    forward: int  # the per-sample loss as a DAG
    naive: int  # loss + one sympy.diff per parameter, as trees
    generated: int  # the derived program
    derive_seconds: float
    generated_forward: int  # forward-phase statements of the program
    generated_backward: int  # backward-phase statements of the program
    statements: int
    params: int

    @property
    def generated_ratio(self) -> float:
        return self.generated / max(self.forward, 1)

    @property
    def naive_ratio(self) -> float:
        return self.naive / max(self.forward, 1)


def forward_ops(spec: ExpressionSpec) -> int:
    return dag_ops(full_loss(spec))


def naive_ops(spec: ExpressionSpec) -> int:
    """The loss and each parameter's derivative by ``sympy.diff``, each as a tree."""
    loss = full_loss(spec)
    memo: dict = {}
    diff = NaiveDiff()
    total = tree_ops(loss, memo)
    for name in spec.params:
        total += tree_ops(diff(loss, spec.symbol(name)), memo)
    return total


def program_ops(program: Program) -> dict[str, int]:
    """Operations per phase of a derived program ("forward", "backward")."""
    memo: dict = {}
    counts = {"forward": 0, "backward": 0}
    for stmt in program.statements:
        cost = tree_ops(stmt.expr, memo) if isinstance(stmt, Assign) else 1
        counts[stmt.phase] = counts.get(stmt.phase, 0) + cost
    return counts


def op_stats(spec: ExpressionSpec) -> OpStats:
    start = time.perf_counter()
    program = derive(spec).program
    seconds = time.perf_counter() - start
    phases = program_ops(program)
    return OpStats(
        forward=forward_ops(spec),
        naive=naive_ops(spec),
        generated=sum(phases.values()),
        derive_seconds=seconds,
        generated_forward=phases["forward"],
        generated_backward=phases["backward"],
        statements=len(program.statements),
        params=len(spec.params),
    )


def format_stats(stats: OpStats, name: str) -> str:
    rows = [
        ("forward loss (each subexpression once)", stats.forward, ""),
        (
            f"naive: loss + {stats.params} sympy.diff, as trees",
            stats.naive,
            f"{stats.naive_ratio:.2f}x forward",
        ),
        (
            f"generated program ({stats.statements} statements)",
            stats.generated,
            f"{stats.generated_ratio:.2f}x forward",
        ),
        ("  forward phase", stats.generated_forward, ""),
        ("  backward phase", stats.generated_backward, ""),
    ]
    width = max(len(label) for label, _, _ in rows)
    digits = max(len(str(count)) for _, count, _ in rows)
    lines = [f"{name}: operations per sample"]
    lines += [
        f"  {label:<{width}}  {count:>{digits}}  {note}".rstrip() for label, count, note in rows
    ]
    lines.append(f"  {'derivation time':<{width}}  {stats.derive_seconds:.3f} s")
    return "\n".join(lines)


# --- scaling with depth ------------------------------------------------------------------


def chain_formula(depth: int) -> str:
    """``tanh(w_L*tanh(...tanh(w_1*x)))``."""
    formula = "x"
    for layer in range(1, depth + 1):
        formula = f"tanh(w{layer}*{formula})"
    return formula


def deep_chain_spec(depth: int) -> ExpressionSpec:
    """A spec for the chain with target y and loss (yhat - y)**2; depth up to 200 (the
    most parentheses Python's parser nests)."""
    text = "\n".join(
        [
            f'name = "chain{depth}"',
            "[model]",
            'inputs = ["x"]',
            'targets = ["y"]',
            f'output = "{chain_formula(depth)}"',
            'loss = "(yhat - y)**2"',
        ]
    )
    return parse_spec(text, f"chain{depth}.toml")


@dataclass
class ScalingRow:
    depth: int
    forward: int
    naive: int
    generated: int
    derive_seconds: float


def scaling_table(depths=(5, 10, 20, 40, 80)) -> list[ScalingRow]:
    rows = []
    for depth in depths:
        stats = op_stats(deep_chain_spec(depth))
        rows.append(
            ScalingRow(depth, stats.forward, stats.naive, stats.generated, stats.derive_seconds)
        )
    return rows


def format_scaling(rows: list[ScalingRow]) -> str:
    columns = ("depth", "forward", "naive", "naive/fwd", "generated", "gen/fwd", "derive")
    lines = ["tanh chain, operations per sample", " ".join(f"{c:>10}" for c in columns)]
    for row in rows:
        forward = max(row.forward, 1)
        cells = (
            f"{row.depth:>10}",
            f"{row.forward:>10}",
            f"{row.naive:>10}",
            f"{row.naive / forward:>10.1f}",
            f"{row.generated:>10}",
            f"{row.generated / forward:>10.2f}",
            f"{row.derive_seconds:>9.2f}s",
        )
        lines.append(" ".join(cells))
    return "\n".join(lines)


# --- warning before a long derivation ----------------------------------------------------

# derive() seconds ~ SECONDS_PER_OP * operations + SECONDS_PER_PARAM * parameters: each
# parameter brings adjoints, a gradient and a batch sum. Fitted on this machine to derive()
# timings of tanh chains, sums of tanh units, polynomials and chains of random
# let-formulas (80 to 4400 operations, 40 to 1600 parameters, 0.4 s to 13 s): within a
# factor of 2 of each, 1.3 on average. Operations alone were off by up to 3x.
SECONDS_PER_OP = 0.5e-3
SECONDS_PER_PARAM = 8e-3
WARN_SECONDS = 5.0
# layer stacks derive on whole tensors, so widths cost nothing, but depth does: measured
# here on stacks of 300 and 600 tanh layers (derive and document, 2.3 s and 5.4 s)
SECONDS_PER_LAYER = 9e-3


def layer_size_warning(spec, limit: float = WARN_SECONDS) -> str | None:
    """A one-line warning when deriving a layer stack this deep takes over ``limit`` s."""
    seconds = SECONDS_PER_LAYER * len(spec.layers)
    if seconds <= limit:
        return None
    return (
        f"model.layers: {len(spec.layers)} layers; deriving takes about {seconds:.0f} s"
        f" (about {SECONDS_PER_LAYER * 1e3:.0f} ms per layer)"
    )


def spec_fields(spec: ExpressionSpec) -> list[tuple[str, sp.Expr]]:
    """Every formula of the spec with the field that wrote it."""
    fields = [(f"model.let.{name}", expr) for name, expr in spec.lets]
    single = len(spec.outputs) == 1
    fields += [
        ("model.output" if single else f"model.output[{i}]", expr)
        for i, (_, expr) in enumerate(spec.outputs, 1)
    ]
    fields.append(("model.loss", spec.loss))
    return fields


def estimated_seconds(ops: int, params: int) -> float:
    return SECONDS_PER_OP * ops + SECONDS_PER_PARAM * params


def size_warning(spec: ExpressionSpec, limit: float = WARN_SECONDS) -> str | None:
    """A one-line warning when deriving ``spec`` would take longer than ``limit`` seconds.

    Counted on the formulas as written (each distinct operation once), which is cheap:
    it runs before the derivation it warns about."""
    fields = spec_fields(spec)
    total = dag_ops(*(expr for _, expr in fields))
    seconds = estimated_seconds(total, len(spec.params))
    if seconds <= limit:
        return None
    field, ops = max(((f, dag_ops(e)) for f, e in fields), key=lambda item: item[1])
    sizes = f"{total} in all, " if total != ops else ""
    sizes += f"{len(spec.params)} parameters"
    return f"{field}: {ops} operations ({sizes}); derivation will take about {seconds:.0f} s"
