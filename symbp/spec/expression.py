"""Scalar models: the ``[model]`` of a spec whose formulas are over scalars, with its
parameters as free names and their initial values in ``[params]``."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import SpecError, way_out
from ..losses import LOSSES
from ..losses import y as loss_y
from ..losses import yhat as loss_yhat
from .fields import (
    TrainSpec,
    _check_name,
    _only,
    _table,
    _train_table,
    finite_number,
)
from .formula import is_identifier, parse_expression

NAMED_LOSSES = ("mse", "l1")  # of the shared table (symbp/losses.py)


@dataclass
class ExpressionSpec:
    """An expression model: per-sample scalar formulas, parameters are scalars."""

    name: str
    source: str
    inputs: list[str]
    targets: list[str]
    lets: list[tuple[str, sp.Expr]]  # in order, over earlier names
    outputs: list[tuple[str, sp.Expr]]  # yhat or yhat1, yhat2, ...
    loss: sp.Expr  # per-sample loss over outputs, targets, inputs, lets, params
    loss_text: str  # as the user wrote it (or the named loss)
    params: list[str]  # in order of first appearance
    init: dict[str, float]
    train: TrainSpec
    data: dict[str, list[float]] | None
    description: str = ""
    predict: dict[str, list[float]] | None = None  # inputs at which main() reports yhat

    def symbol(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)


def _name_list(model: dict, key: str, source: str) -> list[str]:
    value = model.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SpecError(source, f"model.{key}", "expected a list of names")
    for item in value:
        _check_name(item, source, f"model.{key}")
    return value


def _expression_spec(doc, model, name, description, source) -> ExpressionSpec:
    _only(model, {"inputs", "targets", "output", "loss", "let"}, source, "model")
    inputs = _name_list(model, "inputs", source)
    if not inputs:
        raise SpecError(
            source, "model.inputs", "at least one input is needed (the batch runs over it)"
        )
    targets = _name_list(model, "targets", source)
    seen: dict[str, str] = {}
    for kind, names in (("inputs", inputs), ("targets", targets)):
        for n in names:
            if n in seen:
                raise SpecError(source, f"model.{kind}", f"'{n}' is already one of model.{seen[n]}")
            seen[n] = kind
    known: dict[str, sp.Expr] = {n: sp.Symbol(n, real=True) for n in seen}
    params: list[str] = []
    first_use: dict[str, str] = {}  # parameter -> the field that first used it

    lets: list[tuple[str, sp.Expr]] = []
    let_table = _table(model, "let", source, prefix="model.")
    for let_name, formula in let_table.items():
        where = f"model.let.{let_name}"
        _check_name(let_name, source, where)
        if let_name in seen:
            raise SpecError(source, where, f"'{let_name}' is already one of model.{seen[let_name]}")
        expr, new = parse_expression(
            formula, known, source=source, field=where, allow_new_names=True
        )
        for n in new:
            _check_name(n, source, where)
            known[n] = sp.Symbol(n, real=True)
            params.append(n)
            first_use[n] = where
        known[let_name] = sp.Symbol(let_name, real=True)
        seen[let_name] = "let"
        lets.append((let_name, expr))

    if "output" not in model:
        raise SpecError(source, "model.output", "missing")
    raw_outputs = model["output"]
    single = isinstance(raw_outputs, str)
    formulas = [raw_outputs] if single else raw_outputs
    if not isinstance(formulas, list) or not formulas:
        raise SpecError(
            source, "model.output", "expected a formula or a non-empty list of formulas"
        )
    outputs: list[tuple[str, sp.Expr]] = []
    for i, formula in enumerate(formulas, 1):
        where = "model.output" if single else f"model.output[{i}]"
        expr, new = parse_expression(
            formula, known, source=source, field=where, allow_new_names=True
        )
        for n in new:
            _check_name(n, source, where)
            known[n] = sp.Symbol(n, real=True)
            params.append(n)
            first_use[n] = where
        outputs.append(("yhat" if single else f"yhat{i}", expr))
    out_names = {n: sp.Symbol(n, real=True) for n, _ in outputs}

    loss_raw = model.get("loss")
    if loss_raw is None:
        if targets:
            raise SpecError(source, "model.loss", "missing (the model has targets)")
        if len(outputs) != 1:
            raise SpecError(source, "model.loss", "missing (needed when there are several outputs)")
        loss_expr, loss_text = out_names["yhat"], "yhat"
    elif loss_raw in NAMED_LOSSES:
        if len(targets) != len(outputs):
            raise SpecError(
                source,
                "model.loss",
                f"'{loss_raw}' needs one target per output "
                f"({len(outputs)} outputs, {len(targets)} targets)",
            )
        pairs = [
            (out_names[o], sp.Symbol(t, real=True))
            for (o, _), t in zip(outputs, targets, strict=True)
        ]
        element = LOSSES[loss_raw].element
        terms = [element.xreplace({loss_yhat: a, loss_y: b}) for a, b in pairs]
        loss_expr = sp.Add(*terms) / len(terms)
        loss_text = loss_raw
    else:
        loss_expr, _ = parse_expression(
            loss_raw, {**known, **out_names}, source=source, field="model.loss"
        )
        loss_text = loss_raw
    if loss_expr.is_number:
        raise SpecError(source, "model.loss", "the loss is a constant")

    init = _params_table(doc, params, seen, source)  # a misspelt [params] key first
    _check_free_names(params, first_use, seen, init, source)
    train = _train_table(doc, source)
    data = _data_table(doc, "data", inputs + targets, source)
    predict = _data_table(doc, "predict", inputs, source)
    return ExpressionSpec(
        name=name,
        source=source,
        inputs=inputs,
        targets=targets,
        lets=lets,
        outputs=outputs,
        loss=loss_expr,
        loss_text=str(loss_text),
        params=params,
        init=init,
        train=train,
        data=data,
        description=description,
        predict=predict,
    )


def _check_free_names(params, first_use, seen, declared, source) -> None:
    """A free name that looks like a typo of a declared one (an input, target, let-name
    or a parameter of [params]) is an error, unless [params] declares it: ``xx`` for
    ``x`` would otherwise silently become a new parameter."""
    kinds = {"inputs": "input", "targets": "target", "let": "let-name"}
    known = {n: kinds[kind] for n, kind in seen.items()}
    known.update({n: "parameter" for n in declared if isinstance(n, str)})
    for name in params:
        if name in declared:
            continue
        for other, kind in known.items():
            if other != name and looks_like_typo(name, other):
                raise SpecError(
                    source,
                    first_use[name],
                    f"'{name}' is not declared and looks like a typo of the {kind} '{other}'"
                    f" (did you mean '{other}'? to make '{name}' a parameter, declare it in"
                    " [params])",
                )


def looks_like_typo(name: str, other: str) -> bool:
    """Whether ``name`` is ``other`` mistyped: another case (``X``), a letter doubled or
    dropped (``xx``, ``hiden``), or, for names with four or more letters, one letter
    changed or two swapped where neither is a digit (``w1``/``w2``, ``x1``/``x3`` and
    ``a100``/``h100`` stay apart: numbered families are deliberate)."""
    if name.lower() == other.lower():
        return True
    short, long_ = sorted((name, other), key=len)
    # letters in common: a100 and h100 share only digits (a numbered family, not a typo)
    letters = sum(ch.isalpha() for ch in short) >= 4
    if len(long_) == len(short) + 1:
        for i in range(len(long_)):
            if long_[:i] + long_[i + 1 :] == short:
                doubled = (i > 0 and long_[i - 1] == long_[i]) or (
                    i + 1 < len(long_) and long_[i + 1] == long_[i]
                )
                if doubled or (letters and not long_[i].isdigit()):
                    return True
        return False
    if len(name) != len(other) or not letters:
        return False
    diffs = [i for i in range(len(name)) if name[i] != other[i]]
    if len(diffs) == 1:
        i = diffs[0]
        return not (name[i].isdigit() or other[i].isdigit())
    if len(diffs) == 2 and diffs[1] == diffs[0] + 1:
        i, j = diffs
        return name[i] == other[j] and name[j] == other[i]
    return False


def _params_table(doc, params, seen, source) -> dict[str, float]:
    table = _table(doc, "params", source)
    init: dict[str, float] = {}
    for key, value in table.items():
        where = f"params.{key}"
        if not is_identifier(key):
            raise SpecError(source, where, "not a valid name (an ASCII identifier)")
        if key in seen:
            raise SpecError(source, where, f"'{key}' is one of model.{seen[key]}, not a parameter")
        if key not in params:
            raise SpecError(
                source,
                where,
                "unknown parameter (not used by the model)" + way_out(key, params),
            )
        init[key] = finite_number(value, source, where)
    return init


def _data_table(doc, key: str, columns: list[str], source) -> dict[str, list[float]] | None:
    if key not in doc:
        return None
    table = _table(doc, key, source)
    data: dict[str, list[float]] = {}
    table_key = key
    for key in table:
        if key not in columns:
            what = "an input or target" if table_key == "data" else "an input"
            raise SpecError(source, f"{table_key}.{key}", f"not {what} of the model")
    length = None
    for col in columns:
        where = f"{table_key}.{col}"
        if col not in table:
            raise SpecError(source, where, "missing column")
        values = table[col]
        if not isinstance(values, list) or not values:
            raise SpecError(source, where, "expected a non-empty list of numbers")
        numbers = [finite_number(v, source, f"{where}[{i}]") for i, v in enumerate(values)]
        if length is None:
            length, first = len(numbers), col
        elif len(numbers) != length:
            raise SpecError(
                source, where, f"has {len(numbers)} values but {table_key}.{first} has {length}"
            )
        data[col] = numbers
    return data
