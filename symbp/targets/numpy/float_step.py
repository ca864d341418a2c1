"""Layer stacks this small train on Python floats: the step unrolled over units.

A 2-2-1 network's training step is about twenty NumPy calls on arrays of a few
elements, and each call costs about a microsecond whatever the size; the same
arithmetic on Python floats costs tens of nanoseconds an operation. So for tiny
networks the NumPy target also prints the step for floats, from the same program the
array step prints: each (N, k) value becomes k floats of the current sample, a product
becomes its sums written out, and a parameter gradient (delta^T A, the column sums of
delta) becomes a sum over the batch's samples, accumulated as the samples go by.

Only the operations that have a short scalar form are expanded (dense layers and
elementwise formulas); a program with any other (softmax, cross-entropy, images) gets
no float step.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...ir.graph import BATCH, N
from ...optim import g as grad_symbol
from ...optim import grad_norm, update_rule
from ...optim import p as param_symbol
from ...program.statements import Assign, BatchMean, BatchSum, Call, Program, Statement
from .printer import ScalarPrinter, wrap

# beyond this many parameters (or units in a layer) the unrolled code stops being worth
# reading or running
MAX_PARAMS, MAX_WIDTH = 64, 8
# the indentation of the template's per-batch and per-sample lines
BATCH_INDENT, SAMPLE_INDENT = 12, 16
# an operation of the float step costs about this many NumPy calls of the array step:
# benchmarks/float_step_crossover.py measured the two steps of xor_mlp (53 operations a
# sample, 23 calls) and xor_sigmoid (121, 46) equally fast at batch 24 and about 20
OP_PER_CALL = 0.02


class BatchFloatPrinter(ScalarPrinter):
    """Python floats, for one sample of a batch of N: N stays a name (1/N scales the
    mean's adjoint), where the per-sample printer sets it to 1."""

    def doprint(self, expr, assign_to=None):
        return super(ScalarPrinter, self).doprint(sp.sympify(expr), assign_to)


@dataclass(frozen=True)
class FloatLine:
    target: str
    expr: str
    accumulate: bool = False  # target += expr (a sum over the batch's samples)


def element(symbol: sp.Symbol, *index: int) -> sp.Symbol:
    """The float holding one element of a tensor: W1[0, 1] is W1_0_1."""
    return sp.Symbol("_".join([symbol.name, *(str(i) for i in index)]), real=True)


def float_step_context(derivation) -> dict | None:
    """The template context of the float step, or None when the program has an
    operation without a scalar form, more than MAX_PARAMS parameters or a layer wider
    than MAX_WIDTH."""
    program, spec = derivation.program, derivation.spec
    statements = program.needed_for([program.loss, *program.grads.values()])
    shapes = {t.symbol: t.shape for t in derivation.graph.tensors.values()}
    shapes |= {s.target: s.shape for s in statements}
    if sum(_size(shapes[p]) for p in program.params) > MAX_PARAMS:
        return None
    if any(d > MAX_WIDTH for p in program.params for d in shapes[p]):
        return None
    grads = set(program.grads.values())
    expander = _Expander(shapes, program, grads)
    for stmt in statements:
        if not expander.add(stmt):
            return None
    if expander.loss is None:
        return None
    printer = BatchFloatPrinter()

    def line(target: sp.Symbol, expr: sp.Expr, indent: int, accumulate: bool = False):
        start = indent + len(target.name) + (4 if accumulate else 3)
        return FloatLine(target.name, wrap(printer.doprint(expr), indent, start), accumulate)

    sample = [line(t, e, SAMPLE_INDENT, acc) for t, e, acc in expander.sample]
    before = [line(t, e, BATCH_INDENT) for t, e in expander.before]
    rule = update_rule(spec.train.optimizer, spec.train.options)
    updates, state = [], []
    for param in program.params:
        grad = program.grads[param]
        for index in _indices(shapes[param]):
            mapping = {param_symbol: element(param, *index), grad_symbol: element(grad, *index)}
            for buffer in rule.state:
                name = element(sp.Symbol(f"{buffer}_{param.name}"), *index)
                mapping[sp.Symbol(buffer, real=True)] = name
                state.append((name.name, rule.initial(buffer)))
            updates += [
                line(mapping.get(t, t), e.xreplace(mapping), BATCH_INDENT) for t, e in rule.updates
            ]
    step_scalars = [line(s, e, BATCH_INDENT) for s, e in rule.step_scalars]
    accumulators = [
        element(g, *i).name for p, g in program.grads.items() for i in _indices(shapes[p])
    ]
    if rule.reads_grad_norm:  # clip_grad_norm: the norm of every gradient element
        squares = sum(sp.Symbol(name, real=True) ** 2 for name in accumulators)
        step_scalars.insert(0, line(grad_norm, sp.sqrt(squares), BATCH_INDENT))
    ops = sum(sp.count_ops(e) + 1 for _, e, _ in expander.sample)
    (x,) = program.inputs
    (y,) = program.targets
    return {
        "params": [_param_entry(p, shapes[p]) for p in program.params],
        "zero": _chained_zeros([*accumulators, expander.loss_sum], BATCH_INDENT),
        "row": _row_unpack(x, shapes[x]),
        "target_row": _row_unpack(y, shapes[y]),
        "before": before,
        "sample": sample,
        "loss_sum": expander.loss_sum,
        "loss": expander.loss,
        "step_scalars": step_scalars,
        "carried": list(rule.carried),
        "updates": updates,
        "state": state,
        "helpers": printer.helpers,
        "ops_per_sample": ops,
    }


def _chained_zeros(names: list[str], indent: int, width: int = 99) -> list[str]:
    """``a = b = ... = 0.0`` statements, as few as fit in ``width`` columns."""
    lines, current = [], []
    for name in names:
        if current and indent + len(" = ".join([*current, name, "0.0"])) > width:
            lines.append(" = ".join([*current, "0.0"]))
            current = []
        current.append(name)
    lines.append(" = ".join([*current, "0.0"]))
    return lines


def max_batch(context: dict | None, array_calls: int) -> int:
    """The largest batch for which the float step is estimated to cost less than the
    array step (``array_calls`` NumPy calls): 0 without a float step."""
    if context is None:
        return 0
    return int(array_calls / (context["ops_per_sample"] * OP_PER_CALL))


class _Expander:
    """Statement by statement, the float lines of one sample (and of the batch)."""

    def __init__(self, shapes: dict, program: Program, grads: set):
        self.shapes = shapes
        self.program = program
        self.grads = grads
        self.before: list[tuple[sp.Symbol, sp.Expr]] = []  # per batch, before the samples
        self.sample: list[tuple[sp.Symbol, sp.Expr, bool]] = []
        self.loss_sum: str | None = None  # the float that sums the per-sample losses
        self.loss: dict | None = None

    def add(self, stmt: Statement) -> bool:
        shape = stmt.shape
        if isinstance(stmt, Assign) and shape == ():
            if stmt.expr.free_symbols - {N}:  # a batch scalar that reads the batch's values
                return False
            self.before.append((stmt.target, stmt.expr))
            return True
        if isinstance(stmt, Assign) and _is_rows(shape):
            for j in range(shape[1]):
                mapping = {s: self._at(s, j) for s in stmt.expr.free_symbols if s != N}
                if None in mapping.values():
                    return False
                self.sample.append((element(stmt.target, j), stmt.expr.xreplace(mapping), False))
            return True
        if isinstance(stmt, BatchMean) and self.loss is None and stmt.target == self.program.loss:
            width = self.shapes[stmt.source][1] if _is_rows(self.shapes[stmt.source]) else 1
            total = sp.Symbol(f"_sum_{stmt.source.name}", real=True)
            parts = [element(stmt.source, j) for j in range(width)]
            self.sample.append((total, sp.Add(*parts), True))
            self.loss_sum = total.name
            self.loss = {"name": stmt.target.name, "per_sample": 1 if stmt.sum_features else width}
            return True
        if isinstance(stmt, Call):
            return self._call(stmt)
        if isinstance(stmt, BatchSum) and stmt.target in self.grads:
            return self._accumulate(
                stmt.target, [(j,) for j in range(shape[0])], lambda j: element(stmt.source, j)
            )
        return False

    def _at(self, symbol: sp.Symbol, j: int) -> sp.Symbol | None:
        """The float for column j of ``symbol`` in the current sample (broadcasting a
        width-1 value or a per-feature vector), or the symbol itself for a scalar."""
        shape = self.shapes.get(symbol)
        if shape is None or shape == ():
            return symbol
        if _is_rows(shape):
            return element(symbol, 0 if shape[1] == 1 else j)
        if len(shape) == 1 and symbol in self.program.params:
            return element(symbol, 0 if shape[0] == 1 else j)
        return None

    def _call(self, stmt: Call) -> bool:
        args, shape = stmt.args, stmt.shape
        if stmt.op == "linear" and _is_rows(shape):
            a, w = args[:2]
            width = self.shapes[a][1]
            for j in range(shape[1]):
                terms = [element(a, i) * element(w, j, i) for i in range(width)]
                bias = [element(args[2], j)] if len(args) > 2 else []
                self.sample.append((element(stmt.target, j), sp.Add(*terms, *bias), False))
            return True
        if stmt.op == "matmul" and _is_rows(shape):  # d_A = delta W
            g, w = args
            rows = self.shapes[g][1]
            for i in range(shape[1]):
                terms = [element(g, j) * element(w, j, i) for j in range(rows)]
                self.sample.append((element(stmt.target, i), sp.Add(*terms), False))
            return True
        if stmt.op == "matmul_tn" and stmt.target in self.grads:  # d_W = delta^T A
            g, a = args
            rows, cols = shape
            return self._accumulate(
                stmt.target,
                [(j, i) for j in range(rows) for i in range(cols)],
                lambda j, i: element(g, j) * element(a, i),
            )
        if stmt.op == "sum_rows" and stmt.target in self.grads:  # d_b = delta^T 1
            (g,) = args
            return self._accumulate(
                stmt.target, [(j,) for j in range(shape[0])], lambda j: element(g, j)
            )
        return False

    def _accumulate(self, target: sp.Symbol, indices, term) -> bool:
        for index in indices:
            self.sample.append((element(target, *index), term(*index), True))
        return True


def _is_rows(shape) -> bool:
    return len(shape) == 2 and shape[0] == BATCH


def _size(shape) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def _indices(shape) -> list[tuple[int, ...]]:
    if len(shape) == 1:
        return [(j,) for j in range(shape[0])]
    return [(j, i) for j in range(shape[0]) for i in range(shape[1])]


def _param_entry(param: sp.Symbol, shape) -> dict:
    """How a parameter's floats are unpacked from its array and packed back: a vector
    on one line, a matrix a row a line."""
    if len(shape) == 1:
        names = [element(param, j).name for j in range(shape[0])]
        return {
            "name": param.name,
            "vector": _tuple(names),
            "list": f"[{', '.join(names)}]",
            "rows": None,
        }
    rows = [[element(param, j, i).name for i in range(shape[1])] for j in range(shape[0])]
    return {
        "name": param.name,
        "rows": [_tuple(r) for r in rows],
        "lists": [f"[{', '.join(r)}]" for r in rows],
    }


def _row_unpack(symbol: sp.Symbol, shape) -> str:
    return _tuple([element(symbol, j).name for j in range(shape[1])])


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
