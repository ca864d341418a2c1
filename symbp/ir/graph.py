"""The model IR: a DAG of tensor operations.

Tensors have shapes made of integers and the batch dimension ``"N"``. An expression
model is the special case where every node is elementwise over the batch and the
parameters are scalars (shape ``()``) broadcast over it. Each op's forward statement
and vector-Jacobian product live in :mod:`symbp.ad.rules`; this module only holds data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

BATCH = "N"
N = sp.Symbol(BATCH, positive=True, integer=True)

Shape = tuple  # of int | "N"


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: Shape
    role: str  # "input" | "target" | "param" | "value" | "loss"
    label: str = ""  # how the derivation document writes it (LaTeX), if not the name
    named: bool = False  # a name the user gave (let-name, output, loss): keep it in code
    # what the front end made this tensor as, for the documents, which never read it
    # from a name: a layer stack's ("Z", 2) is Z^(2), ("W", 1) is W^(1); () for others
    origin: tuple[str, int] | tuple[()] = ()
    # a batch statistic (batch_mean): "mean" or "variance" (see symbp.language.ops), which
    # eval mode replaces by its running average; "" for every other value
    statistic: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Node:
    op: str  # a key of symbp.ad.rules.RULES
    inputs: tuple[str, ...]
    output: str
    attrs: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]  # in topological order
    loss: str  # the scalar objective (mean over the batch)
    params: list[str]
    inputs: list[str]
    targets: list[str]
    outputs: list[str]

    def producer(self) -> dict[str, Node]:
        return {node.output: node for node in self.nodes}

    def depends_on_params(self) -> set[str]:
        """Tensors whose value depends on a parameter: the only ones that need an adjoint."""
        live = set(self.params)
        for node in self.nodes:
            if any(i in live for i in node.inputs):
                live.add(node.output)
        return live


def broadcast_shape(shapes: list[Shape]) -> Shape:
    """NumPy broadcasting of shapes (a scalar broadcasts to anything, a size-1 axis to
    any size); shapes that do not broadcast give the longest, first one."""
    result: Shape = ()
    for shape in shapes:
        joined = _broadcast_pair(result, shape)
        if joined is None:
            joined = shape if len(shape) > len(result) else result
        result = joined
    return result


def _broadcast_pair(a: Shape, b: Shape) -> Shape | None:
    dims = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            dims.append(x)
        elif x == 1:
            dims.append(y)
        else:
            return None
    return tuple(reversed(dims))
