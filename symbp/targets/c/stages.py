"""A derivation's program staged into loops for the C-family targets (C and CUDA).

Nothing is derived here. The program's statements are grouped into *stages*, in program
order; the C target prints each as a loop nest, the CUDA target as one kernel launch or
one cuBLAS call:

- ``map``: consecutive elementwise assignments over the same index space (N x k for a
  layer, N for an expression model) fused into one loop; a dense layer's bias is
  added in the loop that applies its activation, and an activation's derivative is
  multiplied by the incoming gradient in the loop that reads the product's result;
- ``scalar``: assignments to scalars that are results (computed once);
- ``rows``: per-sample operations over the features (softmax, fused cross-entropy);
- ``reduce``: sums and means over the batch;
- ``gemm`` and ``colsum``: matrix products and bias gradients.

A value read only inside its own map stage stays in a register; anything read by a
later stage, and every result, is stored. Scalars that are not results (1/N, a CSE'd
constant) are recomputed where they are read. Parameters, and their gradients, live in
one contiguous array, so that the optimizer updates all of them in one loop.
"""

from __future__ import annotations

import pprint
import re
from dataclasses import dataclass, field, replace

import numpy as np
import sympy as sp

from ... import __version__
from ...derive import Derivation
from ...errors import SpecError
from ...ir.graph import BATCH, N
from ...language.model import TensorModel
from ...optim import g as grad_symbol
from ...optim import grad_norm, update_rule
from ...optim import p as param_symbol
from ...optim import t as step_symbol
from ...program.statements import Assign, BatchMean, BatchSum, Call
from ...schedules import learning_rates
from ...spec.layers import LayerSpec
from ..comments import comment_table, graph_comments, graph_model_lines, model_lines
from ..numpy.lines import schedule_context
from ..numpy.printer import ScalarPrinter, wrap
from . import tensor_ops
from .printer import CPrinter

DTYPES = ("float32", "float64")
ROW_OPS = ("softmax", "softmax_vjp", "cross_entropy", "cross_entropy_vjp")
# row operations whose result is one value per sample (the others write a row)
ONE_VALUE_ROW_OPS = ("cross_entropy", "sum_row", "max_row", "logsumexp_row", "dot_row")
GEMM_OPS = ("linear", "matmul", "matmul_tn")
# the program's tensor operations the stages lower (everything else is elementwise)
LOWERED_OPS = frozenset((*ROW_OPS, *GEMM_OPS, "sum_rows"))


@dataclass(frozen=True)
class Place:
    """Where a tensor lives in one entry point: element (n, j) of a batched tensor is
    ``buffer[offset + n*stride + j]``; element e of an unbatched one ``buffer[offset + e]``."""

    buffer: str
    offset: int = 0
    stride: int = 1
    width: int = 1


@dataclass
class Stage:
    kind: str  # map | scalar | rows | reduce | gemm | colsum
    key: object
    statements: list = field(default_factory=list)
    index: int = 0


def _is_batched(shape: tuple) -> bool:
    return bool(shape) and shape[0] == BATCH


def _width(shape: tuple) -> int:
    """Columns of a batched tensor (1 for shape (N,))."""
    return int(shape[1]) if len(shape) == 2 else 1


def _is_column_sum(source: tuple, stmt) -> bool:
    """A sum over the batch of rows (N, k) into a vector (k,)."""
    return len(source) == 2 and _is_batched(source) and tuple(stmt.shape) == (_width(source),)


def _size(shape: tuple) -> int:
    size = 1
    for d in shape:
        if d != BATCH:
            size *= int(d)
    return size


def _broadcast(shapes: list[tuple]) -> tuple:
    """NumPy broadcasting of shapes made of ints and "N"."""
    result: list = []
    for shape in shapes:
        shape = list(shape)
        if len(shape) > len(result):
            result = [1] * (len(shape) - len(result)) + result
        shape = [1] * (len(result) - len(shape)) + shape
        result = [b if a == 1 else a for a, b in zip(result, shape, strict=True)]
    return tuple(result)


def _flat(expr) -> str:
    return expr if isinstance(expr, str) else str(expr)


def _plus(offset: int, term: str) -> str:
    if term in ("", "0"):
        return str(offset)
    return term if offset == 0 else f"{offset} + {term}"


def _times(a: str, b: int) -> str:
    return a if b == 1 else f"{a} * {b}"


class Planner:
    """Stages and storage of one entry point (forward, loss or grads)."""

    def __init__(self, target: StagedProgram, entry: str, wanted: list[sp.Symbol]):
        self.t = target
        self.entry = entry
        program = target.program
        statements = program.needed_for(wanted)
        self.results = list(wanted)
        self.shapes = dict(target.base_shapes)
        self.inline: dict[sp.Symbol, Assign] = {}
        self.extra_places: dict[sp.Symbol, Place] = {}
        if entry == "forward":
            statements, self.results = self._broadcast_outputs(statements, wanted)
        for stmt in statements:
            if isinstance(stmt, Assign) and stmt.target.name.startswith("_out_"):
                self.shapes[stmt.target] = (BATCH,)  # an output broadcast over the batch
            elif isinstance(stmt, Assign) and target.tensor:  # a constant may fill a shape
                self.shapes[stmt.target] = tuple(stmt.shape)
            elif isinstance(stmt, Assign):
                shape = _broadcast([self.shapes.get(s, ()) for s in stmt.reads if s != N])
                if shape and shape[0] != BATCH and BATCH in shape:
                    raise SpecError(
                        target.spec.source, "", f"unsupported broadcast for {target.TARGET}"
                    )
                self.shapes[stmt.target] = shape
            else:
                self.shapes[stmt.target] = tuple(stmt.shape)
        self.stages = self._group(statements)
        self._assign_places()

    # --- grouping ---------------------------------------------------------------------

    def _broadcast_outputs(self, statements, wanted):
        """Outputs that do not depend on the batch are written to every row of out."""
        results = []
        for symbol in wanted:
            shape = self.t.program_shape(symbol, statements, self.shapes)
            if shape:
                results.append(symbol)
                continue
            copy = sp.Symbol(f"_out_{symbol.name}", real=True)
            statements = [*statements, Assign(copy, symbol, (BATCH,), "forward")]
            self.shapes[copy] = (BATCH,)
            results.append(copy)
        return statements, results

    def _effective_reads(self, symbols) -> set[sp.Symbol]:
        """Reads with inline scalars replaced by what they read (recursively)."""
        found: set[sp.Symbol] = set()
        stack = list(symbols)
        while stack:
            s = stack.pop()
            if s in self.inline:
                stack.extend(self.inline[s].reads)
            elif s != N:
                found.add(s)
        return found

    def _group(self, statements) -> list[Stage]:
        stages: list[Stage] = []
        producer: dict[sp.Symbol, int] = {}
        results = set(self.results)

        def add(kind: str, key, stmt, joinable: bool = True) -> None:
            reads = self._effective_reads(stmt.reads)
            latest = max((producer.get(r, -1) for r in reads), default=-1)
            stage = None
            if joinable:
                for candidate in reversed(stages):
                    if candidate.kind == kind and candidate.key == key:
                        if candidate.index >= latest:
                            stage = candidate
                        break
            if stage is None:
                stage = Stage(kind, key, index=len(stages))
                stages.append(stage)
            stage.statements.append(stmt)
            producer[stmt.target] = stage.index

        for stmt in statements:
            if isinstance(stmt, Assign):
                shape = self.shapes[stmt.target]
                if not shape and stmt.target not in results:
                    self.inline[stmt.target] = stmt
                elif not shape:
                    add("scalar", (), stmt)
                else:
                    add("map", shape, stmt)
            elif isinstance(stmt, BatchSum) and _is_column_sum(self.shapes[stmt.source], stmt):
                # a bias's gradient: the column sums of a batch of rows
                column_sums = Call(stmt.target, "sum_rows", (stmt.source,), stmt.shape, stmt.phase)
                add("colsum", None, column_sums, joinable=False)
            elif isinstance(stmt, (BatchSum, BatchMean)):
                add("reduce", "reduce", stmt)
            elif stmt.op in tensor_ops.KERNELS:
                try:
                    lowered = tensor_ops.lower(stmt, self.shapes)
                except tensor_ops.NoKernelError as missing:
                    raise _refusal(self.t.spec, "model", str(missing), self.t.TARGET) from None
                for kind, part in lowered:
                    if kind == "map":
                        add("map", self.shapes[stmt.target], part)
                    else:
                        joinable = kind in ("rows", "reduce")
                        add(kind, kind if joinable else None, part, joinable)
            elif stmt.op in ROW_OPS:
                add("rows", "rows", stmt)
            elif stmt.op == "sum_rows":
                add("colsum", None, stmt, joinable=False)
            elif stmt.op in GEMM_OPS:
                if stmt.op == "linear" and len(stmt.args) == 3:
                    # Z = A W^T by cuBLAS, then Z + b in the kernel that reads Z next
                    raw = sp.Symbol(f"{stmt.target.name}_gemm", real=True)
                    self.shapes[raw] = self.shapes[stmt.target]
                    self.extra_places[raw] = stmt.target  # shares Z's buffer
                    add("gemm", None, replace(stmt, target=raw, args=stmt.args[:2]), False)
                    bias = Assign(stmt.target, raw + stmt.args[2], stmt.shape, stmt.phase)
                    add("map", self.shapes[stmt.target], bias)
                else:
                    add("gemm", None, stmt, joinable=False)
            else:
                raise unsupported_op(self.t.spec, stmt.op, self.t.TARGET)
        return stages

    # --- storage ------------------------------------------------------------------------

    def _assign_places(self) -> None:
        t = self.t
        stage_of: dict[sp.Symbol, Stage] = {}
        for stage in self.stages:
            for stmt in stage.statements:
                stage_of[stmt.target] = stage
        read_elsewhere: set[sp.Symbol] = set()
        for stage in self.stages:
            for stmt in stage.statements:
                for r in self._effective_reads(stmt.reads):
                    if stage_of.get(r) is not stage:
                        read_elsewhere.add(r)
        self.places: dict[sp.Symbol, Place] = dict(t.fixed_places)
        for i, symbol in enumerate(self.results):
            if symbol == t.program.loss:
                self.places[symbol] = Place("_loss")
            elif symbol in t.grad_places:
                self.places[symbol] = t.grad_places[symbol]
            else:  # an output of forward: a column of out (expression) or all of it
                self.places[symbol] = t.output_place(i)
        self.scalar_slots = 0
        self.stored: set[sp.Symbol] = set()
        gemm_targets = set(self.extra_places.values())  # Z holds cuBLAS's product first
        for stage in self.stages:
            for stmt in stage.statements:
                symbol = stmt.target
                if symbol in self.extra_places:
                    continue
                needed = stage.kind != "map" or symbol in read_elsewhere or symbol in self.results
                if needed:
                    self.stored.add(symbol)
                elif symbol not in gemm_targets:  # a register of its stage
                    continue
                if symbol in self.places:
                    continue
                shape = self.shapes[symbol]
                if not shape:
                    self.places[symbol] = Place("_scal", self.scalar_slots)
                    self.scalar_slots += 1
                else:
                    name = t.printer.name(symbol)
                    self.places[symbol] = Place(f"_w_{name}", 0, _width(shape), _width(shape))
                    t.work[name] = (_is_batched(shape), _size(shape))
        for raw, z in self.extra_places.items():
            self.places[raw] = self.places[z]

    # --- what the template sees -----------------------------------------------------------

    def index(self, symbol: sp.Symbol, space: tuple) -> str:
        """The element of ``symbol`` that element _i of the index space ``space`` reads."""
        place, shape = self.places[symbol], self.shapes[symbol]
        if _is_batched(space):
            k = _width(space)
            if _is_batched(shape):
                if _width(shape) == k and place.stride == k and place.offset == 0:
                    return "_i"  # the same layout as the index space
                row = "_i" if k == 1 else "_n"
                col = "_j" if _width(shape) == k and k > 1 else ""
                term = _times(row, place.stride)
                return _plus(place.offset, f"{term} + {col}" if col else term)
            if _size(shape) == k:  # a bias (k,) along the features
                return _plus(place.offset, "_j" if k > 1 else "")
        elif shape == space:
            return _plus(place.offset, "_i")
        raise SpecError(
            self.t.spec.source,
            "",
            f"the {self.t.TARGET} target cannot broadcast {shape} to {space}",
        )

    def load(self, symbol: sp.Symbol, space: tuple) -> str:
        place = self.places[symbol]
        if not self.shapes.get(symbol, ()):
            return f"{place.buffer}[{place.offset}]"
        return f"{place.buffer}[{self.index(symbol, space)}]"

    def row_pointer(self, symbol: sp.Symbol) -> str:
        place = self.places[symbol]
        return f"{place.buffer} + {_plus(place.offset, _times('_n', place.stride))}"

    def row_element(self, symbol: sp.Symbol) -> str:
        """Sample _n's value of a per-sample tensor (shape (N,))."""
        place = self.places[symbol]
        return f"{place.buffer}[{_plus(place.offset, _times('_n', place.stride))}]"

    def py_pointer(self, symbol: sp.Symbol) -> str:
        """The same pointer for the CuPy loader: a view of a flat array."""
        place = self.places[symbol]
        return place.buffer if place.offset == 0 else f"{place.buffer}[{place.offset}:]"

    def pointer(self, symbol: sp.Symbol) -> str:
        place = self.places[symbol]
        return place.buffer if place.offset == 0 else f"{place.buffer} + {place.offset}"

    def inline_closure(self, symbols) -> list[Assign]:
        """The inline scalars that ``symbols`` need, in program order."""
        needed: set[sp.Symbol] = set()
        stack = [s for s in symbols if s in self.inline]
        while stack:
            s = stack.pop()
            if s not in needed:
                needed.add(s)
                stack.extend(r for r in self.inline[s].reads if r in self.inline)
        return [stmt for sym, stmt in self.inline.items() if sym in needed]

    def context(self) -> dict:
        stages = []
        buffers_all: list[str] = []
        for stage in self.stages:
            ctx = getattr(self, f"_ctx_{stage.kind}")(stage)
            ctx["kind"] = stage.kind
            ctx["name"] = f"{self.entry}_s{stage.index + 1}"
            ctx["buffers"] = self.t.order_buffers(ctx["buffers"])
            stages.append(ctx)
            buffers_all += ctx["buffers"]
        return {
            "name": self.entry,
            "stages": stages,
            "scalar_slots": self.scalar_slots,
            "buffers": self.t.order_buffers(buffers_all),
            # the model's own buffers (workspace, scratch scalars), not the caller's
            "local_buffers": [
                b for b in self.t.order_buffers(buffers_all) if b.startswith("_w_") or b == "_scal"
            ],
        }

    def _math(self, stage: Stage, fname: str, space: tuple) -> dict:
        """The stage's elementwise math as one __host__ __device__ function."""
        p = self.t.printer
        produced = {s.target for s in stage.statements}
        reads = self._effective_reads(r for s in stage.statements for r in s.reads)
        inputs = sorted(reads - produced, key=lambda s: s.name)
        inline = self.inline_closure({r for s in stage.statements for r in s.reads})
        lines, outputs, uses_n = [], [], False
        for stmt in inline:
            uses_n |= N in stmt.expr.free_symbols
            lines.append(
                {"decl": True, "target": p.name(stmt.target), "expr": p.doprint(stmt.expr)}
            )
        for stmt in stage.statements:
            uses_n |= N in stmt.expr.free_symbols
            stored = stmt.target in self.stored
            lines.append(
                {
                    "decl": not stored,
                    "target": p.name(stmt.target),
                    "expr": p.doprint(stmt.expr),
                    "comment": self.t.comments.get(stmt.target.name, ()),
                }
            )
            if stored:
                outputs.append(stmt.target)
        buffers = [self.places[s].buffer for s in inputs + outputs]
        return {
            "function": fname,
            "uses_n": uses_n,
            "inputs": [{"name": p.name(s), "load": self.load(s, space)} for s in inputs],
            "outputs": [{"name": p.name(s), "store": self.load(s, space)} for s in outputs],
            "lines": lines,
            "buffers": buffers,
        }

    def _ctx_map(self, stage: Stage) -> dict:
        space = stage.key
        ctx = self._math(stage, f"{self.entry}_s{stage.index + 1}_math", space)
        batched = _is_batched(space)
        k = _width(space) if batched else _size(space)
        ctx["total"] = ("N" if k == 1 else f"(long)N * {k}") if batched else str(k)
        ctx["count"] = ("N" if k == 1 else f"N * {k}") if batched else str(k)
        ctx["width"] = k
        text = " ".join(i.get("load", i.get("store", "")) for i in ctx["inputs"] + ctx["outputs"])
        ctx["uses_row"] = re.search(r"\b_n\b", text) is not None
        ctx["uses_col"] = re.search(r"\b_j\b", text) is not None
        ctx["space"] = " x ".join(str(d) for d in space)
        ctx["targets"] = [s.target.name for s in stage.statements]  # for the comment
        return ctx

    def _ctx_scalar(self, stage: Stage) -> dict:
        ctx = self._math(stage, f"{self.entry}_s{stage.index + 1}_math", ())
        ctx["targets"] = [s.target.name for s in stage.statements]  # for the comment
        return ctx

    def _uniform(self, symbols) -> tuple[list[dict], list[dict], list[str], bool]:
        """Scalars a rows or reduce stage reads: memory loads and inline formulas."""
        p = self.t.printer
        inline = self.inline_closure(symbols)
        reads = self._effective_reads(symbols)
        loads = sorted((s for s in reads if not self.shapes.get(s, ())), key=lambda s: s.name)
        lines = [{"target": p.name(s.target), "expr": p.doprint(s.expr)} for s in inline]
        uses_n = any(N in s.expr.free_symbols for s in inline)
        return (
            [{"name": p.name(s), "load": self.load(s, ())} for s in loads],
            lines,
            [self.places[s].buffer for s in loads],
            uses_n,
        )

    def _ctx_rows(self, stage: Stage) -> dict:
        p = self.t.printer
        calls, buffers = [], []
        scalar_reads = set()
        for stmt in stage.statements:
            args = list(stmt.args)
            width = _width(self.shapes[args[0]])
            call = {"op": stmt.op, "width": width}
            for role, symbol in zip(("a", "b", "c"), args, strict=False):
                if self.shapes.get(symbol, ()) or symbol not in self.inline:
                    if not self.shapes.get(symbol, ()):
                        call[role] = self.load(symbol, ())
                    elif len(self.shapes[symbol]) == 1:  # one value per sample, (N,)
                        call[role] = self.row_element(symbol)
                    else:
                        call[role] = self.row_pointer(symbol)
                    buffers.append(self.places[symbol].buffer)
                else:
                    call[role] = p.name(symbol)
                    scalar_reads.add(symbol)
            out = stmt.target
            attrs = dict(stmt.attrs)
            # a value per sample, not a row
            one_value = stmt.op in ONE_VALUE_ROW_OPS or (
                stmt.op == "slice_row" and attrs["squeeze"]
            )
            call["out"] = self.row_element(out) if one_value else self.row_pointer(out)
            if stmt.op in ("slice_row", "pad_row"):
                call["start"], call["count"] = attrs["start"], attrs["stop"] - attrs["start"]
                call["squeeze"] = attrs["squeeze"]
                call["size"] = _width(self.shapes[out])
            if stmt.op == "concat_row":
                call["parts"], column = [], 0
                for symbol in args:
                    element = len(self.shapes[symbol]) == 1  # (N,): one value per sample
                    row = self.row_element(symbol) if element else self.row_pointer(symbol)
                    width = _width(self.shapes[symbol])
                    call["parts"].append(
                        {"at": column, "width": width, "row": row, "element": element}
                    )
                    buffers.append(self.places[symbol].buffer)
                    column += width
            buffers.append(self.places[out].buffer)
            calls.append(call)
        loads, lines, more, uses_n = self._uniform(scalar_reads)
        return {
            "calls": calls,
            "loads": loads,
            "lines": lines,
            "uses_n": uses_n,
            "buffers": buffers + more,
            "targets": [s.target.name for s in stage.statements],
        }

    def _ctx_reduce(self, stage: Stage) -> dict:
        p = self.t.printer
        sums, buffers = [], []
        for stmt in stage.statements:
            src = stmt.source
            shape = self.shapes[src]
            place = self.places[src]
            k = _width(shape)
            count = "N" if k == 1 else f"(long)N * {k}"
            stride = place.stride if k == 1 else 1
            if isinstance(stmt, BatchMean):
                divisor = "N" if stmt.sum_features or k == 1 else count
            else:
                divisor = None
            if not _is_batched(shape):  # a vector's elements (or a loss all samples share)
                count, stride, divisor = str(_size(shape)), 1, None
            sums.append(
                {
                    "target": p.name(stmt.target),
                    "name": stmt.target.name,
                    "source": self.pointer(src),
                    "count": count,
                    "stride": stride,
                    "divisor": divisor,
                    "store": self.load(stmt.target, ()),
                    "mean": isinstance(stmt, BatchMean),
                    "comment": self.t.comments.get(stmt.target.name, ()),
                }
            )
            buffers += [place.buffer, self.places[stmt.target].buffer]
        return {"sums": sums, "buffers": buffers, "targets": [s["name"] for s in sums]}

    def _leading(self, symbol: sp.Symbol) -> int:
        """The stored row length of a matrix operand (a batch's rows may be columns of a
        wider buffer: X holds every input side by side)."""
        shape = self.shapes[symbol]
        if _is_batched(shape):
            return self.places[symbol].stride
        return int(shape[-1]) if len(shape) == 2 else 1

    def _contract_dims(self, stmt: Call) -> tuple:
        """A contraction's operands and symbp_gemm's arguments (see tensor_ops)."""
        subscripts = dict(stmt.attrs)["subscripts"]
        shapes = [self.shapes[a] for a in stmt.args]
        first, second, ta, tb, m, n, k = tensor_ops.gemm_layout(subscripts, shapes)
        a, b = stmt.args[first], stmt.args[second]
        vector_a, vector_b = len(self.shapes[a]) == 1, len(self.shapes[b]) == 1
        lda = k if vector_a else self._leading(a)
        ldb = 1 if vector_b else self._leading(b)
        ldc = 1 if n == 1 else self._leading(stmt.target) if len(stmt.shape) == 2 else n
        dims = ("1" if ta else "0", "1" if tb else "0", m, n, k, lda, ldb, ldc)
        text = f"{stmt.target.name} = {a.name}{'^T' if ta else ''} {b.name}{'^T' if tb else ''}"
        return a, b, dims, text

    def _ctx_transpose(self, stage: Stage) -> dict:
        (stmt,) = stage.statements
        (a,) = stmt.args
        rows, cols = (int(d) for d in self.shapes[a])
        return {
            "rows": rows,
            "cols": cols,
            "a": self.pointer(a),
            "out": self.pointer(stmt.target),
            "text": f"{stmt.target.name} = {a.name}^T",
            "buffers": [self.places[s].buffer for s in (a, stmt.target)],
            "targets": [stmt.target.name],
        }

    def _ctx_gemm(self, stage: Stage) -> dict:
        (stmt,) = stage.statements
        out = stmt.target
        a, b = stmt.args
        sa, sb = self.shapes[a], self.shapes[b]
        if stmt.op == "contract":
            a, b, dims, text = self._contract_dims(stmt)
        elif stmt.op == "linear":  # Z (N x out) = A (N x in) W^T, W (out x in)
            out_w, in_w = (int(d) for d in sb)
            dims = ("0", "1", "N", out_w, in_w, in_w, in_w, out_w)
            text = f"{out.name.removesuffix('_gemm')} = {a.name} {b.name}^T"
        elif stmt.op == "matmul":  # dA (N x in) = G (N x out) W (out x in)
            out_w, in_w = (int(d) for d in sb)
            dims = ("0", "0", "N", in_w, out_w, out_w, in_w, in_w)
            text = f"{out.name} = {a.name} {b.name}"
        else:  # matmul_tn: dW (out x in) = G^T (out x N) A (N x in)
            out_w, in_w = _width(sa), _width(sb)
            dims = ("1", "0", out_w, in_w, "N", out_w, in_w, in_w)
            text = f"{out.name} = {a.name}^T {b.name}"
        ta, tb, m, n, k, lda, ldb, ldc = dims
        return {
            "py": [self.py_pointer(s) for s in (a, b, out)],
            "trans_a": ta,
            "trans_b": tb,
            "m": m,
            "n": n,
            "k": k,
            "a": self.pointer(a),
            "lda": lda,
            "b": self.pointer(b),
            "ldb": ldb,
            "c": self.pointer(out),
            "ldc": ldc,
            "text": text,
            "buffers": [self.places[s].buffer for s in (a, b, out)],
            "targets": [out.name],
        }

    def _ctx_colsum(self, stage: Stage) -> dict:
        (stmt,) = stage.statements
        (g,) = stmt.args
        return {
            "py": [self.py_pointer(g), self.py_pointer(stmt.target)],
            "g": self.pointer(g),
            "width": _width(self.shapes[g]),
            "out": self.pointer(stmt.target),
            "text": f"{stmt.target.name} = column sums of {g.name}",
            "buffers": [self.places[g].buffer, self.places[stmt.target].buffer],
            "targets": [stmt.target.name],
        }


class StagedProgram:
    """A derivation's program staged for a C-family target: its parameters laid out in one
    array, the places of inputs, targets and gradients, and the stages of each entry
    point. A target subclasses it with its printer and adds its own context."""

    TARGET = "C"  # the target's name in messages
    PRINTER = CPrinter

    def __init__(self, derivation: Derivation, dtype: str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        self.derivation = derivation
        self.spec = derivation.spec
        self.program = derivation.program
        self.dtype = dtype
        self.printer = self.PRINTER(dtype)
        self.layers = isinstance(self.spec, LayerSpec)
        self.work: dict[str, tuple[bool, int]] = {}
        self.comments = self._comments()
        tensors = derivation.graph.tensors
        self.base_shapes = {t.symbol: tuple(t.shape) for t in tensors.values()}
        self.fixed_places: dict[sp.Symbol, Place] = {}
        self.grad_places: dict[sp.Symbol, Place] = {}
        self.param_layout = []
        offset = 0
        for param in self.program.params:
            shape = tuple(tensors[param.name].shape)
            size = _size(shape)
            self.fixed_places[param] = Place("_params", offset, 1, 1)
            self.grad_places[self.program.grads[param]] = Place("_grads", offset, 1, 1)
            self.param_layout.append((param, shape, offset, size))
            offset += size
        self.param_count = offset
        self.tensor = isinstance(self.spec, TensorModel)
        if self.tensor:
            self._tensor_places(tensors)
        elif self.layers:
            self.n_in, self.n_target = self.spec.input, self.spec.outputs
            self.fixed_places[sp.Symbol("X", real=True)] = Place("_x", 0, self.n_in, self.n_in)
            self.fixed_places[sp.Symbol("Y", real=True)] = Place(
                "_y", 0, self.n_target, self.n_target
            )
            self.n_out = self.spec.outputs
        else:
            self.n_in, self.n_target = len(self.spec.inputs), len(self.spec.targets)
            for c, name in enumerate(self.spec.inputs):
                self.fixed_places[sp.Symbol(name, real=True)] = Place("_x", c, self.n_in, 1)
            for c, name in enumerate(self.spec.targets):
                self.fixed_places[sp.Symbol(name, real=True)] = Place("_y", c, self.n_target, 1)
            self.n_out = len(self.program.outputs)
        self.entries = {
            "forward": Planner(self, "forward", list(self.program.outputs)),
            "loss": Planner(self, "loss", [self.program.loss]),
            "grads": Planner(self, "grads", [self.program.loss, *self.program.grads.values()]),
        }

    def _tensor_places(self, tensors) -> None:
        """A tensor model's inputs side by side in the rows of X, in declaration order, each
        sample's vector flattened (a scalar input is one column); its targets likewise in
        Y, class labels as one-hot rows; its output's elements in the rows of out."""
        model = self.spec
        self.columns: dict[str, tuple[int, int]] = {}  # name -> (first column, width)
        offset = 0
        for name, shape in model.inputs.items():
            self.columns[name] = (offset, _size(tuple(shape)))
            offset += _size(tuple(shape))
        self.n_in = offset
        offset = 0
        for name, shape in model.targets.items():
            width = model.labels.get(name, _size(tuple(shape)))
            self.columns[name] = (offset, width)
            offset += width
        self.n_target = offset
        for name, stride in [(x, self.n_in) for x in model.inputs] + [
            (y, self.n_target) for y in model.targets
        ]:
            first, width = self.columns[name]
            buffer = "_x" if name in model.inputs else "_y"
            self.fixed_places[tensors[name].symbol] = Place(buffer, first, stride, width)
        self.n_out = _size(tuple(model.terms[model.output].shape))

    def _comments(self) -> dict[str, tuple[str, ...]]:
        if self.layers:
            return {}
        if isinstance(self.spec, TensorModel):
            return graph_comments(self.derivation)
        return comment_table(self.derivation, batched=True)

    def program_shape(self, symbol, statements, shapes) -> tuple:
        for stmt in statements:
            if stmt.target == symbol:
                if isinstance(stmt, Assign):  # the shapes of what it reads, broadcast
                    reads = [s for s in stmt.reads if s != N]
                    return _broadcast([self.program_shape(s, statements, shapes) for s in reads])
                return tuple(stmt.shape)
        return shapes.get(symbol, ())

    def output_place(self, index: int) -> Place:
        if self.layers or self.tensor:
            return Place("_out", 0, self.n_out, self.n_out)
        return Place("_out", index, self.n_out, 1)

    BUFFER_ORDER = ("_x", "_y", "_params", "_grads", "_loss", "_out", "_scal")

    def order_buffers(self, buffers) -> list[str]:
        unique = set(buffers)
        fixed = [b for b in self.BUFFER_ORDER if b in unique]
        work = sorted(b for b in unique if b not in self.BUFFER_ORDER)
        return fixed + work

    # --- optimizer ------------------------------------------------------------------------

    def optimizer(self) -> dict:
        spec = self.spec
        rule = update_rule(spec.train.optimizer, spec.train.options)
        # the optimizer's functions hold symbp's names only (lr, step, exp_avg): unprefixed
        p = self.PRINTER(self.printer.dtype, prefix="")
        host = self.PRINTER("float64", prefix="")
        scalars = [s for s, _ in rule.step_scalars]
        carried = dict(rule.carried)
        update_symbols = set().union(*(e.free_symbols for _, e in rule.updates))
        uniforms = [s for s in [*scalars, sp.Symbol("lr", real=True)] if s in update_symbols]
        state = [sp.Symbol(b, real=True) for b in rule.state]
        return {
            "name": rule.name,
            "formulas": rule.formulas,
            "state": [{"name": p.name(b), "init": p.literal(rule.initial(b.name))} for b in state],
            "step_scalars": [
                {"name": host.name(s), "expr": host.doprint(e), "carried": s.name in carried}
                for s, e in rule.step_scalars
            ],
            "carried": [
                {"name": host.name(sp.Symbol(n, real=True)), "init": host.literal(v), "value": v}
                for n, v in rule.carried
            ],
            "step_name": host.name(step_symbol),
            "py_step_scalars": [  # in the loader's _step_scalars, 4 columns in
                {"name": s.name, "expr": wrap(ScalarPrinter().doprint(e), 4, 7 + len(s.name))}
                for s, e in rule.step_scalars
            ],
            "uniforms": [p.name(s) for s in uniforms],
            "param": p.name(param_symbol),
            "grad": p.name(grad_symbol),
            "updates": [{"target": p.name(t), "expr": p.doprint(e)} for t, e in rule.updates],
            "needs_lr": sp.Symbol("lr", real=True) in update_symbols,
            "grad_norm": host.name(grad_norm) if rule.reads_grad_norm else None,
            "helpers": p.helpers | host.helpers,
        }

    def schedule(self) -> dict | None:
        """The spec's learning-rate schedule for the loader (Python) and the standalone
        trainer (C, in double precision as Python computes it), or None."""
        python = schedule_context(self.derivation)  # the NumPy module's learning_rate
        if python is None:
            return None
        host = self.PRINTER("float64", prefix="")
        text = host.doprint(learning_rates(self.spec.train.lr_schedule).expr)
        return {**python, "c": text, "helpers": host.helpers}

    def common_context(self) -> dict:
        """What every C-family template reads: sizes, parameters, entries, optimizer."""
        spec = self.spec
        entries = {name: planner.context() for name, planner in self.entries.items()}
        optimizer = self.optimizer()
        optimizer_helpers = optimizer.pop("helpers")  # the template needs them once, below
        schedule = self.schedule()
        optimizer_helpers |= schedule.pop("helpers") if schedule else set()
        widths = spec.widths if self.layers else None
        header = self._header()
        return {
            "name": spec.name,
            "description": spec.description,
            "source": spec.source,
            "version": __version__,
            "dtype": self.dtype,
            "ctype": self.printer.ctype,
            "layers": self.layers,
            "widths": widths,
            "header": header,
            "n_in": self.n_in,
            "n_target": self.n_target,
            "n_out": self.n_out,
            "loss_kind": spec.loss if self.layers else self._tensor_loss_kind(),
            "params": [
                {
                    "name": param.name,
                    "shape": list(shape),
                    "offset": offset,
                    "size": size,
                    "init": self._init(param, shape),
                }
                for param, shape, offset, size in self.param_layout
            ],
            "param_count": self.param_count,
            "work": [
                {"name": name, "batched": batched, "count": count}
                for name, (batched, count) in sorted(self.work.items())
            ],
            "scalar_slots": max(1, *(e["scalar_slots"] for e in entries.values())),
            "entries": entries,
            "optimizer": optimizer,
            "schedule": schedule,
            "helpers": sorted(self.printer.helpers | optimizer_helpers),
            "row_ops": sorted(
                {c["op"] for e in entries.values() for s in e["stages"] for c in s.get("calls", [])}
            ),
            "stage_kinds": sorted({s["kind"] for e in entries.values() for s in e["stages"]}),
            "uniform_init": any(
                self._init(p, shape)["kind"] == "uniform" for p, shape, _, _ in self.param_layout
            ),
            **self._data(),
            **self._tensor_io(),
            "train": spec.train,
            "inputs": list(getattr(spec, "inputs", ["X"])),
            "targets": list(getattr(spec, "targets", ["Y"])),
            "outputs": [o.name for o in self.program.outputs],
        }

    def _tensor_loss_kind(self) -> str:
        """ "cross_entropy" where Y is class labels (one-hot rows in C), else "expression"."""
        return "cross_entropy" if self.tensor and self.spec.labels else "expression"

    def _tensor_io(self) -> dict:
        """A tensor model's inputs, targets, output and data as its loader states them."""
        if not self.tensor:
            return {"tensor": False}
        model = self.spec

        def literal(shape) -> str:
            items = [str(d) for d in shape]
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"

        classes = [y for y in model.labels if self.n_out == model.labels[y]]
        data = None
        if model.data:
            data = {
                name: pprint.pformat(value.tolist(), width=88, compact=True)
                for name, value in model.data.items()
            }
        return {
            "tensor": True,
            "tensor_inputs": [{"name": x, "literal": literal(s)} for x, s in model.inputs.items()],
            "tensor_targets": [
                {"name": y, "literal": literal(s), "classes": model.labels.get(y)}
                for y, s in model.targets.items()
            ],
            "output_literal": literal(model.terms[model.output].shape),
            "tensor_data": data,
            "classes": classes[0] if classes else None,
        }

    def _data(self) -> dict:
        """The spec's [data] as rows of literals, for the standalone trainer."""
        spec, literal = self.spec, self.PRINTER("float64").literal
        if self.tensor:
            if not spec.data:
                return {"data_x": None, "data_y": None}
            rows = len(next(iter(spec.data.values())))
            X = np.concatenate(
                [spec.data[x].reshape(rows, -1) for x in spec.inputs] or [np.zeros((rows, 0))],
                axis=1,
            )
            Y = [
                np.eye(spec.labels[y])[spec.data[y].astype(int)]
                if y in spec.labels
                else spec.data[y].reshape(rows, -1)
                for y in spec.targets
            ]
            Y = np.concatenate(Y, axis=1) if Y else np.zeros((rows, 0))
            return {
                "data_x": [[literal(float(v)) for v in row] for row in X],
                "data_y": [[literal(float(v)) for v in row] for row in Y],
            }
        if self.layers:
            if not spec.data:
                return {"data_x": None, "data_y": None}
            X, Y = spec.data
        elif spec.data:
            X = list(zip(*(spec.data[c] for c in spec.inputs), strict=True))
            Y = (
                list(zip(*(spec.data[c] for c in spec.targets), strict=True))
                if spec.targets
                else []
            )
        else:
            return {"data_x": None, "data_y": None}
        return {
            "data_x": [[literal(v) for v in row] for row in X],
            "data_y": [[literal(v) for v in row] for row in Y],
        }

    def _init(self, param, shape) -> dict:
        """torch.nn.Linear's bound for layers; the spec's value or U(-1, 1) otherwise."""
        if self.layers:
            fan_in = self.spec.widths[int(param.name[1:]) - 1]
            return {"kind": "uniform", "bound": repr(1.0 / fan_in**0.5), "fan_in": fan_in}
        if self.tensor:  # uniform or constant (tensor_unsupported refuses normal)
            init = self.spec.init[param.name]
            if init.kind == "uniform":
                bound = float(init.value)
                return {
                    "kind": "uniform",
                    "bound": repr(bound),
                    "twice": repr(2 * bound),
                    "fan_in": 1,
                }
            return {"kind": "value", "value": self.printer.literal(init.value)}
        value = self.spec.init.get(param.name)
        if value is not None:
            return {"kind": "value", "value": self.printer.literal(value)}
        return {"kind": "uniform", "bound": "1.0", "fan_in": 1}

    def _header(self) -> list[str]:
        spec = self.spec
        if self.tensor:
            return graph_model_lines(spec)
        if self.layers:
            lines = [f"A dense network {'-'.join(map(str, spec.widths))}, loss {spec.loss}:"]
            lines.append("  Z(l) = A(l-1) W(l)^T + b(l), A(l) = f(Z(l)), A(0) = X")
            for layer in spec.layers:
                dense = (
                    f"dense {spec.widths[layer.index - 1]} -> {layer.dense}" if layer.dense else ""
                )
                act = f"activation {layer.text or 'identity'}"
                lines.append(f"  layer {layer.index}: {', '.join(x for x in (dense, act) if x)}")
            return lines
        return model_lines(self.derivation)


def unsupported_op(spec, op: str, target: str) -> SpecError:
    """The layer a user wrote that needs ``op``, in the spec's own terms (a convolution,
    not the program's channels_last)."""
    for layer in getattr(spec, "layers", []):
        if layer.op is not None and layer.op != "dense":
            return SpecError(
                spec.source,
                f"model.layers[{layer.index}]",
                f"the {target} target has no kernels for {layer.op} layers yet (it has dense"
                " layers and expression models); --target numpy generates this model",
            )
    return SpecError(spec.source, "", f"the {target} target has no kernels for {op} yet")


def unsupported(derivation: Derivation, target: str, tensor: bool = True) -> SpecError | None:
    """Why a C-family target cannot stage this model, in the spec's terms, or None. Dense
    stacks and expression models stage; tensor models (``tensor``: the target has the
    kernels of tensor_ops) where each op has a kernel at its shapes; convolution and
    pooling layers and recurrences do not yet."""
    spec = derivation.spec
    if isinstance(spec, TensorModel) and spec.recur:
        return SpecError(
            spec.source,
            "model",
            f"the {target} target has no loop over time for a recurrence (rnn, lstm, gru"
            " layers or [model.recur]) yet; --target numpy generates this model",
        )
    if isinstance(spec, TensorModel):
        if not tensor:
            return SpecError(
                spec.source,
                "model.params",
                f"the {target} target does not take tensor models yet (a model with shapes);"
                " --target numpy generates this model",
            )
        return _tensor_unsupported(derivation, target)
    calls = (s for s in derivation.program.statements if isinstance(s, Call))
    for call in calls:
        if call.op not in LOWERED_OPS:
            return unsupported_op(spec, call.op, target)
    return None


def _refusal(model, field: str, what: str, target: str) -> SpecError:
    """One line: what of the model (an op's name, said in the user's terms where
    tensor_ops has them, or the words themselves) the target has no kernels for."""
    what = tensor_ops.USER_TERMS.get(what, what)
    return SpecError(
        model.source,
        field,
        f"the {target} target has no kernels for {what} yet; --target numpy generates this model",
    )


def _tensor_unsupported(derivation: Derivation, target: str) -> SpecError | None:
    """What of a tensor model the C target has no kernel for, or None."""
    model = derivation.spec

    def refuse(field: str, what: str) -> SpecError:
        return _refusal(model, field, what, target)

    if not model.inputs:
        return refuse("model.inputs", "a function of the parameters alone (inputs = [])")
    for name, shape in {**model.inputs, **model.targets}.items():
        if len(shape) > 1:
            return refuse(f"model.inputs.{name}", f"per-sample matrices or images ({name})")
    if model.labels and len(model.targets) > 1:
        return refuse("model.targets", "class labels beside other targets")
    if derivation.statistics:
        return refuse("model.let", "batch statistics (batch_mean, batch_var)")
    for name, init in model.init.items():
        if init.kind == "normal":
            return refuse(f"model.params.{name}", "normal initialization")
    if len(model.terms[model.output].shape) > 1:
        return refuse("model.output", "a per-sample matrix output")
    if not model.terms[model.output].batched:
        return refuse("model.output", "an output that does not depend on the inputs")
    shapes = {t.symbol: tuple(t.shape) for t in derivation.graph.tensors.values()}
    for stmt in derivation.program.statements:
        if isinstance(stmt, Call):
            if stmt.op not in tensor_ops.KERNELS:
                return refuse("model", stmt.op)
            try:
                tensor_ops.lower(stmt, shapes)
            except tensor_ops.NoKernelError as missing:
                return refuse("model", str(missing))
        elif isinstance(stmt, Assign):
            if len(stmt.shape) > 2:
                return refuse("model", tensor_ops.MATRICES)
        shapes[stmt.target] = tuple(stmt.shape)
    return None
