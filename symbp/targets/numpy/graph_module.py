"""The NumPy module of a tensor model: the derived program printed over arrays, a
batch at a time, into templates/numpy/graph.py.j2."""

from __future__ import annotations

import pprint

import numpy as np

from ... import __version__
from ...documents.graph import backward_groups, readers
from ...language.terms import shape_text
from ...program.statistics import MOMENTUM, eval_statements
from .inplace import Constants
from .lines import (
    DTYPES,
    _optimizer_context,
    _vector_lines,
    inplace_optimizer_context,
    schedule_context,
)


def _array_literal(array: np.ndarray) -> str:
    """The array as a nested list that fits the module's 100 columns (indented by 4)."""
    return pprint.pformat(array.tolist(), width=92, compact=True)


def _recurrence_lines(model) -> list[str]:
    """[model.recur] as the docstring states it: each step's values and states."""
    if not model.recur:
        return []
    starts = [
        f"{name}[0] = {'0' if entry[1] == 'zeros' else entry[1]}"
        for name, entry in model.recur.items()
        if not isinstance(entry, str)
    ]
    lines = [f"for each step t = 1..T of the sequence, from {', '.join(starts)}:"]
    for name, entry in model.recur.items():
        lines.append(
            f"    {name} = {entry}" if isinstance(entry, str) else f"    {name}[t] = {entry[2]}"
        )
    return lines


def _literal(shape) -> str:
    """A shape as a Python tuple, "T" (a sequence's steps) in double quotes."""
    items = [f'"{d}"' if isinstance(d, str) else str(d) for d in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _comments(derivation) -> dict[str, tuple[str, ...]]:
    """A comment before each run of backward statements that completes a named value's
    adjoint, citing section 3 of the derivation document and who reads the value."""
    model = derivation.spec
    user = {*model.inputs, *model.targets, *model.params, *(n for n, _, _ in model.lets)}
    read_by = readers(derivation)
    comments = {}
    for group in backward_groups(derivation, user):
        value = group["value"]
        if value is None or value not in user:
            continue
        recurrence = "_".join(model.states) + "_T" if model.recur else None
        by = ", ".join(
            "the recurrence" if r == recurrence else r if r in user else "l"
            for r in read_by.get(value, [])
        )
        first = group["statements"][0].target.name
        comments[first] = (f"dL/d{value}, read by {by} (derivation, section 3)",)
    return comments


def graph_context(derivation, dtype: str = "float64") -> dict:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    model, program = derivation.spec, derivation.program
    forward, fh = _vector_lines(program.needed_for(program.outputs), {}, 4)
    loss, lh = _vector_lines(program.needed_for([program.loss]), {}, 4)
    grads, gh = _vector_lines(
        program.needed_for([program.loss, *program.grads.values()]), _comments(derivation), 4
    )
    statistics = derivation.statistics
    if statistics:  # training mode under `if`: the same lines, indented by 8
        forward_8, _ = _vector_lines(program.needed_for(program.outputs), {}, 8)
        loss_8, _ = _vector_lines(program.needed_for([program.loss]), {}, 8)
        evaluate, eh = _vector_lines(eval_statements(program, statistics, program.outputs), {}, 8)
        eval_loss, elh = _vector_lines(eval_statements(program, statistics, [program.loss]), {}, 8)
        fh, lh = fh | eh, lh | elh
    else:
        forward_8 = loss_8 = evaluate = eval_loss = []
    optimizer = _optimizer_context(derivation, {})
    constants = Constants()
    inplace = inplace_optimizer_context(derivation, constants)
    printed = [line.expr for line in forward + loss + grads + evaluate + eval_loss]
    printed += [line.expr for line in optimizer["step_scalars"] + optimizer["vector_updates"]]
    output = program.outputs[0]
    output_term = model.terms[model.output]
    classes = [y for y in model.labels if output_term.shape == (model.labels[y],)]
    return {
        "name": model.name,
        "description": model.description,
        "source": model.source,
        "version": __version__,
        "dtype": dtype,
        "model_lines": _recurrence_lines(model)
        + [f"{n} = {text}" for n, _, text in model.lets]
        + [f"l = {model.loss_text}", f"L = {model.reduction} of l over the batch"],
        "inputs": [
            {"name": x, "shape": s, "text": shape_text(s), "literal": _literal(s)}
            for x, s in model.inputs.items()
        ],
        "sequences": model.sequences,
        "targets": [
            {
                "name": y,
                "shape": s,
                "text": shape_text(s),
                "literal": _literal(s),
                "classes": model.labels.get(y),
            }
            for y, s in model.targets.items()
        ],
        "columns": all(not s for s in model.inputs.values()) and len(model.inputs) > 1,
        "target_columns": all(not s for s in model.targets.values())
        and len(model.targets) > 1
        and not model.labels,
        "params": [
            {
                "name": p,
                "shape": tuple(s),
                "kind": model.init[p].kind,
                "value": model.init[p].value,
            }
            for p, s in model.params.items()
        ],
        "output": output.name,
        "output_shape": shape_text(output_term.shape),
        "output_batched": output_term.batched,
        "classes": classes[0] if classes else None,
        "reduction": model.reduction,
        "train": model.train,
        "optimizer": optimizer,
        "schedule": schedule_context(derivation),
        "inplace_optimizer": inplace,
        "constants": constants.definitions(),
        "data": {k: _array_literal(v) for k, v in model.data.items()} if model.data else None,
        "forward_lines": forward,
        "forward_lines_8": forward_8,
        "loss_lines_8": loss_8,
        "eval_forward_lines": evaluate,
        "eval_loss_lines": eval_loss,
        "statistics": [
            {
                "value": s.value.name,
                "buffer": s.buffer.name,
                "shape": _literal(s.shape),
                "variance": s.variance,
                "init": s.init,
            }
            for s in statistics
        ],
        "momentum": MOMENTUM,
        "loss_lines": loss,
        "grad_lines": grads,
        "grads": [(p.name, g.name) for p, g in program.grads.items()],
        "loss_name": program.loss.name,
        "numpy_helpers": sorted(fh | lh | gh),
        "uses_math": bool(derivation.spec.train.lr_schedule)
        or "erf" in (fh | lh | gh)
        or any("math." in e for e in printed)
        or any("math." in line.expr for line in inplace["step_scalars"])
        or bool(inplace["grad_norm"]),
    }
