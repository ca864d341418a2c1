"""Lines of printed NumPy code that every NumPy module builds its context from: the
program's statements over arrays, and the optimizer's update (per parameter, and in
place over one flat array of all parameters)."""

from __future__ import annotations

import pprint
import textwrap
from dataclasses import dataclass

import sympy as sp

from ...derive import Derivation
from ...optim import OPTIMIZERS, first_step, last_step, memory_lean, update_rule
from ...optim import g as grad_symbol
from ...optim import p as param_symbol
from ...program.statements import Assign, BatchSum, Call, Loop, Statement, flatten
from ...schedules import learning_rates
from .inplace import Constants, InplacePrinter
from .printer import NumpyPrinter, ScalarPrinter, wrap
from .tensor_kernels import shape_literal

DTYPES = ("float64", "float32")
LR_ARRAY = "lr_array"


@dataclass(frozen=True)
class Line:
    """One printed assignment with the comments that tie it to the derivation; ``lead``
    indents it further (a loop's body), and a ``raw`` line is printed as it is (a loop's
    ``for``, an update in place)."""

    target: str
    expr: str
    comments: tuple[str, ...] = ()
    lead: str = ""
    raw: bool = False


def _vector_lines(statements: list[Statement], comments, indent: int) -> list[Line]:
    printer = NumpyPrinter()
    printer.stacked_once = _stacks_read_once(statements)
    lines = []
    for stmt in statements:
        lines += _statement_lines(stmt, printer, comments, indent)
    return lines, printer.helpers


def _stacks_read_once(statements: list[Statement]) -> dict:
    """A recurrence's stacks (T, N, ...) of fresh arrays that one statement reads: a sum
    reading one of them may add into it in place (no new array of all steps)."""
    uses: dict = {}
    for stmt in flatten(statements):
        for symbol in stmt.reads:
            uses[symbol] = uses.get(symbol, 0) + 1
    return {
        stmt.target: stmt.shape
        for stmt in statements
        if stmt.shape[:1] == ("T",)
        and uses.get(stmt.target) == 1
        and (isinstance(stmt, Call) and stmt.op == "contract")
    }


def _statement_lines(stmt: Statement, printer, comments, indent: int) -> list[Line]:
    lead = " " * (indent - 4)
    if isinstance(stmt, Loop):
        return _loop_lines(stmt, printer, comments, indent)
    target = stmt.target.name
    once = getattr(printer, "stacked_once", {})
    fresh = (
        [
            a
            for a in stmt.expr.args
            if once.get(a) == stmt.shape  # the sum's shape: in place
        ]
        if isinstance(stmt, Assign)
        else []
    )
    if fresh and stmt.expr.is_Add and stmt.shape[:1] == ("T",):
        # the sum of all steps at once, added into the product it reads (its one reader)
        rest = printer.doprint(sp.Add(*[a for a in stmt.expr.args if a != fresh[0]]))
        return [
            Line("", f"{fresh[0].name} += {wrap(rest, indent, indent + 4)}", (), lead, raw=True),
            Line(target, fresh[0].name, comments.get(target, ()), lead),
        ]
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
    return [Line(target, text, comments.get(target, ()), lead)]


def _loop_lines(loop: Loop, printer, comments, indent: int) -> list[Line]:
    """A scan's loop over time: the stacks it fills, the carried values set from
    ``initial``, the body once per step, and the result after it."""
    lead, inner = " " * (indent - 4), " " * indent

    def raw(text: str, at: str = lead, notes: tuple[str, ...] = ()) -> Line:
        return Line("", text, notes, at, raw=True)

    lines = []
    if not loop.reverse:
        length = f"T = {loop.length.name}.shape[1]"
        lines.append(raw(length, notes=("the steps of the sequence (axis 1 of the data)",)))
    # a carried state kept both before and after each step (an Elman RNN's h_prev and h)
    # is kept once, in T + 1 rows: the two stacks are views of it, shifted by one step
    kept = {inner: (stack, shape) for stack, inner, shape in loop.stores}
    shifted = {carry: (kept[carry.inner], kept[carry.after]) for carry in loop.shifted()}
    once = {stack for pair in shifted.values() for stack, _ in pair}
    for stack, _, shape in loop.stores:  # truncated: the steps it does not run are zeros
        if stack in once:
            continue
        full = shape_literal(("T", *shape))
        make = "np.zeros" if loop.window else "np.empty"
        lines.append(Line(stack.name, f"{make}({full}, dtype=DTYPE)", (), lead))
    rows = {}
    for carry, ((before, shape), (after, _)) in shifted.items():
        rows[carry] = f"{after.name}_0_to_T"
        full = shape_literal(("T + 1", *shape))
        lines.append(Line(rows[carry], f"np.empty({full}, dtype=DTYPE)", (), lead))
        lines.append(Line(before.name, f"{rows[carry]}[:-1]", (), lead))
        lines.append(Line(after.name, f"{rows[carry]}[1:]", (), lead))
    for outer, _, shape in loop.accumulates:
        lines.append(Line(outer.name, f"np.zeros({shape_literal(shape)}, dtype=DTYPE)", (), lead))
    # one carried value spanning the whole initial array is that array itself
    whole = len(loop.carries) == 1 and loop.carries[0].start == 0
    whole = whole and loop.carries[0].stop == loop.shape[-1]
    for carry in loop.carries:
        source = (
            loop.initial.name if whole else f"{loop.initial.name}[:, {carry.start}:{carry.stop}]"
        )
        lines.append(Line(carry.inner.name, source, (), lead))
        if carry in rows:
            lines.append(raw(f"{rows[carry]}[0] = {carry.inner.name}"))
    steps = "reversed(range(T))" if loop.reverse else "range(T)"
    what = "backward through time" if loop.reverse else "forward through time"
    if loop.window:
        steps = f"reversed(range(max(T - {loop.window}, 0), T))"
        what += f", truncated to the last {loop.window} steps (bptt)"
    lines.append(raw(f"for t in {steps}:", notes=(f"the recurrence, {what}",)))
    for stack, element, _ in loop.loads:
        lines.append(Line(element.name, f"{stack.name}[t]", (), inner))
    # a joined value the loop keeps is joined in its place in the stack (no copy)
    joined = {
        stmt.target: stack
        for stmt in loop.body
        if isinstance(stmt, Call) and stmt.op == "concat"
        for stack, element, _ in loop.stores
        if element == stmt.target
    }
    for stmt in loop.body:
        if stmt.target in joined:
            slot = f"{joined[stmt.target].name}[t]"
            parts = ", ".join(a.name for a in stmt.args)
            lines.append(Line(stmt.target.name, slot, (), inner))
            lines.append(raw(f"np.concatenate(({parts}), axis=-1, out={stmt.target.name})", inner))
            continue
        lines += _statement_lines(stmt, printer, comments, indent + 4)
    for stack, element, _ in loop.stores:
        if stack in {after for (_, (after, _)) in shifted.values()}:
            carry = next(c for c in shifted if c.after == element)
            lines.append(raw(f"{rows[carry]}[t + 1] = {element.name}", inner))
        elif element not in joined and stack not in once:
            lines.append(raw(f"{stack.name}[t] = {element.name}", inner))
    for outer, element, _ in loop.accumulates:
        lines.append(raw(f"{outer.name} += {element.name}", inner))
    for carry in loop.carries:
        lines.append(Line(carry.inner.name, carry.after.name, (), inner))
    if whole:
        result = loop.carries[0].inner.name
    else:
        result = f"np.concatenate(({', '.join(c.inner.name for c in loop.carries)}), axis=-1)"
    if loop.joined and loop.window:  # a truncated sequence sends nothing to its start
        lines.append(raw(f"if T > {loop.window}:"))
        for carry in loop.carries:
            zeros = f"np.zeros_like({carry.inner.name})"
            lines.append(Line(carry.inner.name, zeros, (), inner))
    if loop.joined:
        lines.append(Line(loop.target.name, result, (), lead))
    return lines


def _optimizer_context(derivation: Derivation, scalar_grads):
    spec = derivation.spec
    rule = update_rule(spec.train.optimizer, spec.train.options)
    vec, sca = NumpyPrinter(), ScalarPrinter()
    # printed inside the batch loop (12 columns in), wrapped to fit there
    step_scalars = [
        Line(s.name, wrap(sca.doprint(e), 12, 15 + len(s.name))) for s, e in rule.step_scalars
    ]
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
    # clip_grad_norm's norm of the whole gradient: over the grads dict of arrays, and
    # over the scalar gradients of the per-sample float loop
    norm = {}
    if rule.reads_grad_norm:
        norm["vector"] = "math.sqrt(sum(float(np.vdot(grad, grad)) for grad in grads.values()))"
        if scalar_grads:
            squares = sum(scalar_grads[q] ** 2 for q in derivation.program.params)
            norm["scalar"] = sca.doprint(sp.sqrt(squares))
    return {
        "carried": list(rule.carried),
        "grad_norm": norm,
        "name": rule.name,
        "torch_class": OPTIMIZERS[rule.name].torch_class,
        "options": options,
        # the dict as Python, wrapped to fit after "OPTIMIZER_OPTIONS = "
        "options_text": pprint.pformat(options, width=79, sort_dicts=False).replace(
            "\n", "\n" + " " * 20
        ),
        "formulas": rule.formulas,
        "state": [{"name": b, "init": rule.initial(b)} for b in rule.state],
        "step_scalars": step_scalars,
        "vector_updates": vector_updates,
        "per_param": per_param,
    }


def inplace_optimizer_context(
    derivation: Derivation, constants: Constants | None = None, result: str = "p"
) -> dict:
    """The optimizer's update over all parameters at once, printed in place: ``p`` and
    ``g`` are the flat arrays of every parameter and gradient, each state buffer one flat
    array too. The new parameters go into ``result``: ``p`` itself, or a name the module
    binds to ``p`` on every step but the last (see docs/design.md).

    ``branches`` are the update's forms by step: from the second step on; on the first
    (the state still at its initial value, so never filled nor read); on a run's only step
    (and its state not kept). Branches that print the same lines are one."""
    spec = derivation.spec
    rule = memory_lean(update_rule(spec.train.optimizer, spec.train.options))
    tensors = {param_symbol.name, grad_symbol.name, result, *rule.state}
    used = 0

    def lines_of(form) -> list[str]:
        nonlocal used
        lines = []
        last = max(k for k, (target, _) in enumerate(form.updates) if target == param_symbol)
        for k, (target, expr) in enumerate(form.updates):
            printer = InplacePrinter(
                tensors, lambda k: f"tmp{k}", constants=constants, arrays={"lr": LR_ARRAY}
            )
            if k == last and result != param_symbol.name:  # the new parameters
                lines += printer.assign(result, expr, aliases=frozenset({param_symbol.name}))
            else:
                lines += printer.assign(target.name, expr)
            used = max(used, printer.scratch_used)
        return lines

    first, only = first_step(rule), last_step(first_step(rule))
    forms = [
        ("step > 1", "", lines_of(rule)),
        ("steps > 1", "the first step: the state at its start, not read", lines_of(first)),
        ("", "the only step: its state is not kept", lines_of(only)),
    ]
    branches: list[dict] = []
    for test, comment, lines in forms:
        if branches and branches[-1]["lines"] == lines:
            branches[-1]["test"] = f"{branches[-1]['test']} or {test}" if test else ""
            continue
        branches.append({"test": test, "comment": comment, "lines": lines})
    keywords = ["if", *["elif"] * (len(branches) - 2), "else"] if len(branches) > 1 else [""]
    for branch, keyword in zip(branches, keywords, strict=True):
        branch["keyword"] = keyword
    everything = [line for branch in branches for line in branch["lines"]]
    scalars = ScalarPrinter()
    return {
        "formulas": rule.formulas,
        "carried": list(rule.carried),
        # clip_grad_norm's norm of the whole gradient, over the flat array g
        "grad_norm": "math.sqrt(float(np.dot(g, g)))" if rule.reads_grad_norm else None,
        "step_scalars": [
            Line(s.name, wrap(scalars.doprint(e), 12, 15 + len(s.name)))
            for s, e in rule.step_scalars
        ],
        "branches": branches,
        "lines": branches[0]["lines"],  # from the second step on
        "lr_array": LR_ARRAY if any(LR_ARRAY in line for line in everything) else None,
        "scratch": [f"tmp{k}" for k in range(used)],
    }


def schedule_context(derivation: Derivation) -> dict | None:
    """The spec's learning-rate schedule as the module's learning_rate(lr, epoch): its
    closed form printed for Python floats, in words and as torch writes it."""
    phases = derivation.spec.train.lr_schedule
    if not phases:
        return None
    rates = learning_rates(phases)
    return {
        "expr": wrap(ScalarPrinter().doprint(rates.expr), 4, 11),
        "words": list(rates.words),
        "torch": textwrap.wrap(rates.torch_text, 94, break_on_hyphens=False),
    }
