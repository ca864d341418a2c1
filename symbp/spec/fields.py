"""Readers of the spec fields every kind of model shares: tables, numbers, [train], names.

symbp.spec.expression (scalar models), symbp.spec.layers (layer stacks) and
symbp.language (tensor models) read through these, so that a number, an unknown key or
an optimizer option is checked and reported the same way in each, and none needs the
others.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, field

from ..errors import SpecError, way_out
from ..optim import BOOLEAN_OPTIONS, CLIPPING, DEFAULTS, reserved_names
from ..schedules import SCHEDULES, Phase
from .formula import is_identifier

# Names the generated code itself uses; a model may not take them.
RESERVED = frozenset(dir(builtins)) | {
    "np",
    "math",
    "params",
    "grads",
    "state",
    "X",
    "Y",
    "N",
    "lr",
    "argv",
    "main",
    "train",
    "forward",
    "loss",
    "loss_and_grads",
    "init_params",
    "pi",
    # module-level names of the generated module
    "DTYPE",
    "INPUTS",
    "TARGETS",
    "OUTPUTS",
    "PARAM_SHAPES",
    "INITIAL_VALUES",
    "TRAIN_DEFAULTS",
    "OPTIMIZER",
    "OPTIMIZER_OPTIONS",
    "DATA",
    "PREDICT_AT",
    # the learning-rate schedule's function and the names of its loop
    "learning_rate",
    "base_lr",
    "epoch",
}
_STEP_SCALARS, _BUFFERS = reserved_names()
RESERVED |= _STEP_SCALARS  # the optimizers' per-step scalars (step_size, clr, ...)
# optimizer state per parameter (exp_avg_w1, ...), adjoints (d_w1) and private helpers;
# Adagrad's buffer "sum" as sum_ (sum itself is a builtin, summary a fine name)
RESERVED_PREFIXES = ("_", "d_", "sum_", *sorted(_BUFFERS - {"sum"}))


def _check_name(name: object, source: str, where: str, *, outputs_named: bool = False) -> None:
    """A name a model may give: not the generated code's, and (unless the model names
    its outputs itself, as a tensor model does) not yhat, the output's."""
    if not isinstance(name, str) or not is_identifier(name):
        raise SpecError(
            source, where, f"{name!r} is not a valid name (an identifier, not a keyword)"
        )
    if name in RESERVED:
        raise SpecError(source, where, f"'{name}' is reserved by the generated code; rename it")
    if name.startswith("yhat") and not outputs_named:
        raise SpecError(source, where, f"'{name}' is reserved for the model's output")
    if name.startswith(RESERVED_PREFIXES):
        raise SpecError(
            source, where, f"'{name}' starts like a name the generated code uses; rename it"
        )


@dataclass
class TrainSpec:
    optimizer: str = "sgd"
    options: dict[str, object] = field(default_factory=dict)  # everything but lr
    lr: float = 1e-3
    epochs: int = 100
    batch_size: int = 1
    shuffle: bool = False
    seed: int = 0
    lr_schedule: tuple[Phase, ...] = ()  # torch.optim.lr_scheduler's, stepped per epoch
    bptt: int | None = None  # truncated backpropagation through time: the last k steps


def _table(doc: dict, key: str, source: str, *, required=False, prefix="") -> dict:
    where = prefix + key
    if key not in doc:
        if required:
            raise SpecError(source, where, "missing table")
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise SpecError(source, where, f"expected a table, got {type(value).__name__}")
    return value


def _only(table: dict, allowed: set[str], source: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else key
            raise SpecError(source, where, "unknown field" + way_out(key, sorted(allowed)))


def finite_number(value: object, source: str, where: str) -> float:
    """A TOML number as a finite float64: nan and inf are refused (generated code could
    not write them), and so are integers beyond float64's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(source, where, f"expected a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise SpecError(source, where, "number too large (beyond float64, about 1.8e308)") from None
    if not math.isfinite(number):
        raise SpecError(source, where, f"must be a finite number, got {value}")
    return number


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _train_table(doc, source, recurrent: bool = False) -> TrainSpec:
    """[train] of a model; ``recurrent``: one with a recurrence, which takes ``bptt``."""
    table = _table(doc, "train", source)
    spec = TrainSpec()
    optimizer = table.get("optimizer", "sgd")
    if not isinstance(optimizer, str):
        known = ", ".join(DEFAULTS)
        raise SpecError(
            source,
            "train.optimizer",
            f"expected a name, got {_describe(optimizer)} (known: {known})",
        )
    if optimizer not in DEFAULTS:
        raise SpecError(
            source,
            "train.optimizer",
            f"unknown optimizer {optimizer!r}" + way_out(optimizer, DEFAULTS),
        )
    spec.optimizer = optimizer
    general = {"optimizer", "epochs", "batch_size", "shuffle", "seed", "lr_schedule", *CLIPPING}
    if recurrent:  # truncated backpropagation through time
        general.add("bptt")
    allowed = general | set(DEFAULTS[optimizer])
    for key, value in table.items():
        where = f"train.{key}"
        if key not in allowed:
            raise SpecError(
                source,
                where,
                f"unknown option for optimizer '{optimizer}'" + way_out(key, sorted(allowed)),
            )
        if key == "lr_schedule":
            spec.lr_schedule = _lr_schedule(value, source)
        elif key in ("epochs", "batch_size", "bptt"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(
                    source, where, f"expected a positive integer, got {_describe(value)}"
                )
            setattr(spec, key, value)
        elif key == "seed":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(
                    source, where, f"expected a non-negative integer, got {_describe(value)}"
                )
            spec.seed = value
        elif key == "shuffle" or key in BOOLEAN_OPTIONS:
            if not isinstance(value, bool):
                raise SpecError(source, where, f"expected true or false, got {_describe(value)}")
            if key == "shuffle":
                spec.shuffle = value
            else:
                spec.options[key] = value
        elif key == "betas":
            if not (isinstance(value, list) and len(value) == 2):
                raise SpecError(source, where, "expected two numbers [beta1, beta2]")
            betas = tuple(finite_number(v, source, where) for v in value)
            if not all(0.0 <= b < 1.0 for b in betas):
                raise SpecError(source, where, "each beta must be in [0, 1)")
            spec.options["betas"] = betas
        elif key != "optimizer":
            number = finite_number(value, source, where)
            if number < 0:
                raise SpecError(source, where, "must be a finite non-negative number")
            if key == "eps" and number == 0:
                raise SpecError(source, where, "must be positive (the update divides by it)")
            if key in CLIPPING and number == 0:
                raise SpecError(source, where, "must be positive (as torch.nn.utils)")
            if key == "rho" and number > 1:
                raise SpecError(source, where, "must be in [0, 1] (as torch.optim.Adadelta)")
            if key == "lr":
                if number == 0:
                    raise SpecError(source, where, "must be positive")
                spec.lr = number
            else:
                spec.options[key] = number
    if all(key in table for key in CLIPPING):
        raise SpecError(
            source, "train.clip_grad_value", "choose one of clip_grad_norm and clip_grad_value"
        )
    if "lr" not in table:
        spec.lr = float(DEFAULTS[optimizer]["lr"])
    if spec.options.get("nesterov") and not (
        spec.options.get("momentum", DEFAULTS[optimizer].get("momentum"))
        and not spec.options.get("dampening", 0.0)
    ):
        raise SpecError(
            source, "train.nesterov", "needs momentum > 0 and dampening = 0 (as torch.optim.SGD)"
        )
    return spec


def _lr_schedule(value, source: str) -> tuple[Phase, ...]:
    """[train] lr_schedule: one table { name = ..., options } or a list of them, each
    after the first with the epoch it takes over at (milestone), as SequentialLR."""
    tables = value if isinstance(value, list) else [value]
    if not tables or not all(isinstance(t, dict) for t in tables):
        raise SpecError(
            source,
            "train.lr_schedule",
            'expected a table such as { name = "step", step_size = 10 } or a list of them',
        )
    phases, last = [], 0
    for k, table in enumerate(tables):
        where = "train.lr_schedule" + (f"[{k}]" if isinstance(value, list) else "")
        name = table.get("name")
        if not isinstance(name, str) or name not in SCHEDULES:
            known = ", ".join(SCHEDULES)
            got = f"unknown schedule {name!r}" if isinstance(name, str) else "a name is needed"
            hint = way_out(name, SCHEDULES) if isinstance(name, str) else f" (known: {known})"
            raise SpecError(source, f"{where}.name", got + hint)
        entry = SCHEDULES[name]
        allowed = {"name", *entry.defaults, *(["milestone"] if k else [])}
        options: dict[str, object] = {}
        for key, item in table.items():
            if key not in allowed:
                problem = f"unknown option for schedule '{name}'"
                if key == "milestone":
                    problem = "the first schedule starts at epoch 0: no milestone"
                raise SpecError(source, f"{where}.{key}", problem + way_out(key, sorted(allowed)))
            if key == "name":
                continue
            if key == "milestone" or key in entry.integers:
                if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                    raise SpecError(
                        source, f"{where}.{key}", f"expected a positive integer, got {item!r}"
                    )
                options[key] = item
                continue
            number = finite_number(item, source, f"{where}.{key}")
            if number < 0 or (key in ("gamma", "start_factor") and number == 0):
                raise SpecError(source, f"{where}.{key}", "must be positive")
            if key in ("start_factor", "end_factor") and number > 1:
                raise SpecError(source, f"{where}.{key}", "must be at most 1 (as torch)")
            options[key] = number
        missing = [o for o, d in entry.defaults.items() if d is None and o not in options]
        if missing:
            raise SpecError(
                source, f"{where}.{missing[0]}", f"missing (schedule '{name}' needs it)"
            )
        milestone = options.pop("milestone", 0)
        if k and "milestone" not in table:
            raise SpecError(
                source, f"{where}.milestone", "missing: the epoch this schedule starts at"
            )
        if k and milestone <= last:
            raise SpecError(
                source, f"{where}.milestone", f"must come after the previous one ({last})"
            )
        last = milestone
        phases.append(Phase(name, options, milestone))
    return tuple(phases)
