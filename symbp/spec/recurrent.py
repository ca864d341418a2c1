"""Recurrent layer stacks: ``{ rnn = 16 }``, ``{ lstm = 16 }``, ``{ gru = 16 }`` as sugar.

A stack whose ``input`` is a sequence (``["T", 3]``) and whose first layers are
recurrent is written out here in the model language, exactly as torch.nn.RNN, LSTM
and GRU compute (batch_first, gates in torch's order: i, f, g, o for the LSTM and
r, z, n for the GRU), with torch's parameter names and layouts (``weight_ih_l0``
(gates * hidden, input), ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``; stacked
recurrent layers are l0, l1, ... as in one multi-layer torch module) and torch's
initialization, U(-1/sqrt(hidden), 1/sqrt(hidden)) for every one of them. Dense layers
after them read the last layer's last state and are torch.nn.Linear (``W{k}``,
``b{k}``). The result is a tensor model: one pipeline from here on, and the document
shows the formulas this wrote.
"""

from __future__ import annotations

import math

from ..errors import SpecError, way_out
from .fields import _describe, _only, finite_number
from .layers import NAMED_LOSSES, _positive_int

RECURRENT = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
NONLINEARITIES = ("tanh", "relu")
# the dense layers' activations, as formulas of the model language in {a}
ACTIVATIONS = {
    "identity": "{a}",
    "relu": "relu({a})",
    "tanh": "tanh({a})",
    "sigmoid": "sigmoid({a})",
    "softplus": "softplus({a})",
    "silu": "({a}) * sigmoid({a})",
    "gelu": "({a}) * (1 + erf(({a}) / sqrt(2))) / 2",
    "leaky_relu": "leaky_relu({a}, {negative_slope})",
}


def is_recurrent_stack(model: dict) -> bool:
    layers = model.get("layers")
    return isinstance(layers, list) and any(
        isinstance(layer, dict) and any(kind in layer for kind in RECURRENT) for layer in layers
    )


def _cell(kind: str, j: int, size: int, below: str, bias: bool, nonlinearity: str, names):
    """The [model.recur] entries of recurrent layer l{j} reading ``below`` at step t."""
    w_ih, w_hh, b_ih, b_hh = (f"{w}_l{j}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    h, c = names["h"], names["c"]
    inputs = f"{w_ih} @ {below}" + (f" + {b_ih}" if bias else "")
    hidden = f"{w_hh} @ {h}[t-1]" + (f" + {b_hh}" if bias else "")
    if kind == "rnn":
        return {h: {"shape": [size], "step": f"{nonlinearity}({inputs} + {hidden})"}}
    s = size
    if kind == "lstm":
        z = names["z"]
        return {
            z: f"{inputs} + {hidden}",
            c: {
                "shape": [s],
                "step": f"sigmoid({z}[{s}:{2 * s}]) * {c}[t-1]"
                f" + sigmoid({z}[0:{s}]) * tanh({z}[{2 * s}:{3 * s}])",
            },
            h: {"shape": [s], "step": f"sigmoid({z}[{3 * s}:{4 * s}]) * tanh({c}[t])"},
        }
    gi, gh, r, u, n = (names[k] for k in ("gi", "gh", "r", "u", "n"))
    return {
        gi: inputs,
        gh: hidden,
        r: f"sigmoid({gi}[0:{s}] + {gh}[0:{s}])",
        u: f"sigmoid({gi}[{s}:{2 * s}] + {gh}[{s}:{2 * s}])",
        n: f"tanh({gi}[{2 * s}:{3 * s}] + {r} * {gh}[{2 * s}:{3 * s}])",
        h: {"shape": [s], "step": f"(1 - {u}) * {n} + {u} * {h}[t-1]"},
    }


def recurrent_model(doc: dict, model: dict, source: str) -> tuple[dict, dict]:
    """The stack ``model`` as a tensor model's [model] table, and the document with it
    (its [data] X and Y as the inputs x and y)."""
    _only(model, {"input", "layers", "loss"}, source, "model")
    shape = model.get("input")
    if not (isinstance(shape, list) and len(shape) == 2 and shape[0] == "T"):
        raise SpecError(
            source,
            "model.input",
            'a recurrent stack reads sequences: input = ["T", features], got'
            f" {_describe(shape) if shape is not None else 'nothing'}",
        )
    features = _positive_int(shape[1], source, "model.input")
    layers = model["layers"]
    params: dict[str, dict] = {}
    recur: dict[str, object] = {}
    lets: dict[str, str] = {}
    count = sum(1 for layer in layers if isinstance(layer, dict) and set(layer) & set(RECURRENT))
    below, width, j, ended = "x[t]", features, 0, False
    for k, layer in enumerate(layers, 1):
        where = f"model.layers[{k}]"
        if not isinstance(layer, dict):
            raise SpecError(
                source, where, f"expected a table such as {{ lstm = 16 }}, got {_describe(layer)}"
            )
        kinds = [kind for kind in RECURRENT if kind in layer]
        if len(kinds) > 1:
            raise SpecError(source, where, f"one layer kind per table, got {', '.join(kinds)}")
        if not kinds:
            ended = True
            below, width = _dense(layer, k, below, width, params, lets, source, count)
            continue
        kind = kinds[0]
        if ended:
            raise SpecError(
                source,
                where,
                "recurrent layers come first: a dense layer reads the last one's last state",
            )
        allowed = {kind, "bias", *({"nonlinearity"} if kind == "rnn" else set())}
        _only(layer, allowed, source, where)
        size = _positive_int(layer[kind], source, f"{where}.{kind}")
        bias = layer.get("bias", True)
        if not isinstance(bias, bool):
            raise SpecError(source, f"{where}.bias", "expected true or false")
        nonlinearity = _choice(layer, "nonlinearity", NONLINEARITIES, where, source)
        suffix = str(j) if count > 1 else ""
        names = {key: f"{key}{suffix}" for key in ("h", "c", "gi", "gh", "r", "u", "n")}
        names["z"] = f"gates{suffix}"
        bound = 1 / math.sqrt(size)
        gates = GATES[kind] * size
        shapes = {"weight_ih": [gates, width], "weight_hh": [gates, size]}
        if bias:
            shapes.update({"bias_ih": [gates], "bias_hh": [gates]})
        for w, dims in shapes.items():
            params[f"{w}_l{j}"] = {"shape": dims, "init": {"uniform": bound}}
        recur.update(_cell(kind, j, size, below, bias, nonlinearity, names))
        below, width, j = f"{names['h']}[t]", size, j + 1
    if not ended:
        raise SpecError(source, "model.layers", "end with a dense layer: { dense = outputs }")
    last = next(
        n for n in reversed(list(recur)) if isinstance(recur[n], dict) and n.startswith("h")
    )
    output = list(lets)[-1]
    lets = {
        ("yhat" if name == output else name): text.replace("@STATE", f"{last}[T]")
        for name, text in lets.items()
    }
    loss = model.get("loss")
    outputs = width
    named = list(NAMED_LOSSES)
    if not isinstance(loss, str) or loss not in named:
        raise SpecError(
            source,
            "model.loss",
            f"a recurrent stack takes a named loss{way_out(str(loss), named)}; write a formula"
            " loss in the model language ([model.recur] and [model.let])",
        )
    labels = loss in ("cross_entropy", "nll")
    table = {
        "inputs": {"x": ["T", features]},
        "targets": {"y": [] if labels else [outputs]},
        "params": params,
        "recur": recur,
        "let": lets,
        "output": "yhat",
        "loss": f"{loss}(yhat, y)",
    }
    new_doc = {key: value for key, value in doc.items() if key != "model"}
    data = doc.get("data")
    if isinstance(data, dict) and "dataset" not in data:
        renamed = {"X": "x", "Y": "y"}
        for key in data:
            if key not in renamed:
                raise SpecError(
                    source, f"data.{key}", "unknown field" + way_out(key, list(renamed))
                )
        new_doc["data"] = {renamed[key]: value for key, value in data.items()}
    return new_doc, table


def _dense(layer, k, below, width, params, lets, source, count):
    """A dense layer (torch.nn.Linear, then its activation) as a let of the model."""
    where = f"model.layers[{k}]"
    _only(layer, {"dense", "bias", "activation", "negative_slope"}, source, where)
    if "dense" not in layer:
        raise SpecError(
            source, f"{where}.dense", "missing: after the recurrent layers, dense layers"
        )
    size = _positive_int(layer["dense"], source, f"{where}.dense")
    bias = layer.get("bias", True)
    if not isinstance(bias, bool):
        raise SpecError(source, f"{where}.bias", "expected true or false")
    reads = "@STATE" if not lets else list(lets)[-1]
    params[f"W{k}"] = [size, width]
    text = f"W{k} @ {reads}"
    if bias:
        params[f"b{k}"] = [size]
        text += f" + b{k}"
    activation = _choice(layer, "activation", ACTIVATIONS, where, source)
    if "negative_slope" in layer and activation != "leaky_relu":
        raise SpecError(source, f"{where}.negative_slope", 'only activation = "leaky_relu" has it')
    slope = finite_number(layer.get("negative_slope", 0.01), source, f"{where}.negative_slope")
    if activation != "identity":
        text = ACTIVATIONS[activation].format(a=text, negative_slope=slope)
    lets[f"a{k}"] = text
    return f"a{k}", size


def _choice(layer: dict, key: str, choices, where: str, source: str) -> str:
    """``layer[key]``, one of ``choices`` (the first is the default)."""
    value = layer.get(key, next(iter(choices)))
    if value not in choices:
        raise SpecError(
            source, f"{where}.{key}", f"unknown {key} {value!r}" + way_out(str(value), choices)
        )
    return value
