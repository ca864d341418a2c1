"""The NumPy module of a tensor model: the derived program printed over arrays, a
batch at a time, into templates/numpy/graph.py.j2."""

from __future__ import annotations

import pprint

import numpy as np

from ... import __version__
from ...language.terms import shape_text
from ...program.statistics import MOMENTUM, eval_statements
from ..comments import graph_comments, graph_model_lines
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


def _literal(shape) -> str:
    """A shape as a Python tuple, "T" (a sequence's steps) in double quotes."""
    items = [f'"{d}"' if isinstance(d, str) else str(d) for d in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def graph_context(derivation, dtype: str = "float64") -> dict:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    model, program = derivation.spec, derivation.program
    forward, fh = _vector_lines(program.needed_for(program.outputs), {}, 4)
    loss, lh = _vector_lines(program.needed_for([program.loss]), {}, 4)
    grads, gh = _vector_lines(
        program.needed_for([program.loss, *program.grads.values()]), graph_comments(derivation), 4
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
        "model_lines": graph_model_lines(model),
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
