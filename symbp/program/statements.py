"""The target-neutral program: straight-line statements over named tensors.

Reverse mode (:mod:`symbp.ad.reverse`) writes one; the passes here make it lean (dead
code elimination, inlining of single-use temporaries, common-subexpression
elimination) and give every value a readable name. Printers turn it into a target.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import sympy as sp

from ..ir.graph import broadcast_shape


@dataclass(frozen=True)
class Assign:
    """``target = expr``, elementwise with NumPy broadcasting."""

    target: sp.Symbol
    expr: sp.Expr
    shape: tuple
    phase: str  # "forward" | "backward"
    comment: str = ""

    @property
    def reads(self) -> set[sp.Symbol]:
        return self.expr.free_symbols


@dataclass(frozen=True)
class BatchSum:
    """``target = sum over the batch of source`` (the adjoint of broadcasting over it)."""

    target: sp.Symbol
    source: sp.Symbol
    shape: tuple
    phase: str = "backward"
    comment: str = ""

    @property
    def reads(self) -> set[sp.Symbol]:
        return {self.source}


@dataclass(frozen=True)
class BatchMean:
    """``target = mean over the batch of source`` (how the loss of a batch is formed)."""

    target: sp.Symbol
    source: sp.Symbol
    shape: tuple = ()
    phase: str = "forward"
    comment: str = ""
    sum_features: bool = False  # sum over the features of a sample, mean over the batch

    @property
    def reads(self) -> set[sp.Symbol]:
        return {self.source}


@dataclass(frozen=True)
class Call:
    """``target = op(*args)``: a tensor operation that is not elementwise (a matrix
    product, a softmax, ...). Its name is one the target's printer knows."""

    target: sp.Symbol
    op: str
    args: tuple[sp.Symbol, ...]
    shape: tuple
    phase: str
    comment: str = ""
    # constant settings of the op, as (name, value) pairs: a convolution's kernel size
    attrs: tuple[tuple[str, object], ...] = ()

    @property
    def reads(self) -> set[sp.Symbol]:
        return set(self.args)


@dataclass(frozen=True)
class Carry:
    """A value a loop carries from one step to the next: ``inner`` holds it at the
    start of a step and ``after`` at its end; before the loop it is columns
    ``start:stop`` of ``outer`` (the initial state, or the final state's adjoint), and
    after it the loop's result ``result`` gathers the carried values' last ones."""

    inner: sp.Symbol
    after: sp.Symbol
    start: int
    stop: int


@dataclass(frozen=True)
class Loop:
    """A loop over the time axis of a recurrence (a scan): ``body`` runs once per step.

    The forward loop (``reverse`` False) runs t = 0 .. T-1, the backward loop t = T-1
    .. 0; T is the length of axis 1 of ``length`` (a sequence input, stored (N, T, ...)).
    Each step reads ``inner = stack[t]`` for its ``loads`` (a sequence's element, in
    time-major order, what is computed for every step before the loop, what the forward
    loop kept for the backward one), and writes ``stack[t] = inner`` for its
    ``stores``. The ``carries`` start as columns of ``initial`` and end joined into
    ``target``; ``accumulates`` sums ``inner`` over the steps into ``outer`` (a
    parameter's gradient, the adjoint of a value every step reads). The body reads
    values of the code before the loop by their own symbols; every one of them is in
    ``args``."""

    target: sp.Symbol  # the carried values' last ones, joined along their columns
    initial: sp.Symbol
    args: tuple[sp.Symbol, ...]
    body: tuple
    shape: tuple
    phase: str
    length: sp.Symbol
    reverse: bool = False
    carries: tuple[Carry, ...] = ()
    loads: tuple[tuple[sp.Symbol, sp.Symbol, tuple], ...] = ()  # (stack, inner, shape)
    stores: tuple[tuple[sp.Symbol, sp.Symbol, tuple], ...] = ()  # (stack, inner, shape)
    accumulates: tuple[tuple[sp.Symbol, sp.Symbol, tuple], ...] = ()  # (outer, inner, shape)
    comment: str = ""
    joined: bool = True  # whether anything reads ``target`` (an initial state's adjoint may not)
    # truncated backpropagation through time: the backward loop runs the last ``window``
    # steps only (their stacks start as zeros), and no adjoint reaches the initial state
    # of a longer sequence
    window: int | None = None

    @property
    def reads(self) -> set[sp.Symbol]:
        return set(self.args)

    @property
    def defines(self) -> tuple[sp.Symbol, ...]:
        return (
            self.target,
            *(stack for stack, _, _ in self.stores),
            *(outer for outer, _, _ in self.accumulates),
        )

    def inner_shapes(self, outer: dict[sp.Symbol, tuple]) -> dict[sp.Symbol, tuple]:
        """The shapes of the values a step starts from: the carried values and what it
        loads."""
        result = {c.inner: (self.shape[0], c.stop - c.start) for c in self.carries}
        result.update({inner: shape for _, inner, shape in self.loads})
        return result

    def shifted(self) -> tuple[Carry, ...]:
        """The carried values a forward loop keeps both before and after each step (an
        Elman RNN's h_prev and h): one stack of T + 1 rows holds both, shifted by a step."""
        kept = {inner for _, inner, _ in self.stores}
        if self.reverse:
            return ()
        return tuple(c for c in self.carries if c.inner in kept and c.after in kept)

    def pruned(self, need: set[sp.Symbol]) -> Loop:
        """The loop that gives only what ``need`` asks of it: the stacks and sums in it,
        the joined last values if the target is in it; a step computes what those read,
        through the carried values they depend on (forward() needs no loss states)."""
        wanted = {inner for stack, inner, _ in self.stores if stack in need}
        wanted |= {inner for outer, inner, _ in self.accumulates if outer in need}
        joined = self.target in need
        if joined:
            wanted |= {c.after for c in self.carries}
        needed: set[sp.Symbol] = set()
        while wanted - needed:
            needed |= wanted
            for stmt in reversed(self.body):
                if stmt.target in needed:
                    needed |= stmt.reads
            wanted = needed | {c.after for c in self.carries if c.inner in needed}
        carries = tuple(c for c in self.carries if joined or c.inner in needed)
        body = tuple(stmt for stmt in self.body if stmt.target in needed)
        defined = {stmt.target for stmt in body} | {c.inner for c in carries}
        loads = tuple(load for load in self.loads if load[1] in needed)
        defined |= {inner for _, inner, _ in loads}
        read = set().union(*(stmt.reads for stmt in body)) if body else set()
        args = [a for a in self.args if a in read - defined or a in {s for s, _, _ in loads}]
        args = [self.initial, *args] if carries else args
        return replace(
            self,
            body=body,
            carries=carries,
            loads=loads,
            stores=tuple(store for store in self.stores if store[0] in need),
            accumulates=tuple(a for a in self.accumulates if a[0] in need),
            args=tuple(dict.fromkeys([*args, self.length])),
            joined=self.joined and joined,
        )

    def shapes(self) -> dict[sp.Symbol, tuple]:
        """The shape of each value the loop defines (a stack: (T, *the step's shape))."""
        result = {self.target: self.shape}
        result.update({stack: ("T", *shape) for stack, _, shape in self.stores})
        result.update({outer: shape for outer, _, shape in self.accumulates})
        return result


Statement = Assign | BatchSum | BatchMean | Call | Loop


def defines(stmt: Statement) -> tuple[sp.Symbol, ...]:
    """What a statement defines for the code after it (a loop: several values)."""
    return stmt.defines if isinstance(stmt, Loop) else (stmt.target,)


def flatten(statements) -> list[Statement]:
    """Statements with every loop's body after the loop itself, in order."""
    result = []
    for stmt in statements:
        result.append(stmt)
        if isinstance(stmt, Loop):
            result += flatten(stmt.body)
    return result


def substitute(stmt: Statement, mapping: dict) -> Statement:
    """``stmt`` with the symbols of ``mapping`` renamed (targets, reads, a loop's body)."""
    get = lambda s: mapping.get(s, s)  # noqa: E731
    if isinstance(stmt, Assign):
        return replace(stmt, target=get(stmt.target), expr=stmt.expr.xreplace(mapping))
    if isinstance(stmt, Call):
        return replace(stmt, target=get(stmt.target), args=tuple(get(a) for a in stmt.args))
    if isinstance(stmt, Loop):
        return replace(
            stmt,
            target=get(stmt.target),
            initial=get(stmt.initial),
            args=tuple(get(a) for a in stmt.args),
            body=tuple(substitute(s, mapping) for s in stmt.body),
            length=get(stmt.length),
            carries=tuple(Carry(get(c.inner), get(c.after), c.start, c.stop) for c in stmt.carries),
            loads=tuple((get(a), get(b), s) for a, b, s in stmt.loads),
            stores=tuple((get(a), get(b), s) for a, b, s in stmt.stores),
            accumulates=tuple((get(a), get(b), s) for a, b, s in stmt.accumulates),
        )
    return replace(stmt, target=get(stmt.target), source=get(stmt.source))


@dataclass
class Program:
    statements: list[Statement]
    inputs: list[sp.Symbol]
    targets: list[sp.Symbol]
    params: list[sp.Symbol]
    outputs: list[sp.Symbol]
    loss: sp.Symbol  # the batch loss
    sample_loss: sp.Symbol  # the per-sample loss
    grads: dict[sp.Symbol, sp.Symbol]  # parameter -> its gradient
    keep: set[sp.Symbol] = field(default_factory=set)  # never inline these (user names)
    comments: dict[sp.Symbol, str] = field(default_factory=dict)
    # the shapes of the values no statement defines: inputs, targets, parameters
    shapes: dict[sp.Symbol, tuple] = field(default_factory=dict)
    # the value each adjoint belongs to: adjoint -> (the value, whether it is the
    # per-sample adjoint, before the sum over the batch), so that documents know what a
    # statement computes without reading it from a name
    adjoint_of: dict[sp.Symbol, tuple[sp.Symbol, bool]] = field(default_factory=dict)
    # an adjoint with an activation's mask applied before a routing op
    # (:func:`mask_before_routing`) -> the adjoint it masks
    masked: dict[sp.Symbol, sp.Symbol] = field(default_factory=dict)
    # what named each temporary (:func:`symbp.program.naming.finalize`): "shared" for a
    # subexpression CSE found (c1), "adjoint" for the adjoint of a value inlined away
    # (g1), else the family it was named after ("t" an elementwise step, "sum" a sum
    # over the batch, "v" a vector-Jacobian product, ...)
    temporaries: dict[sp.Symbol, str] = field(default_factory=dict)

    @property
    def results(self) -> list[sp.Symbol]:
        return [self.loss, *self.grads.values(), *self.outputs]

    def needed_for(self, wanted: list[sp.Symbol]) -> list[Statement]:
        """The statements that ``wanted`` depends on, in program order."""
        need = set(wanted)
        kept: list[Statement] = []
        for stmt in reversed(self.statements):
            if need.intersection(defines(stmt)):
                if isinstance(stmt, Loop):
                    stmt = stmt.pruned(need)
                kept.append(stmt)
                need |= stmt.reads
        return kept[::-1]


def eliminate_dead_code(program: Program) -> Program:
    program.statements = program.needed_for(program.results)
    return program


def coalesce_call_results(program: Program) -> Program:
    """``v = op(...); d_W = v`` becomes ``d_W = op(...)`` when nothing else reads v."""
    protected = set(program.keep) | set(program.results)
    uses: Counter = Counter(s for stmt in program.statements for s in stmt.reads)
    calls = {stmt.target for stmt in program.statements if isinstance(stmt, Call)}
    for stmt in program.statements:  # a loop's sums over the steps, its result
        if isinstance(stmt, Loop):
            calls |= {stmt.target, *(outer for outer, _, _ in stmt.accumulates)}
    rename = {
        stmt.expr: stmt.target
        for stmt in program.statements
        if isinstance(stmt, Assign)
        and stmt.expr in calls
        and uses[stmt.expr] == 1
        and stmt.expr not in protected
    }
    statements = []
    for stmt in program.statements:
        if isinstance(stmt, Assign) and stmt.expr in rename and rename[stmt.expr] == stmt.target:
            continue
        if isinstance(stmt, Call) and stmt.target in rename:
            stmt = replace(stmt, target=rename[stmt.target])
        if isinstance(stmt, Loop) and rename.keys() & set(stmt.defines):
            stmt = substitute(stmt, {s: rename[s] for s in stmt.defines if s in rename})
        statements.append(stmt)
    program.statements = statements
    return program


def propagate_copies(program: Program) -> Program:
    """Replace reads of ``a = b`` (b a symbol or a constant) by ``b`` and drop ``a``."""
    protected = set(program.keep) | set(program.results)
    resolved: dict[sp.Symbol, sp.Expr] = {}
    shapes: dict[sp.Symbol, tuple] = {}
    statements = []
    for stmt in program.statements:
        if isinstance(stmt, Assign):
            stmt = replace(stmt, expr=stmt.expr.xreplace(resolved))
            if stmt.expr.is_Atom and stmt.target not in protected:
                resolved[stmt.target] = stmt.expr
                shapes[stmt.target] = stmt.shape
                continue
        else:
            for symbol in stmt.reads & set(resolved):
                if not resolved[symbol].is_Symbol:  # a constant read by a tensor op: keep it
                    value = resolved.pop(symbol)
                    statements.append(Assign(symbol, value, shapes[symbol], stmt.phase))
            if isinstance(stmt, Call):
                stmt = replace(stmt, args=tuple(resolved.get(a, a) for a in stmt.args))
            elif isinstance(stmt, Loop):
                stmt = substitute(stmt, {a: resolved[a] for a in stmt.args if a in resolved})
            elif stmt.source in resolved:
                stmt = replace(stmt, source=resolved[stmt.source])
        statements.append(stmt)
    program.statements = statements
    return program


def inline_single_use(program: Program) -> Program:
    """Substitute temporaries read exactly once back into their reader.

    Reverse mode works on atomic operations; this turns ``t1 = x**2; t2 = w1*t1``
    back into ``t2 = w1*x**2`` wherever nothing else needs ``t1``.
    """
    program = coalesce_call_results(program)
    program = propagate_copies(program)
    protected = set(program.keep) | set(program.results)
    uses: Counter = Counter()
    readers: dict[sp.Symbol, Statement] = {}
    for stmt in program.statements:
        for s in stmt.reads:
            uses[s] += 1
            readers[s] = stmt
    inlinable = {
        stmt.target
        for stmt in program.statements
        if isinstance(stmt, Assign)
        and stmt.target not in protected
        and uses[stmt.target] == 1
        and isinstance(readers[stmt.target], Assign)
        and len(stmt.shape) <= len(readers[stmt.target].shape)
    }
    # substitute in program order so chains collapse in one sweep
    resolved: dict[sp.Symbol, sp.Expr] = {}
    statements = []
    for stmt in program.statements:
        if isinstance(stmt, Assign):
            stmt = replace(stmt, expr=stmt.expr.xreplace(resolved))
            if stmt.target in inlinable:
                resolved[stmt.target] = stmt.expr
                continue
        statements.append(stmt)
    program.statements = statements
    return program


def eliminate_common_subexpressions(program: Program, new_symbol) -> Program:
    """Run SymPy's CSE over every elementwise right-hand side and schedule the shared
    pieces just before their first reader (their operands are all defined by then)."""
    assigns = [s for s in program.statements if isinstance(s, Assign)]
    if not assigns:
        return program
    symbols = _symbol_stream(new_symbol)
    replacements, reduced = sp.cse([s.expr for s in assigns], symbols=symbols, order="none")
    if not replacements:
        return program
    new_exprs = dict(zip((id(s) for s in assigns), reduced, strict=True))
    shapes: dict[sp.Symbol, tuple] = {s.target: s.shape for s in program.statements}
    for stmt in program.statements:
        if isinstance(stmt, Loop):
            shapes.update(stmt.shapes())
    for value in program.params + program.inputs + program.targets:
        shapes.setdefault(value, program.shapes.get(value, ()))
    statements: list[Statement] = []
    pending = list(replacements)
    defined_repl: set[sp.Symbol] = set()
    repl_names = {sym for sym, _ in replacements}

    def emit_needed(expr_symbols: set[sp.Symbol], phase: str) -> None:
        for sym, expr in list(pending):
            if sym in expr_symbols and sym not in defined_repl:
                emit_needed(expr.free_symbols & repl_names, phase)
                shape = _shape_of(expr, shapes)
                shapes[sym] = shape
                statements.append(Assign(sym, expr, shape, phase))
                defined_repl.add(sym)
                pending.remove((sym, expr))

    for stmt in program.statements:
        if isinstance(stmt, Assign):
            expr = new_exprs[id(stmt)]
            emit_needed(expr.free_symbols & repl_names, stmt.phase)
            stmt = replace(stmt, expr=expr)
        statements.append(stmt)
    program.statements = statements
    return program


def _symbol_stream(new_symbol):
    while True:
        yield new_symbol()


def _shape_of(expr: sp.Expr, shapes: dict[sp.Symbol, tuple]) -> tuple:
    return broadcast_shape([shapes.get(s, ()) for s in sorted(expr.free_symbols, key=str)])


def mask_before_routing(
    program: Program, routing: dict[str, tuple[int, int, int]], name_after
) -> Program:
    """``r = route(a, p, g); d = r * h(a)`` becomes ``m = g * h(p); d = route(a, p, m)``.

    ``routing`` names the ops that send each element of g to one element of a whose
    value is the matching element of p (max-pooling's adjoint sends it to the window's
    maximum), as op -> (index of a, of p, of g) among its arguments. Every other element
    of r is zero, so a finite mask h(a) (relu's [a > 0], any elementwise factor in a
    alone) can be applied to g at p's size before the routing instead of to r at a's:
    for a 2x2 max-pool a quarter of the work and memory traffic. Only when nothing else
    reads r. ``name_after(g)`` names m.
    """
    uses: Counter = Counter(s for stmt in program.statements for s in stmt.reads)
    protected = set(program.results)  # r may be a kept name: d_A1 gives way to d_Z1
    shapes = {stmt.target: stmt.shape for stmt in program.statements}
    routed = {
        stmt.target: stmt
        for stmt in program.statements
        if isinstance(stmt, Call)
        and stmt.op in routing
        and uses[stmt.target] == 1
        and stmt.target not in protected
    }
    fused: dict[sp.Symbol, list[Statement]] = {}  # the routing call -> what replaces it
    dropped: set[sp.Symbol] = set()  # the masking statements folded into those
    for stmt in program.statements:
        if not isinstance(stmt, Assign) or len(stmt.reads & set(routed)) != 1:
            continue
        (r,) = stmt.reads & set(routed)
        call = routed[r]
        a_at, p_at, g_at = routing[call.op]
        a, p, g = call.args[a_at], call.args[p_at], call.args[g_at]
        mask = sp.factor_terms(stmt.expr / r)
        if mask.free_symbols - {a} or mask.is_finite is not True or stmt.shape != call.shape:
            continue
        masked = name_after(g)
        program.masked[masked] = g
        args = list(call.args)
        args[g_at] = masked
        fused[r] = [
            Assign(masked, g * mask.xreplace({a: p}), shapes.get(g, ()), stmt.phase),
            replace(call, target=stmt.target, args=tuple(args)),
        ]
        dropped.add(stmt.target)
    statements: list[Statement] = []
    for stmt in program.statements:
        if stmt.target in fused:
            statements += fused[stmt.target]
        elif stmt.target not in dropped:
            statements.append(stmt)
    program.statements = statements
    return program
