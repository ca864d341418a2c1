"""``symbp check``: the generated module's gradients against central finite differences."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .derive import Derivation
from .errors import SpecError
from .targets.numpy.module import render_module

STEP = 1e-6
TOLERANCE = 1e-5


@dataclass
class CheckResult:
    worst: dict[str, float]  # parameter -> worst relative error over the points
    points: int  # points where the loss was finite

    @property
    def ok(self) -> bool:
        return self.points > 0 and all(err <= TOLERANCE for err in self.worst.values())


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_module(derivation: Derivation, folder: Path, name: str):
    """Write the float64 NumPy module of ``derivation`` into ``folder`` and import it
    as ``name`` (not entered in sys.modules): ``symbp check``'s module, and the
    reference that :mod:`symbp.testing` compares hand-written code with."""
    path = Path(folder) / f"{derivation.spec.name}.py"
    path.write_text(render_module(derivation, "float64"), encoding="utf-8")
    return load_module(path, name)


def relative_error(a: np.ndarray, b: np.ndarray, floor: float = 1.0) -> float:
    """max |a - b| / max(floor, max |b|): relative for large gradients, absolute (scaled
    by ``floor``) near zero."""
    scale = max(floor, float(np.max(np.abs(b), initial=0.0)))
    return float(np.max(np.abs(a - b), initial=0.0)) / scale


MAX_ENTRIES = 48  # entries checked per parameter array: larger arrays are sampled


def central_difference(model, params, X, Y, name: str, indices=None) -> np.ndarray:
    """(L(p + h) - L(p - h)) / 2h for the entries ``indices`` of parameter ``name``
    (all of them by default), in that order."""
    if indices is None:
        indices = list(np.ndindex(params[name].shape))
    shifted = {k: v.copy() for k, v in params.items()}
    array = shifted[name]
    numeric = np.zeros(len(indices))
    for k, index in enumerate(indices):
        original = array[index]
        array[index] = original + STEP
        up = model.loss(shifted, X, Y)
        array[index] = original - STEP
        down = model.loss(shifted, X, Y)
        array[index] = original
        numeric[k] = (up - down) / (2 * STEP)
    return numeric


def sampled_indices(shape: tuple, rng, limit: int | None = MAX_ENTRIES) -> list[tuple]:
    """Every index of an array of ``shape`` up to ``limit`` of them (MAX_ENTRIES; None:
    no limit); otherwise that many, drawn without repetition: a convolution's 60000
    weights cost two loss evaluations each, so a check of every entry would take minutes."""
    size = int(np.prod(shape))
    if limit is None or size <= limit:
        return list(np.ndindex(shape))
    flat = np.sort(rng.choice(size, limit, replace=False))
    return [tuple(int(i) for i in np.unravel_index(f, shape)) for f in flat]


def random_point(model, rng, batch: int = 8):
    """A random (parameters, X, Y) for ``model``.

    Expression models: parameters near their initial values; inputs and targets in
    [0.5, 2] (away from 0, where log, sqrt and 1/x are undefined or kinked). Layer
    stacks: torch-style initial weights, standard normal inputs, and targets of the
    loss's kind (class labels, probabilities or reals)."""
    if hasattr(model, "CLASSES"):  # a tensor model: inputs and targets by name
        return _tensor_point(model, rng, batch)
    if hasattr(model, "LAYER_WIDTHS"):
        params = {
            k: v.astype(np.float64) for k, v in model.init_params(int(rng.integers(1000))).items()
        }
        X = rng.normal(size=(batch, model.LAYER_WIDTHS[0]))
        out = model.LAYER_WIDTHS[-1]
        if model.LOSS == "cross_entropy":
            Y = rng.integers(0, out, size=batch)
        elif model.LOSS.startswith("bce"):
            Y = rng.uniform(0.0, 1.0, size=(batch, out))
        else:
            Y = rng.normal(size=(batch, out))
        return params, X, Y
    params = {
        k: np.asarray(v + rng.normal(0.0, 0.5, np.shape(v)), dtype=np.float64)
        for k, v in model.init_params(0).items()
    }
    X = rng.uniform(0.5, 2.0, size=(batch, len(model.INPUTS)))
    Y = rng.uniform(0.5, 2.0, size=(batch, len(model.TARGETS)))
    return params, X, Y


def _tensor_point(model, rng, batch: int):
    """Tensor models: parameters drawn as init_params draws them, moved off any constant
    start (a zero bias would sit on relu's kink); normal inputs (sequences of 2 to 6
    steps); class labels, or targets in [0, 1] (valid for every loss)."""
    params = {
        k: np.array(v + rng.normal(0.0, 0.1, np.shape(v)), dtype=np.float64)
        for k, v in model.init_params(int(rng.integers(1000))).items()
    }
    if not model.INPUTS and not model.TARGETS:
        return params, None, None
    steps = int(rng.integers(2, 7))  # a sequence's number of steps, the same for all
    X = {
        x: rng.normal(size=(batch, *(steps if d == "T" else d for d in shape)))
        for x, shape in model.INPUTS.items()
    }
    Y = {
        y: rng.integers(0, model.CLASSES[y], size=batch)
        if y in model.CLASSES
        else rng.uniform(0.0, 1.0, size=(batch, *(steps if d == "T" else d for d in shape)))
        for y, shape in model.TARGETS.items()
    }
    return params, X, Y


WARN_SECONDS = 10.0  # a check expected to take longer than this says so before it runs


def check_module(model, points: int = 5, seed: int = 0, warn=None) -> CheckResult:
    """Central differences against loss_and_grads at ``points`` seeded points. ``warn``
    receives one line when the check will take longer than WARN_SECONDS, estimated from
    the time of one loss evaluation measured at the first point."""
    rng = np.random.default_rng(seed)
    worst = {name: 0.0 for name in model.PARAM_SHAPES}
    finite = 0
    for point in range(points):
        params, X, Y = random_point(model, rng)
        value, grads = model.loss_and_grads(params, X, Y)
        if not np.isfinite(value):
            continue
        finite += 1
        if point == 0 and warn is not None:
            _warn_if_slow(model, params, X, Y, points, warn)
        for name in worst:
            indices = sampled_indices(params[name].shape, rng)
            numeric = central_difference(model, params, X, Y, name, indices)
            ours = np.array([grads[name][index] for index in indices])
            worst[name] = max(worst[name], relative_error(ours, numeric))
    return CheckResult(worst, finite)


def memory_estimate(spec) -> tuple[int, str]:
    """(bytes, field) that executing a layer stack's module in float64 needs at least:
    its parameters, their gradients and the copies a check perturbs (4 arrays of every
    parameter), and the field of the layer that holds most of them. Expression models
    have scalar parameters: (0, "")."""
    tensor = isinstance(getattr(spec, "params", None), dict)
    if tensor:
        shapes = spec.params
    else:
        shapes = spec.param_shapes() if hasattr(spec, "param_shapes") else {}
    if not shapes:
        return 0, ""
    sizes = {name: int(np.prod(shape, dtype=object)) for name, shape in shapes.items()}
    biggest = max(sizes, key=sizes.get)
    if tensor:
        return 4 * 8 * sum(sizes.values()), f"model.params.{biggest}"
    return 4 * 8 * sum(sizes.values()), f"model.layers[{int(biggest[1:])}]"  # 1-based, as W1


def guard_memory(spec, doing: str) -> None:
    """Refuse, with the figure, to run a module that would not fit in half this
    machine's memory (dense = 1000000000 would otherwise allocate until it is killed)."""
    needed, field = memory_estimate(spec)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 2**30
    if needed > total / 2:
        raise SpecError(
            spec.source,
            field,
            f"{doing} needs about {needed / 2**30:.1f} GiB (parameters, gradients and"
            f" copies in float64); this machine has {total / 2**30:.1f} GiB",
        )


def _warn_if_slow(model, params, X, Y, points: int, warn) -> None:
    start = time.perf_counter()
    model.loss(params, X, Y)
    once = time.perf_counter() - start
    entries = sum(min(int(np.prod(shape)), MAX_ENTRIES) for shape in model.PARAM_SHAPES.values())
    evaluations = 2 * entries * points
    seconds = evaluations * once
    if seconds > WARN_SECONDS:
        warn(
            f"the check evaluates the loss {evaluations:,} times ({entries:,} entries of"
            f" {len(model.PARAM_SHAPES)} parameters, at {points} point(s)), about"
            f" {seconds:.0f} s at {once * 1e3:.2g} ms each"
            + (f"; --points 1 takes about {seconds / points:.0f} s" if points > 1 else "")
        )


def check(derivation: Derivation, points: int = 5, seed: int = 0, warn=None) -> CheckResult:
    """Generate the float64 module in a temporary folder and check it."""
    guard_memory(derivation.spec, "checking")
    with tempfile.TemporaryDirectory() as folder:
        name = f"_symbp_check_{derivation.spec.name}"
        try:
            return check_module(generated_module(derivation, folder, name), points, seed, warn)
        finally:
            sys.modules.pop(name, None)
