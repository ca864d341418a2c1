"""Reverse-mode accumulation over the IR: the chain rule, with memoization.

Forward statements first; then nodes in reverse topological order, each turning the
adjoint of its output into contributions to its inputs (the op's rule), and each
adjoint summed once, when every consumer has contributed. That summing is the
dynamic-programming step of backpropagation: dL/dv is computed once and reused by
everything upstream of v.
"""

from __future__ import annotations

import sympy as sp

from .ir import BATCH, Graph, broadcast_shape
from .naming import Names
from .program import Assign, BatchSum, Program, Statement
from .rules import RULES


class Adjoints:
    """Collects contributions per tensor and emits each adjoint once."""

    def __init__(self, graph: Graph, names: Names, statements: list[Statement]):
        self.graph = graph
        self.names = names
        self.statements = statements
        self.pending: dict[str, list[tuple[sp.Expr, tuple]]] = {}
        self.named: set[sp.Symbol] = set()  # adjoints of user-named values, kept in code

    def add(self, tensor: str, contribution: sp.Expr, shape: tuple) -> None:
        self.pending.setdefault(tensor, []).append((contribution, shape))

    def total(self, tensor: str) -> sp.Symbol | None:
        parts = self.pending.pop(tensor, None)
        if not parts:
            return None
        target = self.graph.tensors[tensor]
        symbol = self.names.adjoint(tensor)
        if target.named and target.role not in ("loss", "sample_loss"):
            self.named.add(symbol)
        value = sp.Add(*[expr for expr, _ in parts])
        shape = broadcast_shape([s for _, s in parts])
        if BATCH in shape and BATCH not in target.shape:
            # the tensor was broadcast over the batch: its adjoint sums over it
            per_sample = self.names.adjoint(tensor, per_sample=True)
            self.statements.append(Assign(per_sample, value, shape, "backward"))
            self.statements.append(BatchSum(symbol, per_sample, target.shape))
        else:
            self.statements.append(Assign(symbol, value, target.shape, "backward"))
        return symbol


def reverse_mode(graph: Graph, names: Names) -> Program:
    statements: list[Statement] = []
    for node in graph.nodes:
        statements += RULES[node.op].forward(node, graph)
    needs = graph.depends_on_params()
    adjoints = Adjoints(graph, names, statements)
    adjoints.add(graph.loss, sp.S.One, ())
    for node in reversed(graph.nodes):
        g = adjoints.total(node.output)
        if g is not None:
            for tensor, contribution, shape in RULES[node.op].vjp(node, g, graph, needs):
                adjoints.add(tensor, contribution, shape)
    grads = {}
    for param in graph.params:
        symbol = adjoints.total(param)
        if symbol is None:  # the parameter cancelled out of the model
            symbol = names.adjoint(param)
            statements.append(Assign(symbol, sp.S.Zero, graph.tensors[param].shape, "backward"))
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
        keep={t.symbol for t in tensors.values() if t.named} | adjoints.named,
    )
