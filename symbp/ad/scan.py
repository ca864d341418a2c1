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

from ..ir.graph import Graph, Node
from ..program.statements import (
    Assign,
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


@dataclass
class _Step:
    """One step's derived program, split into the two loops."""

    adjoint_of: dict  # the step's adjoints -> their values, for the documents
    before_forward: list[Statement]  # what does not change over the steps
    forward: Loop
    before_backward: list[Statement]
    backward: list[Statement]  # the body of the backward loop
    seeds: list[tuple[sp.Symbol, sp.Symbol, int, int]]  # (d_h_next, d_h_prev, start, stop)
    grads: dict[str, sp.Symbol]  # an outer value -> its per-step gradient
    slices: tuple  # (sequence, its element), for the backward loop


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
    results = {
        body.tensors[leaf].symbol: s[1] for (_, leaf, _, _), s in zip(states, seeds, strict=True)
    }
    results.update({body.tensors[t].symbol: g for t, g in grads.items()})
    program = Program(
        statements=statements,
        inputs=[],
        targets=[],
        params=[],
        outputs=new[1:],
        loss=new[0],
        sample_loss=new[0],
        grads=results,
        keep=set(new),
    )
    program = eliminate_dead_code(program)
    program = inline_single_use(program)
    program = eliminate_common_subexpressions(program, names.cse_symbol)
    program = propagate_copies(program)
    forward = [s for s in program.statements if s.phase == "forward"]
    backward = [s for s in program.statements if s.phase != "forward"]

    prev = [body.tensors[leaf].symbol for _, leaf, _, _ in states]
    elements = [body.tensors[leaf].symbol for _, leaf in node.attrs["sequences"]]
    before_forward, forward = _hoist(forward, {*prev, *elements})
    defined = {s.target for s in forward} | set(prev)
    read_back = set().union(*(s.reads for s in backward)) if backward else set()
    saved = sorted(defined & read_back, key=lambda s: s.name)
    stacks = [sp.Symbol(names.pick(f"_{s.name}_steps"), real=True) for s in saved]
    shapes = {s.target: s.shape for s in forward}
    shapes.update({p: body.tensors[p.name].shape for p in prev})
    sequences = tuple(
        (sp.Symbol(x, real=True), body.tensors[leaf].symbol) for x, leaf in node.attrs["sequences"]
    )
    out = graph.tensors[node.output]
    initial = sp.Symbol(node.inputs[0], real=True)
    forward_loop = Loop(
        target=out.symbol,
        initial=initial,
        args=(),
        body=tuple(forward),
        shape=out.shape,
        phase="forward",
        length=sequences[0][0],
        carries=tuple(
            Carry(p, n, start, stop)
            for p, n, (_, _, start, stop) in zip(prev, new, states, strict=True)
        ),
        slices=_read(sequences, forward),
        stores=tuple((stack, s, shapes[s]) for stack, s in zip(stacks, saved, strict=True)),
        comment="forward",
    )
    forward_loop = _with_args(forward_loop, [initial, *(x for x, _ in sequences)])
    before_backward, backward = _hoist(backward, {*(s[0] for s in seeds), *elements, *defined})
    step = _Step(
        adjoint_of=dict(adjoints.adjoint_of),
        before_forward=before_forward,
        forward=forward_loop,
        before_backward=before_backward,
        backward=backward,
        seeds=[tuple(s) for s in seeds],
        grads=grads,
        slices=sequences,
    )
    node.attrs["_step"] = step
    return step


def _read(sequences, body) -> tuple:
    read = set().union(*(s.reads for s in body)) if body else set()
    return tuple((x, element) for x, element in sequences if element in read)


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
    defined |= {c.inner for c in loop.carries} | {inner for _, inner in loop.slices}
    defined |= {inner for _, inner, _ in loop.loads}
    read = set().union(*(s.reads for s in loop.body)) if loop.body else set()
    outer = sorted(read - defined, key=lambda s: s.name)
    return replace(loop, args=tuple(dict.fromkeys([*known, *outer])))


def _scan_forward(node: Node, graph: Graph) -> list[Statement]:
    step = _derive_step(node, graph)
    return [*step.before_forward, step.forward]


def _scan_vjp(node: Node, g, graph: Graph, needs: set[str], emit) -> list[Contribution]:
    """The backward loop: t = T..1, each state's adjoint carried from step to step and
    the gradient of each value outside the loop summed over the steps."""
    step = _derive_step(node, graph)
    names = node.attrs["names"]
    for stmt in step.before_backward:
        emit.statement(stmt)
    out = graph.tensors[node.output]
    initial = node.inputs[0]
    d_initial = names.fresh("v")
    body = node.attrs["body"]
    accumulates = []
    contributions: list[Contribution] = []
    for tensor, per_step in step.grads.items():
        if tensor not in needs:
            continue
        total = names.fresh("v")
        shape = body.tensors[tensor].shape
        accumulates.append((total, per_step, shape))
        contributions.append((tensor, total, shape))
    forward = step.forward
    loop = Loop(
        target=d_initial,
        initial=g,
        args=(),
        body=tuple(step.backward),
        shape=out.shape,
        phase="backward",
        length=forward.length,
        reverse=True,
        carries=tuple(Carry(seed, after, start, stop) for seed, after, start, stop in step.seeds),
        slices=_read(step.slices, step.backward),
        loads=forward.stores,
        accumulates=tuple(accumulates),
        comment="backward",
        joined=initial in needs,
    )
    known = [g, *(stack for stack, _, _ in forward.stores), *(x for x, _ in loop.slices)]
    loop = _with_args(loop, [*known, forward.length])
    emit.statement(loop)
    for symbol, (value, each) in step.adjoint_of.items():  # the documents name them
        if value.name not in step.grads:  # a parameter's per-step part is not its adjoint
            emit.adjoint_of[symbol] = (value, each)
    if initial in needs:
        contributions.append((initial, d_initial, out.shape))
    return contributions


register("scan", _scan_forward, _scan_vjp, full_adjoint=True)
