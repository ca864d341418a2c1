"""Check hand-written backprop against symbp's own derivation, numerically.

Each check renders symbp's float64 NumPy module for a spec (once per spec and process),
draws seeded random points as ``symbp check`` draws them, runs your code and symbp's at
each and compares the results entry by entry:

- :func:`assert_gradients`: ``fn(params, X, Y) -> (loss, grads)``, grads a dict
  parameter name -> array (NumPy, or anything ``np.asarray`` takes);
- :func:`assert_forward`: ``fn(params, X) -> output``, as the module's ``forward``;
- :func:`assert_torch_gradients`: a ``torch.nn.Module`` (a custom
  ``torch.autograd.Function`` inside it, say), its parameters set to symbp's random
  ones, its ``.grad`` after ``backward()`` in float64.

An array of up to ``max_entries`` entries (48) is compared in every entry, a larger one
in that many entries drawn without repetition (seeded). An entry matches when
``|yours - symbp's| <= max(atol, rtol * max |symbp's|)`` over the array: the error is
relative to the gradient's largest entry, absolute for a gradient that is zero or
nearly (a dead ReLU unit's). Every check returns a :class:`Verification` (the worst
error per array and what was compared) or raises :class:`VerificationError`, an
AssertionError naming per failing array its worst entry, both values there, the point
and how many entries were compared.

The points are :meth:`Reference.random_point`'s (``reference(spec).random_point(seed,
point, batch)`` reproduces one): X and Y as the generated module takes them (for
expression models X is ``(batch, len(inputs))``, Y ``(batch, len(targets))``; for
layer stacks X is ``(batch, features)`` and Y ``(batch, outputs)``, integer labels
``(batch,)`` under cross_entropy; for tensor models X and Y are dicts by name, None
without inputs). Your code receives copies: it may change them.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .check import MAX_ENTRIES, generated_module, guard_memory, relative_error, sampled_indices
from .check import random_point as _random_point
from .escape import terminal_line

RTOL = 1e-6
ATOL = 1e-10

__all__ = [
    "ATOL",
    "MAX_ENTRIES",
    "RTOL",
    "Comparison",
    "Reference",
    "Verification",
    "VerificationError",
    "assert_forward",
    "assert_gradients",
    "assert_torch_gradients",
    "reference",
]


# --- symbp's side: the reference module, cached per spec ------------------------------


class Reference:
    """symbp's derived program for one spec: ``spec``, ``derivation`` and ``module``
    (the generated float64 NumPy module: ``forward``, ``loss``, ``loss_and_grads``,
    ``PARAM_SHAPES``...)."""

    def __init__(self, spec, derivation, module):
        self.spec = spec
        self.derivation = derivation
        self.module = module

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.module.PARAM_SHAPES)

    def random_point(self, seed: int = 0, point: int = 0, batch: int = 4):
        """(params, X, Y) of point ``point`` of the checks run with ``seed``, float64."""
        params, X, Y, _ = _draw(self, seed, point, batch)
        return params, X, Y

    def forward(self, params, X=None):
        return self.module.forward(params, X)

    def loss(self, params, X=None, Y=None) -> float:
        return self.module.loss(params, X, Y)

    def loss_and_grads(self, params, X=None, Y=None):
        return self.module.loss_and_grads(params, X, Y)

    def assert_gradients(self, fn, **options) -> Verification:
        __tracebackhide__ = True
        return assert_gradients(self, fn, **options)

    def assert_forward(self, fn, **options) -> Verification:
        __tracebackhide__ = True
        return assert_forward(self, fn, **options)

    def assert_torch_gradients(self, module, loss_fn=None, **options) -> Verification:
        __tracebackhide__ = True
        return assert_torch_gradients(self, module, loss_fn, **options)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.module.PARAM_SHAPES.items())
        return f"<symbp reference {self.name} ({self.spec.source}): {shapes}>"


_CACHE: dict[tuple, tuple[object, Reference]] = {}
_LOCK = threading.Lock()
_FOLDER: tempfile.TemporaryDirectory | None = None  # the rendered modules, until exit
_MODULES = itertools.count()


def reference(spec) -> Reference:
    """The :class:`Reference` of ``spec``: a TOML file's path, a built-in example's name,
    a loaded spec, a Derivation, or a Reference (returned as it is). Deriving costs up
    to seconds, so each spec is derived and rendered once per process (a file again
    when its text changes)."""
    if isinstance(spec, Reference):
        return spec
    from .derive import Derivation

    if isinstance(spec, str | os.PathLike):
        from .spec import parse_spec, resolve

        source, text = resolve(os.fspath(spec))
        key: tuple = ("text", source, text)
        make = lambda: parse_spec(text, source)  # noqa: E731
    elif isinstance(spec, Derivation) or _is_spec(spec):
        key, make = ("object", id(spec)), lambda: spec
    else:
        raise TypeError(
            "spec must be a spec file's path, a built-in example's name or a loaded spec,"
            f" got {type(spec).__name__}"
        )
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key][1]
        made = _build(make())
        _CACHE[key] = (spec, made)  # the spec kept alive: its id stays its own
        return made


def _is_spec(value) -> bool:
    from .language.model import TensorModel
    from .spec.expression import ExpressionSpec
    from .spec.layers import LayerSpec

    return isinstance(value, ExpressionSpec | LayerSpec | TensorModel)


def _build(loaded) -> Reference:
    global _FOLDER
    from .derive import Derivation, derive

    # SymPy walks expressions recursively: deep models need more than the default 1000
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    derivation = loaded if isinstance(loaded, Derivation) else derive(loaded)
    guard_memory(derivation.spec, "checking")
    if _FOLDER is None:
        _FOLDER = tempfile.TemporaryDirectory(prefix="symbp_testing_")
    folder = tempfile.mkdtemp(dir=_FOLDER.name)  # two specs may share a name
    name = f"_symbp_testing_{derivation.spec.name}_{next(_MODULES)}"
    module = generated_module(derivation, Path(folder), name)
    return Reference(derivation.spec, derivation, module)


def _draw(ref: Reference, seed: int, point: int, batch: int):
    """Point ``point`` of ``seed``: its own generator, so that any point is drawn alone;
    it goes on to draw the sampled entries."""
    rng = np.random.default_rng([seed, point])
    params, X, Y = _random_point(ref.module, rng, batch)
    return params, X, Y, rng


# --- the results ----------------------------------------------------------------------


@dataclass
class Comparison:
    """One array (a parameter's gradient, the loss, the output) over the points: its
    worst relative error, the entry and point where it was worst and both values there,
    and how many of its entries each point compared."""

    name: str
    alias: str = ""  # the torch module's name for the parameter, where it differs
    error: float = 0.0
    index: tuple = ()
    point: int = 0
    yours: float = 0.0
    symbp: float = 0.0
    compared: int = 0
    size: int = 0
    ok: bool = True

    @property
    def entries(self) -> str:
        if self.compared < self.size:
            return f"sampled {self.compared} of {self.size} entries"
        return "the one entry" if self.size == 1 else f"all {self.size} entries"

    @property
    def title(self) -> str:
        """The name, with the torch parameter's where it differs: W1 (0.weight)."""
        return f"{self.name} ({self.alias})" if self.alias else self.name

    @property
    def where(self) -> str:
        """The worst entry: W1[0, 1] (0.weight); a scalar by its name alone."""
        index = f"[{', '.join(map(str, self.index))}]" if self.index else ""
        return f"{self.name}{index}" + (f" ({self.alias})" if self.alias else "")

    def line(self) -> str:
        return (
            f"{self.where}: relative error {self.error:.3g} at point {self.point}:"
            f" yours {self.yours:.10g}, symbp's {self.symbp:.10g} ({self.entries})"
        )


@dataclass
class Verification:
    """What one check compared: ``comparisons`` name -> :class:`Comparison`, ``ok``,
    the points compared and those skipped (symbp's loss not finite there)."""

    spec: str
    kind: str  # "gradients", "outputs" or "torch gradients"
    seed: int
    batch: int
    rtol: float
    atol: float
    points: int = 0
    skipped: int = 0
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    mapping: dict[str, str] = field(default_factory=dict)  # torch: symbp name -> module's
    problem: str = ""  # a failure that is not a value: a missing key, a wrong shape

    @property
    def ok(self) -> bool:
        return not self.problem and self.points > 0 and all(c.ok for c in self.comparisons.values())

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons.values() if not c.ok]

    @property
    def worst(self) -> dict[str, float]:
        return {name: c.error for name, c in self.comparisons.items()}

    def _compare(self, name, yours, ours, indices, point, alias="") -> None:
        a = np.array([yours[i] for i in indices], dtype=np.float64)
        b = np.array([ours[i] for i in indices], dtype=np.float64)
        # equal values (infinities too) and NaN against NaN match; NaN against a number
        # is infinitely wrong
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        a_clean = np.where(same, 0.0, np.where(np.isnan(a) | np.isnan(b), np.inf, a))
        b_clean = np.where(same | np.isnan(b), 0.0, b)
        # relative to symbp's largest entry of the whole array, sampled or not
        whole = np.abs(np.asarray(ours, dtype=np.float64))
        largest = float(np.max(whole[np.isfinite(whole)], initial=0.0))
        error = relative_error(a_clean, b_clean, floor=max(largest, self.atol / self.rtol))
        if np.isnan(error):  # infinity against infinity of the other sign
            error = float("inf")
        k = int(np.argmax(np.abs(a_clean - b_clean))) if len(a) else 0
        seen = name in self.comparisons
        c = self.comparisons.setdefault(name, Comparison(name, alias))
        c.compared, c.size = len(indices), int(np.prod(np.shape(ours), dtype=np.int64))
        if not seen or error > c.error:
            c.error, c.index, c.point = error, tuple(indices[k]), point
            c.yours, c.symbp = float(a[k]), float(b[k])
        c.ok = c.ok and error <= self.rtol

    def message(self) -> str:
        head = (
            f"{self.spec}: {self.kind} differ from symbp's (rtol {self.rtol:g}, atol"
            f" {self.atol:g}; seed {self.seed}, {self.points} point(s) of batch {self.batch}):"
        )
        lines = [head, *(f"  {c.line()}" for c in self.failures)]
        matching = [c for c in self.comparisons.values() if c.ok]
        if matching:
            lines.append("  matching: " + ", ".join(f"{c.title} ({c.error:.1g})" for c in matching))
        return "\n".join(lines)

    def summary(self) -> list[str]:
        """One line per array: name, worst error, entries compared, ok or FAILED."""
        return [
            f"{c.title:<20} {c.error:9.2e}  {c.entries:<28} {'ok' if c.ok else 'FAILED'}"
            for c in self.comparisons.values()
        ]

    def __repr__(self) -> str:
        state = "ok" if self.ok else "FAILED"
        arrays = ", ".join(
            f"{c.title} {c.error:.1e} ({c.compared}/{c.size})" for c in self.comparisons.values()
        )
        return (
            f"<Verification {self.kind} of {self.spec}: {state}, {self.points} point(s); {arrays}>"
        )


class VerificationError(AssertionError):
    """Your code and symbp's differ; ``result`` is the :class:`Verification`."""

    def __init__(self, message: str, result: Verification):
        super().__init__(message)
        self.result = result


def _fail(result: Verification, problem: str):
    __tracebackhide__ = True  # pytest shows the test's line, not these
    result.problem = terminal_line(f"{result.spec}: {problem}")
    raise VerificationError(result.problem, result)


def _finish(result: Verification) -> Verification:
    __tracebackhide__ = True  # pytest shows the test's line, not these
    if result.points == 0:
        raise RuntimeError(
            f"{result.spec}: symbp's loss was not finite at any of the {result.skipped}"
            f" point(s) of seed {result.seed}: nothing was compared; try another seed"
        )
    if result.failures:
        raise VerificationError(result.message(), result)
    return result


# --- your side: calling it and reading what it returns --------------------------------


def _settings(seed, points, batch, rtol, atol, max_entries) -> None:
    def integer(value, name, least):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")

    integer(seed, "seed", 0)
    integer(points, "points", 1)
    integer(batch, "batch", 1)
    if max_entries is not None:
        integer(max_entries, "max_entries", 1)
    if not (isinstance(rtol, int | float) and 0 < rtol < float("inf")):
        raise ValueError(f"rtol must be a positive number, got {rtol!r}")
    if not (isinstance(atol, int | float) and 0 <= atol < float("inf")):
        raise ValueError(f"atol must be a non-negative number, got {atol!r}")


def _call(fn, args, what: str, ref: Reference, seed: int, point: int):
    __tracebackhide__ = True  # pytest shows the test's line, not these
    try:
        return fn(*args)
    except Exception as err:
        raise RuntimeError(
            terminal_line(
                f"{ref.name}: {what} raised {type(err).__name__}: {err} (point {point},"
                f" seed {seed})"
            )
        ) from err


def _array(value, what: str, ref: Reference) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{ref.name}: {what} must be an array of numbers, got {type(value).__name__}"
        ) from None


def _scalar(value, what: str, ref: Reference) -> float:
    array = _array(value, what, ref)
    if array.size != 1:
        raise TypeError(f"{ref.name}: {what} must be a number, got an array of shape {array.shape}")
    return float(array.reshape(()))


def _names(names) -> str:
    return ", ".join(names)


def _check_grads(grads, shapes: dict, result: Verification, ref: Reference) -> dict:
    __tracebackhide__ = True  # pytest shows the test's line, not these
    if not isinstance(grads, Mapping):
        raise TypeError(
            f"{ref.name}: fn's grads must be a dict of parameter name -> array, got"
            f" {type(grads).__name__}"
        )
    missing = [k for k in shapes if k not in grads]
    if missing:
        _fail(
            result,
            f"fn's grads lack {_names(map(repr, missing))} (symbp's parameters: {_names(shapes)})",
        )
    extra = [k for k in grads if k not in shapes]
    if extra:
        _fail(
            result,
            f"fn's grads have {_names(map(repr, extra))}, which symbp's model lacks (its"
            f" parameters: {_names(shapes)})",
        )
    arrays = {}
    for name, shape in shapes.items():
        arrays[name] = _array(grads[name], f"fn's grads[{name!r}]", ref)
        if arrays[name].shape != tuple(shape):
            _fail(
                result,
                f"fn's grads[{name!r}] has shape {arrays[name].shape}; symbp's parameter"
                f" {name} has shape {tuple(shape)}",
            )
    return arrays


def _copies(*values):
    return tuple(copy.deepcopy(v) for v in values)


# --- the checks -----------------------------------------------------------------------


def _reported(kind: str):
    """Hand every check's outcome to the pytest plugin when it is loaded (its
    ``--symbp-report``): the Verification, or the error that ended the check."""

    def decorate(check):
        @functools.wraps(check)
        def run(spec, *args, **options):
            __tracebackhide__ = True  # pytest shows the test's line, not these
            plugin = sys.modules.get("symbp.pytest_plugin")
            if plugin is None:
                return check(spec, *args, **options)
            try:
                result = check(spec, *args, **options)
            except VerificationError as err:
                plugin.record(kind, err.result.spec, err.result, str(err))
                raise
            except Exception as err:
                plugin.record(kind, _spec_name(spec), None, str(err))
                raise
            plugin.record(kind, result.spec, result, "")
            return result

        return run

    return decorate


def _spec_name(spec) -> str:
    if isinstance(spec, str | os.PathLike):
        return os.fspath(spec)
    inner = getattr(spec, "spec", spec)  # a Reference's or a Derivation's spec
    return inner.name if isinstance(getattr(inner, "name", None), str) else repr(spec)


@_reported("gradients")
def assert_gradients(
    spec,
    fn,
    *,
    seed: int = 0,
    points: int = 3,
    batch: int = 4,
    rtol: float = RTOL,
    atol: float = ATOL,
    max_entries: int | None = MAX_ENTRIES,
) -> Verification:
    """Compare ``fn(params, X, Y) -> (loss, grads)`` with symbp's ``loss_and_grads`` at
    ``points`` seeded random points of ``batch`` samples: the loss and each gradient
    (every entry up to ``max_entries``, a seeded sample of that many beyond; None:
    every entry). Raises VerificationError (an AssertionError) on a mismatch, a
    missing or extra gradient or a wrong shape; returns the Verification."""
    __tracebackhide__ = True
    ref = reference(spec)
    _settings(seed, points, batch, rtol, atol, max_entries)
    result = Verification(ref.name, "gradients", seed, batch, rtol, atol)
    shapes = ref.param_shapes
    for point in range(points):
        params, X, Y, rng = _draw(ref, seed, point, batch)
        value, grads = ref.loss_and_grads(params, X, Y)
        if not np.isfinite(value):
            result.skipped += 1
            continue
        returned = _call(fn, _copies(params, X, Y), "fn(params, X, Y)", ref, seed, point)
        if not isinstance(returned, tuple | list) or len(returned) != 2:
            raise TypeError(
                f"{ref.name}: fn(params, X, Y) must return (loss, grads), got"
                f" {type(returned).__name__}"
            )
        yours = _scalar(returned[0], "fn's loss", ref)
        arrays = _check_grads(returned[1], shapes, result, ref)
        result._compare("loss", np.asarray(yours), np.asarray(value), [()], point)
        for name, shape in shapes.items():
            indices = sampled_indices(tuple(shape), rng, max_entries)
            result._compare(name, arrays[name], grads[name], indices, point)
        result.points += 1
    return _finish(result)


@_reported("outputs")
def assert_forward(
    spec,
    fn,
    *,
    seed: int = 0,
    points: int = 3,
    batch: int = 4,
    rtol: float = RTOL,
    atol: float = ATOL,
    max_entries: int | None = MAX_ENTRIES,
) -> Verification:
    """Compare ``fn(params, X) -> output`` with symbp's ``forward`` (the model's output
    for the batch, of its shape) at seeded random points, as :func:`assert_gradients`."""
    __tracebackhide__ = True
    ref = reference(spec)
    _settings(seed, points, batch, rtol, atol, max_entries)
    result = Verification(ref.name, "outputs", seed, batch, rtol, atol)
    for point in range(points):
        params, X, _, rng = _draw(ref, seed, point, batch)
        expected = np.asarray(ref.forward(params, X), dtype=np.float64)
        returned = _call(fn, _copies(params, X), "fn(params, X)", ref, seed, point)
        output = _array(returned, "fn's output", ref)
        if output.shape != expected.shape:
            _fail(
                result,
                f"fn's output has shape {output.shape}; symbp's forward gives {expected.shape}",
            )
        indices = sampled_indices(expected.shape, rng, max_entries)
        result._compare("output", output, expected, indices, point)
        result.points += 1
    return _finish(result)


# --- the torch form -------------------------------------------------------------------


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "assert_torch_gradients needs PyTorch (import torch failed); symbp itself does not"
        ) from None
    return torch


def _parameter_map(ref: Reference, module, param_map) -> dict[str, str]:
    """symbp's parameter name -> the module's: ``param_map``, else the same names, else
    the module's trainable parameters in order when their shapes are symbp's in order
    (torch.nn.Linear's weight is (out, in) and Conv2d's (out, in, kh, kw), as symbp's)."""
    shapes = ref.param_shapes
    named = dict(module.named_parameters())
    theirs = ", ".join(f"{k} {tuple(p.shape)}" for k, p in named.items()) or "none"
    if param_map is not None:
        if not isinstance(param_map, Mapping):
            raise TypeError(
                f"param_map must be a dict symbp name -> module parameter name, got"
                f" {type(param_map).__name__}"
            )
        unknown = [k for k in param_map if k not in shapes]
        if unknown:
            raise ValueError(
                f"{ref.name}: param_map names {_names(map(repr, unknown))}, not symbp"
                f" parameters (they are: {_names(shapes)})"
            )
        missing = [k for k in shapes if k not in param_map]
        if missing:
            raise ValueError(
                f"{ref.name}: param_map lacks symbp's {_names(missing)}"
                f" (the module's parameters: {theirs})"
            )
        for k, v in param_map.items():
            if v not in named:
                raise ValueError(
                    f"{ref.name}: param_map maps {k} to {v!r}, which the module lacks (its"
                    f" parameters: {theirs})"
                )
        mapping = dict(param_map)
    elif set(shapes) <= set(named):
        mapping = {k: k for k in shapes}
    else:
        trainable = [k for k, p in named.items() if p.requires_grad]
        in_order = [tuple(named[t].shape) for t in trainable] == [tuple(s) for s in shapes.values()]
        if not in_order:
            ours = ", ".join(f"{k} {tuple(s)}" for k, s in shapes.items())
            raise ValueError(
                f"{ref.name}: cannot match symbp's parameters ({ours}) with the module's"
                f" ({theirs}) by name or in order: pass param_map={{symbp name: module"
                " parameter name}"
            )
        mapping = dict(zip(shapes, trainable, strict=True))
    if len(set(mapping.values())) < len(mapping):
        raise ValueError(f"{ref.name}: param_map maps two symbp parameters to one: {mapping}")
    for k, v in mapping.items():
        if tuple(named[v].shape) != tuple(shapes[k]):
            raise ValueError(
                f"{ref.name}: module parameter {v!r} has shape {tuple(named[v].shape)};"
                f" symbp's {k} has shape {tuple(shapes[k])}"
            )
    unmapped = [k for k, p in named.items() if p.requires_grad and k not in mapping.values()]
    if unmapped:
        raise ValueError(
            f"{ref.name}: module parameter(s) {_names(map(repr, unmapped))} have no symbp"
            " counterpart: the module is not the spec's model (map them with param_map, or"
            " set requires_grad=False)"
        )
    return mapping


_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\(\s*([A-Za-z_]\w*)\s*,\s*([A-Za-z_]\w*)\s*\)\s*$")


def _spec_loss(ref: Reference, torch):
    """The spec's loss over torch tensors as ``loss(output, X, Y)``, where torch.nn has
    it: a layer stack's named loss; a tensor model's ``name(output, target)`` for a
    named loss, or the output itself. Else a one-line ValueError asking for loss_fn."""
    from .language.model import TensorModel
    from .losses import LOSSES
    from .spec.layers import LayerSpec

    spec = ref.spec
    if isinstance(spec, LayerSpec) and spec.custom_loss is None and spec.loss in LOSSES:
        loss = getattr(torch.nn, LOSSES[spec.loss].torch)()
        return lambda output, X, Y: loss(output, Y)
    if isinstance(spec, TensorModel):
        mean = spec.reduction == "mean"

        def reduce(each):
            if each.ndim > 1:
                each = each.flatten(1).mean(1)
            return each.mean() if mean else each.sum()

        if spec.loss_text.strip() == spec.output:
            return lambda output, X, Y: reduce(output) if output.ndim else output
        call = _CALL.match(spec.loss_text)
        if call and call[1] in LOSSES and call[2] == spec.output:
            name, target = call[1], call[3]
            loss = getattr(torch.nn, LOSSES[name].torch)(reduction="none")

            def of(output, X, Y):
                data = {**_as_dict(X, spec.inputs), **_as_dict(Y, spec.targets)}
                return reduce(loss(output, data[target]))

            if target in spec.inputs or target in spec.targets:
                return of
    raise ValueError(
        f"{ref.name}: the spec's loss {_loss_text(spec)!r} has no torch.nn counterpart"
        " here: pass loss_fn(output, Y)"
    )


def _loss_text(spec) -> str:
    return getattr(spec, "loss_text", None) or str(getattr(spec, "loss", ""))


def _as_dict(value, names) -> dict:
    if isinstance(value, dict):
        return value
    return {next(iter(names)): value} if value is not None and names else {}


def _tensors(value, torch, labels=()):
    """float64 tensors of an array or a dict of arrays; integer labels as torch.long."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _tensors(v, torch, labels=(k,) if k in labels else ()) for k, v in value.items()}
    array = np.asarray(value)
    if labels or np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))


def _module_inputs(ref: Reference, X, torch):
    """The module's call arguments: a layer stack's images as (N, C, H, W); a tensor
    model's one input as a tensor, several as keywords, none as no argument."""
    model = ref.module
    if X is None:
        return (), {}
    if isinstance(X, dict):
        tensors = _tensors(X, torch)
        return ((next(iter(tensors.values())),), {}) if len(tensors) == 1 else ((), tensors)
    shape = getattr(model, "INPUT_SHAPE", None)
    X = np.asarray(X).reshape(len(X), *shape) if shape else X
    return (_tensors(X, torch),), {}


def _module_targets(ref: Reference, Y, torch):
    labels = tuple(getattr(ref.module, "CLASSES", {}))
    tensors = _tensors(Y, torch, labels)
    if isinstance(tensors, dict) and len(tensors) == 1:
        return next(iter(tensors.values()))
    return tensors


@_reported("torch gradients")
def assert_torch_gradients(
    spec,
    module,
    loss_fn=None,
    *,
    param_map: Mapping[str, str] | None = None,
    seed: int = 0,
    points: int = 3,
    batch: int = 4,
    rtol: float = RTOL,
    atol: float = ATOL,
    max_entries: int | None = MAX_ENTRIES,
) -> Verification:
    """Check a torch.nn.Module's backward (a custom torch.autograd.Function's, say)
    against symbp's gradients, in float64 on a copy of the module.

    At each seeded point symbp's random parameters are copied into the module's (by
    name, by ``param_map`` symbp name -> module parameter name, or in order where the
    shapes agree: nn.Linear and nn.Conv2d lay out weights as symbp does); the module runs
    on X (a tensor; images as (N, C, H, W); a tensor model's inputs by keyword when
    there are several), ``loss_fn(output, Y)`` (default: the spec's loss, for the
    losses torch.nn has) gives the loss, ``backward()`` the ``.grad``s, compared with
    symbp's as :func:`assert_gradients` does, with the output and the loss."""
    __tracebackhide__ = True
    torch = _torch()
    ref = reference(spec)
    _settings(seed, points, batch, rtol, atol, max_entries)
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    work = copy.deepcopy(module).to(torch.float64)
    mapping = _parameter_map(ref, work, param_map)
    named = dict(work.named_parameters())
    if loss_fn is None:
        loss_of = _spec_loss(ref, torch)
    else:
        loss_of = lambda output, X, Y: loss_fn(output, Y)  # noqa: E731
    result = Verification(ref.name, "torch gradients", seed, batch, rtol, atol, mapping=mapping)
    for point in range(points):
        params, X, Y, rng = _draw(ref, seed, point, batch)
        value, grads = ref.loss_and_grads(params, X, Y)
        if not np.isfinite(value):
            result.skipped += 1
            continue
        expected = np.asarray(ref.forward(params, X), dtype=np.float64)
        with torch.no_grad():
            for ours, theirs in mapping.items():
                named[theirs].copy_(torch.from_numpy(np.asarray(params[ours], dtype=np.float64)))
        work.zero_grad(set_to_none=True)
        args, kwargs = _module_inputs(ref, X, torch)
        output = _call(functools.partial(work, **kwargs), args, "the module", ref, seed, point)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"{ref.name}: the module must return a tensor, got {type(output).__name__}"
            )
        Xt, Yt = _tensors(X, torch), _module_targets(ref, Y, torch)
        what = "loss_fn(output, Y)" if loss_fn is not None else "the spec's loss in torch"
        loss = _call(loss_of, (output, Xt, Yt), what, ref, seed, point)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"{ref.name}: {what} must return a one-element tensor")
        _call(loss.backward, (), "backward()", ref, seed, point)
        out = output.detach().cpu().numpy().astype(np.float64)
        if out.size != expected.size:
            _fail(
                result,
                f"the module's output has shape {out.shape}; symbp's forward gives"
                f" {expected.shape}",
            )
        result._compare("loss", np.asarray(float(loss.detach())), np.asarray(value), [()], point)
        indices = sampled_indices(expected.shape, rng, max_entries)
        result._compare("output", out.reshape(expected.shape), expected, indices, point)
        for ours, theirs in mapping.items():
            grad = named[theirs].grad
            if grad is None:
                _fail(
                    result,
                    f"module parameter {theirs!r} (symbp's {ours}) received no gradient"
                    " from backward()",
                )
            indices = sampled_indices(tuple(ref.param_shapes[ours]), rng, max_entries)
            alias = "" if ours == theirs else theirs
            result._compare(ours, grad.detach().cpu().numpy(), grads[ours], indices, point, alias)
        result.points += 1
    return _finish(result)
