"""Layer stacks (dense networks): the spec, and the activations and losses as scalar
SymPy definitions.

Each activation is a formula in ``z``; its derivative comes from ``sympy.diff`` like any
other elementwise node, so a custom activation costs nothing extra. Named losses are
written in their numerically stable forms.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .errors import SpecError
from .expr_parser import parse_expression
from .functions import clamped_log, leaky_relu, relu, sigmoid, softplus
from .spec import TrainSpec, _describe, _only, _train_table

z = sp.Symbol("z", real=True)
yhat, y = sp.symbols("yhat y", real=True)


def _activation(name: str, options: dict[str, float]) -> sp.Expr | None:
    """The scalar definition f(z) of a named activation (None for softmax)."""
    table = {
        "identity": lambda: z,
        "relu": lambda: relu(z),
        "leaky_relu": lambda: leaky_relu(z, sp.Float(options.get("negative_slope", 0.01))),
        "sigmoid": lambda: sigmoid(z),
        "tanh": lambda: sp.tanh(z),
        "softplus": lambda: softplus(z),
        "elu": lambda: sp.Piecewise(
            (z, z > 0), (sp.Float(options.get("alpha", 1.0)) * (sp.exp(z) - 1), True)
        ),
        "gelu": lambda: z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
        "silu": lambda: z * sigmoid(z),
    }
    return table[name]()


NAMED_ACTIVATIONS = (
    "identity",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softplus",
    "elu",
    "gelu",
    "silu",
    "softmax",
)

# per-element losses over the output yhat and the target y; mean over all elements
ELEMENTWISE_LOSSES = {
    "mse": (yhat - y) ** 2,
    "l1": sp.Abs(yhat - y),
    # log clamped at -100 as torch.nn.BCELoss
    "bce": -(y * clamped_log(yhat) + (1 - y) * clamped_log(1 - yhat)),
    # softplus(z) - z y = max(z, 0) - z y + log(1 + exp(-|z|)): no overflow for any z
    "bce_with_logits": softplus(yhat) - yhat * y,
}
NAMED_LOSSES = (*ELEMENTWISE_LOSSES, "cross_entropy")


@dataclass(frozen=True)
class Layer:
    index: int  # 1-based position in [model].layers
    dense: int | None  # output width of the dense part, None for an activation alone
    bias: bool
    activation: str | None  # a named activation, "softmax", "custom" or None
    formula: sp.Expr | None  # f(z) for elementwise activations
    text: str = ""  # the activation as the user wrote it


@dataclass
class LayerSpec:
    name: str
    source: str
    input: int
    layers: list[Layer]
    loss: str
    train: TrainSpec
    data: tuple[list, list] | None
    description: str = ""
    seed: int = 0
    custom_loss: sp.Expr | None = None  # f(yhat, y) per output, summed over outputs
    dataset: str | None = None  # a packaged dataset the example runner loads

    @property
    def widths(self) -> list[int]:
        """Feature width after each layer, the input first."""
        widths = [self.input]
        for layer in self.layers:
            widths.append(layer.dense if layer.dense is not None else widths[-1])
        return widths

    @property
    def params(self) -> list[str]:
        names = []
        for layer in self.layers:
            if layer.dense is not None:
                names.append(f"W{layer.index}")
                if layer.bias:
                    names.append(f"b{layer.index}")
        return names

    @property
    def outputs(self) -> int:
        return self.widths[-1]


def _positive_int(value, source, where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(source, where, f"expected a positive integer, got {_describe(value)}")
    return value


def _layer(raw, index: int, source: str) -> Layer:
    where = f"model.layers[{index}]"
    if not isinstance(raw, dict):
        raise SpecError(
            source, where, f"expected a table such as {{ dense = 8 }}, got {_describe(raw)}"
        )
    _only(raw, {"dense", "activation", "bias", "negative_slope", "alpha"}, source, where)
    dense = raw.get("dense")
    if dense is not None:
        dense = _positive_int(dense, source, f"{where}.dense")
    bias = raw.get("bias", True)
    if not isinstance(bias, bool):
        raise SpecError(source, f"{where}.bias", "expected true or false")
    if dense is None and "bias" in raw:
        raise SpecError(source, f"{where}.bias", "only a dense layer has a bias")
    text = raw.get("activation")
    if dense is None and text is None:
        raise SpecError(source, where, "a layer needs 'dense' or 'activation'")
    options = {}
    for key in ("negative_slope", "alpha"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(source, f"{where}.{key}", "expected a number")
            options[key] = float(value)
    if text is None:
        return Layer(index, dense, bias, None, None)
    if not isinstance(text, str):
        raise SpecError(source, f"{where}.activation", "expected a name or a formula in z")
    if text in NAMED_ACTIVATIONS:
        formula = None if text == "softmax" else _activation(text, options)
        return Layer(index, dense, bias, text, formula, text)
    formula, _ = parse_expression(
        text, {"z": z}, source=source, field=f"{where}.activation", allow_new_names=False
    )
    if z not in formula.free_symbols:
        raise SpecError(source, f"{where}.activation", "the formula does not use z")
    return Layer(index, dense, bias, "custom", formula, text)


def layer_spec(doc, model, name, description, source) -> LayerSpec:
    _only(model, {"input", "layers", "loss"}, source, "model")
    width = _positive_int(model.get("input"), source, "model.input")
    raw_layers = model["layers"]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(source, "model.layers", "expected a non-empty list of layer tables")
    layers = [_layer(raw, i, source) for i, raw in enumerate(raw_layers, 1)]
    loss = model.get("loss")
    custom = None
    if loss is None:
        raise SpecError(source, "model.loss", f"missing (one of {', '.join(NAMED_LOSSES)})")
    if loss not in NAMED_LOSSES:
        # a formula in yhat and y per output, summed over the outputs of a sample
        custom, _ = parse_expression(
            loss, {"yhat": yhat, "y": y}, source=source, field="model.loss"
        )
        if yhat not in custom.free_symbols:
            raise SpecError(source, "model.loss", "the formula does not use yhat")
    if "params" in doc:
        raise SpecError(source, "params", "layer stacks are initialized as torch.nn.Linear")
    if "predict" in doc:
        raise SpecError(source, "predict", "not supported for layer stacks")
    spec = LayerSpec(
        name, source, width, layers, loss, _train_table(doc, source), None, description
    )
    spec.seed = spec.train.seed
    spec.custom_loss = custom
    if loss == "cross_entropy" and spec.outputs < 2:
        raise SpecError(
            source,
            "model.loss",
            f"cross_entropy needs at least 2 outputs (classes), got {spec.outputs}",
        )
    if "data" in doc:
        spec.data = _data(doc["data"], spec, source)
    return spec


def _matrix(value, columns: int | None, source: str, where: str) -> list[list[float]]:
    if not isinstance(value, list) or not value:
        raise SpecError(source, where, "expected a non-empty list of rows")
    rows = []
    for i, row in enumerate(value):
        if not isinstance(row, list):
            row = [row]
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(
                    source, f"{where}[{i}][{j}]", f"expected a number, got {_describe(v)}"
                )
        if columns is not None and len(row) != columns:
            raise SpecError(
                source, f"{where}[{i}]", f"has {len(row)} values, the model needs {columns}"
            )
        rows.append([float(v) for v in row])
    return rows


def _data(table, spec: LayerSpec, source: str):
    if not isinstance(table, dict):
        raise SpecError(source, "data", "expected a table with X and Y")
    if "dataset" in table:
        from .datasets import DATASETS

        _only(table, {"dataset"}, source, "data")
        if table["dataset"] not in DATASETS:
            raise SpecError(
                source, "data.dataset", f"unknown dataset {_describe(table['dataset'])}"
            )
        spec.dataset = table["dataset"]
        return None
    _only(table, {"X", "Y"}, source, "data")
    for key in ("X", "Y"):
        if key not in table:
            raise SpecError(source, f"data.{key}", "missing")
    X = _matrix(table["X"], spec.input, source, "data.X")
    if spec.loss == "cross_entropy":
        Y = _labels(table["Y"], spec.outputs, source)
    else:
        Y = _matrix(table["Y"], spec.outputs, source, "data.Y")
    if len(X) != len(Y):
        raise SpecError(source, "data.Y", f"has {len(Y)} rows but data.X has {len(X)}")
    return X, Y


def _labels(value, classes: int, source: str) -> list[list[float]]:
    """Class labels as one-hot rows (integer labels or one-hot rows are accepted)."""
    if not isinstance(value, list) or not value:
        raise SpecError(source, "data.Y", "expected a non-empty list of class labels")
    rows = []
    for i, item in enumerate(value):
        if isinstance(item, list) and len(item) == 1:
            item = item[0]
        if isinstance(item, list):
            if len(item) != classes:
                raise SpecError(
                    source, f"data.Y[{i}]", f"has {len(item)} values, the model needs {classes}"
                )
            for j, v in enumerate(item):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise SpecError(
                        source, f"data.Y[{i}][{j}]", f"expected a number, got {_describe(v)}"
                    )
            rows.append([float(v) for v in item])
            continue
        if isinstance(item, bool) or not isinstance(item, int):
            raise SpecError(
                source, f"data.Y[{i}]", f"expected a class label, got {_describe(item)}"
            )
        if not 0 <= item < classes:
            raise SpecError(
                source, f"data.Y[{i}]", f"label {item} out of range for {classes} classes"
            )
        rows.append([1.0 if k == item else 0.0 for k in range(classes)])
    return rows
