"""Reverse-mode accumulation over the IR: the chain rule, with memoization.

Forward statements first; then nodes in reverse topological order, each turning the
adjoint of its output into contributions to its inputs (the op's rule), and each
adjoint summed once, when every consumer has contributed. That summing is the
dynamic-programming step of backpropagation: dL/dv is computed once and reused by
everything upstream of v.
"""

from __future__ import annotations

import sympy as sp

from ..ir.graph import BATCH, Graph, N, broadcast_shape
from ..program.naming import Names
from ..program.statements import Assign, BatchSum, Call, Program, Statement

# conv_rules (unfold, conv2d, pooling, flatten) and tensor_rules (the model language's
# contractions, reductions, indexing) register into RULES and ROUTING from their own
# modules, imported here, where the registry is read
from . import conv_rules, tensor_rules  # noqa: F401
from .rules import RULES


class Adjoints:
    """Collects contributions per tensor and emits each adjoint once."""

    def __init__(self, graph: Graph, names: Names, statements: list[Statement]):
        self.graph = graph
        self.names = names
        self.statements = statements
        self.pending: dict[str, list[tuple[sp.Expr, tuple]]] = {}
        self.named: set[sp.Symbol] = set()  # adjoints of user-named values, kept in code
        self.adjoint_of: dict[sp.Symbol, tuple[sp.Symbol, bool]] = {}
        self.shapes = {t.symbol: t.shape for t in graph.tensors.values()}

    def add(self, tensor: str, contribution: sp.Expr, shape: tuple) -> None:
        """``shape`` is the contribution's logical shape: the shape of the consumer it
        came through (its value may be constant over the batch all the same)."""
        self.pending.setdefault(tensor, []).append((contribution, shape))

    def actual_shape(self, expr: sp.Expr) -> tuple:
        return broadcast_shape([self.shapes.get(s, ()) for s in expr.free_symbols])

    def emit(self, statement: Statement) -> None:
        self.shapes[statement.target] = statement.shape
        self.statements.append(statement)

    def call(self, op: str, args: tuple, shape: tuple, name: str, attrs: tuple = ()) -> sp.Symbol:
        """Emit ``op(*args)`` for a tensor op's rule; return the symbol holding it."""
        symbol = self.names.fresh("v")
        args = tuple(a if isinstance(a, sp.Symbol) else self._materialize(a) for a in args)
        self.emit(Call(symbol, op, args, shape, "backward", attrs=attrs))
        return symbol

    def full(self, g: sp.Symbol, shape: tuple) -> sp.Symbol:
        """``g`` as an array of ``shape``: an adjoint whose value is the same for every
        element (1/N for each sample's loss) is one number until a tensor op reads it."""
        if self.shapes.get(g, ()) == shape:
            return g
        symbol = self.names.fresh("v")
        self.emit(Call(symbol, "broadcast_to", (g,), shape, "backward", attrs=(("shape", shape),)))
        return symbol

    def _materialize(self, expr: sp.Expr) -> sp.Symbol:
        symbol = self.names.fresh("v")
        self.emit(Assign(symbol, expr, self.actual_shape(expr), "backward"))
        return symbol

    def total(self, tensor: str) -> sp.Symbol | None:
        parts = self.pending.pop(tensor, None)
        if not parts:
            return None
        target = self.graph.tensors[tensor]
        symbol = self.names.adjoint(tensor)
        self.adjoint_of[symbol] = (target.symbol, False)
        if target.named and target.role not in ("loss", "sample_loss"):
            self.named.add(symbol)
        # The adjoint of broadcasting over the batch is a sum over it: contributions that
        # came through a batched consumer into an unbatched tensor are summed per sample
        # and reduced (a contribution constant over the batch sums to N times itself).
        reduce = BATCH not in target.shape
        per_sample = [e for e, s in parts if reduce and BATCH in s]
        value = sp.Add(*[e for e, s in parts if not (reduce and BATCH in s)])
        varying = [e for e in per_sample if BATCH in self.actual_shape(e)]
        value += N * sp.Add(*[e for e in per_sample if BATCH not in self.actual_shape(e)])
        if varying:
            each = self.names.adjoint(tensor, per_sample=True)
            self.adjoint_of[each] = (target.symbol, True)
            self.emit(
                Assign(each, sp.Add(*varying), self.actual_shape(sp.Add(*varying)), "backward")
            )
            if value == 0:
                self.emit(BatchSum(symbol, each, target.shape))
                return symbol
            reduced = self.names.fresh("sum")
            self.emit(BatchSum(reduced, each, target.shape))
            value += reduced
        self.emit(Assign(symbol, value, self.actual_shape(value), "backward"))
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
            rule = RULES[node.op]
            if rule.full_adjoint:
                g = adjoints.full(g, graph.tensors[node.output].shape)
            for tensor, contribution, shape in rule.vjp(node, g, graph, needs, adjoints.call):
                adjoints.add(tensor, contribution, shape)
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
        keep={t.symbol for t in tensors.values() if t.named} | adjoints.named,
        adjoint_of=adjoints.adjoint_of,
        shapes={
            tensors[n].symbol: tensors[n].shape
            for n in [*graph.inputs, *graph.targets, *graph.params]
        },
    )
