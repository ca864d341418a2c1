"""The pipeline from a spec to a lean, named program: IR, reverse mode, CSE."""

from __future__ import annotations

from dataclasses import dataclass

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
    eliminate_common_subexpressions,
    eliminate_dead_code,
    inline_single_use,
    mask_before_routing,
    propagate_copies,
)
from .spec.expression import ExpressionSpec
from .spec.fields import RESERVED


@dataclass
class Derivation:
    spec: ExpressionSpec
    graph: Graph
    program: Program


def user_names(spec) -> set[str]:
    if isinstance(spec, TensorModel):
        return {*spec.inputs, *spec.targets, *spec.params, *(n for n, _, _ in spec.lets)}
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
    names = Names(user_names(spec) | RESERVED)
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
    program = finalize(program, names)
    return Derivation(spec, graph, program)
