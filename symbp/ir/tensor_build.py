"""Lower a tensor model's terms to the model IR.

Each term becomes IR nodes over batched tensors: a per-sample value of shape s that
differs between samples is stored as (N, *s), one shared by the batch (a parameter,
or what is computed from parameters alone) as s. Elementwise terms are split into
atomic SymPy operations, as for scalar models (:mod:`symbp.ir.build`); every other term
is one tensor op node whose attributes speak of the stored axes (a per-sample axis k
of a batched value is axis k + 1). A batched operand of lower rank than an elementwise
result gets its size-1 axes after the batch axis first (``expand``), so that NumPy's
broadcasting of the stored arrays is the per-sample broadcasting the formula meant.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from ..language.model import TensorModel
from ..language.terms import Term, walk
from ..program.naming import Names
from .build import _Lowering
from .graph import BATCH, Graph, Node, Tensor, broadcast_shape

_PREFIX = {
    "contract": "prod",
    "sum": "sum",
    "max": "max",
    "expand": "e",
    "logsumexp": "lse",
    "index": "part",
    "concat": "cat",
    "broadcast": "rep",
    "batch_mean": "bmean",
    "full": "const",
    "channels_last": "img",
    "channels_first": "img",
    "unfold": "U",
    "conv2d": "conv",
    "maxpool2d": "pool",
    "avgpool2d": "pool",
    "flatten": "flat",
    "scan": "scan",
    "scan_output": "steps",
}


class _TensorLowering(_Lowering):
    def __init__(self, model: TensorModel, names: Names):
        super().__init__(names)
        self.model = model
        self.lowered: dict[int, sp.Expr] = {}

    def atom(self, expr: sp.Expr) -> sp.Expr:
        """As for scalar models; a choice (huber's Piecewise) is one node over what its
        branches and conditions read."""
        if isinstance(expr, sp.Piecewise) and expr not in self.memo:
            return self.add_node(expr, None, expr)
        return super().atom(expr)

    def stored(self, term: Term) -> tuple:
        return (BATCH, *term.shape) if term.batched else term.shape

    def offset(self, term: Term) -> int:
        return 1 if term.batched else 0

    def symbol_of(self, expr: sp.Expr, name: str | None = None) -> sp.Symbol:
        """The tensor holding ``expr`` (``name`` if given), adding nodes as needed."""
        if name is not None:
            return self.named(name, expr)
        if isinstance(expr, sp.Symbol):
            return expr
        if not expr.free_symbols:  # a constant where a tensor is needed
            return self.add_node(expr, None, None)
        return self.atom(expr)

    def node(
        self, op: str, args: list[sp.Symbol], shape: tuple, name: str | None, attrs
    ) -> sp.Symbol:
        """A tensor op node whose output, stored as ``shape``, is named ``name`` (or a
        fresh name)."""
        symbol = sp.Symbol(name, real=True) if name else self.names.fresh(_PREFIX[op])
        self.tensors[symbol.name] = Tensor(symbol.name, shape, "value", named=bool(name))
        self.nodes.append(Node(op, tuple(a.name for a in args), symbol.name, dict(attrs)))
        return symbol

    def lower(self, term: Term, name: str | None = None) -> sp.Expr:
        """The SymPy value of ``term``: a symbol, or an elementwise expression over symbols
        (materialized when a tensor op, or a name, needs it)."""
        key = id(term)
        if key in self.lowered:
            value = self.lowered[key]
            return value if name is None else self.symbol_of(value, name)  # an alias
        value = self._lower(term, name)
        if not getattr(value, "free_symbols", True) and (term.shape or term.batched):
            # x - x: SymPy folds it to 0, an array of the term's shape all the same
            attrs = {"value": float(value), "shape": self.stored(term)}
            value = self.node("full", [], self.stored(term), name, attrs)
        elif term.op != "name" and self._shape_of(value) != self.stored(term):
            # y + b - y: SymPy folds it to b, of a smaller shape than the formula's:
            # repeated to the formula's shape, so that what reads it sees that shape
            source = self._shape_of(value)
            new = tuple(range(len(self.stored(term)) - len(source)))
            attrs = {"axes": new, "shape": self.stored(term)}
            value = self.node("broadcast", [self.symbol_of(value)], attrs["shape"], name, attrs)
        if name is not None and not (isinstance(value, sp.Symbol) and value.name == name):
            value = self.symbol_of(value, name)
        if term.op != "name":
            self.lowered[key] = value
        return value

    def _shape_of(self, value: sp.Expr) -> tuple:
        symbols = sorted(getattr(value, "free_symbols", ()), key=str)
        return broadcast_shape([self.tensors[s.name].shape for s in symbols])

    def _lower(self, term: Term, name: str | None) -> sp.Expr:
        op = term.op
        if op == "name":
            return sp.Symbol(term.attr("name"), real=True)
        if op == "const":
            return term.attr("value")
        if op == "one_hot":  # the target itself: the module stores labels one-hot
            return self.lower(term.args[0])
        if op == "ew":
            rank = len(term.shape)
            args = []
            for arg in term.args:
                value = self.lower(arg)
                if arg.batched and len(arg.shape) < rank:
                    axes = tuple(range(1, 1 + rank - len(arg.shape)))
                    shape = (BATCH, *(1,) * len(axes), *arg.shape)
                    value = self.node(
                        "expand", [self.symbol_of(value)], shape, None, {"axes": axes}
                    )
                args.append(value)
            return term.attr("func")(*args)
        if op == "scan":
            return self._scan(term, name)
        if op == "steps":  # a value of the step at every step: what the forward loop kept
            scan = self.symbol_of(self.lower(term.args[0]))
            value, states = term.attr("value"), [s for s, _, _ in term.args[0].attr("states")]
            attrs = {"value": value if value in states else f"{value}_t"}
            return self.node("scan_output", [scan], (BATCH, *term.shape), name, attrs)
        args = [self.symbol_of(self.lower(a)) for a in term.args]
        if op == "contract":
            attrs = {"subscripts": self._subscripts(term)}
        elif op in ("sum", "expand", "max"):
            attrs = {"axes": tuple(a + self.offset(term.args[0]) for a in term.attr("axes"))}
        elif op == "logsumexp":
            attrs = {"keepdims": term.attr("keepdims")}
        elif op == "index":
            attrs = {k: term.attr(k) for k in ("start", "stop", "squeeze")}
        elif op == "concat":
            attrs = {}
            for k, (part, symbol) in enumerate(zip(term.args, args, strict=True)):
                if term.batched and not part.batched:
                    stored = (BATCH, *part.shape)
                    args[k] = self.node(
                        "broadcast", [symbol], stored, None, {"axes": (0,), "shape": stored}
                    )
        elif op == "batch_mean":
            symbol = self.node(op, args, self.stored(term), name, {})
            stored = self.tensors[symbol.name]
            self.tensors[symbol.name] = replace(stored, statistic=term.attr("statistic"))
            return symbol
        elif op == "image":
            return self._image(term, args, name)
        else:  # pragma: no cover - every op of symbp.language.terms is handled above
            raise ValueError(f"unknown term op {op!r}")
        return self.node(op, args, self.stored(term), name, attrs)

    def _image(self, term: Term, args: list[sp.Symbol], name: str | None) -> sp.Symbol:
        """An image op of symbp.ad.conv_rules: those work on images stored channels-last,
        (N, H, W, C), and give the same layout; the model language's images are torch's
        (N, C, H, W), so the op reads a transposed view of its input and its result is
        viewed back (flatten writes torch's (C, H, W) order itself)."""
        op = term.attr("op")
        x = term.args[0]
        c, h, w = x.shape
        image = self.node("channels_last", [args[0]], (BATCH, h, w, c), None, {})
        if op == "flatten":
            return self.node("flatten", [image], self.stored(term), name, {})
        geometry = {"kernel": term.attr("kernel"), "stride": term.attr("stride")}
        co, ho, wo = term.shape
        result = (BATCH, ho, wo, co)
        if op == "conv2d":
            kernel_shape = term.args[1].shape
            columns = kernel_shape[1] * kernel_shape[2] * kernel_shape[3] + (len(args) > 2)
            patches = (BATCH, ho, wo, columns)
            attrs = {**geometry, "padding": term.attr("padding"), "ones": len(args) > 2}
            unfolded = self.node("unfold", [image], patches, None, attrs)
            geometry["padding"] = term.attr("padding")
            value = self.node("conv2d", [unfolded, *args[1:]], result, None, geometry)
        else:
            value = self.node(op, [image], result, None, geometry)
        return self.node("channels_first", [value], self.stored(term), name, {})

    def _scan(self, term: Term, name: str | None) -> sp.Symbol:
        """A recurrence: one ``scan`` node whose attribute ``body`` is the graph of one
        step. The body's leaves are each state's previous value (``h_prev``, (N, d)),
        each sequence's element at the step (``x_t``, (N, ...)) and the values of the
        model it reads by name (parameters, inputs); its outputs are the states' new
        values, named after them. The node reads the initial states joined along their
        columns, the sequences and those values; its value is the last states, joined."""
        states = term.attr("states")
        count = len(states)
        inits, steps = term.args[:count], term.args[count : 2 * count]
        parts = []
        for (_, start, stop), init in zip(states, inits, strict=True):
            stored = (BATCH, stop - start)
            if init.op == "const":
                attrs = {"value": float(init.attr("value")), "shape": stored}
                parts.append(self.node("full", [], stored, None, attrs))
                continue
            value = self.symbol_of(self.lower(init))
            if not init.batched:
                attrs = {"axes": (0,), "shape": stored}
                value = self.node("broadcast", [value], stored, None, attrs)
            parts.append(value)
        initial = parts[0]
        if count > 1:
            initial = self.node("concat", parts, (BATCH, term.shape[0]), None, {})
        body = _TensorLowering(self.model, self.names)
        prev = [t.attr("name") for t in term.attr("prev")]
        for leaf, (_, start, stop) in zip(prev, states, strict=True):
            body.leaf(leaf, (BATCH, stop - start), "param")
        sequences = term.attr("sequences")
        for _, leaf in sequences:
            body.leaf(leaf.attr("name"), body.stored(leaf), "input")
        local = {*prev, *(leaf.attr("name") for _, leaf in sequences)}
        read = []
        for step in [*steps, *(let for _, let in term.attr("lets"))]:
            for t in walk(step):
                label = t.attr("name") if t.op == "name" else None
                if label is not None and label not in local and label not in read:
                    read.append(label)
        for label in read:
            outer = self.tensors[label]
            body.leaf(label, outer.shape, "param" if outer.role == "param" else "input")
        formulas = {state: step for (state, _, _), step in zip(states, steps, strict=True)}
        formulas.update(term.attr("lets"))
        exposed = []  # the model's output, every step's: named value_t in the step
        for value in term.attr("order"):  # the step's values and states, as declared
            inner = value
            if value == self.model.output:
                inner = value if value in [s for s, _, _ in states] else f"{value}_t"
                exposed.append(inner)
            body.lower(formulas[value], inner)
        graph = Graph(
            tensors=body.tensors,
            nodes=body.nodes,
            loss="",
            params=[*prev, *(r for r in read if self.tensors[r].role == "param")],
            inputs=[leaf.attr("name") for _, leaf in sequences]
            + [r for r in read if self.tensors[r].role != "param"],
            targets=[],
            outputs=[state for state, _, _ in states],
        )
        attrs = {
            "body": graph,
            "states": tuple(
                (state, leaf, start, stop)
                for (state, start, stop), leaf in zip(states, prev, strict=True)
            ),
            "sequences": tuple((x, leaf.attr("name")) for x, leaf in sequences),
            "names": self.names,
            "bptt": self.model.train.bptt,
            "exposed": tuple(exposed),
        }
        args = [initial, *(sp.Symbol(x, real=True) for x, _ in sequences)]
        args += [sp.Symbol(r, real=True) for r in read]
        return self.node("scan", args, self.stored(term), name or term.attr("label"), attrs)

    def _subscripts(self, term: Term) -> str:
        """The per-sample subscripts with the batch axis ``n`` on batched operands."""
        inputs, result = term.attr("subscripts").split("->")
        parts = [
            ("n" if a.batched else "") + s
            for a, s in zip(term.args, inputs.split(","), strict=True)
        ]
        return ",".join(parts) + "->" + ("n" if term.batched else "") + result


def tensor_graph(model: TensorModel, names: Names) -> Graph:
    low = _TensorLowering(model, names)
    labels = model.labels
    for x, shape in model.inputs.items():
        low.leaf(x, (BATCH, *shape), "input")
    for y, shape in model.targets.items():
        low.leaf(y, (BATCH, labels[y]) if y in labels else (BATCH, *shape), "target")
    for p, shape in model.params.items():
        low.leaf(p, shape, "param")
    for let_name, term, _ in model.lets:
        low.lower(term, let_name)
    sample_loss = names.pick("l_n", "loss_n")
    low.lower(model.loss, sample_loss)
    low.tensors[sample_loss] = Tensor(
        sample_loss, low.tensors[sample_loss].shape, "sample_loss", named=True
    )
    batch_loss = names.pick("L", "loss_batch")
    low.tensors[batch_loss] = Tensor(batch_loss, (), "loss", named=True)
    low.nodes.append(Node("mean", (sample_loss,), batch_loss, {"reduction": model.reduction}))
    return Graph(
        tensors=low.tensors,
        nodes=low.nodes,
        loss=batch_loss,
        params=list(model.params),
        inputs=list(model.inputs),
        targets=list(model.targets),
        outputs=[model.output],
    )
