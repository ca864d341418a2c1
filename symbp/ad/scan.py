"""The rule of the ``scan`` op: a recurrence, and its VJP, the reverse scan (BPTT).

A scan node's attribute ``body`` is the graph of one time step: from each state's
previous value ``h_prev``, the sequences' elements ``x_t`` and the parameters to each
state's new value ``h``. Its rule derives that graph once, by the same reverse mode as
the model (:func:`symbp.ad.adjoints.backpropagate`), seeded with the adjoint each new
state receives from the later steps (``d_h_next``): the adjoint of ``h_prev`` it gives
is what the step before receives, and each parameter's per-step gradient is summed over
the steps. That is backpropagation through time,

    dl/dh_{t-1} = (dh_t/dh_{t-1})^T dl/dh_t,    dl/dW = sum_t (dh_t/dW)^T dl/dh_t,

printed as two loops, never unrolled: the forward loop over t = 1..T keeps, for each
step, the values of the step that the backward loop reads (stacked over the steps), and
the backward loop runs t = T..1 carrying each state's adjoint. The step's program is
made lean by the program passes (dead code, inlining, common subexpressions) and what
does not change from step to step (a product of parameters) is computed once, before
the loop. Registered into :data:`symbp.ad.rules.RULES` on import.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import sympy as sp

from ..ir.graph import BATCH, Graph, Node, broadcast_shape
from ..program.statements import (
    Assign,
    BatchSum,
    Call,
    Carry,
    Loop,
    Program,
    Statement,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    inline_single_use,
    propagate_copies,
)
from .adjoints import Adjoints, backpropagate
from .rules import RULES, Contribution, register
from .tensor_rules import COST, NOTATION, TIME, _notation


@dataclass
class _Step:
    """One step's derived program, split into the two loops."""

    adjoint_of: dict  # the step's adjoints -> their values, for the documents
    before_forward: list[Statement]  # what is the same at every step, or every step at once
    forward: Loop
    before_backward: list[Statement]
    backward: list[Statement]  # the body of the backward loop
    seeds: list[tuple[sp.Symbol, sp.Symbol, int, int]]  # (d_h_next, d_h_prev, start, stop)
    grads: dict[str, sp.Symbol]  # an outer value -> its per-step gradient
    stacks: dict[sp.Symbol, sp.Symbol]  # a step's value -> the (T, N, ...) stack of its steps
    shapes: dict[sp.Symbol, tuple]  # a step's values -> their shapes


def _derive_step(node: Node, graph: Graph) -> _Step:
    if "_step" in node.attrs:
        return node.attrs["_step"]
    body: Graph = node.attrs["body"]
    names = node.attrs["names"]
    states = node.attrs["states"]  # (state, prev leaf, start, stop)
    outer = {t for t in body.params if t not in {leaf for _, leaf, _, _ in states}}
    statements: list[Statement] = []
    for step_node in body.nodes:
        statements += RULES[step_node.op].forward(step_node, body)

    def adjoint_name(tensor: str, each: bool) -> sp.Symbol:
        if tensor in outer:  # a parameter's gradient at one step, summed after the loop
            return sp.Symbol(names.pick(f"d_{tensor}_t" + ("_n" if each else "")), real=True)
        return names.adjoint(tensor, per_sample=each)

    adjoints = Adjoints(body, names, statements, adjoint_name)
    seeds = []
    for state, leaf, start, stop in states:
        seed = sp.Symbol(names.pick(f"d_{state}_next"), real=True)
        adjoints.add(state, seed, body.tensors[state].shape)
        seeds.append([seed, leaf, start, stop])
    backpropagate(body, adjoints, body.depends_on_params())
    grads = {}
    for entry in seeds:
        leaf = entry[1]
        symbol = adjoints.total(leaf)
        if symbol is None:  # the step does not read this state's previous value
            symbol = names.adjoint(leaf)
            adjoints.emit(Assign(symbol, sp.S.Zero, body.tensors[leaf].shape, "backward"))
        entry[1] = symbol
    for tensor in body.params:
        if tensor in outer:
            symbol = adjoints.total(tensor)
            if symbol is not None:
                grads[tensor] = symbol
    new = [body.tensors[state].symbol for state, _, _, _ in states]
    exposed = [body.tensors[v].symbol for v in node.attrs.get("exposed", ())]
    results = {
        body.tensors[leaf].symbol: s[1] for (_, leaf, _, _), s in zip(states, seeds, strict=True)
    }
    results.update({body.tensors[t].symbol: g for t, g in grads.items()})
    program = Program(
        statements=statements,
        inputs=[],
        targets=[],
        params=[],
        outputs=[*new[1:], *exposed],
        loss=new[0],
        sample_loss=new[0],
        grads=results,
        keep={*new, *exposed},
    )
    program = eliminate_dead_code(program)
    program = inline_single_use(program)
    program = eliminate_common_subexpressions(program, names.cse_symbol)
    program = propagate_copies(program)
    forward = _joined_pads([s for s in program.statements if s.phase == "forward"])
    backward = _joined_pads([s for s in program.statements if s.phase != "forward"])

    prev = [body.tensors[leaf].symbol for _, leaf, _, _ in states]
    elements = {body.tensors[leaf].symbol: x for x, leaf in node.attrs["sequences"]}
    before_forward, forward = _hoist(forward, {*prev, *elements})
    # each sequence once in time-major order, (T, N, ...): a step reads x[t], contiguous
    stacks: dict[sp.Symbol, sp.Symbol] = {}  # a step's value -> the stack of its steps
    for element, x in elements.items():
        major = sp.Symbol(names.pick(f"{x}_steps"), real=True)
        shape = ("T", *body.tensors[element.name].shape)
        before_forward.append(
            Call(major, "time_major", (sp.Symbol(x, real=True),), shape, "forward")
        )
        stacks[element] = major
    # the step's values' shapes: the body's tensors, its statements, the sums split out
    shapes = {t.symbol: t.shape for t in body.tensors.values()}
    shapes.update({stmt.target: stmt.shape for stmt in forward})
    parallel, forward = _time_parallel(forward, set(prev), stacks, names, shapes)
    before_forward += parallel
    defined = {s.target for s in forward} | set(prev)
    read_back = set().union(*(s.reads for s in backward)) if backward else set()
    saved = sorted((defined & read_back) | (defined & set(exposed)), key=lambda s: s.name)
    for value in saved:
        stacks[value] = names.stack(value)
    read_forward = set().union(*(s.reads for s in forward)) if forward else set()
    out = graph.tensors[node.output]
    initial = sp.Symbol(node.inputs[0], real=True)
    first = next(iter(elements.values()))
    forward_loop = Loop(
        target=out.symbol,
        initial=initial,
        args=(),
        body=tuple(forward),
        shape=out.shape,
        phase="forward",
        length=sp.Symbol(first, real=True),
        carries=tuple(
            Carry(p, n, start, stop)
            for p, n, (_, _, start, stop) in zip(prev, new, states, strict=True)
        ),
        loads=tuple(
            (stacks[v], v, shapes[v])
            for v in sorted(stacks, key=lambda s: s.name)
            if v in read_forward and v not in saved
        ),
        stores=tuple((stacks[v], v, shapes[v]) for v in saved),
        comment="forward",
    )
    forward_loop = _with_args(forward_loop, [initial, *(stacks[e] for e in elements)])
    varying = {*(s[0] for s in seeds), *elements, *defined, *stacks}
    before_backward, backward = _hoist(backward, varying)
    step = _Step(
        adjoint_of=dict(adjoints.adjoint_of),
        before_forward=before_forward,
        forward=forward_loop,
        before_backward=before_backward,
        backward=backward,
        seeds=[tuple(s) for s in seeds],
        grads=grads,
        stacks=stacks,
        shapes=shapes,
    )
    node.attrs["_step"] = step
    return step


def _time_parallel(body: list[Statement], state: set, stacks: dict, names, shapes: dict):
    """The statements of a forward step that read no state, only the sequences' elements
    (and what is the same at every step), computed for all steps at once before the loop
    over the time-major stacks: one product (T N, 32) by (32, 512) for the input
    projection of an LSTM instead of T small ones. ``stacks`` gains each one's stack; the
    loop loads it at each step."""
    before, inside = [], []
    varying = set(state)
    for stmt in body:
        stmt = _split_sum(stmt, varying, stacks, names, before, shapes)
        reads = stmt.reads
        steps = reads & set(stacks)
        contract = isinstance(stmt, Call) and stmt.op == "contract"
        if reads & varying or not steps or not (isinstance(stmt, Assign) or contract):
            varying.add(stmt.target)
            inside.append(stmt)
            continue
        stack = names.stack(stmt.target)
        shape = ("T", *stmt.shape)
        if isinstance(stmt, Assign):
            before.append(Assign(stack, stmt.expr.xreplace(stacks), shape, stmt.phase))
        else:
            inputs, result = dict(stmt.attrs)["subscripts"].split("->")
            parts = [
                (TIME + part) if arg in stacks else part
                for arg, part in zip(stmt.args, inputs.split(","), strict=True)
            ]
            subscripts = ",".join(parts) + "->" + TIME + result
            args = tuple(stacks.get(a, a) for a in stmt.args)
            before.append(
                Call(
                    stack, "contract", args, shape, stmt.phase, attrs=(("subscripts", subscripts),)
                )
            )
        stacks[stmt.target] = stack
    return before, inside


def _split_sum(stmt: Statement, varying: set, stacks: dict, names, before: list, shapes: dict):
    """``tanh(b + x_t W^T + h W_h^T)``: the terms of a sum that read no state, summed for
    every step at once before the loop (the input projection and the biases, one array
    of (T, N, H)), so that a step adds one array to its state's product, not three."""
    if not isinstance(stmt, Assign) or not stmt.reads & varying:
        return stmt
    for part in sp.preorder_traversal(stmt.expr):
        if not part.is_Add:
            continue
        fixed = [term for term in part.args if not term.free_symbols & varying]
        rest = [term for term in part.args if term.free_symbols & varying]
        if len(fixed) < 2 or not rest or not any(t.free_symbols & set(stacks) for t in fixed):
            continue
        inner = names.fresh("t")
        stack = names.stack(inner)
        summed = sp.Add(*fixed)
        shape = ("T", *broadcast_shape([shapes.get(a, ()) for a in summed.free_symbols]))
        shapes[inner] = shape[1:]
        before.append(Assign(stack, summed.xreplace(stacks), shape, stmt.phase))
        stacks[inner] = stack
        return replace(stmt, expr=stmt.expr.xreplace({part: sp.Add(inner, *rest)}))
    return stmt


def _joined_pads(body: list[Statement]) -> list[Statement]:
    """``g = pad(a) + pad(b) + ...`` where the pads tile the vector (an LSTM's four gate
    adjoints) as one ``concat(a, b, ...)``: one array written instead of a zero-filled
    one per part and their sums."""
    pads = {
        s.target: s
        for s in body
        if isinstance(s, Call) and s.op == "pad" and not dict(s.attrs)["squeeze"]
    }
    uses: dict[sp.Symbol, int] = {}
    for stmt in body:
        for symbol in stmt.reads:
            uses[symbol] = uses.get(symbol, 0) + 1
    joined: dict[sp.Symbol, Statement] = {}
    for stmt in body:
        if not isinstance(stmt, Assign) or not stmt.expr.is_Add:
            continue
        parts = [pads.get(term) for term in stmt.expr.args]
        if any(part is None or uses[part.target] != 1 for part in parts):
            continue
        spans = sorted((dict(p.attrs)["start"], dict(p.attrs)["stop"], p) for p in parts)
        size = dict(spans[0][2].attrs)["size"]
        tiles = [start for start, _, _ in spans] == [0, *(stop for _, stop, _ in spans[:-1])]
        if not tiles or spans[-1][1] != size:
            continue
        args = tuple(p.args[0] for _, _, p in spans)
        joined[stmt.target] = Call(stmt.target, "concat", args, stmt.shape, stmt.phase)
    dropped = {term for stmt in body if stmt.target in joined for term in stmt.expr.args}
    return [joined.get(s.target, s) for s in body if s.target not in dropped]


def _hoist(body: list[Statement], varying: set[sp.Symbol]):
    """Split ``body`` into what reads nothing that changes from step to step (computed
    once, before the loop) and the rest, each in order."""
    varying = set(varying)
    before, inside = [], []
    for stmt in body:
        if stmt.reads & varying:
            varying.add(stmt.target)
            inside.append(stmt)
        else:
            before.append(stmt)
    return before, inside


def _with_args(loop: Loop, known: list[sp.Symbol]) -> Loop:
    """``loop`` reading, besides ``known``, every value of the code before it that its
    body reads."""
    defined = {s.target for s in loop.body}
    defined |= {c.inner for c in loop.carries}
    defined |= {inner for _, inner, _ in loop.loads}
    read = set().union(*(s.reads for s in loop.body)) if loop.body else set()
    outer = sorted(read - defined, key=lambda s: s.name)
    stacks = [stack for stack, _, _ in loop.loads]
    return replace(loop, args=tuple(dict.fromkeys([*known, *stacks, *outer])))


def _scan_forward(node: Node, graph: Graph) -> list[Statement]:
    step = _derive_step(node, graph)
    return [*step.before_forward, step.forward]


def _scan_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """The backward loop: t = T..1, each state's adjoint carried from step to step, and
    the gradient of each value outside the loop summed over the steps; where a step's
    part is a product over the batch of two values of the step (dW_t = delta_t^T a_t),
    the sum over the steps is one product over the stacked steps after the loop."""
    step = _derive_step(node, graph)
    names = node.attrs["names"]
    for stmt in step.before_backward:
        emit.statement(stmt)
    out = graph.tensors[node.output]
    initial = node.inputs[0]
    d_initial = names.fresh("v")
    body = node.attrs["body"]
    backward = list(step.backward)
    stacks = dict(step.stacks)
    shapes = {**step.shapes, **{s.target: s.shape for s in backward}}
    shapes.update({seed: (BATCH, stop - start) for seed, _, start, stop in step.seeds})
    readers: dict[sp.Symbol, int] = {}
    for stmt in backward:
        for symbol in stmt.reads:
            readers[symbol] = readers.get(symbol, 0) + 1
    accumulates, after, stores = [], [], {}
    contributions: list[Contribution] = []
    defining = {s.target: s for s in backward}
    for tensor, per_step in step.grads.items():
        if tensor not in needs:
            continue
        total = names.fresh("v")
        shape = body.tensors[tensor].shape
        contributions.append((tensor, total, shape))
        stmt = defining.get(per_step)
        summed = _summed_over_steps(stmt, readers.get(per_step, 0))
        if summed is None:
            accumulates.append((total, per_step, shape))
            continue
        for value in summed[1]:
            if value not in stacks:  # kept by the backward loop for the product after it
                stacks[value] = names.stack(value)
                stores[value] = stacks[value]
        op, args, attrs = summed[0], tuple(stacks[v] for v in summed[1]), summed[2]
        if op == "contract":  # the stacks' rows, flattened: their last sizes
            attrs = (("columns", tuple(shapes[v][-1] for v in summed[1])), *attrs)
        after.append(Call(total, op, args, shape, "backward", attrs=attrs))
        backward.remove(stmt)
    read = set().union(*(s.reads for s in backward)) if backward else set()
    read |= set(stores)
    forward = step.forward
    kept = {stack for stack, _, _ in forward.stores}
    loop = Loop(
        target=d_initial,
        initial=g,
        args=(),
        body=tuple(backward),
        shape=out.shape,
        phase="backward",
        length=forward.length,
        reverse=True,
        carries=tuple(Carry(seed, after_, start, stop) for seed, after_, start, stop in step.seeds),
        loads=tuple(
            (stacks[v], v, shapes[v])
            for v in sorted(stacks, key=lambda s: s.name)
            if v in read and v not in stores and (v in step.stacks)
        ),
        stores=tuple((stack, v, shapes[v]) for v, stack in stores.items()),
        accumulates=tuple(accumulates),
        comment="backward",
        joined=initial in needs,
        window=node.attrs.get("bptt"),
    )
    known = [g, *(stack for stack, _, _ in loop.loads), *kept]
    loop = _with_args(loop, [*known, forward.length])
    emit.statement(loop)
    for stmt in after:
        emit.statement(stmt)
    for symbol, (value, each) in step.adjoint_of.items():  # the documents name them
        if value.name not in step.grads:  # a parameter's per-step part is not its adjoint
            emit.adjoint_of[symbol] = (value, each)
    if initial in needs:
        contributions.append((initial, d_initial, out.shape))
    return contributions


def _summed_over_steps(stmt: Statement | None, uses: int):
    """How the sum over the steps of a per-step gradient ``stmt`` is one op over the
    stacked steps: (op, the step values it reads, attrs), or None. A product over the
    batch of two step values, sum_t delta_t^T a_t, is one product with the time axis
    summed too; a sum over the batch, sum_t sum_n delta_t, one sum over both axes."""
    if stmt is None or uses:
        return None
    if isinstance(stmt, BatchSum):
        return "sum", (stmt.source,), (("axes", (0, 1)),)
    if isinstance(stmt, Call) and stmt.op == "contract" and len(stmt.args) == 2:
        inputs, result = dict(stmt.attrs)["subscripts"].split("->")
        parts = inputs.split(",")
        if all(part.startswith("n") for part in parts) and "n" not in result:
            subscripts = ",".join(TIME + part for part in parts) + "->" + result
            return "contract", stmt.args, (("subscripts", subscripts),)
    return None


register("scan", _scan_forward, _scan_vjp, full_adjoint=True)


def _output_forward(node: Node, graph: Graph) -> list[Statement]:
    """A value of the step at every step, (N, T, ...): the stack the forward loop kept
    (or the one computed for all steps before it), batch first."""
    scan = graph.producer()[node.inputs[0]]
    step = _derive_step(scan, graph)
    value = scan.attrs["body"].tensors[node.attrs["value"]].symbol
    out = graph.tensors[node.output]
    return [Call(out.symbol, "from_steps", (step.stacks[value],), out.shape, "forward")]


def _output_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """An output, not read by the loss: it needs no adjoint (reverse mode never asks)."""
    raise NotImplementedError("a recurrence's every-step output is not differentiated")


register("scan_output", _output_forward, _output_vjp)
COST["from_steps"] = lambda shapes, out, attrs: 0
NOTATION["from_steps"] = _notation(
    lambda args, attrs: rf"\left({args[0]}\right)_{{t=1}}^{{T}}",
    lambda args, attrs: f"{args[0]} at every step t",
)
# a sequence (N, T, ...) copied time-major, (T, N, ...): each step's element contiguous
COST["time_major"] = lambda shapes, out, attrs: 0
NOTATION["time_major"] = _notation(
    lambda args, attrs: rf"\operatorname{{steps}}({args[0]})",
    lambda args, attrs: f"the steps of {args[0]}",
)
