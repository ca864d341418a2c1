"""The model IR: a DAG of tensor operations.

Tensors have shapes made of integers and the batch dimension ``"N"``. An expression
model is the special case where every node is elementwise over the batch and the
parameters are scalars (shape ``()``) broadcast over it. Each op's forward statement
and vector-Jacobian product live in :mod:`symbp.rules`; this module only holds data.
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

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Node:
    op: str  # a key of symbp.rules.RULES
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
    """NumPy broadcasting of shapes; a scalar broadcasts to anything."""
    result: Shape = ()
    for shape in shapes:
        if len(shape) > len(result):
            result = shape
    return result
