"""The adjoints of a graph's values, summed once each: the memo of reverse mode.

:class:`Adjoints` collects the contributions every consumer makes to a value's adjoint
and emits the sum once, when all have contributed; :func:`backpropagate` visits a
graph's nodes in reverse order. Reverse mode runs them over the model's graph, and the
scan's rule over the graph of one time step.
"""

from __future__ import annotations

import sympy as sp

from ..ir.graph import BATCH, Graph, N, broadcast_shape
from ..program.naming import Names
from ..program.statements import Assign, BatchSum, Call, Statement
from .rules import RULES


class Adjoints:
    """Collects contributions per tensor and emits each adjoint once."""

    def __init__(self, graph: Graph, names: Names, statements: list[Statement], adjoint_name=None):
        self.graph = graph
        self.names = names
        # (tensor, per_sample) -> the symbol of its adjoint: names.adjoint unless a loop
        # body names the per-step gradients of the values outside it
        self.adjoint_name = adjoint_name or (lambda t, each: names.adjoint(t, per_sample=each))
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

    def statement(self, statement: Statement) -> None:
        """Emit a statement a rule builds itself (a loop over time)."""
        self.emit(statement)

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
        symbol = self.adjoint_name(tensor, False)
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
            each = self.adjoint_name(tensor, True)
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

    __call__ = call  # a rule's VJP emits its tensor ops through ``emit(op, ...)``


def backpropagate(graph: Graph, adjoints: Adjoints, needs: set[str]) -> None:
    """The chain rule over ``graph``, from the adjoints already added: each node, in
    reverse order, turns its output's adjoint into contributions to its inputs."""
    for node in reversed(graph.nodes):
        g = adjoints.total(node.output)
        if g is not None:
            rule = RULES[node.op]
            if rule.full_adjoint:
                g = adjoints.full(g, graph.tensors[node.output].shape)
            for tensor, contribution, shape in rule.vjp(node, g, graph, needs, adjoints):
                adjoints.add(tensor, contribution, shape)
