"""Lines of printed NumPy code that every NumPy module builds its context from: the
program's statements over arrays, and the optimizer's update (per parameter, and in
place over one flat array of all parameters)."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...derive import Derivation
from ...optim import OPTIMIZERS, memory_lean, update_rule
from ...optim import g as grad_symbol
from ...optim import p as param_symbol
from ...program.statements import Assign, BatchSum, Call, Statement
from .inplace import Constants, InplacePrinter
from .printer import NumpyPrinter, ScalarPrinter, wrap

DTYPES = ("float64", "float32")
LR_ARRAY = "lr_array"


@dataclass(frozen=True)
class Line:
    """One printed assignment with the comments that tie it to the derivation."""

    target: str
    expr: str
    comments: tuple[str, ...] = ()


def _vector_lines(statements: list[Statement], comments, indent: int) -> list[Line]:
    printer = NumpyPrinter()
    lines = []
    for stmt in statements:
        target = stmt.target.name
        if isinstance(stmt, Assign) and stmt.expr.is_number and stmt.shape:
            # a constant that a tensor op reads (x - x folded to 0): an array of its shape
            text = printer.call("full", (), (("value", stmt.expr), ("shape", stmt.shape)))
        elif isinstance(stmt, Assign):
            text = printer.doprint(stmt.expr)
        elif isinstance(stmt, Call):
            text = printer.call(stmt.op, tuple(a.name for a in stmt.args), stmt.attrs)
        elif isinstance(stmt, BatchSum):
            text = f"np.sum({stmt.source.name}, axis=0)"
        elif stmt.sum_features:
            text = f"np.sum({stmt.source.name}) / {stmt.source.name}.shape[0]"
        else:
            text = f"np.mean({stmt.source.name})"
        text = wrap(text, indent, indent + len(target) + 3)
        lines.append(Line(target, text, comments.get(target, ())))
    return lines, printer.helpers


def _optimizer_context(derivation: Derivation, scalar_grads):
    spec = derivation.spec
    rule = update_rule(spec.train.optimizer, spec.train.options)
    vec, sca = NumpyPrinter(), ScalarPrinter()
    step_scalars = [Line(s.name, sca.doprint(e)) for s, e in rule.step_scalars]
    vector_updates = [Line(t.name, vec.doprint(e)) for t, e in rule.updates]
    per_param = []
    for param in derivation.program.params if scalar_grads else ():
        mapping = {param_symbol: param, grad_symbol: scalar_grads[param]}
        for buffer in rule.state:
            mapping[sp.Symbol(buffer, real=True)] = sp.Symbol(f"{buffer}_{param.name}", real=True)
        updates = [
            Line(mapping.get(t, t).name, sca.doprint(e.xreplace(mapping))) for t, e in rule.updates
        ]
        per_param.append({"name": param.name, "updates": updates})
    options = {k: v for k, v in rule.options.items() if k != "lr"}
    return {
        "name": rule.name,
        "torch_class": OPTIMIZERS[rule.name].torch_class,
        "options": options,
        "formulas": rule.formulas,
        "state": [{"name": b, "init": rule.initial(b)} for b in rule.state],
        "step_scalars": step_scalars,
        "vector_updates": vector_updates,
        "per_param": per_param,
    }


def inplace_optimizer_context(derivation: Derivation, constants: Constants | None = None) -> dict:
    """The optimizer's update over all parameters at once, printed in place: ``p`` and
    ``g`` are the flat arrays of every parameter and gradient, each state buffer one flat
    array too."""
    spec = derivation.spec
    rule = memory_lean(update_rule(spec.train.optimizer, spec.train.options))
    tensors = {param_symbol.name, grad_symbol.name, *rule.state}
    used = 0
    lines = []
    for target, expr in rule.updates:
        printer = InplacePrinter(
            tensors, lambda k: f"tmp{k}", constants=constants, arrays={"lr": LR_ARRAY}
        )
        lines += printer.assign(target.name, expr)
        used = max(used, printer.scratch_used)
    scalars = ScalarPrinter()
    return {
        "formulas": rule.formulas,
        "step_scalars": [Line(s.name, scalars.doprint(e)) for s, e in rule.step_scalars],
        "lines": lines,
        "lr_array": LR_ARRAY if any(LR_ARRAY in line for line in lines) else None,
        "scratch": [f"tmp{k}" for k in range(used)],
    }
