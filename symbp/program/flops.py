"""What a program costs in floating-point operations, at a given batch size.

An elementwise statement costs its operations (each distinct subexpression once) per
element; a tensor op what its rule declares (:data:`symbp.ad.tensor_rules.COST`: a
contraction two per term, a view nothing); a reduction over the batch one per element.
The cheap-gradient principle says the whole program (forward and backward) costs a
small multiple of the forward pass alone: tests check at most 5x.
"""

from __future__ import annotations

from ..ad import conv_rules, tensor_rules
from ..ir.graph import BATCH
from ..stats import dag_ops
from .statements import Assign, BatchMean, BatchSum, Call, Loop, Program, Statement

# every tensor op's declared cost: the model language's and the image ops'
COST = {**tensor_rules.COST, **conv_rules.COST}
# the number of time steps a recurrence is costed at, where the model does not say
STEPS = 10


def _concrete(shape: tuple, n: int, steps: int = STEPS) -> tuple[int, ...]:
    """The shape at batch size ``n`` (and, for a recurrence's stacks, ``steps`` steps)."""
    return tuple(n if d == BATCH else steps if d == "T" else d for d in shape)


def _size(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def statement_flops(stmt: Statement, shapes: dict, n: int, steps: int = STEPS) -> int:
    """At batch size ``n``; a loop over time (a recurrence) runs its body ``steps``
    times, so its cost grows linearly in the sequence's length."""
    if isinstance(stmt, Loop):
        inner = {**shapes, **stmt.inner_shapes(shapes)}
        inner.update({s.target: s.shape for s in stmt.body})
        per_step = sum(statement_flops(s, inner, n, steps) for s in stmt.body)
        added = sum(_size(_concrete(shape, n)) for _, _, shape in stmt.accumulates)
        run = min(steps, stmt.window) if stmt.window else steps  # truncated BPTT: k steps
        return run * (per_step + added)
    if isinstance(stmt, Assign):
        return dag_ops(stmt.expr) * _size(_concrete(stmt.shape, n, steps))
    if isinstance(stmt, (BatchSum, BatchMean)):
        return _size(_concrete(shapes.get(stmt.source, ()), n, steps))
    if isinstance(stmt, Call) and stmt.op in COST:
        args = [_concrete(shapes.get(a, ()), n, steps) for a in stmt.args]
        return COST[stmt.op](args, _concrete(stmt.shape, n, steps), dict(stmt.attrs))
    raise ValueError(f"no cost declared for {type(stmt).__name__} {getattr(stmt, 'op', '')}")


def program_flops(program: Program, n: int = 1, steps: int = STEPS) -> dict[str, int]:
    """{"forward": the loss alone, "program": loss and every gradient} at batch size n
    (and sequences of ``steps`` steps)."""
    shapes = dict(program.shapes)
    shapes.update({s.target: s.shape for s in program.statements})
    for stmt in program.statements:
        if isinstance(stmt, Loop):
            shapes.update(stmt.shapes())
    forward = program.needed_for([program.loss])
    everything = program.needed_for([program.loss, *program.grads.values()])
    return {
        "forward": sum(statement_flops(s, shapes, n, steps) for s in forward),
        "program": sum(statement_flops(s, shapes, n, steps) for s in everything),
    }


def format_flops(program: Program, name: str, batch_size: int) -> str:
    """``symbp derive --stats`` for a tensor model."""
    lines = [f"{name}: floating-point operations of one training step"]
    lines.append(f"{'batch size':>12} {'forward':>14} {'forward+backward':>18} {'ratio':>7}")
    for n in dict.fromkeys((1, batch_size)):
        flops = program_flops(program, n)
        ratio = flops["program"] / max(1, flops["forward"])
        lines.append(f"{n:>12} {flops['forward']:>14,} {flops['program']:>18,} {ratio:>7.2f}")
    return "\n".join(lines)
