"""Layer stacks for the tests: a plain description of a dense network that writes its
own TOML spec, an independent PyTorch reference (torch.nn.functional, written here from
the description, not from symbp), and a Hypothesis strategy for random stacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st
from support import torch_namespace

try:
    import torch
except ImportError:  # pragma: no cover - the torch references are then unused
    torch = None

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
LOSSES = ("mse", "l1", "bce", "bce_with_logits", "cross_entropy")
# custom losses: a formula in yhat and y per output, summed over the outputs of a
# sample, then averaged over the batch; each is defined for every real yhat and y
CUSTOM_LOSSES = (
    "(yhat - y)**2",
    "log(cosh(yhat - y))",
    "softplus(yhat) - y*yhat",
    "Abs(yhat - y) + 0.5*(yhat - y)**2",
    "yhat**2",
)


def _evaluate(text: str, values: dict):
    """A formula of the spec's grammar over torch tensors (test-side text only)."""
    code = compile(text.replace("^", "**"), "<formula>", "eval")
    return eval(code, {"__builtins__": {}}, {**torch_namespace(torch), **values})


def _custom_activation(text: str):
    """A formula in z as a function of torch tensors: torch's own function where the
    formula is one (silu, softplus), else the text evaluated over torch functions."""
    F = torch.nn.functional

    known = {"z*sigmoid(z)": F.silu, "log(1 + exp(z))": F.softplus}
    if text in known:
        return known[text]
    return lambda z: _evaluate(text, {"z": z})


CUSTOM_ACTIVATIONS = (
    "z*sigmoid(z)",
    "log(1 + exp(z))",
    "sin(z)",
    "tanh(z) + 0.1*z",
    "z/(1 + Abs(z))",
    "exp(-z**2)",
    "leaky_relu(z, 0.2)",
    "softplus(z) - 1",
)


@dataclass(frozen=True)
class LayerDef:
    """One entry of [model].layers."""

    dense: int | None = None
    activation: str | None = None
    bias: bool = True
    options: tuple[tuple[str, float], ...] = ()  # negative_slope, alpha

    def toml(self) -> str:
        parts = []
        if self.dense is not None:
            parts.append(f"dense = {self.dense}")
        if self.activation is not None:
            parts.append(f'activation = "{self.activation}"')
        if not self.bias:
            parts.append("bias = false")
        parts += [f"{k} = {v!r}" for k, v in self.options]
        return "{ " + ", ".join(parts) + " }"


@dataclass(frozen=True)
class Stack:
    """A dense network: an input width, its layers and a named loss."""

    input: int
    layers: tuple[LayerDef, ...]
    loss: str
    train: tuple[tuple[str, object], ...] = field(default=())

    @property
    def widths(self) -> list[int]:
        widths = [self.input]
        for layer in self.layers:
            widths.append(layer.dense if layer.dense is not None else widths[-1])
        return widths

    @property
    def outputs(self) -> int:
        return self.widths[-1]

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """W{l} (out, in) and b{l} (out,), l counted from 1 over all layers."""
        widths, shapes = self.widths, {}
        for index, layer in enumerate(self.layers, 1):
            if layer.dense is not None:
                shapes[f"W{index}"] = (layer.dense, widths[index - 1])
                if layer.bias:
                    shapes[f"b{index}"] = (layer.dense,)
        return shapes

    def toml(self, name: str = "stack", data=None) -> str:
        layers = ",\n".join(f"  {layer.toml()}" for layer in self.layers)
        lines = [
            f'name = "{name}"',
            "[model]",
            f"input = {self.input}",
            f"layers = [\n{layers},\n]",
            f'loss = "{self.loss}"',
        ]
        if self.train:
            lines.append("[train]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in self.train]
        if data is not None:
            X, Y = data
            lines += ["[data]", f"X = {_toml_value(X)}", f"Y = {_toml_value(Y)}"]
        return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))


# --- data of the loss's kind ------------------------------------------------------------


def random_params(stack: Stack, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """Weights around torch.nn.Linear's scale (times ``scale``), float64."""
    shapes, widths = stack.param_shapes, stack.widths
    params = {}
    for name, shape in shapes.items():
        fan_in = widths[int(name[1:]) - 1]
        params[name] = rng.uniform(-1.5, 1.5, size=shape) * scale / math.sqrt(fan_in)
    return params


def random_batch(stack: Stack, rng: np.random.Generator, n: int = 6):
    """(X, Y): standard normal inputs; targets of the loss's kind (class labels for
    cross_entropy, probabilities for the bce losses, reals otherwise)."""
    X = rng.normal(size=(n, stack.input))
    out = stack.outputs
    if stack.loss == "cross_entropy":
        Y = rng.integers(0, out, size=n)
    elif stack.loss.startswith("bce"):
        Y = rng.uniform(0.0, 1.0, size=(n, out))
    else:
        Y = rng.normal(size=(n, out))
    return X, Y


# --- the PyTorch reference ----------------------------------------------------------------


def torch_activation(layer: LayerDef):
    """The layer's activation as a function of torch tensors (None: the identity)."""
    F = torch.nn.functional

    options = dict(layer.options)
    name = layer.activation
    if name is None or name == "identity":
        return None
    table = {
        "relu": F.relu,
        "leaky_relu": lambda z: F.leaky_relu(z, options.get("negative_slope", 0.01)),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softplus": F.softplus,
        "elu": lambda z: F.elu(z, options.get("alpha", 1.0)),
        "gelu": lambda z: F.gelu(z, approximate="none"),
        "silu": F.silu,
        "softmax": lambda z: F.softmax(z, dim=1),
    }
    if name in table:
        return table[name]
    return _custom_activation(name)


def torch_forward(stack: Stack, params: dict, X):
    F = torch.nn.functional

    current = X
    for index, layer in enumerate(stack.layers, 1):
        if layer.dense is not None:
            current = F.linear(current, params[f"W{index}"], params.get(f"b{index}"))
        activation = torch_activation(layer)
        if activation is not None:
            current = activation(current)
    return current


def torch_loss(stack: Stack, output, Y):
    F = torch.nn.functional

    if stack.loss == "mse":
        return F.mse_loss(output, Y)
    if stack.loss == "l1":
        return F.l1_loss(output, Y)
    if stack.loss == "bce":
        return F.binary_cross_entropy(output, Y)
    if stack.loss == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(output, Y)
    if stack.loss == "cross_entropy":
        return F.cross_entropy(output, Y)
    # a custom formula: summed over the outputs of a sample, averaged over the batch
    per_element = torch.broadcast_to(_evaluate(stack.loss, {"yhat": output, "y": Y}), Y.shape)
    return per_element.sum(dim=1).mean()


def torch_tensors(stack: Stack, X, Y, dtype: str = "float64"):
    tdtype = getattr(torch, dtype)
    X = torch.as_tensor(np.asarray(X), dtype=tdtype)
    Y = np.asarray(Y)
    if stack.loss == "cross_entropy" and Y.ndim == 1:
        Y = torch.as_tensor(Y, dtype=torch.long)
    else:
        Y = torch.as_tensor(Y.reshape(len(Y), -1), dtype=tdtype)
    return X, Y


def torch_loss_and_grads(stack: Stack, params: dict, X, Y, dtype: str = "float64"):
    """PyTorch's batch loss and its gradients (autograd) at ``params``."""
    tdtype = getattr(torch, dtype)
    leaves = {
        k: torch.tensor(np.asarray(v), dtype=tdtype, requires_grad=True) for k, v in params.items()
    }
    X, Y = torch_tensors(stack, X, Y, dtype)
    value = torch_loss(stack, torch_forward(stack, leaves, X), Y)
    if value.requires_grad:
        value.backward()
    grads = {
        k: np.zeros(tuple(leaf.shape)) if leaf.grad is None else leaf.grad.numpy()
        for k, leaf in leaves.items()
    }
    return value.item(), grads


def relative_difference(actual, expected) -> float:
    """max |actual - expected| / max(1, max |expected|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


# --- random stacks ------------------------------------------------------------------------

HYPOTHESIS_ACTIVATIONS = (*NAMED_ACTIVATIONS, *CUSTOM_ACTIVATIONS)


@st.composite
def layer_defs(draw, last: bool = False, loss: str = "mse") -> LayerDef:
    kind = draw(st.sampled_from(("dense", "dense", "dense", "activation")))
    activation = draw(st.sampled_from((None, *HYPOTHESIS_ACTIVATIONS)))
    options: tuple[tuple[str, float], ...] = ()
    if activation == "leaky_relu":
        options = (("negative_slope", draw(st.sampled_from((0.01, 0.1, 0.3)))),)
    elif activation == "elu":
        options = (("alpha", draw(st.sampled_from((1.0, 0.5, 1.7)))),)
    if kind == "activation":
        return LayerDef(None, activation or "tanh", True, options)
    width = draw(st.integers(1, 6))
    return LayerDef(width, activation, draw(st.booleans()), options)


@st.composite
def stacks(draw, losses=LOSSES) -> Stack:
    """Depth 1-4, widths 1-6, named and custom activations, a loss of ``losses``. The
    last layer is dense; bce gets a sigmoid on it, cross_entropy at least 2 outputs."""
    loss = draw(st.sampled_from(losses))
    depth = draw(st.integers(1, 4))
    layers = [draw(layer_defs()) for _ in range(depth - 1)]
    width = draw(st.integers(2 if loss == "cross_entropy" else 1, 6))
    if loss == "bce":
        activation = "sigmoid"
    else:
        activation = draw(st.sampled_from((None, *HYPOTHESIS_ACTIVATIONS)))
    layers.append(LayerDef(width, activation, draw(st.booleans())))
    return Stack(draw(st.integers(1, 6)), tuple(layers), loss)
