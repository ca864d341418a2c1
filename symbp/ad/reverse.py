"""Reverse-mode accumulation over the IR: the chain rule, with memoization.

Forward statements first; then nodes in reverse topological order, each turning the
adjoint of its output into contributions to its inputs (the op's rule), and each
adjoint summed once, when every consumer has contributed. That summing is the
dynamic-programming step of backpropagation: dL/dv is computed once and reused by
everything upstream of v.
"""

from __future__ import annotations

import sympy as sp

from ..ir.graph import Graph
from ..program.naming import Names
from ..program.statements import Assign, Program, Statement

# conv_rules (unfold, conv2d, pooling, flatten), tensor_rules (the model language's
# contractions, reductions, indexing) and scan (recurrences) register into RULES and
# ROUTING from their own modules, imported here, where the registry is read
from . import conv_rules, scan, tensor_rules  # noqa: F401
from .adjoints import Adjoints, backpropagate
from .rules import RULES


def reverse_mode(graph: Graph, names: Names) -> Program:
    statements: list[Statement] = []
    for node in graph.nodes:
        statements += RULES[node.op].forward(node, graph)
    needs = graph.depends_on_params()
    adjoints = Adjoints(graph, names, statements)
    adjoints.add(graph.loss, sp.S.One, ())
    backpropagate(graph, adjoints, needs)
    grads = {}
    for param in graph.params:
        symbol = adjoints.total(param)
        if symbol is None:  # the parameter cancelled out of the model
            symbol = names.adjoint(param)
            adjoints.emit(Assign(symbol, sp.S.Zero, graph.tensors[param].shape, "backward"))
        grads[graph.tensors[param].symbol] = symbol
    tensors = graph.tensors
    sample_loss = graph.producer()[graph.loss].inputs[0]
    return Program(
        statements=statements,
        inputs=[tensors[n].symbol for n in graph.inputs],
        targets=[tensors[n].symbol for n in graph.targets],
        params=[tensors[n].symbol for n in graph.params],
        outputs=[tensors[n].symbol for n in graph.outputs],
        loss=tensors[graph.loss].symbol,
        sample_loss=tensors[sample_loss].symbol,
        grads=grads,
        keep={t.symbol for t in tensors.values() if t.named or t.statistic} | adjoints.named,
        adjoint_of=adjoints.adjoint_of,
        shapes={
            tensors[n].symbol: tensors[n].shape
            for n in [*graph.inputs, *graph.targets, *graph.params]
        },
    )
