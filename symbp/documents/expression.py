"""The derivation of an expression model as a document: text, Markdown or LaTeX.

It follows the course notes: the model and its loss, the forward pass and what it keeps
for the backward pass, the chain rule from dl/dyhat back to each parameter (one step per
:class:`symbp.documents.chain.ChainStep`, numbered as the comments in generated code cite them),
the batch gradients, closed forms, and the straight-line program that computes each
intermediate once. Python writes every formula in the notation of the format; the
layouts and the prose live in templates/docs/*.j2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import sympy as sp

from ..derive import Derivation, user_names
from ..functions import apply_kink_conventions
from ..losses import LOSSES
from ..program.statements import Assign, BatchSum, Statement
from ..spec.expression import ExpressionSpec
from ..targets.numpy.printer import wrap
from ..templating import environment
from .chain import ChainStep, chain_steps, full_loss
from .layout import finish
from .notation import (
    CODE_WIDTH,
    KINKS,
    EquationBuilder,
    Notation,
    Rows,
    _needs_parens,
)
from .picture import document_graph
from .training import training_context

TEMPLATES = {
    "text": "derivation.txt.j2",
    "markdown": "derivation.md.j2",
    "latex": "derivation.tex.j2",
}
SIMPLIFY_MAX_OPS = 200  # factor() only below this: it can be slow and rarely helps above
# and over at most this many symbols: multivariate factoring grows steeply with them
# (20 tanh units, 61 symbols per derivative: 51 s of factor() for 61 closed forms)
FACTOR_MAX_SYMBOLS = 12
PRINT_MAX_OPS = 2000  # a closed form larger than this is described, not printed
# all closed forms together: past this many operations the rest are described, not
# derived (100 parameters of a 100-factor product: 40 s of sympy.diff for 40,000 ops)
CLOSED_FORMS_MAX_OPS = 4000
NAMED_LOSSES = {name: LOSSES[name].described for name in ("mse", "l1")}


def _batched(spec: ExpressionSpec) -> list[str]:
    """Names that hold one value per sample (everything but the parameters)."""
    return [*spec.inputs, *spec.targets, *(n for n, _ in spec.lets), *(n for n, _ in spec.outputs)]


def _model(spec: ExpressionSpec, eq: EquationBuilder) -> dict:
    nt = eq.notation
    params = [{"name": nt.name(p), "init": spec.init.get(p)} for p in spec.params]
    definitions = [*spec.lets, *spec.outputs]
    return {
        "inputs": [nt.name(n) for n in spec.inputs],
        "targets": [nt.name(n) for n in spec.targets],
        "params": params,
        "lets": [nt.name(n) for n, _ in spec.lets],
        "outputs": [nt.name(n) for n, _ in spec.outputs],
        "definitions": eq(lambda nt: [(nt.name(n), nt.expr(e)) for n, e in definitions]),
        "loss": eq(lambda nt: [("l", nt.expr(spec.loss))]),
        "loss_name": NAMED_LOSSES.get(spec.loss_text, ""),
        "loss_text": spec.loss_text,
        "batch_loss": eq(lambda nt: [("L", nt.mean(nt.name("l", sample=True), False))]),
    }


def _training(spec: ExpressionSpec) -> dict:
    samples = len(next(iter(spec.data.values()))) if spec.data else None
    return training_context(spec.train, samples)


def _readers(spec: ExpressionSpec, steps: list[ChainStep]) -> list[tuple[str, list[int]]]:
    """Forward values (named values, inputs, targets) and the steps that read them."""
    order = [*(n for n, _ in spec.lets), *(n for n, _ in spec.outputs), *spec.inputs, *spec.targets]
    readers: dict[str, list[int]] = {n: [] for n in order}
    for number, step in enumerate(steps, 1):
        symbols = step.value.free_symbols.union(*(local.free_symbols for _, local in step.terms))
        for symbol in symbols:
            if symbol.name in readers:
                readers[symbol.name].append(number)
    return [(n, sorted(readers[n])) for n in order if readers[n]]


def _forward(derivation: Derivation, steps: list[ChainStep], eq: EquationBuilder) -> dict:
    spec, program = derivation.spec, derivation.program
    nt, batched = eq.notation, _batched(spec)
    definitions = [*spec.lets, *spec.outputs, ("l", spec.loss)]
    backward_reads = set().union(*(s.reads for s in program.statements if s.phase == "backward"))
    named = {n for n, _ in definitions} | set(spec.inputs) | set(spec.targets)
    cached_temps = [
        s
        for s in program.statements
        if isinstance(s, Assign)
        and s.phase == "forward"
        and s.target in backward_reads
        and s.target.name not in named
    ]
    return {
        "equation": eq(
            lambda nt: (
                [(nt.name(n, True), nt.expr(e, batched)) for n, e in definitions]
                + [("L", nt.mean(nt.name("l", True), False))]
            )
        ),
        "read_by": [{"name": nt.name(n), "steps": s} for n, s in _readers(spec, steps)],
        "cached": _program_lines(cached_temps, {}),
    }


def _step(step: ChainStep, number: int, numbers: dict[str, int], eq: EquationBuilder) -> dict:
    direct_only = [c for c, _ in step.terms] == ["l"]
    simpler = _cancelled(step.value)

    def rows(nt: Notation) -> Rows:
        lhs = nt.d("l", step.name)
        chain = [
            nt.direct(step.name) if c == "l" else nt.times(nt.d("l", c), nt.d(c, step.name))
            for c, _ in step.terms
        ]
        local = [nt.expr(d) if c == "l" else nt.product(nt.d("l", c), d) for c, d in step.terms]
        result = [("", " + ".join(local)), ("", nt.expr(step.value))]
        if simpler is not None:  # the logistic's y(1 - y)((1 - t)/(1 - y) - t/y) is y - t
            result.append(("", nt.expr(simpler)))
        if not direct_only:
            result.insert(0, ("", " + ".join(chain)))
        if result[-1][1] == result[-2][1]:
            result.pop()
        return [(lhs, result[0][1]), *result[1:]]

    reused = [{"d": eq.notation.d("l", c), "step": numbers[c]} for c, _ in step.terms if c != "l"]
    return {
        "number": number,
        "kind": step.kind,
        "name": eq.notation.name(step.name),
        "equation": eq(rows),
        "reused": reused,
    }


def _cancelled(expr: sp.Expr) -> sp.Expr | None:
    """``expr`` with its fractions over one denominator and common factors cancelled,
    where that is shorter (small expressions only: cancel is polynomial arithmetic)."""
    if not any(power.exp.is_negative for power in expr.atoms(sp.Pow)):
        return None  # no fraction to cancel (and cancel() is not cheap: keep to these)
    ops = sp.count_ops(expr)
    if ops > SIMPLIFY_MAX_OPS or len(expr.free_symbols) > FACTOR_MAX_SYMBOLS:
        return None
    try:
        cancelled = sp.cancel(expr)
    except (sp.PolynomialError, NotImplementedError):  # pragma: no cover - defensive
        return None
    return cancelled if sp.count_ops(cancelled) < ops else None


def _backward(spec: ExpressionSpec, steps: list[ChainStep], eq: EquationBuilder) -> dict:
    numbers = {step.name: number for number, step in enumerate(steps, 1)}
    batched = _batched(spec)
    params = [s for s in steps if s.kind == "param"]

    def batch_rows(step: ChainStep) -> Callable[[Notation], Rows]:
        return lambda nt: [
            (nt.d("L", step.name), nt.mean(nt.d("l", step.name, sample=True), False)),
            ("", nt.mean(nt.expr(step.value, batched), _needs_parens(step.value))),
        ]

    return {
        "steps": [_step(s, numbers[s.name], numbers, eq) for s in steps],
        "batch": [
            {"name": eq.notation.name(s.name), "equation": eq(batch_rows(s))} for s in params
        ],
    }


def closed_form(loss: sp.Expr, param: sp.Symbol) -> tuple[sp.Expr | None, int]:
    """dl/dp over inputs, targets and parameters, with its operation count
    (sympy.count_ops). Small ones are lightly simplified: common factors pulled out, or
    factored, whichever is shortest; factor() is slow and rarely helps on large ones."""
    from ..stats import NaiveDiff, tree_ops

    # size it first with the fast differentiator: sympy.diff of a deep formula is slow
    size = tree_ops(NaiveDiff()(loss, param))
    if size > PRINT_MAX_OPS:
        return None, size
    expr = apply_kink_conventions(_real(sp.diff(loss, param)))
    ops = sp.count_ops(expr)
    if ops <= SIMPLIFY_MAX_OPS:
        candidates = [expr, sp.factor_terms(expr)]
        if len(expr.free_symbols) <= FACTOR_MAX_SYMBOLS:
            try:
                candidates.append(sp.factor(expr))
            except (sp.PolynomialError, NotImplementedError):  # pragma: no cover - defensive
                pass
        expr = min(candidates, key=sp.count_ops)  # the first of the shortest: stable
    return expr, ops


def _real(expr: sp.Expr) -> sp.Expr:
    """Every value of a model is real: SymPy cannot know that of the custom activations
    and differentiates |f| as re(f) d(re f)/|f|; re(f) = f and im(f) = 0 restore sign(f) f'."""
    expr = expr.replace(sp.re, lambda arg: arg).replace(sp.im, lambda arg: sp.S.Zero)
    return expr.replace(sp.conjugate, lambda arg: arg)


def _closed_forms(spec: ExpressionSpec, eq: EquationBuilder) -> list[dict]:
    loss = full_loss(spec)
    forms = []
    spent = 0  # operations of the closed forms written so far
    for p in spec.params:
        if spent >= CLOSED_FORMS_MAX_OPS:  # past the budget nothing more is derived
            expr, ops, over_budget = None, None, True
        else:
            expr, ops = closed_form(loss, spec.symbol(p))
            over_budget = False
            spent += ops if expr is not None else 0
        printable = expr is not None and ops is not None and ops <= PRINT_MAX_OPS
        forms.append(
            {
                "name": eq.notation.name(p),
                "ops": ops,
                "over_budget": over_budget,
                "equation": eq(lambda nt, p=p, e=expr: [(nt.d("l", p), nt.expr(e))])
                if printable
                else None,
                "d": eq.notation.d("l", p),
            }
        )
    return forms


# --- the program ------------------------------------------------------------------------


def _statement_text(stmt: Statement) -> str:
    if isinstance(stmt, Assign):
        return sp.sstr(stmt.expr, order="none")
    return f"{'sum' if isinstance(stmt, BatchSum) else 'mean'}({stmt.source.name})"


def _comments(derivation: Derivation, steps: list[ChainStep]) -> dict[str, str]:
    """What a reader should know about a line: the step it implements, or that the
    backward pass reads it (cached)."""
    program = derivation.program
    comments = {}
    for number, step in enumerate(steps, 1):
        comments[f"d_{step.name}"] = f"step {number}"
        comments[f"d_{step.name}_n"] = f"step {number}, per sample"
    backward_reads = set().union(*(s.reads for s in program.statements if s.phase == "backward"))
    for stmt in program.statements:
        if stmt.phase == "forward" and stmt.target in backward_reads:
            comments[stmt.target.name] = "cached for the backward pass"
    return comments


def _program_lines(statements: list[Statement], comments: dict[str, str]) -> list[str]:
    lines = []
    for stmt in statements:
        target = stmt.target.name
        code = f"{target} = {wrap(_statement_text(stmt), 0, len(target) + 3, CODE_WIDTH)}"
        comment = comments.get(target)
        if comment and "\n" not in code and len(code) + len(comment) + 4 <= CODE_WIDTH:
            lines.append(f"{code}  # {comment}")
        elif comment:
            lines += [f"# {comment}", *code.split("\n")]
        else:
            lines += code.split("\n")
    return lines


def _program(derivation: Derivation, steps: list[ChainStep]) -> dict:
    program = derivation.program
    comments = _comments(derivation, steps)
    reads = Counter(s for stmt in program.statements for s in stmt.reads)
    targets = [s.target for s in program.statements]
    kinds = {program.temporaries.get(t) for t in targets}
    users = user_names(derivation.spec)
    derived = [  # adjoints, shared subexpressions and adjoints of values inlined away
        t
        for t in targets
        if (t in program.adjoint_of or program.temporaries.get(t) in ("shared", "adjoint"))
        and t.name not in users
    ]
    shared = [(t.name, reads[t]) for t in derived]
    return {
        "forward": _program_lines(
            [s for s in program.statements if s.phase == "forward"], comments
        ),
        "backward": _program_lines(
            [s for s in program.statements if s.phase == "backward"], comments
        ),
        "statements": len(program.statements),
        "shared": [{"name": n, "reads": k} for n, k in shared if k > 1],
        "has_c": "shared" in kinds,
        "has_g": "adjoint" in kinds,
        "has_t": "t" in kinds,
        "has_sum": "sum" in kinds,
        "has_per_sample": any(program.adjoint_of.get(t, (None, False))[1] for t in targets),
        "grads": [{"param": p.name, "grad": g.name} for p, g in program.grads.items()],
    }


def _kinks(spec: ExpressionSpec) -> list[dict]:
    """The conventions at kinks that apply: only functions present in the model."""
    exprs = [e for _, e in (*spec.lets, *spec.outputs)] + [spec.loss]
    present = []
    for functions, key, text in KINKS:
        functions = functions if isinstance(functions, tuple) else (functions,)
        if any(e.has(f) for e in exprs for f in functions):
            present.append({"key": key, "text": text})
    return present


# --- the document -----------------------------------------------------------------------


def _context(derivation: Derivation, fmt: str) -> dict:
    spec = derivation.spec
    eq = EquationBuilder(fmt)
    steps = chain_steps(spec)
    return {
        "name": spec.name,
        "source": spec.source,
        "description": spec.description,
        "model": _model(spec, eq),
        "train": _training(spec),
        "forward": _forward(derivation, steps, eq),
        "backward": _backward(spec, steps, eq),
        "closed": _closed_forms(spec, eq),
        "limits": {
            "simplify": SIMPLIFY_MAX_OPS,
            "print": PRINT_MAX_OPS,
            "total": CLOSED_FORMS_MAX_OPS,
        },
        "program": _program(derivation, steps),
        "kinks": _kinks(spec),
        "graph": document_graph(derivation),
    }


def render_expression_document(derivation: Derivation, fmt: str) -> str:
    """The derivation of a scalar model in ``fmt``: "text", "markdown" or "latex"."""
    if fmt not in TEMPLATES:
        raise ValueError(f"unknown document format {fmt!r} (known: {', '.join(TEMPLATES)})")
    env = environment(__package__)
    text = env.get_template(TEMPLATES[fmt]).render(_context(derivation, fmt))
    return finish(text, fmt)
