"""Layer stacks for the tests: the description of a dense network that writes its own
TOML spec and the Hypothesis strategy for random stacks are public API now, in
:mod:`symbp.strategies` (this module keeps the names the tests import); here are the
test-only parts: data of a loss's kind and an independent PyTorch reference
(torch.nn.functional, written here from the description, not from symbp).
"""

from __future__ import annotations

import math

import numpy as np
from support import torch_namespace

from symbp.strategies import ACTIVATIONS as HYPOTHESIS_ACTIVATIONS
from symbp.strategies import (
    CUSTOM_ACTIVATIONS,
    CUSTOM_LOSSES,
    NAMED_ACTIVATIONS,
    LayerDef,
    layer_defs,
    layer_stacks,
)
from symbp.strategies import NAMED_LOSSES as LOSSES
from symbp.strategies import LayerStack as Stack

try:
    import torch
except ImportError:  # pragma: no cover - the torch references are then unused
    torch = None


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


def stacks(losses=LOSSES):
    """Random stacks (symbp.strategies.layer_stacks) whose loss is one of ``losses``:
    the tests' default is the named losses."""
    return layer_stacks(losses=losses)


__all__ = [
    "CUSTOM_ACTIVATIONS",
    "CUSTOM_LOSSES",
    "HYPOTHESIS_ACTIVATIONS",
    "LOSSES",
    "NAMED_ACTIVATIONS",
    "LayerDef",
    "Stack",
    "layer_defs",
    "random_batch",
    "random_params",
    "relative_difference",
    "stacks",
    "torch_activation",
    "torch_forward",
    "torch_loss",
    "torch_loss_and_grads",
    "torch_tensors",
]
