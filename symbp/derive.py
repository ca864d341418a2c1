"""The pipeline from a spec to a lean, named program: IR, reverse mode, CSE."""

from __future__ import annotations

from dataclasses import dataclass

from .build import expression_graph, layer_graph
from .ir import Graph
from .naming import Names, finalize
from .program import (
    Program,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    inline_single_use,
    propagate_copies,
)
from .reverse import reverse_mode
from .rules import undistributed
from .spec import RESERVED, ExpressionSpec


@dataclass
class Derivation:
    spec: ExpressionSpec
    graph: Graph
    program: Program


def user_names(spec) -> set[str]:
    if not isinstance(spec, ExpressionSpec):
        return set()
    return {
        *spec.inputs,
        *spec.targets,
        *spec.params,
        *(n for n, _ in spec.lets),
        *(n for n, _ in spec.outputs),
    }


def derive(spec) -> Derivation:
    with undistributed():
        return _derive(spec)


def _derive(spec) -> Derivation:
    names = Names(user_names(spec) | RESERVED)
    graph = (
        expression_graph(spec, names)
        if isinstance(spec, ExpressionSpec)
        else layer_graph(spec, names)
    )
    program = reverse_mode(graph, names)
    program = eliminate_dead_code(program)
    program = inline_single_use(program)
    program = eliminate_common_subexpressions(program, names.cse_symbol)
    program = propagate_copies(program)
    program = finalize(program, names)
    return Derivation(spec, graph, program)
