"""Read a tensor model's ``[model]`` table into a :class:`TensorModel` record.

A model declares its parameters in ``[model.params]`` with their shapes (or takes
inputs and targets as a table of shapes, or ``inputs = []``); its formulas then name
tensors. Everything is checked here, so that a model that loads derives: every name
declared, every shape agreeing, the loss one number per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ..errors import SpecError, way_out
from ..spec.fields import (
    TrainSpec,
    _check_name,
    _only,
    _table,
    _train_table,
    finite_number,
)
from . import ops
from .formula import parse_formula
from .terms import Shape, Term, shape_text
from .terms import walk as _walk

MODEL_KEYS = {"inputs", "targets", "params", "recur", "let", "output", "loss", "reduction"}
STATE_KEYS = {"shape", "init", "step"}
TIME = "T"  # the time axis of a sequence input: its first per-sample axis
INITS = ("uniform", "normal", "zeros", "ones")
# what the generated module's functions name besides the model's values
GENERATED_LOCALS = frozenset({"data", "CLASSES", "INIT"})
MAX_DIMENSION = 1 << 20
MAX_ELEMENTS = 1 << 26


@dataclass
class Init:
    """How init_params draws a parameter: ``uniform`` in +-bound (torch.nn.Linear's
    1/sqrt(fan_in) for a matrix and its bias), ``normal`` N(0, 1), or a constant."""

    kind: str  # "uniform" | "normal" | "constant"
    value: float = 1.0  # the bound of uniform, the constant


@dataclass
class TensorModel:
    name: str
    source: str
    inputs: dict[str, Shape]  # per-sample shapes
    targets: dict[str, Shape]  # as declared: () for class labels
    labels: dict[str, int]  # targets that hold class labels -> number of classes
    params: dict[str, Shape]
    init: dict[str, Init]
    lets: list[tuple[str, Term, str]]  # name, term, formula text; in order
    output: str  # the name of the model's output (a let-name)
    loss: Term  # per sample, shape ()
    loss_text: str
    reduction: str  # "mean" | "sum" over the batch
    train: TrainSpec
    data: dict[str, np.ndarray] | None
    description: str = ""
    terms: dict[str, Term] = field(default_factory=dict)  # every named term
    dataset: str | None = None  # a packaged dataset the example runner loads
    # [model.recur] in order: a state's name -> (its shape, its init formula text or
    # "zeros", its step formula text); a value of the step's name -> its formula text
    recur: dict[str, tuple[Shape, str, str] | str] = field(default_factory=dict)
    finals: dict[str, Term] = field(default_factory=dict)  # state -> its h[T] term

    @property
    def states(self) -> list[str]:
        """The recurrent states (what [model.recur] carries from step to step)."""
        return [h for h, entry in self.recur.items() if not isinstance(entry, str)]

    @property
    def sequences(self) -> list[str]:
        """Inputs and targets with a time axis (declared ["T", ...]): stored (N, T, ...)."""
        columns = {**self.inputs, **self.targets}
        return [x for x, shape in columns.items() if shape[:1] == (TIME,)]

    @property
    def batched(self) -> bool:
        return bool(self.inputs or self.targets)

    @property
    def seed(self) -> int:
        return self.train.seed


def is_tensor_model(model: dict) -> bool:
    """A spec whose [model] declares shapes: [model.params], or inputs and targets as
    tables of shapes, or no inputs at all."""
    return (
        "params" in model
        or isinstance(model.get("inputs"), dict)
        or isinstance(model.get("targets"), dict)
        or model.get("inputs") == []
        or "recur" in model
    )


def _shape(value, source: str, where: str, time: bool = False) -> Shape:
    """A list of sizes; ``time``: an input's or a target's, whose first size may be "T"
    (a sequence)."""
    if not isinstance(value, list):
        raise SpecError(
            source, where, f"expected a shape (a list of sizes such as [8, 4]), got {value!r}"
        )
    if time and value[:1] == [TIME]:
        rest = _shape(value[1:], source, where)
        if len(rest) > 2:
            raise SpecError(source, where, "a sequence's step has at most 2 axes")
        return (TIME, *rest)
    if TIME in value:
        where_ok = "the first size of an input or a target" if not time else "the first size"
        raise SpecError(source, where, f'"T" (a sequence\'s time axis) is only {where_ok}')
    for size in value:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_DIMENSION:
            raise SpecError(source, where, f"sizes are positive integers, got {size!r}")
    if len(value) > 4:
        raise SpecError(source, where, f"at most 4 axes, got {len(value)}")
    if math.prod(value) > MAX_ELEMENTS:
        raise SpecError(source, where, f"{math.prod(value)} elements is too many")
    return tuple(value)


def _name(name: object, source: str, where: str, taken: dict[str, str]) -> str:
    _check_name(name, source, where, outputs_named=True)
    if name in GENERATED_LOCALS:
        raise SpecError(source, where, f"'{name}' is reserved by the generated code; rename it")
    if name in taken:
        raise SpecError(source, where, f"'{name}' is already one of model.{taken[name]}")
    return name


def _shapes(model: dict, key: str, source: str, taken: dict[str, str]) -> dict[str, Shape]:
    value = model.get(key, [])
    if isinstance(value, str):
        value = [value]
    where = f"model.{key}"
    if isinstance(value, list):  # a plain list of names: scalars
        result = {}
        for item in value:
            result[_name(item, source, where, taken)] = ()
            taken[item] = key
        return result
    if not isinstance(value, dict):
        raise SpecError(source, where, "expected a list of names or a table of name = shape")
    result = {}
    for item, shape in value.items():
        result[_name(item, source, f"{where}.{item}", taken)] = _shape(
            shape, source, f"{where}.{item}", time=True
        )
        taken[item] = key
    return result


def _params(model: dict, source: str, taken: dict[str, str]):
    table = _table(model, "params", source, prefix="model.")
    shapes: dict[str, Shape] = {}
    init: dict[str, Init | None] = {}
    for key, value in table.items():
        where = f"model.params.{key}"
        _name(key, source, where, taken)
        taken[key] = "params"
        if isinstance(value, dict):
            _only(value, {"shape", "init"}, source, where)
            shapes[key] = _shape(value.get("shape", []), source, f"{where}.shape")
            init[key] = _init(value.get("init"), source, f"{where}.init")
        else:
            shapes[key] = _shape(value, source, where)
            init[key] = None
    return shapes, init


def _init(value, source: str, where: str) -> Init | None:
    if value is None or value == "uniform":
        return None  # the default bound, decided from how the model uses it
    if isinstance(value, dict):  # { uniform = a }: U(-a, a), torch.nn.init.uniform_(-a, a)
        _only(value, {"uniform"}, source, where)
        if "uniform" not in value:
            raise SpecError(source, f"{where}.uniform", "missing (the bound a of U(-a, a))")
        bound = finite_number(value["uniform"], source, f"{where}.uniform")
        if bound <= 0:
            raise SpecError(source, f"{where}.uniform", f"a bound is positive, got {bound}")
        return Init("uniform", bound)
    if value == "normal":
        return Init("normal")
    if value in ("zeros", "ones"):
        return Init("constant", 0.0 if value == "zeros" else 1.0)
    if isinstance(value, str):
        raise SpecError(source, where, f"unknown init '{value}'" + way_out(value, INITS))
    return Init("constant", finite_number(value, source, where))


def _fan_ins(terms: list[Term], params: dict[str, Shape]) -> dict[str, int]:
    """torch.nn.Linear's fan-in for each parameter used as one: a matrix W in W @ a
    (its columns), and a vector added to such a product (its bias)."""
    fan: dict[str, int] = {}
    for term in terms:
        for t in _walk(term):
            if t.op == "contract" and len(t.args) == 2:
                w = t.args[0]
                if w.op == "name" and w.attr("name") in params and len(w.shape) == 2:
                    fan.setdefault(w.attr("name"), w.shape[1])
            if t.op == "ew" and t.attr("text") == "'+'":
                product = [a for a in t.args if a.op == "contract" and len(a.args) == 2]
                for a in t.args:
                    if a.op == "name" and a.attr("name") in params and len(a.shape) == 1:
                        for p in product:
                            w = p.args[0]
                            if w.op == "name" and w.attr("name") in fan:
                                fan.setdefault(a.attr("name"), fan[w.attr("name")])
            if t.op == "image" and t.attr("op") == "conv2d" and len(t.args) == 3:
                kernel, bias = t.args[1], t.args[2]  # torch.nn.Conv2d: C kh kw for both
                if kernel.op == "name" and bias.op == "name" and bias.attr("name") in params:
                    fan.setdefault(bias.attr("name"), math.prod(kernel.shape[1:]))
    for name, shape in params.items():  # any other matrix: its columns, as torch counts
        if len(shape) >= 2:
            fan.setdefault(name, math.prod(shape[1:]))
    return fan


def tensor_model(doc: dict, model: dict, name: str, description: str, source: str) -> TensorModel:
    _only(model, MODEL_KEYS, source, "model")
    if "params" in doc:
        raise SpecError(
            source,
            "params",
            "a model with shapes declares each parameter's shape and init in"
            " [model.params] (W = { shape = [3, 4], init = 0.5 }); [params] is for"
            " scalar models",
        )
    _only(doc, {"name", "description", "model", "train", "data"}, source, "")
    taken: dict[str, str] = {}
    inputs = _shapes(model, "inputs", source, taken)
    targets = _shapes(model, "targets", source, taken)
    params, declared_init = _params(model, source, taken)
    names: dict[str, Term] = {}
    columns = {**inputs, **targets}  # a target may be a sequence too: one value per step
    sequences = {x: shape[1:] for x, shape in columns.items() if shape[:1] == (TIME,)}
    for x, shape in columns.items():
        if x not in sequences:
            names[x] = ops.name(x, shape, True)
    for p, shape in params.items():
        names[p] = ops.name(p, shape, False)
    recur, finals, every = _recur(model, names, sequences, source, taken)
    # a step's values are read in the steps only (one may be the output, every step's)
    indexed = {**{x: {} for x in sequences}, **{v: {} for v in every}, **finals}

    lets: list[tuple[str, Term, str]] = []
    for let_name, text in _table(model, "let", source, prefix="model.").items():
        where = f"model.let.{let_name}"
        _name(let_name, source, where, taken)
        term = parse_formula(text, names, source=source, field=where, indexed=indexed)
        if term.op == "const":
            raise SpecError(source, where, "the formula is a constant")
        taken[let_name] = "let"
        names[let_name] = term
        lets.append((let_name, term, text))

    output = model.get("output")
    if output is None:
        raise SpecError(source, "model.output", "missing (the name of the model's output)")
    if not isinstance(output, str):
        raise SpecError(source, "model.output", "expected a name or a formula")
    if output.strip() in names and output.strip() in dict((n, 0) for n, _, _ in lets):
        output_name = output.strip()
    elif output.strip() in every:  # a value of the recurrence at every step: (N, T, ...)
        output_name = output.strip()
        lets.append((output_name, every[output_name], f"{output_name}[t] for every step t"))
    else:
        term = parse_formula(output, names, source=source, field="model.output", indexed=indexed)
        if term.op == "const":
            raise SpecError(source, "model.output", "the output is a constant")
        output_name = "yhat"
        if "yhat" in taken:
            raise SpecError(source, "model.output", "'yhat' is already a name of the model")
        names["yhat"] = term
        lets.append(("yhat", term, output))

    loss_text = model.get("loss")
    if loss_text is None:
        if targets:
            raise SpecError(source, "model.loss", "missing (the model has targets)")
        loss_text = output_name
    loss = parse_formula(loss_text, names, source=source, field="model.loss", indexed=indexed)
    if loss.shape != ():
        raise SpecError(
            source,
            "model.loss",
            f"the loss is one number per sample, got shape {shape_text(loss.shape)}:"
            " reduce it with sum(...) or mean(...)",
        )
    if loss.op == "const" or not any(
        t.op == "name" and t.attr("name") in params for t in _walk(loss)
    ):
        raise SpecError(source, "model.loss", "the loss does not depend on any parameter")
    reduction = model.get("reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise SpecError(
            source,
            "model.reduction",
            f"unknown reduction {reduction!r}" + way_out(reduction, ["mean", "sum"]),
        )

    all_terms = [t for _, t, _ in lets] + [loss]
    if recur and not any(t.op == "scan" for term in all_terms for t in _walk(term)):
        first = next(iter(recur))
        raise SpecError(
            source, "model.recur", f"no formula reads a state's last value ({first}[T])"
        )
    labels = _labels(all_terms, targets, source)
    fan = _fan_ins(all_terms, params)
    init: dict[str, Init] = {}
    for p in params:
        chosen = declared_init[p]
        if chosen is None:
            chosen = Init("uniform", 1 / math.sqrt(fan[p]) if p in fan else 1.0)
        init[p] = chosen
    used = {t.attr("name") for term in all_terms for t in _walk(term) if t.op == "name"}
    for p in params:
        if p not in used:
            raise SpecError(source, f"model.params.{p}", "declared but not used by any formula")

    train = _train_table(doc, source, recurrent=bool(recur))
    output_term = dict((n, t) for n, t, _ in lets)[output_name]
    dataset = _dataset(doc, inputs, targets, labels, output_term, source)
    data = None if dataset else _data(doc, inputs, targets, labels, source)
    return TensorModel(
        name=name,
        source=source,
        inputs=inputs,
        targets=targets,
        labels=labels,
        params=params,
        init=init,
        lets=lets,
        output=output_name,
        loss=loss,
        loss_text=str(loss_text),
        reduction=reduction,
        train=train,
        data=data,
        description=description,
        terms={**names, output_name: output_term},
        dataset=dataset,
        recur=recur,
        finals={h: entry["T"] for h, entry in finals.items()},
    )


def _recur(model: dict, names: dict[str, Term], sequences: dict, source: str, taken):
    """``[model.recur]``: each state's shape, init and step, read in order into one
    ``scan`` term over the sequences. A step reads a sequence as ``x[t]``, its own and
    any state's previous value as ``h[t-1]``, a state declared before it at this step as
    ``c[t]``, and the parameters and the other inputs by name. The formulas after it
    read a state's last value as ``h[T]``. Returns the states and, for the formulas
    after it, each state's ``{"T": its last value}``."""
    table = _table(model, "recur", source, prefix="model.")
    if not table:
        if sequences:
            x = next(iter(sequences))
            raise SpecError(
                source,
                f"model.inputs.{x}",
                "a sequence (a time axis) is read by a recurrence: declare its states in"
                " [model.recur]",
            )
        return {}, {}, {}
    if not sequences:
        raise SpecError(
            source,
            "model.recur",
            'a recurrence runs over a sequence input: declare one as x = ["T", size]',
        )
    declared: dict[str, tuple[Shape, object, object]] = {}
    values: dict[str, str] = {}  # the per-step values: name -> formula
    for state, entry in table.items():
        where = f"model.recur.{state}"
        _name(state, source, where, taken)
        taken[state] = "recur"
        if isinstance(entry, str):
            values[state] = entry
            continue
        if not isinstance(entry, dict):
            raise SpecError(
                source,
                where,
                'expected { shape = [16], step = "..." } (init = "zeros" is the default)',
            )
        _only(entry, STATE_KEYS, source, where)
        if "shape" not in entry or "step" not in entry:
            missing = "shape" if "shape" not in entry else "step"
            raise SpecError(source, f"{where}.{missing}", "missing")
        shape = _shape(entry["shape"], source, f"{where}.shape")
        if len(shape) != 1:
            raise SpecError(
                source, f"{where}.shape", f"a state is a vector (shape [size]), got {list(shape)}"
            )
        declared[state] = (shape, entry.get("init", "zeros"), entry["step"])
    if not declared:
        raise SpecError(
            source, "model.recur", 'no state: declare one as h = { shape = [16], step = "..." }'
        )
    leaves = {x: ops.name(f"{x}_t", shape, True) for x, shape in sequences.items()}
    prev = {h: ops.name(f"{h}_prev", shape, True) for h, (shape, _, _) in declared.items()}
    label = "_".join(declared) + "_T"
    elements = [t.attr("name") for t in [*leaves.values(), *prev.values()]]
    for generated in [*elements, label, "t", "T"]:
        if generated in taken:
            raise SpecError(
                source,
                f"model.{taken[generated]}.{generated}",
                f"'{generated}' names a value of the recurrence in the generated code; rename it",
            )
        taken[generated] = "recur's generated names"
    inits, steps, now, local = [], [], {}, dict(names)
    lets: list[tuple[str, Term]] = []
    for state in table:
        where = f"model.recur.{state}"
        indexed = {
            **{x: {"t": leaf} for x, leaf in leaves.items()},
            **{h: {"t-1": prev[h], **({"t": now[h]} if h in now else {})} for h in declared},
        }
        if state in values:  # a value of the step, read by name by the formulas after it
            term = parse_formula(values[state], local, source=source, field=where, indexed=indexed)
            if term.op == "const":
                raise SpecError(source, where, "the formula is a constant")
            local[state] = term
            lets.append((state, term))
            continue
        shape, init, step = declared[state]
        inits.append(_state_init(init, shape, names, sequences, source, f"{where}.init"))
        term = parse_formula(step, local, source=source, field=f"{where}.step", indexed=indexed)
        if term.shape != shape:
            raise SpecError(
                source,
                f"{where}.step",
                f"the step has shape {shape_text(term.shape)}, the state {shape_text(shape)}",
            )
        if not term.batched:
            raise SpecError(
                source, f"{where}.step", "the step reads neither a state nor a sequence"
            )
        steps.append(term)
        now[state] = term
    read = {
        t.attr("name")
        for term in [*steps, *(let for _, let in lets)]
        for t in _walk(term)
        if t.op == "name"
    }
    if not any(leaf.attr("name") in read for leaf in leaves.values()):
        raise SpecError(source, "model.recur", "no step reads a sequence (as x[t])")
    states, start = [], 0
    for state, (shape, _, _) in declared.items():
        states.append((state, start, start + shape[0]))
        start += shape[0]
    attrs = (
        ("states", tuple(states)),
        ("prev", tuple(prev[h] for h in declared)),
        ("sequences", tuple((x, leaves[x]) for x in sequences if leaves[x].attr("name") in read)),
        ("label", label),
        ("lets", tuple(lets)),
        ("order", tuple(table)),  # the states and the step's values, as declared
    )
    scan = Term("scan", (*inits, *steps, *(let for _, let in lets)), (start,), True, attrs)
    finals = {}
    for state, first, stop in states:
        last = scan if len(states) == 1 else ops.index(scan, first, stop, squeeze=False)
        finals[state] = {"T": last}
    recur = {
        h: (declared[h][0], str(declared[h][1]), declared[h][2]) if h in declared else values[h]
        for h in table
    }
    # each value of the step, for all steps at once: an output (N, T, ...) of the model
    pairs = [*lets, *zip(declared, steps, strict=True)]
    every = {name: ops.steps(scan, name, term) for name, term in pairs}
    return recur, finals, every


def _state_init(init, shape, names, sequences, source: str, where: str) -> Term:
    """A state's initial value: "zeros", a number, or a formula over the parameters and
    the inputs that are not sequences (a learned h0 is a parameter's name)."""
    if init == "zeros":
        return ops.const(sp.Integer(0))
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        return ops.const(sp.Float(finite_number(init, source, where)))
    if not isinstance(init, str):
        raise SpecError(source, where, '"zeros", a number or a formula')
    indexed = {x: {} for x in sequences}
    term = parse_formula(init, names, source=source, field=where, indexed=indexed)
    if term.shape != shape and term.op != "const":
        raise SpecError(
            source,
            where,
            f"the initial value has shape {shape_text(term.shape)}, the state {shape_text(shape)}",
        )
    return term


def _dataset(doc, inputs, targets, labels, output: Term, source: str) -> str | None:
    """``[data] dataset = "digits"``: one input of the dataset's features, one target of
    class labels and an output of one logit per class."""
    table = doc.get("data")
    if not isinstance(table, dict) or "dataset" not in table:
        return None
    from ..datasets import DATASET_SHAPES, DATASETS

    _only(table, {"dataset"}, source, "data")
    name = table["dataset"]
    if name not in DATASETS:
        raise SpecError(
            source, "data.dataset", f"unknown dataset {name!r}" + way_out(name, DATASETS)
        )
    need = DATASET_SHAPES[name]
    steps = ("T",) if "steps" in need else ()
    shape = (*steps, need["features"])
    if len(inputs) != 1 or next(iter(inputs.values())) != shape:
        what = "sequences of steps of" if steps else "one input of"
        raise SpecError(
            source,
            "model.inputs",
            f"the {name} dataset has {what} {need['features']} features per sample:"
            f" inputs = {{ x = {list(shape)} }}".replace("'", '"'),
        )
    if "outputs" in need:
        if len(targets) != 1 or labels or output.shape != (need["outputs"],):
            raise SpecError(
                source,
                "model.loss",
                f"the {name} dataset is a regression of {need['outputs']} value(s): one"
                f" target of shape [{need['outputs']}] and an output of that shape",
            )
        return name
    if (
        len(targets) != 1
        or list(labels.values()) != [need["classes"]]
        or output.shape != (need["classes"],)
    ):
        raise SpecError(
            source,
            "model.loss",
            f"the {name} dataset is {need['classes']}-class labels: one target of class labels"
            f" read by cross_entropy over an output of {need['classes']} logits",
        )
    return name


def _labels(terms: list[Term], targets: dict[str, Shape], source: str) -> dict[str, int]:
    """Targets that a cross-entropy reads as class labels, with their class counts; such
    a target may not be read as a number anywhere else."""
    labels: dict[str, int] = {}
    plain: set[str] = set()
    for term in terms:
        for t in _walk(term):
            if t.op == "one_hot":
                labels[t.args[0].attr("name")] = t.shape[0]
            for a in t.args:
                if a.op == "name" and t.op != "one_hot":
                    plain.add(a.attr("name"))
    for term in terms:
        if term.op == "name":
            plain.add(term.attr("name"))
    for y in labels:
        if y not in targets:
            raise SpecError(
                source, "model.loss", f"'{y}' is not a target: class labels are targets"
            )
        if y in plain:
            raise SpecError(
                source,
                f"model.targets.{y}",
                f"'{y}' holds class labels (a loss reads it so); it cannot also be"
                " a number in a formula",
            )
    return labels


def _data(doc, inputs, targets, labels, source) -> dict[str, np.ndarray] | None:
    if "data" not in doc:
        return None
    table = _table(doc, "data", source)
    columns = {**inputs, **targets}
    for key in table:
        if key not in columns:
            raise SpecError(
                source,
                f"data.{key}",
                "not an input or target of the model" + way_out(key, list(columns)),
            )
    data: dict[str, np.ndarray] = {}
    length = None
    steps = None
    for column, shape in columns.items():
        where = f"data.{column}"
        if column not in table:
            raise SpecError(source, where, "missing")
        try:
            array = np.asarray(table[column], dtype=np.float64)
        except (TypeError, ValueError):
            raise SpecError(
                source, where, "expected a list of samples (numbers or nested lists of one shape)"
            ) from None
        if shape[:1] == (TIME,) and array.ndim == len(shape) + 1 and array.shape[1] >= 1:
            shape = (array.shape[1], *shape[1:])  # a sequence: any length, the same for all
            steps = steps or (array.shape[1], column)
            if array.shape[1] != steps[0]:
                raise SpecError(
                    source, where, f"has {array.shape[1]} steps but data.{steps[1]} has {steps[0]}"
                )
        if array.ndim == 0 or array.shape[1:] != shape:
            raise SpecError(
                source,
                where,
                f"expected samples of shape {shape_text(shape)}, got an array of"
                f" shape {array.shape}",
            )
        if not np.all(np.isfinite(array)):
            raise SpecError(source, where, "must hold finite numbers")
        if column in labels:
            k = labels[column]
            if np.any(array != np.round(array)) or np.any(array < 0) or np.any(array >= k):
                raise SpecError(source, where, f"class labels are integers in [0, {k})")
        if length is None:
            length, first = len(array), column
        elif len(array) != length:
            raise SpecError(
                source, where, f"has {len(array)} samples but data.{first} has {length}"
            )
        data[column] = array
    return data


def initial_values(model: TensorModel, seed: int) -> dict[str, np.ndarray]:
    """The parameters the generated module's init_params(seed) draws (float64): each as
    its Init says, in declaration order, from numpy.random.default_rng(seed)."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in model.params.items():
        init = model.init[name]
        if init.kind == "uniform":
            values[name] = rng.uniform(-init.value, init.value, size=shape)
        elif init.kind == "normal":
            values[name] = rng.standard_normal(size=shape)
        else:
            values[name] = np.full(shape, init.value)
    return values
