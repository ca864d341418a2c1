"""The derivation of an expression model as a document: text, Markdown or LaTeX.

It follows the course notes: the model and its loss, the forward pass and what it keeps
for the backward pass, the chain rule from dl/dyhat back to each parameter (one step per
:class:`symbp.chain.ChainStep`, numbered as the comments in generated code cite them),
the batch gradients, closed forms, and the straight-line program that computes each
intermediate once. Python writes every formula in the notation of the format; the
layouts and the prose live in templates/docs/*.j2.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sympy as sp
from sympy.core.parameters import distribute
from sympy.printing.latex import LatexPrinter

from .chain import ChainStep, chain_steps, full_loss
from .derive import Derivation, user_names
from .document_layout import finish
from .functions import apply_kink_conventions, leaky_relu, relu
from .optim import update_rule
from .printers.python import wrap
from .program import Assign, BatchSum, Statement
from .spec import ExpressionSpec
from .templating import environment

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
CODE_WIDTH = 88  # program listings and verbatim formulas fit an A4 page in \small
DISPLAY_CHARS = 160  # LaTeX rows longer than this would overflow a displayed equation
GROUP_CHARS = 140  # an unbreakable LaTeX group longer than this overflows a line
BREAKABLE_CHARS = 3000  # beyond this, a formula is clearer as wrapped plain text
TORCH_NAMES = {
    "sgd": "torch.optim.SGD",
    "momentum": "torch.optim.SGD (with momentum)",
    "adagrad": "torch.optim.Adagrad",
    "rmsprop": "torch.optim.RMSprop",
    "adam": "torch.optim.Adam",
}
NAMED_LOSSES = {"mse": "mean squared error", "l1": "mean absolute error"}


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


class TextNotation:
    """Formulas as SymPy prints them (str), for plain text and verbatim fallbacks."""

    def expr(self, expr: sp.Expr, batched: Iterable[str] = ()) -> str:
        mapping = {sp.Symbol(n, real=True): sp.Symbol(f"{n}_n", real=True) for n in batched}
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


def _option_value(value: object) -> str:
    """Options as a spec writes them (TOML): true/false, [0.9, 0.999]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _training(spec: ExpressionSpec) -> dict:
    train = spec.train
    rule = update_rule(train.optimizer, train.options)
    options = [(k, _option_value(v)) for k, v in rule.options.items() if k != "lr"]
    samples = len(next(iter(spec.data.values()))) if spec.data else None
    return {
        "optimizer": train.optimizer,
        "torch": TORCH_NAMES[train.optimizer],
        "formulas": list(rule.formulas),
        "counts_steps": rule.counts_steps,
        "options": options,
        "lr": _option_value(train.lr),
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "shuffle": train.shuffle,
        "seed": train.seed,
        "samples": samples,
    }


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
    from .stats import NaiveDiff, tree_ops

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
    names = [s.target.name for s in program.statements]
    derived = [
        n
        for n in names
        if re.fullmatch(r"d_\w+|[cg]\d+", n) and n not in user_names(derivation.spec)
    ]
    shared = [(n, reads[sp.Symbol(n, real=True)]) for n in derived]
    return {
        "forward": _program_lines(
            [s for s in program.statements if s.phase == "forward"], comments
        ),
        "backward": _program_lines(
            [s for s in program.statements if s.phase == "backward"], comments
        ),
        "statements": len(program.statements),
        "shared": [{"name": n, "reads": k} for n, k in shared if k > 1],
        "has_c": any(re.fullmatch(r"c\d+", n) for n in names),
        "has_g": any(re.fullmatch(r"g\d+", n) for n in names),
        "has_t": any(re.fullmatch(r"t\d+", n) for n in names),
        "has_sum": any(re.fullmatch(r"sum\d+", n) for n in names),
        "has_per_sample": any(n.endswith("_n") and n.startswith("d_") for n in names),
        "grads": [{"param": p.name, "grad": g.name} for p, g in program.grads.items()],
    }


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
    }


def render_document(derivation: Derivation, fmt: str) -> str:
    """The derivation of ``derivation.spec`` in ``fmt``: "text", "markdown" or "latex"."""
    from .layers import LayerSpec

    if isinstance(derivation.spec, LayerSpec):  # a layer stack: its own, matrix-form document
        from .layer_document import render_layer_document

        return render_layer_document(derivation, fmt)
    if fmt not in TEMPLATES:
        raise ValueError(f"unknown document format {fmt!r} (known: {', '.join(TEMPLATES)})")
    env = environment("docs")
    text = env.get_template(TEMPLATES[fmt]).render(_context(derivation, fmt))
    return finish(text, fmt)
