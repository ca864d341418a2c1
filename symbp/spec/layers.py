"""Layer stacks (dense and convolutional networks): the spec, and the activations and
losses as scalar SymPy definitions.

Each activation is a formula in ``z``; its derivative comes from ``sympy.diff`` like any
other elementwise node, so a custom activation costs nothing extra. Named losses come
from the shared table of :mod:`symbp.losses`, in their numerically stable forms.

Convolutional stacks take ``input = [C, H, W]`` and the layers ``conv2d``,
``maxpool2d``, ``avgpool2d`` and ``flatten``, with torch.nn's parameter layouts and
output sizes; every layer's per-sample shape is worked out here, so that a shape error
is reported once, naming the layer and the shapes, before anything is derived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp

from ..errors import SpecError, way_out
from ..functions import leaky_relu, relu, sigmoid, softplus
from ..losses import LOSSES, y, yhat
from .fields import (
    TrainSpec,
    _describe,
    _only,
    _train_table,
    finite_number,
)
from .formula import parse_expression

z = sp.Symbol("z", real=True)


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

# per-element losses over the output yhat and the target y (mean over all elements),
# from the shared table: those without options (huber and smooth_l1 are the model
# language's), and the fused cross-entropy
ELEMENTWISE_LOSSES = {
    name: loss.element
    for name, loss in LOSSES.items()
    if loss.element is not None and not loss.keywords
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
    # "" for a dense layer or an activation alone; else one of IMAGE_OPS
    op: str = ""
    channels: int | None = None  # conv2d: output channels
    kernel: tuple[int, int] = (1, 1)  # (kh, kw) of conv2d and pooling
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # conv2d: zeros added on each side

    @property
    def has_params(self) -> bool:
        return self.dense is not None or self.op == "conv2d"

    @property
    def kind(self) -> str:
        """What the layer does, as the documents name it."""
        return self.op or ("dense" if self.dense is not None else "activation")


IMAGE_OPS = ("conv2d", "maxpool2d", "avgpool2d", "flatten")


@dataclass
class LayerSpec:
    name: str
    source: str
    input: int | tuple[int, int, int]  # features, or (channels, height, width)
    layers: list[Layer]
    loss: str
    train: TrainSpec
    data: tuple[list, list] | None
    description: str = ""
    seed: int = 0
    custom_loss: sp.Expr | None = None  # f(yhat, y) per output, summed over outputs
    dataset: str | None = None  # a packaged dataset the example runner loads
    # per-sample shape after each layer, the input first: (d,) or (C, H, W)
    shapes: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def element_loss(self) -> sp.Expr | None:
        """l(yhat, y) of one output element: the spec's formula or a named elementwise
        loss; None for the cross-entropy, which acts on whole rows."""
        if self.custom_loss is not None:
            return self.custom_loss
        return ELEMENTWISE_LOSSES.get(self.loss)

    @property
    def loss_elements(self) -> int:
        """Elements per sample that the batch loss averages over: every output for
        torch's named losses (the mean over all N d_K elements), one for a formula (its
        outputs are summed within a sample, then averaged over the batch)."""
        return 1 if self.custom_loss is not None else self.outputs

    @property
    def widths(self) -> list[int]:
        """Values per sample after each layer, the input first (C H W for an image)."""
        return [math.prod(shape) for shape in self.shapes]

    @property
    def input_width(self) -> int:
        return self.widths[0]

    @property
    def convolutional(self) -> bool:
        return len(self.shapes[0]) == 3

    @property
    def params(self) -> list[str]:
        names = []
        for layer in self.layers:
            if layer.has_params:
                names.append(f"W{layer.index}")
                if layer.bias:
                    names.append(f"b{layer.index}")
        return names

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """torch.nn's layouts: Linear W (out, in), Conv2d W (out, in, kh, kw); b (out,)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in self.layers:
            before = self.shapes[layer.index - 1]
            if layer.dense is not None:
                shapes[f"W{layer.index}"] = (layer.dense, before[0])
            elif layer.op == "conv2d":
                shapes[f"W{layer.index}"] = (layer.channels, before[0], *layer.kernel)
            else:
                continue
            if layer.bias:
                shapes[f"b{layer.index}"] = (shapes[f"W{layer.index}"][0],)
        return shapes

    def summary(self, layer: Layer) -> str:
        """One line on what ``layer`` does and the shapes it maps (per sample)."""
        before, after = self.shapes[layer.index - 1], self.shapes[layer.index]
        shapes = f"{'x'.join(map(str, before))} -> {'x'.join(map(str, after))}"
        activation = f", activation {layer.text}" if layer.text else ""
        if layer.op == "conv2d":
            (kh, kw), stride, padding = layer.kernel, layer.stride, layer.padding
            bias = "" if layer.bias else ", no bias"
            return (
                f"conv2d {before[0]} -> {layer.channels} channels, kernel {kh}x{kw}, stride "
                f"{_hw(stride)}, padding {_hw(padding)}{bias}{activation}: {shapes}"
            )
        if layer.op in ("maxpool2d", "avgpool2d"):
            (kh, kw) = layer.kernel
            return f"{layer.op} {kh}x{kw}, stride {_hw(layer.stride)}: {shapes}"
        if layer.op == "flatten":
            return f"flatten (C, H, W) order: {shapes}"
        if layer.dense is not None:
            bias = "" if layer.bias else " (no bias)"
            return f"dense {before[0]} -> {layer.dense}{bias}{activation}"
        return f"activation {layer.text}"

    def template_context(self) -> dict:
        """What the NumPy template needs beyond dense layers: parameter shapes and fan-ins,
        and for images the input shape."""
        table = [
            {"name": name, "shape": _tuple_text(shape), "fan_in": self.fan_in(name)}
            for name, shape in self.param_shapes().items()
        ]
        image = None
        if self.convolutional:
            image = {"shape": _tuple_text(self.shapes[0]), "width": self.widths[0]}
            image["shape_values"] = list(self.shapes[0])
        return {"param_table": table, "image": image}

    def fan_in(self, param: str) -> int:
        """The fan-in of torch's default initialization (uniform in +-1/sqrt(fan_in))."""
        return math.prod(self.param_shapes()[f"W{param[1:]}"][1:])

    @property
    def outputs(self) -> int:
        return self.widths[-1]


def _positive_int(value, source, where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(source, where, f"expected a positive integer, got {_describe(value)}")
    return value


def _pair(value, source, where, *, minimum: int = 1) -> tuple[int, int]:
    """An int or [a, b] (height, width) of integers >= minimum."""
    items = value if isinstance(value, list) else [value, value]
    if len(items) != 2:
        raise SpecError(source, where, f"expected an integer or [height, width], got {value!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            kind = "positive" if minimum == 1 else "non-negative"
            raise SpecError(
                source, where, f"expected {kind} integers (or [height, width]), got {value!r}"
            )
    return (items[0], items[1])


def _activation_of(raw, where, source) -> tuple[str | None, sp.Expr | None, str]:
    """(kind, f(z), text) of a layer's ``activation`` (None, None, "" without one)."""
    options = {}
    text = raw.get("activation")
    for key, owner in ACTIVATION_PARAMETERS.items():
        if key in raw:
            if text != owner:
                raise SpecError(
                    source,
                    f"{where}.{key}",
                    f'only activation = "{owner}" has {key} (this layer\'s: {text or "none"})',
                )
            options[key] = finite_number(raw[key], source, f"{where}.{key}")
    if text is None:
        return None, None, ""
    if not isinstance(text, str):
        raise SpecError(source, f"{where}.activation", "expected a name or a formula in z")
    if text in NAMED_ACTIVATIONS:
        formula = None if text == "softmax" else _activation(text, options)
        return text, formula, text
    if text.strip().isidentifier() and text.strip() != "z":
        raise SpecError(
            source,
            f"{where}.activation",
            f"unknown activation {text.strip()!r}"
            + way_out(text.strip(), NAMED_ACTIVATIONS)
            + "; or a formula in z",
        )
    formula, _ = parse_expression(
        text, {"z": z}, source=source, field=f"{where}.activation", allow_new_names=False
    )
    if z not in formula.free_symbols:
        raise SpecError(source, f"{where}.activation", "the formula does not use z")
    return "custom", formula, text


ACTIVATION_PARAMETERS = {"negative_slope": "leaky_relu", "alpha": "elu"}  # option: activation
ACTIVATION_OPTIONS = {"activation", *ACTIVATION_PARAMETERS}


def _layer(raw, index: int, source: str) -> Layer:
    where = f"model.layers[{index}]"
    if not isinstance(raw, dict):
        raise SpecError(
            source, where, f"expected a table such as {{ dense = 8 }}, got {_describe(raw)}"
        )
    ops = [key for key in IMAGE_OPS if key in raw]
    if len(ops) > 1 or (ops and "dense" in raw):
        raise SpecError(source, where, f"one layer kind per table, got {', '.join(ops)}")
    if ops:
        return _image_layer(raw, ops[0], index, source)
    fields = {"dense", "bias", "in_features", *ACTIVATION_OPTIONS}
    unknown = [key for key in raw if key not in fields]
    if unknown and "dense" not in raw and "activation" not in raw:
        kinds = ", ".join(("dense", *IMAGE_OPS, "activation"))
        raise SpecError(
            source,
            f"{where}.{unknown[0]}",
            f"not a layer kind symbp has{way_out(unknown[0], (), list_them=False)}"
            f" (layer kinds: {kinds})",
        )
    _only(raw, fields, source, where)
    dense = raw.get("dense")
    if dense is not None:
        dense = _positive_int(dense, source, f"{where}.dense")
    bias = raw.get("bias", True)
    if not isinstance(bias, bool):
        raise SpecError(source, f"{where}.bias", "expected true or false")
    if dense is None and "bias" in raw:
        raise SpecError(source, f"{where}.bias", "only a dense layer has a bias")
    if dense is None and "in_features" in raw:
        raise SpecError(source, f"{where}.in_features", "only a dense layer has input features")
    if "in_features" in raw:
        _positive_int(raw["in_features"], source, f"{where}.in_features")
    if dense is None and raw.get("activation") is None:
        raise SpecError(
            source,
            where,
            "a layer needs 'dense', 'conv2d', 'maxpool2d', 'avgpool2d', 'flatten' or 'activation'",
        )
    activation, formula, text = _activation_of(raw, where, source)
    return Layer(index, dense, bias, activation, formula, text)


def _image_layer(raw: dict, op: str, index: int, source: str) -> Layer:
    where = f"model.layers[{index}]"
    value = raw[op]
    if op == "flatten":
        _only(raw, {"flatten"}, source, where)
        if value is not True:
            raise SpecError(source, f"{where}.flatten", "expected true")
        return Layer(index, None, False, None, None, op=op)
    if op == "conv2d":
        _only(
            raw,
            {"conv2d", "kernel", "stride", "padding", "bias", *ACTIVATION_OPTIONS},
            source,
            where,
        )
        channels = _positive_int(value, source, f"{where}.conv2d")
        if "kernel" not in raw:
            raise SpecError(source, f"{where}.kernel", "missing (an integer or [kh, kw])")
        kernel = _pair(raw["kernel"], source, f"{where}.kernel")
        bias = raw.get("bias", True)
        if not isinstance(bias, bool):
            raise SpecError(source, f"{where}.bias", "expected true or false")
        activation, formula, text = _activation_of(raw, where, source)
        return Layer(
            index,
            None,
            bias,
            activation,
            formula,
            text,
            op=op,
            channels=channels,
            kernel=kernel,
            stride=_pair(raw.get("stride", 1), source, f"{where}.stride"),
            padding=_pair(raw.get("padding", 0), source, f"{where}.padding", minimum=0),
        )
    _only(raw, {op, "stride"}, source, where)
    kernel = _pair(value, source, f"{where}.{op}")
    stride = _pair(raw["stride"], source, f"{where}.stride") if "stride" in raw else kernel
    return Layer(index, None, False, None, None, op=op, kernel=kernel, stride=stride)


def _hw(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _tuple_text(shape: tuple[int, ...]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(map(str, shape))})"


def _shown(shape: tuple[int, ...]) -> str:
    return f"({', '.join(map(str, shape))})" if len(shape) > 1 else f"{shape[0]} features"


def _output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """torch.nn's output size: floor((size + 2 padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def layer_shapes(layers: list[Layer], input_shape: tuple[int, ...], raw_layers, source: str):
    """The per-sample shape after each layer, the input first; shape errors name the layer."""
    shapes = [input_shape]
    for layer, raw in zip(layers, raw_layers, strict=True):
        where = f"model.layers[{layer.index}]"
        before = shapes[-1]
        image = len(before) == 3
        if layer.op in ("conv2d", "maxpool2d", "avgpool2d"):
            if not image:
                raise SpecError(
                    source,
                    where,
                    f"{layer.op} needs an image input (channels, height, width), "
                    f"got {_shown(before)}",
                )
            c, h, w = before
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
            if kh > h + 2 * ph or kw > w + 2 * pw:
                padded = f" padded to {h + 2 * ph}x{w + 2 * pw}" if ph or pw else ""
                raise SpecError(
                    source,
                    where,
                    f"{layer.op} kernel {kh}x{kw} is larger than its input {_shown(before)}"
                    f"{padded}",
                )
            out_c = layer.channels if layer.op == "conv2d" else c
            shapes.append((out_c, _output_size(h, kh, sh, ph), _output_size(w, kw, sw, pw)))
        elif layer.op == "flatten":
            if not image:
                raise SpecError(
                    source, where, f"flatten needs an image input, got {_shown(before)}"
                )
            shapes.append((math.prod(before),))
        elif layer.dense is not None:
            if image:
                raise SpecError(
                    source,
                    where,
                    f"dense needs a flat input, got {_shown(before)}: "
                    "add { flatten = true } before it",
                )
            expected = raw.get("in_features")
            if expected is not None and expected != before[0]:
                came = (
                    f"flatten gives {before[0]} = {' x '.join(map(str, shapes[-2]))}"
                    if layers[layer.index - 2].op == "flatten"
                    else f"it gets {before[0]}"
                )
                raise SpecError(
                    source,
                    f"{where}.in_features",
                    f"dense expects {expected} input features, but {came}",
                )
            shapes.append((layer.dense,))
        else:
            shapes.append(before)
        if layer.activation == "softmax" and len(shapes[-1]) == 3:
            raise SpecError(
                source,
                f"{where}.activation",
                f"softmax needs a flat input, got {_shown(shapes[-1])}: flatten first",
            )
    if len(shapes[-1]) != 1:
        raise SpecError(
            source,
            "model.layers",
            f"the network ends with an image {_shown(shapes[-1])}: "
            "end with { flatten = true } or a dense layer",
        )
    return shapes


def _input_shape(value, source: str) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != 3:
            raise SpecError(
                source, "model.input", f"expected [channels, height, width], got {value!r}"
            )
        for item in value:
            _positive_int(item, source, "model.input")
        return tuple(value)
    return (_positive_int(value, source, "model.input"),)


def layer_spec(doc, model, name, description, source) -> LayerSpec:
    _only(model, {"input", "layers", "loss"}, source, "model")
    if "input" not in model:
        raise SpecError(source, "model.input", "missing (features, or [channels, height, width])")
    input_shape = _input_shape(model["input"], source)
    raw_layers = model["layers"]
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(source, "model.layers", "expected a non-empty list of layer tables")
    layers = [_layer(raw, i, source) for i, raw in enumerate(raw_layers, 1)]
    shapes = layer_shapes(layers, input_shape, raw_layers, source)
    loss = model.get("loss")
    custom = None
    if loss is None:
        raise SpecError(source, "model.loss", f"missing (one of {', '.join(NAMED_LOSSES)})")
    if isinstance(loss, str) and loss.strip().isidentifier() and loss.strip() not in ("yhat",):
        if loss not in NAMED_LOSSES:
            raise SpecError(
                source,
                "model.loss",
                f"unknown loss {loss.strip()!r}"
                + way_out(loss.strip(), NAMED_LOSSES)
                + "; or a formula in yhat and y",
            )
    if loss not in NAMED_LOSSES:
        # a formula in yhat and y per output, summed over the outputs of a sample
        custom = _formula_loss(loss, _outputs_of(shapes), source)
        if yhat not in custom.free_symbols:
            raise SpecError(source, "model.loss", "the formula does not use yhat")
    if "params" in doc:
        raise SpecError(source, "params", "layer stacks are initialized as torch.nn.Linear")
    if "predict" in doc:
        raise SpecError(source, "predict", "not supported for layer stacks")
    width = input_shape if len(input_shape) == 3 else input_shape[0]
    spec = LayerSpec(
        name,
        source,
        width,
        layers,
        loss,
        _train_table(doc, source),
        None,
        description,
    )
    spec.shapes = shapes
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
        numbers = [finite_number(v, source, f"{where}[{i}][{j}]") for j, v in enumerate(row)]
        if columns is not None and len(row) != columns:
            raise SpecError(
                source, f"{where}[{i}]", f"has {len(row)} values, the model needs {columns}"
            )
        rows.append(numbers)
    return rows


def _data(table, spec: LayerSpec, source: str):
    if not isinstance(table, dict):
        raise SpecError(source, "data", "expected a table with X and Y")
    if "dataset" in table:
        from ..datasets import DATASETS, check_fits

        _only(table, {"dataset"}, source, "data")
        name = table["dataset"]
        if not isinstance(name, str) or name not in DATASETS:
            raise SpecError(
                source,
                "data.dataset",
                f"unknown dataset {_describe(name)}" + way_out(name, DATASETS),
            )
        check_fits(name, spec.shapes[0], spec.outputs, spec.loss, source)
        spec.dataset = name
        return None
    _only(table, {"X", "Y"}, source, "data")
    for key in ("X", "Y"):
        if key not in table:
            raise SpecError(source, f"data.{key}", "missing")
    X = _matrix(table["X"], spec.input_width, source, "data.X")
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
            rows.append([finite_number(v, source, f"data.Y[{i}][{j}]") for j, v in enumerate(item)])
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


def _outputs_of(shapes) -> int:
    last = shapes[-1]
    return int(math.prod(last)) if isinstance(last, tuple) else int(last)


_NOT_PER_OUTPUT = (
    "a layer stack's formula loss is one formula of each output and its target, summed over"
    " the outputs: f(yhat, y), sum(f(yhat, y)), mean(...), or the same f of each yhat1, y1,"
    " yhat2, y2, ...; {why} (a tensor model takes any loss)"
)


def _formula_loss(text, outputs: int, source: str) -> sp.Expr:
    """A stack's formula loss as f(yhat, y), the loss of one output, summed over the
    outputs of a sample. Three ways to write it, one meaning:

    - ``(yhat - y)**2``: f itself, yhat and y one output and its target;
    - ``-sum(y*log(yhat))`` or ``mean(...)``: yhat and y the sample's vectors, reduced
      over the outputs (mean is the sum divided by k, the number of outputs);
    - ``(yhat1 - y1)**2 + (yhat2 - y2)**2``: the outputs by component, which must be
      the same f of each output (the derivation and every target are per output).
    """
    parts = {
        f"{base}{j}": sp.Symbol(f"{base}{j}", real=True)
        for base in ("yhat", "y")
        for j in range(1, outputs + 1)
    }

    def reduction(scale):
        def reduce(expr):
            if expr.free_symbols & set(parts.values()):
                raise SpecError(
                    source,
                    "model.loss",
                    _NOT_PER_OUTPUT.format(
                        why="sum and mean take yhat and y, not their components"
                    ),
                )
            return scale * sp.Add(
                *(
                    expr.xreplace({yhat: parts[f"yhat{j}"], y: parts[f"y{j}"]})
                    for j in range(1, outputs + 1)
                )
            )

        return reduce

    names = {"yhat": yhat, "y": y, **parts}
    expr, _ = parse_expression(
        text,
        names,
        source=source,
        field="model.loss",
        reductions={"sum": reduction(sp.Integer(1)), "mean": reduction(sp.Rational(1, outputs))},
    )
    symbols = expr.free_symbols
    if not (symbols & set(parts.values())):
        return expr  # f itself (or a reduction's body was free of yhat and y)
    if symbols & {yhat, y}:
        raise SpecError(
            source,
            "model.loss",
            _NOT_PER_OUTPUT.format(
                why="this one uses yhat or y outside sum and mean beside their components"
            ),
        )
    index = {parts[f"{base}{j}"]: j for base in ("yhat", "y") for j in range(1, outputs + 1)}
    per_output: dict[int, list[sp.Expr]] = {j: [] for j in range(1, outputs + 1)}
    constant = sp.Integer(0)
    for term in sp.Add.make_args(expr):
        touched = {index[s] for s in term.free_symbols if s in index}
        if not touched:
            constant += term
        elif len(touched) > 1:
            raise SpecError(
                source,
                "model.loss",
                _NOT_PER_OUTPUT.format(why=f"the term {term} mixes outputs {sorted(touched)}"),
            )
        else:
            per_output[touched.pop()].append(term)
    forms = [
        sp.Add(*terms).xreplace({parts[f"yhat{j}"]: yhat, parts[f"y{j}"]: y})
        for j, terms in per_output.items()
    ]
    for j, form in enumerate(forms[1:], start=2):
        if form != forms[0] and sp.simplify(form - forms[0]) != 0:
            raise SpecError(
                source,
                "model.loss",
                _NOT_PER_OUTPUT.format(
                    why=f"output {j}'s part, {form}, is not output 1's, {forms[0]}"
                ),
            )
    return forms[0] + constant / outputs
