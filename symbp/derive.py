"""The pipeline from a spec to a lean, named program: IR, reverse mode, CSE."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import sympy as sp

from .ad.reverse import reverse_mode
from .ad.rules import ROUTING, undistributed
from .ir.build import expression_graph, layer_graph
from .ir.graph import Graph
from .ir.tensor_build import tensor_graph
from .language.model import TensorModel
from .program.naming import Names, finalize
from .program.statements import (
    Program,
    defines,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    inline_single_use,
    mask_before_routing,
    propagate_copies,
)
from .program.statistics import RunningStatistic, running_statistics
from .spec.expression import ExpressionSpec
from .spec.fields import RESERVED


@dataclass(repr=False)
class Derivation:
    spec: ExpressionSpec
    graph: Graph
    program: Program
    # how the program names what the IR names (the last pass renumbers temporaries: the
    # IR's _t5 is the program's t2, the adjoint of an inlined value is g1): IR tensor ->
    # its value in the program, and IR tensor -> the program symbols of its adjoint (in
    # program order, the per-sample one first). A value or an adjoint inlined away has
    # none. Pictures of the graph read them (symbp.documents.picture).
    values: dict[str, sp.Symbol] = field(default_factory=dict)
    adjoints: dict[str, tuple[sp.Symbol, ...]] = field(default_factory=dict)
    # the batch statistics and their running averages, which eval mode reads in their
    # place (symbp.program.statistics); none for a model without batch_mean
    statistics: list[RunningStatistic] = field(default_factory=list)

    def __repr__(self) -> str:
        """One line: the model, its kind, its parameters and the program's length."""
        params = self.graph.params
        count = sum(prod(self.graph.tensors[p].shape) for p in params)
        if isinstance(self.spec, TensorModel):
            kind = "tensor model"
        else:
            kind = "expression model" if isinstance(self.spec, ExpressionSpec) else "layer stack"
        return (
            f"<Derivation of {self.spec.name!r}: {kind}, {len(params)} parameter"
            f"{'s' if len(params) != 1 else ''} ({count:,} value{'s' if count != 1 else ''}), "
            f"{len(self.program.statements)} statements>"
        )


def user_names(spec) -> set[str]:
    if isinstance(spec, TensorModel):
        recur = {*spec.recur, *(f"{h}_prev" for h in spec.states)}
        if spec.recur:  # the loop's names, the steps' elements, the last states
            recur |= {"t", "T", "_".join(spec.states) + "_T", *(f"{x}_t" for x in spec.sequences)}
            recur.add(f"{spec.output}_t")  # an output at every step: its value in the step
        lets = (n for n, _, _ in spec.lets)
        return {*spec.inputs, *spec.targets, *spec.params, *lets, *recur}
    if not isinstance(spec, ExpressionSpec):
        return set()
    return {
        *spec.inputs,
        *spec.targets,
        *spec.params,
        *(n for n, _ in spec.lets),
        *(n for n, _ in spec.outputs),
    }


def _masked_name(g: sp.Symbol, names: Names) -> sp.Symbol:
    """d_A2 -> d_A2_masked: the adjoint with an activation's mask applied."""
    base = f"{g.name.lstrip('_')}_masked"
    return sp.Symbol(names.pick(base, *(f"{base}{k}" for k in range(2, 100))), real=True)


def derive(spec) -> Derivation:
    with undistributed():
        return _derive(spec)


def _derive(spec) -> Derivation:
    # a recurrence's state c (an LSTM's cell): shared subexpressions cse1, ..., so that
    # c1 never reads as c at step 1 in its loops
    recurrent_c = isinstance(spec, TensorModel) and "c" in spec.recur
    names = Names(user_names(spec) | RESERVED, "cse" if recurrent_c else "c")
    if isinstance(spec, TensorModel):
        graph = tensor_graph(spec, names)
    elif isinstance(spec, ExpressionSpec):
        graph = expression_graph(spec, names)
    else:
        graph = layer_graph(spec, names)
    program = reverse_mode(graph, names)
    program = eliminate_dead_code(program)
    program = inline_single_use(program)
    program = mask_before_routing(program, ROUTING, lambda g: _masked_name(g, names))
    program = eliminate_common_subexpressions(program, names.cse_symbol)
    program = propagate_copies(program)
    before = [s for stmt in program.statements for s in defines(stmt)]
    adjoint_of = dict(program.adjoint_of)  # in the IR's names, before renumbering
    program = finalize(program, names)
    after = [s for stmt in program.statements for s in defines(stmt)]
    renamed = dict(zip(before, after, strict=True))
    leaves = {*program.inputs, *program.targets, *program.params}
    values = {
        name: renamed.get(t.symbol, t.symbol)
        for name, t in graph.tensors.items()
        if t.symbol in renamed or t.symbol in leaves
    }
    order = {symbol: k for k, symbol in enumerate(before)}
    adjoints: dict[str, list[sp.Symbol]] = {}
    for symbol in sorted((s for s in adjoint_of if s in renamed), key=order.__getitem__):
        adjoints.setdefault(adjoint_of[symbol][0].name, []).append(renamed[symbol])
    taken = names.taken | {s.name for s in after} | {t.name for t in graph.tensors.values()}
    return Derivation(
        spec,
        graph,
        program,
        values,
        {name: tuple(s) for name, s in adjoints.items()},
        running_statistics(program, graph, values, taken),
    )
