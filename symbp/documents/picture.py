"""Pictures of a model's computation graph, drawn from the IR, as micrograd's
``draw_dot`` shows a student an expression.

Every tensor of the IR is a box: a leaf (an input, a target, a parameter) with its role
and shape, every other value with how it is computed (an elementwise value by its
formula, in the program's names; a tensor op in the documents' notation) and its
shape. An arrow runs from each value to every operation that reads it. The backward
view adds each value's adjoint, as the derived program computes it
(``Derivation.adjoints`` names the program's statements), and marks the values whose
adjoint sums two contributions or more: where the graph fans out (a skip connection, a
tied weight, a value read twice).

One :class:`Picture` prints three ways, each deterministic and escaped for its reader:
DOT text for Graphviz (:meth:`Picture.dot`, built by hand; :func:`render` runs the
``dot`` program where it is installed), a Mermaid ``flowchart`` for Markdown
(:meth:`Picture.mermaid`, which GitHub draws) and plain lines for text and as LaTeX's
fallback (:meth:`Picture.listing`).
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from dataclasses import dataclass

import sympy as sp
from sympy.core.parameters import distribute

from ..ad.tensor_rules import NOTATION
from ..escape import terminal_line
from ..program.statements import defines
from .statements import defined_text, statement_tex

LINE_CHARS = 48  # a label's line is wrapped at spaces past this many characters
FORMULA_CHARS = 72  # an elementwise formula longer than this is written atomically
FORMATS = ("dot", "svg", "png", "pdf")  # what render() writes (dot: the DOT text itself)
DOT_TIMEOUT_S = 120

ROLES = {
    "input": "input",
    "target": "target",
    "param": "parameter",
    "value": "value",
    "sample_loss": "loss per sample",
    "loss": "batch loss",
}
# DOT node attributes per role: leaves are boxes (parameters bold), computed values
# rounded, the losses filled
DOT_STYLE = {
    "input": 'shape=box, style=filled, fillcolor="#dbeafe"',
    "target": 'shape=box, style="filled,dashed", fillcolor="#e5e7eb"',
    "param": 'shape=box, style="filled,bold", fillcolor="#fde68a"',
    "value": 'shape=box, style=rounded, fillcolor="#ffffff"',
    "sample_loss": 'shape=box, style="rounded,filled", fillcolor="#fecaca"',
    "loss": 'shape=box, style="rounded,filled,bold", fillcolor="#fca5a5"',
}
FAN_OUT_STYLE = 'color="#dc2626", penwidth=2.5'
NO_ADJOINT_STYLE = 'fontcolor="#6b7280", color="#9ca3af"'
# Mermaid shapes per role (open, close) and the classes that colour them
MERMAID_SHAPE = {
    "input": ('[/"', '"/]'),
    "target": ('[\\"', '"\\]'),
    "param": ('[["', '"]]'),
    "value": ('("', '")'),
    "sample_loss": ('(["', '"])'),
    "loss": ('(["', '"])'),
}
MERMAID_CLASS = {"sample_loss": "sampleloss"}  # class names without underscores
MERMAID_CLASSES = (
    ("input", "fill:#dbeafe,stroke:#1e3a8a"),
    ("target", "fill:#e5e7eb,stroke:#374151,stroke-dasharray:4"),
    ("param", "fill:#fde68a,stroke:#92400e,stroke-width:2px"),
    ("value", "fill:#ffffff,stroke:#374151"),
    ("sampleloss", "fill:#fecaca,stroke:#991b1b"),
    ("loss", "fill:#fca5a5,stroke:#991b1b,stroke-width:2px"),
    ("fanout", "stroke:#dc2626,stroke-width:3px"),
)


@dataclass(frozen=True)
class Vertex:
    """One tensor of the IR, as the picture shows it."""

    id: str  # the IR's name of the tensor: unique, never shown
    name: str  # the program's (or the user's) name; "" for an unnamed value inlined away
    role: str  # a Tensor role: input, target, param, value, sample_loss, loss
    shape: tuple
    op: str  # the IR op that computes it; "" for a leaf
    formula: str  # how it is computed, readable; "" for a leaf
    has_adjoint: bool  # reverse mode gives it one: it depends on a parameter, the loss on it
    contributions: int  # how many contributions that adjoint sums
    adjoint: tuple[str, ...] = ()  # the program's statements of its adjoint (backward view)
    needed: bool = True  # the loss depends on it (a second output may be read by nothing)

    @property
    def fan_out(self) -> bool:
        return self.has_adjoint and self.contributions >= 2

    @property
    def title(self) -> str:
        """The first line: the name, the name and formula, or the formula alone."""
        if not self.op:
            return self.name
        if self.name and self.formula != self.name:
            return f"{self.name} = {self.formula}"
        return self.formula or self.name

    def lines(self, backward: bool) -> list[str]:
        """The label's lines, wrapped."""
        lines = _wrap(self.title)
        where = ROLES[self.role] + " " if not self.op or self.role != "value" else ""
        lines.append(f"{where}{shape_text(self.shape)}")
        if backward:
            if not self.has_adjoint:
                why = "no parameter upstream" if self.needed else "the loss does not read it"
                lines.append(f"no adjoint: {why}")
            elif self.role == "loss":
                lines.append("adjoint: dL/dL = 1 (the seed)")
            elif self.adjoint:
                for statement in self.adjoint:
                    lines += _wrap(f"adjoint: {statement}")
            else:
                lines.append("adjoint: inlined (no statement of its own)")
            if self.fan_out:
                lines.append(f"sums {self.contributions} contributions")
        return lines


@dataclass(frozen=True)
class Picture:
    """The computation graph of one derivation."""

    model: str  # the model's name
    vertices: tuple[Vertex, ...]  # leaves first, then the values in the order computed
    edges: tuple[tuple[str, str], ...]  # (value read, value computed from it), repeats kept
    backward: bool

    @property
    def fan_out(self) -> list[Vertex]:
        return [v for v in self.vertices if v.fan_out]

    def dot(self) -> str:
        """DOT text for Graphviz: one node per tensor, keyed by its IR name."""
        view = "backward: each value's adjoint" if self.backward else "forward"
        out = [
            f"digraph {_dot_quote(self.model)} {{",
            f"  graph [rankdir=TB, labelloc=t, fontname=Helvetica, "
            f"label={_dot_quote(f'{self.model} ({view})')}];",
            "  node [fontname=Helvetica, fontsize=11];",
            '  edge [color="#4b5563", arrowsize=0.7];',
        ]
        for v in self.vertices:
            label = "\\n".join(_dot_escape(line) for line in v.lines(self.backward))
            style = DOT_STYLE[v.role]
            if self.backward and v.fan_out:
                style += ", " + FAN_OUT_STYLE
            elif self.backward and not v.has_adjoint:
                style += ", " + NO_ADJOINT_STYLE
            out.append(f'  {_dot_quote(v.id)} [label="{label}", {style}];')
        for source, target in self.edges:
            out.append(f"  {_dot_quote(source)} -> {_dot_quote(target)};")
        out.append("}")
        return "\n".join(out) + "\n"

    def mermaid(self) -> str:
        """A Mermaid flowchart (the block's body, without the fence): nodes n1, n2, ...
        in the order of :attr:`vertices`."""
        ids = {v.id: f"n{k}" for k, v in enumerate(self.vertices, start=1)}
        out = ["flowchart TB"]
        for v in self.vertices:
            opening, closing = MERMAID_SHAPE[v.role]
            label = "<br/>".join(_mermaid_escape(line) for line in v.lines(self.backward))
            css = MERMAID_CLASS.get(v.role, v.role)
            out.append(f"  {ids[v.id]}{opening}{label}{closing}:::{css}")
        for source, target in self.edges:
            out.append(f"  {ids[source]} --> {ids[target]}")
        fans = [ids[v.id] for v in self.fan_out]
        used = {MERMAID_CLASS.get(v.role, v.role) for v in self.vertices} | (
            {"fanout"} if fans else set()
        )
        for name, style in MERMAID_CLASSES:
            if name in used:
                out.append(f"  classDef {name} {style}")
        if fans:
            out.append(f"  class {','.join(fans)} fanout")
        return "\n".join(out) + "\n"

    def listing(self) -> list[str]:
        """Plain lines, one per value computed: what it is, its shape, what it reads (an
        intermediate value without a name written as [its formula])."""
        by_id = {v.id: v for v in self.vertices}
        reads: dict[str, list[str]] = {}
        for source, target in self.edges:
            reads.setdefault(target, []).append(_reference(by_id[source]))
        lines = []
        for v in self.vertices:
            if not v.op:
                continue
            text = f"{v.title}  {shape_text(v.shape)}  <- {', '.join(reads.get(v.id, []))}"
            if self.backward and v.fan_out:
                text += f"  (adjoint sums {v.contributions} contributions)"
            lines.append(text)
        return lines


def _reference(v: Vertex) -> str:
    return v.name or f"[{v.formula}]"


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(
        text, LINE_CHARS, break_long_words=False, break_on_hyphens=False, subsequent_indent="  "
    ) or [""]


def shape_text(shape: tuple) -> str:
    """(N, 32), (N), (2, 6); a scalar is ``(scalar)``."""
    return "(" + ", ".join(str(d) for d in shape) + ")" if shape else "(scalar)"


# --- escaping ----------------------------------------------------------------------------


def _dot_escape(text: str) -> str:
    """Text inside a DOT double-quoted string: one line (control characters visible),
    backslashes doubled (so that no escString such as \\N or \\l appears), quotes
    escaped."""
    return terminal_line(text).replace("\\", "\\\\").replace('"', '\\"')


def _dot_quote(text: str) -> str:
    return f'"{_dot_escape(text)}"'


_MERMAID_ENTITIES = {"#": "#35;", '"': "#34;", "<": "#60;", ">": "#62;", "&": "#38;", "`": "#96;"}


def _mermaid_escape(text: str) -> str:
    """Text inside a quoted Mermaid label, as entity codes where Mermaid or the page's
    HTML would read a character (a quote ends the label, a backtick the Markdown
    fence, < and & start HTML)."""
    return "".join(_MERMAID_ENTITIES.get(ch, ch) for ch in terminal_line(text))


# --- from the derivation -------------------------------------------------------------------


def picture(derivation, backward: bool = False) -> Picture:
    """The picture of ``derivation``'s graph (forward; ``backward`` adds the adjoints)."""
    graph, program = derivation.graph, derivation.program
    tensors = graph.tensors
    producer = graph.producer()
    values = derivation.values or {
        n: t.symbol for n, t in tensors.items() if t.named or t.role in ("input", "target", "param")
    }
    # the program's names; a value the user named keeps its name even where the program
    # has dropped it (a let-name the loss does not read)
    names = {n: t.name for n, t in tensors.items() if t.named} | {
        n: s.name for n, s in values.items()
    }
    upstream = _upstream_of_loss(graph)
    depends = graph.depends_on_params()
    has_adjoint = depends & upstream
    contributions: dict[str, int] = {}
    for node in graph.nodes:
        if node.output in has_adjoint:
            for i in node.inputs:
                contributions[i] = contributions.get(i, 0) + 1
    defining = {s: stmt for stmt in program.statements for s in defines(stmt)}
    formulas: dict[str, sp.Expr] = {}  # each value's formula, in the program's names
    order = [
        *graph.inputs,
        *graph.targets,
        *graph.params,
        *(n for n in tensors if n not in producer and n not in (*graph.inputs, *graph.targets)),
    ]
    leaves = list(dict.fromkeys(n for n in order if n not in producer))
    vertices = []
    for name in [*leaves, *(node.output for node in graph.nodes)]:
        tensor = tensors[name]
        node = producer.get(name)
        formula = _formula(node, names, formulas) if node is not None else ""
        adjoint = ()
        if backward:
            adjoint = tuple(defined_text(defining[s], s) for s in derivation.adjoints.get(name, ()))
        vertices.append(
            Vertex(
                id=name,
                name=names.get(name, ""),
                role=tensor.role if tensor.role in ROLES else "value",
                shape=tuple(tensor.shape),
                op=node.op if node is not None else "",
                formula=formula,
                has_adjoint=name in has_adjoint,
                contributions=contributions.get(name, 0),
                adjoint=adjoint,
                needed=name in upstream or name not in depends,
            )
        )
    edges = tuple((i, node.output) for node in graph.nodes for i in node.inputs)
    return Picture(derivation.spec.name, tuple(vertices), edges, backward)


def _upstream_of_loss(graph) -> set[str]:
    """The tensors the loss depends on. Those of them that depend on a parameter are the
    ones reverse mode gives an adjoint."""
    producer = graph.producer()
    upstream, todo = set(), [graph.loss]
    while todo:
        name = todo.pop()
        if name in upstream:
            continue
        upstream.add(name)
        if name in producer:
            todo.extend(producer[name].inputs)
    return upstream


def _formula(node, names: dict[str, str], formulas: dict[str, sp.Expr]) -> str:
    """How ``node`` computes its value: an elementwise formula over the program's names
    (an unnamed input written as its own formula, as the program inlines it); a tensor
    op in the documents' plain notation. ``formulas`` collects each value's formula for
    the values that read it (a tensor op's as a symbol that prints its text)."""
    text = _formula_text(node, names, formulas)
    if node.op != "elementwise":
        operand = text if " " not in text or _grouped(text) else f"({text})"
        formulas[node.output] = sp.Symbol(operand, real=True)
    return text


def _grouped(text: str) -> bool:
    """Whether ``text`` is one group in parentheses or brackets: (a + b), [x; u], and
    not (a) + (b)."""
    if text[:1] not in ("(", "["):
        return False
    depth = 0
    for k, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if depth == 0:
            return k == len(text) - 1
    return False


def _formula_text(node, names: dict[str, str], formulas: dict[str, sp.Expr]) -> str:
    args = [names.get(i) or _unnamed(i, formulas) for i in node.inputs]
    if node.op == "elementwise":
        expr = node.attrs["expr"]
        with distribute(False):  # substituting must not re-expand 2*(yhat - y)
            inlined = expr.xreplace(
                {
                    sp.Symbol(i, real=True): (
                        sp.Symbol(names[i], real=True) if i in names else formulas[i]
                    )
                    for i in node.inputs
                    if i in names or i in formulas
                }
            )
        text = sp.sstr(inlined, order="none")
        if len(text) > FORMULA_CHARS:  # too long inlined: the atomic operation
            atoms = {
                sp.Symbol(i, real=True): sp.Symbol(a, real=True)
                for i, a in zip(node.inputs, args, strict=True)
            }
            text = sp.sstr(expr.xreplace(atoms), order="none")
        formulas[node.output] = inlined
        return text
    attrs = node.attrs
    if node.op in NOTATION:
        try:
            return NOTATION[node.op]["text"](args, dict(attrs))
        except (KeyError, TypeError, ValueError):  # attrs this op's notation does not read
            pass
    if node.op == "mean":
        how = "sum" if attrs.get("reduction") == "sum" else "mean"
        return f"{how} over the batch of {args[0]}"
    if node.op == "linear":
        product = f"{args[0]} @ {args[1]}.T"
        return f"{product} + {args[2]}" if len(args) > 2 else product
    settings = [
        f"{key} {_setting(attrs[key])}" for key in ("kernel", "stride", "padding") if key in attrs
    ]
    call = f"{node.op}({', '.join(args)})"
    return f"{call}, {', '.join(settings)}" if settings else call


def _setting(value) -> str:
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return str(value)


def _unnamed(tensor: str, formulas: dict[str, sp.Expr]) -> str:
    """An unnamed value as an operand: its formula in parentheses."""
    expr = formulas.get(tensor)
    if expr is None:
        return tensor
    text = sp.sstr(expr, order="none")
    return text if expr.is_Symbol else f"({text})"


# --- rendering ---------------------------------------------------------------------------


def dot_program() -> str | None:
    """Graphviz's ``dot``, where installed."""
    return shutil.which("dot")


class RenderError(RuntimeError):
    """``dot`` is missing or failed."""


def render(dot_text: str, fmt: str) -> bytes:
    """``dot_text`` drawn by Graphviz as ``fmt`` (svg, png, pdf)."""
    if fmt not in FORMATS or fmt == "dot":
        raise ValueError(f"unknown picture format {fmt!r}")
    program = dot_program()
    if program is None:
        raise RenderError("Graphviz's dot is not installed")
    try:
        run = subprocess.run(
            [program, f"-T{fmt}"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=DOT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RenderError(f"dot did not run: {err}") from None
    if run.returncode != 0 or not run.stdout:
        problem = run.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderError(f"dot failed: {problem[0] if problem else f'exit {run.returncode}'}")
    return run.stdout


class GraphPicture:
    """A picture for a notebook: Jupyter shows SVG where ``dot`` is installed, the
    Mermaid flowchart (Markdown) otherwise."""

    def __init__(self, picture: Picture):
        self.picture = picture
        self.source = picture.dot()

    def __repr__(self) -> str:
        view = "backward" if self.picture.backward else "forward"
        return (
            f"<GraphPicture of {self.picture.model!r} ({view}): "
            f"{len(self.picture.vertices)} values, {len(self.picture.edges)} edges>"
        )

    def svg(self) -> str:
        return render(self.source, "svg").decode("utf-8")

    def _repr_svg_(self) -> str | None:
        return self.svg() if dot_program() else None

    def _repr_markdown_(self) -> str | None:
        if dot_program():
            return None  # the SVG is shown
        return f"```mermaid\n{self.picture.mermaid()}```\n"


# --- the program as equations, for a notebook ---------------------------------------------


def program_equations(derivation) -> str:
    """The derived program as displayed equations that MathJax renders: the forward
    pass, then the backward pass (an adjoint written as its value barred)."""
    program = derivation.program
    user = {n for n, t in derivation.graph.tensors.items() if t.named}
    blocks = []
    for phase in ("forward", "backward"):
        rows = [
            statement_tex(s, user, program.adjoint_of)
            for s in program.statements
            if s.phase == phase
        ]
        if rows:
            body = " \\\\\n".join(f"{lhs} &= {rhs}" for lhs, rhs in rows)
            title = rf"\text{{the {phase} pass}}"
            blocks.append(f"$$\n\\begin{{aligned}}\n&{title} \\\\\n{body}\n\\end{{aligned}}\n$$")
    return "\n".join(blocks) + "\n"


# --- the documents' section ----------------------------------------------------------------


def document_graph(derivation) -> dict:
    """What the documents' computation graph section shows (templates/_graph.j2)."""
    forward = picture(derivation)
    return {
        "mermaid": forward.mermaid(),
        "listing": forward.listing(),
        "fan_out": [v.name or f"[{v.formula}]" for v in forward.fan_out],
    }
