"""The derivation document of a tensor model: generalized backpropagation.

The course's view of a network as a graph whose nodes are operations: the forward
pass computes each value from the values it reads, and the backward pass gives each
value v its adjoint, the sum over the operations that read v of the transposed
Jacobian times their adjoint, dL/dv = sum_c (dc/dv)^T dL/dc. A value read twice (a skip
connection, a tied weight) visibly sums two terms. The document states the model per
sample, lists who reads what, then writes the backward pass of the derived program in
batch form (rows are samples), grouped by the value whose adjoint each part completes,
and what it costs.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import sympy as sp

from ..ad.tensor_rules import NOTATION
from ..derive import Derivation
from ..language.model import initial_values
from ..language.terms import Term, shape_text, walk
from ..program.flops import STEPS, program_flops
from ..program.statements import Assign, BatchMean, BatchSum, Call, Loop
from ..program.statistics import MOMENTUM
from ..stats import dag_ops
from ..templating import environment
from .layout import finish, wrap_markdown
from .notation import latex_name, latex_named
from .picture import document_graph
from .statements import statement_tex, statement_text, symbol_tex
from .training import training_context

FORMATS = ("text", "markdown", "latex")
TEMPLATE = "graph.j2"


# --- formulas of the model, per sample -----------------------------------------------


def _call_tex(name: str, args: list[str], given) -> str:
    words = [*args, *(f"\\mathrm{{{k}}}={sp.latex(v)}" for k, v in given)]
    escaped = name.replace("_", r"\_")
    return rf"\operatorname{{{escaped}}}\left({', '.join(words)}\right)"


def term_tex(term: Term, names: dict[int, str], fixed: dict[str, str] | None = None) -> str:
    """LaTeX of a formula's term; ``names`` maps a named term (a let) to its name,
    ``fixed`` names to their LaTeX where it is not the name's (h_prev is h_{t-1})."""
    fixed = fixed or {}
    if id(term) in names:
        return fixed.get(names[id(term)]) or latex_name(names[id(term)])
    if term.op == "steps":  # a value of a recurrence's step, at every step
        value = latex_name(term.attr("value"))
        return rf"\left({{{value}}}_{{t}}\right)_{{t=1}}^{{T}}"
    call = term.attr("call")
    if call is not None:
        name, args, given = call
        return _call_tex(name, [term_tex(a, names, fixed) for a in args], given)
    op = term.op
    if op == "name":
        return fixed.get(term.attr("name")) or latex_name(term.attr("name"))
    if op == "const":
        return sp.latex(term.attr("value"))
    if op == "ew":
        return _elementwise_tex(term, names, fixed)
    children = [term_tex(a, names, fixed) for a in term.args]
    if op == "one_hot":
        return children[0]
    wrapped = [
        c if a.op in ("name", "const") or id(a) in names else rf"\left({c}\right)"
        for c, a in zip(children, term.args, strict=True)
    ]
    if op in NOTATION:
        return NOTATION[op]["tex"](wrapped, dict(term.attrs))
    return rf"\operatorname{{{op}}}\left({', '.join(children)}\right)"


def _elementwise_tex(term: Term, names: dict[int, str], fixed: dict[str, str]) -> str:
    """An elementwise subtree as one SymPy expression (SymPy places its parentheses);
    the other terms it reads are holes, filled with their LaTeX, in parentheses where
    a hole is a factor or a power's base and its LaTeX is more than one symbol."""
    holes: dict[sp.Symbol, str] = {}

    def build(t: Term) -> sp.Expr:
        if t.op == "ew" and id(t) not in names and t.attr("call") is None:
            return t.attr("func")(*[build(a) for a in t.args])
        if t.op == "const":
            return t.attr("value")
        hole = sp.Symbol(f"Hole{len(holes)}", real=True)
        holes[hole] = term_tex(t, names, fixed)
        return hole

    expr = build(term)
    wrapped = {}
    for hole, tex in holes.items():
        grouped = all(not isinstance(parent, (sp.Mul, sp.Pow)) for parent in _parents(expr, hole))
        simple = " " not in tex and not re.search(r"[+\-]", tex[1:])
        wrapped[hole] = tex if grouped or simple else rf"\left({tex}\right)"
    return latex_named(expr, wrapped)


def _parents(expr: sp.Expr, target: sp.Symbol) -> list[sp.Expr]:
    found = []
    for node in sp.preorder_traversal(expr):
        if target in getattr(node, "args", ()):
            found.append(node)
    return found


# --- the program, in batch form ------------------------------------------------------


def readers(derivation: Derivation) -> dict[str, list[str]]:
    """For each named value, the named values (or the loss) that read it, directly or
    through unnamed intermediate values, in graph order, with repeats: a value read
    by two operations of one consumer is listed twice."""
    graph = derivation.graph
    named = {n for n, t in graph.tensors.items() if t.named}
    producer = graph.producer()
    reads: dict[str, list[str]] = {}  # tensor -> named tensors it was built from, by path

    def sources(tensor: str) -> list[str]:
        if tensor in named or tensor not in producer:
            return [tensor]
        if tensor not in reads:
            reads[tensor] = [s for i in producer[tensor].inputs for s in sources(i)]
        return reads[tensor]

    result: dict[str, list[str]] = {n: [] for n in graph.tensors if n in named}
    for node in graph.nodes:
        if node.output in named:
            for i in node.inputs:
                for s in sources(i):
                    result.setdefault(s, []).append(node.output)
    return result


def backward_groups(derivation: Derivation, user: set[str]) -> list[dict]:
    """The backward statements, each run of them ending where a value's adjoint is done."""
    program = derivation.program
    backward = [
        s for s in program.needed_for(list(program.grads.values())) if s.phase == "backward"
    ]
    groups, current = [], []
    for stmt in backward:
        current.append(stmt)
        if isinstance(stmt, Loop):  # backpropagation through time ends a run of its own
            groups.append({"value": None, "statements": current, "loop": True})
            current = []
            continue
        value, per_sample = program.adjoint_of.get(stmt.target, (None, True))
        if not per_sample and (value.name in user or value.name in ("l_n", "L")):
            groups.append({"value": value.name, "statements": current})
            current = []
    if current:
        groups.append({"value": None, "statements": current})
    return groups


ROW_CHARS = 100  # a displayed row longer than this is broken at its top-level + and -


def _top_level_terms(tex: str) -> list[str]:
    """``tex`` cut before each + or - outside braces and \\left...\\right pairs."""
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(tex):
        if tex.startswith(r"\left", i):
            depth += 1
            i += 5
            continue
        if tex.startswith(r"\right", i):
            depth -= 1
            i += 6
            continue
        ch = tex[i]
        depth += ch in "{("
        depth -= ch in "})"
        if depth == 0 and i > 0 and tex[i - 1] == " " and ch in "+-" and tex[i + 1 : i + 2] == " ":
            pieces.append(tex[start:i].rstrip())
            start = i
        i += 1
    pieces.append(tex[start:])
    return pieces


def broken_rows(rows: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(left, relation, right) rows, a long right side continued on rows of its own."""
    result = []
    for lhs, rhs in rows:
        if len(rhs) <= ROW_CHARS:
            result.append((lhs, "=", rhs))
            continue
        lines, current = [], ""
        for piece in _top_level_terms(rhs):
            if current and len(current) + len(piece) > ROW_CHARS:
                lines.append(current)
                current = piece
            else:
                current = f"{current} {piece}".strip() if current else piece
        lines.append(current)
        result.append((lhs, "=", lines[0]))
        result += [("", "", rf"\quad {line}") for line in lines[1:]]
    return result


def _context(derivation: Derivation, fmt: str) -> dict:
    model, program = derivation.spec, derivation.program
    user = {*model.inputs, *model.targets, *model.params, *(n for n, _, _ in model.lets)}
    let_names = {id(term): name for name, term, _ in model.lets}
    last = {f"{h}[T]": "{" + latex_name(h) + "_{T}}" for h in model.finals}
    let_names.update({id(term): f"{h}[T]" for h, term in model.finals.items()})
    read_by = readers(derivation)
    rows = []
    for x, s in model.inputs.items():
        rows.append({"name": x, "tex": latex_name(x), "role": "input", "shape": shape_text(s)})
    for y, s in model.targets.items():
        role = f"target: class labels in [0, {model.labels[y]})" if y in model.labels else "target"
        rows.append({"name": y, "tex": latex_name(y), "role": role, "shape": shape_text(s)})
    for p, s in model.params.items():
        init = model.init[p]
        drawn = {
            "uniform": f"uniform in [-{init.value:.4g}, {init.value:.4g})",
            "normal": "standard normal",
            "constant": f"constant {init.value:g}",
        }[init.kind]
        rows.append(
            {
                "name": p,
                "tex": latex_name(p),
                "role": f"parameter ({drawn})",
                "shape": shape_text(s),
            }
        )
    lets = []
    for name, term, text in model.lets:
        own = {k: v for k, v in let_names.items() if v != name}
        lets.append(
            {
                "name": name,
                "text": text,
                "tex": latex_name(name),
                "math": term_tex(term, own, last),
                "shape": shape_text(term.shape),
                "batched": term.batched,
            }
        )
    fan_out = [
        {"name": n, "tex": latex_name(n), "readers": r, "count": len(r)}
        for n, r in read_by.items()
        if n in user and len(r) > 1
    ]
    recurred = "_".join(model.states) + "_T" if model.recur else None
    if recurred:
        user = {*user, recurred}
    order = [*reversed([n for n, _, _ in model.lets]), *model.params]
    adjoints = [
        {
            "name": n,
            "tex": latex_name(n),
            "readers": [
                {
                    "name": "the recurrence" if r == recurred else r if r in user else "l",
                    "tex": r"\text{the recurrence}"
                    if r == recurred
                    else latex_name(r)
                    if r in user
                    else "l",
                    "times": times,
                }
                for r, times in Counter(read_by.get(n, [])).items()
            ],
            "contributions": len(read_by.get(n, [])),
        }
        for n in order
        if read_by.get(n)
    ]
    sizes = (1, model.train.batch_size)
    steps = _steps(model)
    flops = {n: program_flops(program, n, steps) for n in sizes}
    groups = []
    recurrence = _recurrence(derivation, user)
    shown = {**dict.fromkeys(user, ""), **(recurrence["tex"] if recurrence else {})}
    for group in backward_groups(derivation, user):
        groups.append(
            {
                "loop": group.get("loop", False),
                "value": group["value"],
                "tex": latex_name(group["value"])
                if group["value"] in user or group["value"] in ("l_n", "L")
                else None,
                "rows": broken_rows(
                    [statement_tex(s, shown, program.adjoint_of) for s in group["statements"]]
                ),
                "lines": [statement_text(s) for s in group["statements"]],
            }
        )
    forward_lines = [statement_text(s) for s in program.needed_for([program.loss])]
    batch_ops = any(node.op == "batch_mean" for node in derivation.graph.nodes)
    local = closed_forms(derivation, per_sample=not batch_ops, local=True)
    full = closed_forms(derivation, per_sample=not batch_ops)
    shown = {f["name"]: f["rhs"] for f in local}
    full = [f for f in full if shown.get(f["name"]) != f["rhs"]]  # not a repeat
    return {
        "fmt": fmt,
        "recurrence": recurrence,
        "broken_rows_inits": broken_rows(recurrence["inits"]) if recurrence else [],
        "graph": document_graph(derivation),
        "name": model.name,
        "source": model.source,
        "description": model.description,
        "rows": rows,
        "lets": lets,
        "let_rows": broken_rows(
            [(v["tex"], v["math"]) for v in lets] + [("l", term_tex(model.loss, let_names, last))]
        ),
        "loss_text": model.loss_text,
        "loss_tex": term_tex(model.loss, let_names, last),
        "reduction": model.reduction,
        "statistics": [
            {"value": s.value.name, "buffer": s.buffer.name, "init": s.init, "variance": s.variance}
            for s in derivation.statistics
        ],
        "momentum": MOMENTUM,
        "batched": model.batched,
        "output": model.output,
        "fan_out": fan_out,
        "adjoints": adjoints,
        "groups": groups,
        "grads": [(p.name, latex_name(p.name), g.name) for p, g in program.grads.items()],
        "forward_lines": forward_lines,
        "per_sample": not batch_ops,
        "local_forms": broken_rows([(f["lhs"], f["rhs"]) for f in local]),
        "full_forms": broken_rows([(f["lhs"], f["rhs"]) for f in full]),
        "closed_limit": CLOSED_MAX_CHARS,
        "steps": steps if model.recur else None,
        "flops": [
            {
                "batch": n,
                "forward": flops[n]["forward"],
                "program": flops[n]["program"],
                "ratio": f"{flops[n]['program'] / max(1, flops[n]['forward']):.2f}",
            }
            for n in sizes
        ],
        "train": {**training_context(model.train, None), "lr": model.train.lr},
    }


def _steps(model) -> int:
    """The number of time steps a recurrence's costs are given for: the data's (a spec's
    [data], or its packaged dataset's), or symbp.program.flops.STEPS."""
    from ..datasets import DATASET_SHAPES

    for x in model.sequences:
        if model.data is not None and x in model.data:
            return int(model.data[x].shape[1])
    return DATASET_SHAPES.get(model.dataset or "", {}).get("steps", STEPS)


def _recurrence(derivation: Derivation, user: set[str]) -> dict | None:
    """Backpropagation through time: the recurrence per sample, the step's forward and
    backward programs in batch form, what the forward loop keeps for the backward one,
    and the recurrent weights' spectral norms at the initial parameters (the Jacobian of
    a step is diag(f') W_h, and the gradient from step 1 to T is a product of T of them)."""
    model, program, graph = derivation.spec, derivation.program, derivation.graph
    if not model.recur:
        return None
    loops = [s for s in program.statements if isinstance(s, Loop)]
    forward = next(s for s in loops if not s.reverse)
    backward = next((s for s in loops if s.reverse), None)
    node = next(n for n in graph.nodes if n.op == "scan")
    states = model.states

    def at(name: str, step: str) -> str:  # braced: an index or a power may follow
        base = latex_name(name)
        return "{" + (f"{{{base}}}" if "_" in base else base) + f"_{{{step}}}" + "}"

    tex: dict[str, str] = {}
    for h in states:
        tex[h] = at(h, "t")
        tex[f"{h}_prev"] = at(h, "t-1")
        tex[f"d_{h}_next"] = rf"\bar{{{at(h, 't')}}}^{{(t+1)}}"
        tex[f"d_{h}_prev"] = rf"\bar{{{at(h, 't-1')}}}^{{(t)}}"
    for x in model.sequences:
        tex[f"{x}_t"] = at(x, "t")
    for value in model.recur:
        tex.setdefault(value, at(value, "t"))
    for outer, inner, _ in backward.accumulates if backward else ():
        param = program.adjoint_of.get(outer, (outer, False))[0].name
        tex[inner.name] = rf"\bar{{{latex_name(param)}}}^{{(t)}}"
    label = "_".join(states) + "_T"
    tex[label] = ", ".join(at(h, "T") for h in states)
    terms = [*(term for _, term, _ in model.lets), model.loss]
    scan = next(t for term in terms for t in walk(term) if t.op == "scan")
    names = dict(scan.attr("lets")) | {
        h: t for h, t in zip(states, scan.args[len(states) : 2 * len(states)], strict=True)
    }
    by_id = {id(t): n for n, t in names.items()}
    rows = []
    for value in model.recur:
        term = names[value]
        own = {k: v for k, v in by_id.items() if v != value}
        rows.append((at(value, "t"), term_tex(term, own, tex)))
    inits = []
    for h, init in zip(states, scan.args[: len(states)], strict=True):
        shown_init = (
            "0" if init.op == "const" and init.attr("value") == 0 else term_tex(init, {}, tex)
        )
        inits.append((at(h, "0"), shown_init))
    shown = {**dict.fromkeys(user, ""), **tex}

    def program_rows(loop):
        if loop is None:
            return [], []
        rows = [statement_tex(s, shown, program.adjoint_of) for s in loop.body]
        if loop.reverse:
            rows += [
                (tex_of(o), rf"{tex_of(o)} + {tex.get(i.name, i.name)}")
                for o, i, _ in loop.accumulates
            ]
        return broken_rows(rows), [statement_text(s) for s in loop.body]

    def tex_of(symbol):
        return symbol_tex(symbol, shown, program.adjoint_of)

    forward_rows, forward_lines = program_rows(forward)
    backward_rows, backward_lines = program_rows(backward)
    per_step = sum(math.prod(shape[1:]) for _, _, shape in forward.stores)
    per_step -= sum(c.stop - c.start for c in forward.shifted())  # kept once, shifted
    batch, steps = model.train.batch_size, _steps(model)
    recurrent = []
    initial = initial_values(model, model.seed)
    body = node.attrs["body"]
    prev = {leaf for _, leaf, _, _ in node.attrs["states"]}
    for step_node in body.nodes:
        if step_node.op == "contract" and prev & set(step_node.inputs):
            for name in step_node.inputs:
                if name in model.params and name not in [r["name"] for r in recurrent]:
                    value = initial[name]
                    norm = (
                        float(np.linalg.norm(value, 2))
                        if value.ndim == 2
                        else float(np.abs(value).max())
                    )
                    recurrent.append({"name": name, "tex": latex_name(name), "norm": f"{norm:.3f}"})
    return {
        "tex": tex,
        "states": [
            {"name": h, "tex": at(h, "t"), "prev": at(h, "t-1"), "last": at(h, "T")} for h in states
        ],
        "sequences": [{"name": x, "tex": at(x, "t")} for x in model.sequences],
        "rows": broken_rows(rows),
        "inits": inits,
        "init_lines": [
            f"{h}[0] = {'0' if isinstance(e, str) or e[1] == 'zeros' else e[1]}"
            for h, e in model.recur.items()
            if not isinstance(e, str)
        ],
        "lines": [f"{v} = {e if isinstance(e, str) else e[2]}" for v, e in model.recur.items()],
        "forward_rows": forward_rows,
        "forward_lines": forward_lines,
        "backward_rows": backward_rows,
        "backward_lines": backward_lines,
        "grads": [tex_of(o) for o, _, _ in backward.accumulates] if backward else [],
        "stored": [symbol_tex(inner, shown, program.adjoint_of) for _, inner, _ in forward.stores],
        "stored_names": [inner.name for _, inner, _ in forward.stores],
        # a state kept before and after each step once: h_prev is h one step earlier
        "shifted": [(c.after.name, c.inner.name) for c in forward.shifted()],
        "per_step": per_step,
        "batch": batch,
        "steps": steps,
        "bytes32": _size_text(4 * per_step * batch * steps),
        "bytes64": _size_text(8 * per_step * batch * steps),
        "recurrent": recurrent,
        "seed": model.seed,
        "bptt": model.train.bptt,
    }


def _size_text(count: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def render_graph_document(derivation: Derivation, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown document format {fmt!r} (known: {', '.join(FORMATS)})")
    text = environment(__package__).get_template(TEMPLATE).render(_context(derivation, fmt))
    text = finish(text, fmt)
    return wrap_markdown(text) if fmt == "text" else text  # prose wraps the same way


# --- closed forms ----------------------------------------------------------------------

CLOSED_MAX_CHARS = 360  # a closed form longer than this is no clearer than the program
# substitution stops where a formula grows past this many operations: a deep network's
# first weight would otherwise collect every layer's formula (and SymPy's time)
CLOSED_MAX_OPS = 120
_TOO_BIG = sp.Symbol("TooBig", real=True)
# ops whose value, elementwise, is their argument's (they only shape it)
_SHAPING = ("broadcast", "broadcast_to", "expand", "squeeze", "channels_last", "channels_first")


def _per_sample_subscripts(attrs: dict) -> dict:
    inputs, result = attrs["subscripts"].split("->")
    parts = [p.replace("n", "") for p in inputs.split(",")]
    return {**attrs, "subscripts": ",".join(parts) + "->" + result.replace("n", "")}


def closed_forms(derivation: Derivation, per_sample: bool, local: bool = False) -> list[dict]:
    """Gradients as formulas: the program's statements substituted into each other
    (elementwise parts by SymPy, which simplifies them; tensor ops in their notation).

    ``per_sample``: of one sample's loss l (the batch axis dropped, N = 1); otherwise the
    batch form of L. ``local``: the adjoint of every named value in terms of the named
    values and their readers' adjoints (the generalized backprop step of each value);
    otherwise each parameter's gradient in the inputs, targets and parameters alone.
    Formulas longer than CLOSED_MAX_CHARS are left out."""
    model, program = derivation.spec, derivation.program
    lets = [n for n, _, _ in model.lets]
    kept = {*model.inputs, *model.targets, *model.params, *(lets if local else ())}
    values = {*lets, *model.params} if local else set(model.params)
    wanted = {
        symbol: value.name
        for symbol, (value, per_sample) in program.adjoint_of.items()
        if value.name in values and not per_sample
    }
    exprs: dict[sp.Symbol, sp.Expr] = {}
    opaque: dict[sp.Symbol, str] = {}
    n_symbol = sp.Symbol("N", positive=True, integer=True)
    user = set(kept) | set(lets)

    def names_of(expr: sp.Expr) -> dict:
        return {
            s: opaque.get(s) or symbol_tex(s, user, program.adjoint_of) for s in expr.free_symbols
        }

    def tex_of(expr: sp.Expr) -> str:
        text = latex_named(expr, names_of(expr))
        if expr.is_Add or expr.could_extract_minus_sign() or isinstance(expr, sp.Piecewise):
            return rf"\left({text}\right)"
        return text

    forms = []
    for stmt in program.needed_for(list(program.grads.values())):
        if stmt.target.name in kept:  # a named forward value stays a name
            continue
        if isinstance(stmt, Loop):  # no closed form through a recurrence
            exprs.update({s: _TOO_BIG for s in stmt.defines})
            continue
        if any(exprs.get(s) is _TOO_BIG for s in stmt.reads):
            exprs[stmt.target] = _TOO_BIG  # what reads a formula past the budget is too
            continue
        if isinstance(stmt, Assign):
            value = stmt.expr.xreplace(exprs)
            if dag_ops(value) > CLOSED_MAX_OPS:
                exprs[stmt.target] = _TOO_BIG
                continue
            if per_sample:
                value = value.subs(n_symbol, 1)
            value = sp.factor_terms(value)
        elif isinstance(stmt, (BatchSum, BatchMean)) and per_sample:
            value = exprs.get(stmt.source, stmt.source)
        elif isinstance(stmt, Call) and stmt.op in _SHAPING:
            value = exprs.get(stmt.args[0], stmt.args[0])
        else:
            if isinstance(stmt, Call):
                attrs = dict(stmt.attrs)
                if per_sample and stmt.op == "contract":
                    attrs = _per_sample_subscripts(attrs)
                args = [tex_of(exprs.get(a, a)) for a in stmt.args]
                if stmt.op in NOTATION:
                    tex = NOTATION[stmt.op]["tex"](args, attrs)
                else:  # an image op: named, as the course's unfold and fold are
                    escaped = stmt.op.replace("_", r"\_")
                    tex = rf"\operatorname{{{escaped}}}({', '.join(args)})"
            else:  # a sum over the batch
                body = tex_of(exprs.get(stmt.source, stmt.source))
                mean = isinstance(stmt, BatchMean)
                tex = (r"\frac{1}{N} " if mean else "") + rf"\textstyle\sum_{{n}} {body}"
            if len(tex) > CLOSED_MAX_CHARS:
                exprs[stmt.target] = _TOO_BIG
                continue
            value = sp.Symbol(f"Closed{len(opaque)}", real=True)
            opaque[value] = tex
        name = wanted.get(stmt.target)
        if name is not None:
            text = latex_named(value, names_of(value))
            if len(text) <= CLOSED_MAX_CHARS:
                top = "l" if per_sample else "L"
                lhs = (
                    rf"\bar{{{latex_name(name)}}}"
                    if local
                    else (rf"\frac{{\partial {top}}}{{\partial {latex_name(name)}}}")
                )
                forms.append({"name": name, "lhs": lhs, "rhs": text})
            if local:
                continue  # later formulas read it as the adjoint's name
        exprs[stmt.target] = value
    return forms
