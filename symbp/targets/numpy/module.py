"""The NumPy target: print the derived program twice (arrays and floats) into
templates/numpy/.

The vectorized printing serves ``forward``/``loss``/``loss_and_grads`` and mini-batch
training; the float printing serves training at batch size 1, where NumPy's per-call
overhead would cost more than the arithmetic.
"""

from __future__ import annotations

import math
import pprint
import re
from dataclasses import replace

import sympy as sp

from ... import __version__
from ...derive import Derivation
from ...language.model import TensorModel
from ...program.flops import program_flops
from ...program.memory import plan_buffers
from ...program.statements import Assign, BatchMean, BatchSum, Call, Statement
from ...spec.layers import LayerSpec
from ...templating import environment
from ..comments import comment_table as _comment_table
from ..comments import model_lines as _model_lines
from ..comments import wrapped as _wrapped
from ..registry import default_dtype
from .float_step import float_step_context, max_batch
from .graph_module import graph_context
from .inplace import Constants, InplacePrinter
from .lines import (
    DTYPES,
    Line,
    _optimizer_context,
    _vector_lines,
    inplace_optimizer_context,
    schedule_context,
)
from .printer import NumpyPrinter, ScalarPrinter, wrap


def _scalar_lines(statements: list[Statement], comments, indent: int) -> list[Line]:
    printer = ScalarPrinter()
    lines = []
    for stmt in statements:
        if isinstance(stmt, Assign):
            target = stmt.target.name
            text = wrap(printer.doprint(stmt.expr), indent, indent + len(target) + 3)
            lines.append(Line(target, text, comments.get(target, ())))
    return lines, printer.helpers


def _per_sample(derivation: Derivation):
    """Statements for one sample: reductions over the batch are the identity there, so
    each reduced value is replaced by what it reduces."""
    program = derivation.program
    alias = {s.target: s.source for s in program.statements if isinstance(s, (BatchSum, BatchMean))}
    grads = {p: alias.get(g, g) for p, g in program.grads.items()}
    loss = alias.get(program.loss, program.loss)
    statements = [
        replace(s, expr=s.expr.xreplace(alias))
        for s in program.needed_for([loss, *grads.values()])
        if isinstance(s, Assign)
    ]
    return statements, grads, loss


def _literal(value, indent: int) -> str:
    return pprint.pformat(value, width=99 - indent, sort_dicts=False)


def compiled_context(derivation: Derivation) -> dict | None:
    """Whether train() may hand the run to the C module beside it (docs/c.md), and its
    default: None where the C target does not take the model."""
    from ..c.target import faster_than_numpy, supported

    if not supported(derivation):
        return None
    return {"faster": faster_than_numpy(derivation)}


def module_context(derivation: Derivation, dtype: str = "float64") -> dict:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    spec, program = derivation.spec, derivation.program
    comments = _comment_table(derivation, batched=True)
    forward, fh = _vector_lines(program.needed_for(program.outputs), {}, 4)
    loss, lh = _vector_lines(program.needed_for([program.loss]), {}, 4)
    grads_needed = program.needed_for([program.loss, *program.grads.values()])
    grads, gh = _vector_lines(grads_needed, comments, 4)
    sample_statements, scalar_grads, sample_loss = _per_sample(derivation)
    scalar, sh = _scalar_lines(sample_statements, _comment_table(derivation, batched=False), 12)
    shapes = {s.target: s.shape for s in program.statements}
    optimizer = _optimizer_context(derivation, scalar_grads)
    printed = [line.expr for line in forward + loss + grads + scalar]
    printed += [line.expr for line in optimizer["step_scalars"] + optimizer["vector_updates"]]
    printed += [u.expr for p in optimizer["per_param"] for u in p["updates"]]
    outputs = [{"name": o.name, "batched": bool(shapes.get(o, ()))} for o in program.outputs]
    return {
        "name": spec.name,
        "compiled": compiled_context(derivation),
        "description": spec.description,
        "source": spec.source,
        "version": __version__,
        "dtype": dtype,
        "model_lines": _model_lines(derivation),
        "inputs": spec.inputs,
        "targets": spec.targets,
        "outputs": outputs,
        "params": [{"name": p, "init": spec.init.get(p)} for p in spec.params],
        "loss_batched": bool(shapes.get(program.sample_loss, ())),
        "train": spec.train,
        "optimizer": optimizer,
        "schedule": schedule_context(derivation),
        "data": _literal(spec.data, 7) if spec.data else None,
        "predict": _literal(spec.predict, 10) if spec.predict else None,
        "forward_lines": forward,
        "loss_lines": loss,
        "grad_lines": grads,
        "grads": [(p.name, g.name) for p, g in program.grads.items()],
        "loss_name": program.loss.name,
        "scalar_lines": scalar,
        "scalar_loss": sample_loss.name,
        "numpy_helpers": sorted(fh | lh | gh),
        "scalar_helpers": sorted(sh),
        "uses_math": bool(derivation.spec.train.lr_schedule)
        or bool(sh)
        or "erf" in (fh | lh | gh)
        or any("math." in e for e in printed)
        or bool(optimizer["grad_norm"]),
    }


def layer_context(derivation: Derivation, dtype: str) -> dict:
    """The template context of a layer stack: one vectorized program, no float path."""
    spec, program = derivation.spec, derivation.program
    grads, helpers = _vector_lines(
        program.needed_for([program.loss, *program.grads.values()]), {}, 4
    )
    forward, fh = _vector_lines(program.needed_for(program.outputs), {}, 4)
    loss, lh = _vector_lines(program.needed_for([program.loss]), {}, 4)
    widths = spec.widths
    optimizer = _optimizer_context(derivation, {})
    constants = Constants()
    step = inplace_step_context(derivation, constants)
    inplace = inplace_optimizer_context(derivation, constants, result="p_next")
    floats = float_step_context(derivation)
    # the array step's NumPy calls, its update's and train()'s few per step
    array_calls = sum(len(line["code"]) for line in step["lines"]) + len(inplace["lines"]) + 3
    if floats:
        floats["array_calls"] = array_calls
    return {
        "name": spec.name,
        "compiled": compiled_context(derivation),
        "description": spec.description,
        "source": spec.source,
        "version": __version__,
        "dtype": dtype,
        "widths": widths,
        "layers": [
            {
                "index": layer.index,
                "dense": layer.dense,
                "bias": layer.bias,
                "fan_in": widths[layer.index - 1],
                "activation": layer.text or "identity",
                "summary": spec.summary(layer),
            }
            for layer in spec.layers
        ],
        **spec.template_context(),
        "loss_name": spec.loss,
        "params": spec.params,
        "train": spec.train,
        "optimizer": optimizer,
        "schedule": schedule_context(derivation),
        "data": _literal({"X": spec.data[0], "Y": spec.data[1]}, 7) if spec.data else None,
        "forward_lines": forward,
        "loss_lines": loss,
        "grad_lines": grads,
        "grads": [(p.name, g.name) for p, g in program.grads.items()],
        "batch_loss": program.loss.name,
        "output": program.outputs[0].name,
        "step": step,
        "inplace_optimizer": inplace,
        "constants": constants.definitions(),
        "floats": floats,
        "float_batch_max": max_batch(floats, array_calls),
        "numpy_helpers": sorted(helpers | fh | lh | step["helpers"]),
        "scalar_helpers": sorted(floats["helpers"]) if floats else [],
        "uses_math": bool(derivation.spec.train.lr_schedule)
        or "erf" in (helpers | fh | lh)
        or any("math." in line.expr for line in inplace["step_scalars"])
        or bool(inplace["grad_norm"])
        or bool(floats and _float_code_uses_math(floats)),
    }


ONES = "ones_N"
# N and the learning rate as 0-d arrays of the dtype, for calls that take them as operands
N_ARRAY = "N_array"


def _shape_text(shape: tuple) -> str:
    dims = [str(d) for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _scratch_name(shape: tuple, k: int) -> str:
    return "_".join(["tmp", *(str(d) for d in shape), str(k)])


def _may_overwrite(stmt: Statement, symbol: sp.Symbol) -> bool:
    """Elementwise statements may write over a dying operand (the printer orders the
    work so that it is safe); a tensor operation only over the argument it allows."""
    if isinstance(stmt, Assign):
        return True
    if isinstance(stmt, Call):
        at = InplacePrinter.overwritable(stmt.op, stmt.attrs)
        return at is not None and stmt.args[at] == symbol
    return False


def inplace_step_context(derivation: Derivation, constants: Constants | None = None) -> dict:
    """The training step printed into preallocated arrays (symbp.program.memory plans them):
    the step's lines, the arrays to allocate per batch size, and the helpers it calls.
    Number operands are named constants (``constants``), N and the learning rate 0-d
    arrays: see symbp.targets.numpy.inplace.Constants."""
    program = derivation.program
    statements = program.needed_for([program.loss, *program.grads.values()])
    external = {*program.inputs, *program.targets, *program.params}
    results = {g: g.name for g in program.grads.values()}
    plan = plan_buffers(statements, external, results, _may_overwrite)
    tensors = {s.name for s in external} | {s.name for s in plan.home}
    shape_of = {s.target: s.shape for s in statements}
    uses_ones = False
    scratch: dict[tuple, int] = {}
    printer = NumpyPrinter()  # the same statement, allocating: the comment above each block
    helpers: set[str] = set()
    lines: list[dict] = []
    for stmt in statements:
        target = stmt.target.name
        formula = _vector_lines([stmt], {}, 6)[0][0].expr
        comment = f"{target} = {formula}"
        if "\n" in formula:  # a long formula: loss_and_grads prints it in full
            comment = f"{target}: as in loss_and_grads"
        taken = plan.reuses.get(stmt.target)
        bind = None
        if taken is not None:
            home = plan.home[stmt.target]
            bind = f"{target} = {home}  # {taken.name} is dead: {target} takes its array"
        shape = stmt.shape
        aliases = frozenset({taken.name}) if taken is not None else frozenset()
        if isinstance(stmt, Assign) and not shape:
            code = [f"{target} = {printer.doprint(stmt.expr)}"]
        elif isinstance(stmt, Assign):
            inplace = InplacePrinter(
                tensors,
                lambda k, shape=shape: _scratch_name(shape, k),
                constants=constants,
                arrays={"N": N_ARRAY},
            )
            code = inplace.assign(target, stmt.expr, aliases)
            scratch[shape] = max(scratch.get(shape, 0), inplace.scratch_used)
            helpers |= inplace.helpers
        elif isinstance(stmt, Call):
            rows = stmt.op == "sum_rows" and len(shape_of.get(stmt.args[0], ())) == 2
            inplace = InplacePrinter(tensors, lambda k: "", ONES if rows else None)
            uses_ones |= rows
            code = inplace.call(stmt.op, target, tuple(a.name for a in stmt.args), stmt.attrs)
            helpers |= inplace.helpers
        elif isinstance(stmt, BatchSum):
            code = [f"np.sum({stmt.source.name}, axis=0, out={target})"]
        elif stmt.sum_features:
            code = [f"{target} = float(np.sum({stmt.source.name})) / {stmt.source.name}.shape[0]"]
        else:
            # sum / size: the same value as np.mean, with less per-call overhead
            code = [f"{target} = float({stmt.source.name}.sum()) / {stmt.source.name}.size"]
        if isinstance(stmt, (Assign, BatchMean)) and not shape:
            comment = None  # the line says it all
        # wrapped: a formula that fits the line can still overflow it after "# target = "
        lines.append({"comment": _wrapped(comment) if comment else (), "bind": bind, "code": code})
    read = _names_in(lines)
    buffers = [_buffer(b.name, f"np.empty({_shape_text(b.shape)}, DTYPE)") for b in plan.buffers]
    if uses_ones:  # column sums (bias gradients) as 1^T delta
        buffers.append(_buffer(ONES, "np.ones((N,), DTYPE)"))
    if N_ARRAY in read:
        buffers.append(_buffer(N_ARRAY, "np.asarray(N, DTYPE)"))
    for shape, count in sorted(scratch.items(), key=lambda item: str(item[0])):
        buffers += [
            _buffer(_scratch_name(shape, k), f"np.empty({_shape_text(shape)}, DTYPE)")
            for k in range(count)
        ]
    return {
        "lines": lines,
        "buffers": buffers,
        "params": [p.name for p in program.params],
        "grads": [(p.name, g.name) for p, g in program.grads.items()],
        "inputs": [s.name for s in program.inputs],
        "targets": [s.name for s in program.targets],
        "loss": program.loss.name,
        "uses_N": "N" in read,
        "helpers": helpers,
    }


def _float_code_uses_math(floats: dict) -> bool:
    lines = [*floats["before"], *floats["sample"], *floats["step_scalars"], *floats["updates"]]
    return bool(floats["helpers"]) or any("math." in line.expr for line in lines)


def _buffer(name: str, init: str) -> dict:
    return {"name": name, "init": init}


def _names_in(lines: list[dict]) -> set[str]:
    """The identifiers that the printed step reads or writes (whether it needs N, and
    N_array)."""
    text = "\n".join(
        [
            *(c for line in lines for c in line["code"]),
            *(line["bind"] for line in lines if line["bind"]),
        ]
    )
    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text))


def render_module(derivation: Derivation, dtype: str | None = None, *, options: str = "") -> str:
    """The NumPy module; ``options`` are the command line's other options (``-o m.py
    --tests``), repeated in the docstring's regenerate line."""
    dtype = dtype or default_dtype(derivation.spec)
    if isinstance(derivation.spec, TensorModel):
        template, context = "graph.py.j2", graph_context(derivation, dtype)
    elif isinstance(derivation.spec, LayerSpec):
        template, context = "layers.py.j2", layer_context(derivation, dtype)
    else:
        template, context = "module.py.j2", module_context(derivation, dtype)
    context["options"] = options
    return environment(__package__).get_template(template).render(context)


# the generated test file: its finite differences at TEST_POINTS random points of
# TEST_BATCH samples, each parameter in at most TEST_MAX_ENTRIES entries; fewer points
# (at least 2) where those would cost more than TEST_FLOPS floating-point operations
TEST_POINTS = 5
TEST_BATCH = 7
TEST_MAX_ENTRIES = 48
TEST_FLOPS = 2e9  # about a second of NumPy on an idle core


def _forward_flops(derivation: Derivation) -> int:
    """Operations of one sample's forward pass: a layer stack's products (its bulk), a
    tensor or expression model's forward program as :mod:`symbp.program.flops` counts."""
    spec = derivation.spec
    if isinstance(spec, LayerSpec):
        total = 0
        for name, shape in spec.param_shapes().items():
            if name.startswith("W"):  # a conv2d kernel is applied at every output pixel
                pixels = math.prod(spec.shapes[int(name[1:])][1:]) if len(shape) == 4 else 1
                total += 2 * math.prod(shape) * pixels
        return total
    try:
        return program_flops(derivation.program, 1)["forward"]
    except ValueError:  # an op without a declared cost: count it as cheap
        return 0


def _param_shapes(spec) -> list[tuple[int, ...]]:
    if isinstance(spec, LayerSpec):
        return list(spec.param_shapes().values())
    if isinstance(spec, TensorModel):
        return [tuple(shape) for shape in spec.params.values()]
    return [()] * len(spec.params)


def generated_test_points(derivation: Derivation) -> int:
    """Random points of the generated test file: TEST_POINTS, or fewer (at least 2) for
    a model whose finite differences (two loss evaluations per entry checked) would cost
    more than TEST_FLOPS, so that every built-in's file runs in seconds."""
    entries = sum(min(math.prod(s), TEST_MAX_ENTRIES) for s in _param_shapes(derivation.spec))
    per_point = 2 * entries * TEST_BATCH * _forward_flops(derivation)
    return max(2, min(TEST_POINTS, int(TEST_FLOPS // max(1, per_point))))


def render_tests(derivation: Derivation, module_name: str) -> str:
    context = {
        "name": derivation.spec.name,
        "module": module_name,
        "version": __version__,
        "points": generated_test_points(derivation),
        "full_points": TEST_POINTS,
        "batch": TEST_BATCH,
        "max_entries": TEST_MAX_ENTRIES,
        "gflops": f"{TEST_FLOPS / 1e9:g}",
        "sequences": bool(getattr(derivation.spec, "sequences", ())),
    }
    return environment(__package__).get_template("test_module.py.j2").render(context)
