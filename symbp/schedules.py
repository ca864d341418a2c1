"""Learning-rate schedules, written once as SymPy expressions and printed by every target.

A schedule gives the learning rate of each epoch from the rate train() is called with,
as torch.optim.lr_scheduler's classes do when a training loop calls ``scheduler.step()``
once per epoch (the examples' way). Each entry is the class's closed form
(``_get_closed_form_lr``), which torch's step-by-step recursion equals up to rounding;
a sequence is torch's SequentialLR: each schedule takes over at its milestone and
counts its epochs from there.

The spec's ``[train] lr_schedule`` is one table ``{ name = "step", step_size = 2 }`` or a
list of them, every one after the first with the ``milestone`` epoch it starts at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

base_lr = sp.Symbol("lr", real=True)  # the rate train() is called with
epoch = sp.Symbol("epoch", integer=True, nonnegative=True)  # 0 for the first epoch


@dataclass(frozen=True)
class Schedule:
    """One torch.optim.lr_scheduler class: its options with torch's defaults (None where
    torch requires the option), and its closed form as a function of the options, the
    base rate and the epoch."""

    name: str
    torch_class: str
    defaults: dict[str, object]
    integers: tuple[str, ...]  # options that are epoch counts
    form: Callable[[dict, sp.Expr, sp.Expr], sp.Expr]
    words: Callable[[dict], str]


SCHEDULES: dict[str, Schedule] = {}


def schedule(
    name: str,
    torch_class: str,
    defaults: dict,
    words: Callable[[dict, str], str],
    integers: tuple[str, ...] = (),
):
    """Register the decorated closed form ``form(opts, lr, e)`` as schedule ``name``;
    ``words(opts, e)`` says it in words, with ``e`` the text of its epoch count."""

    def register(form):
        SCHEDULES[name] = Schedule(name, torch_class, defaults, integers, form, words)
        return form

    return register


def _num(value) -> sp.Expr:
    return sp.Integer(value) if isinstance(value, int) else sp.Float(value)


@schedule(
    "step",
    "StepLR",
    {"step_size": None, "gamma": 0.1},
    lambda o, e: f"lr_e = lr {o['gamma']}^floor({e} / {o['step_size']})",
    integers=("step_size",),
)
def _step(opts, lr, e):
    return lr * _num(opts["gamma"]) ** sp.floor(e / _num(opts["step_size"]))


@schedule(
    "exponential", "ExponentialLR", {"gamma": None}, lambda o, e: f"lr_e = lr {o['gamma']}^{e}"
)
def _exponential(opts, lr, e):
    return lr * _num(opts["gamma"]) ** e


@schedule(
    "cosine",
    "CosineAnnealingLR",
    {"T_max": None, "eta_min": 0.0},
    lambda o, e: (
        f"lr_e = {o['eta_min']} + (lr - {o['eta_min']}) (1 + cos(pi {e} / {o['T_max']})) / 2"
        if o["eta_min"]
        else f"lr_e = lr (1 + cos(pi {e} / {o['T_max']})) / 2"
    ),
    integers=("T_max",),
)
def _cosine(opts, lr, e):
    eta = _num(opts["eta_min"])
    return eta + (lr - eta) * (1 + sp.cos(sp.pi * e / _num(opts["T_max"]))) / 2


@schedule(
    "linear",
    "LinearLR",
    {"start_factor": 1.0 / 3, "end_factor": 1.0, "total_iters": 5},
    lambda o, e: (
        f"lr_e = lr ({o['start_factor']} + ({o['end_factor']} - {o['start_factor']})"
        f" min({o['total_iters']}, {e}) / {o['total_iters']})"
    ),
    integers=("total_iters",),
)
def _linear(opts, lr, e):
    start, end = _num(opts["start_factor"]), _num(opts["end_factor"])
    total = _num(opts["total_iters"])
    # min(total, e) as a choice: the warm-up's ramp, then its end
    ramp = lr * (start + (end - start) * e / total)
    return sp.Piecewise((ramp, e < total), (ramp.xreplace({epoch: total}), True))


@dataclass(frozen=True)
class Phase:
    """One schedule of a sequence, from its milestone epoch on."""

    name: str
    options: dict[str, object]
    milestone: int = 0


@dataclass(frozen=True)
class LearningRates:
    """The resolved schedule of a spec: its phases, the closed form lr_e(lr, e) and the
    rule in words, for comments and documents."""

    phases: tuple[Phase, ...]
    expr: sp.Expr
    words: tuple[str, ...] = field(default=())

    @property
    def torch_text(self) -> str:
        """How torch writes it, for comments: StepLR(opt, step_size=2, gamma=0.5)."""
        parts = []
        for phase in self.phases:
            entry = SCHEDULES[phase.name]
            args = ", ".join(f"{k}={v!r}" for k, v in phase.options.items())
            parts.append(f"{entry.torch_class}(optimizer, {args})")
        if len(parts) == 1:
            return parts[0]
        milestones = [phase.milestone for phase in self.phases[1:]]
        return f"SequentialLR(optimizer, [{', '.join(parts)}], milestones={milestones})"


def learning_rates(phases: tuple[Phase, ...]) -> LearningRates:
    """The closed form of a sequence of phases: each phase's form at its own epoch count
    e - milestone, chosen by the epoch (SequentialLR's bisect over the milestones)."""
    pieces, words = [], []
    for k, phase in enumerate(phases):
        entry = SCHEDULES[phase.name]
        opts = {**entry.defaults, **phase.options}
        form = entry.form(opts, base_lr, epoch - phase.milestone)
        text = entry.words(opts, f"(e - {phase.milestone})" if phase.milestone else "e")
        if len(phases) > 1:
            until = phases[k + 1].milestone if k + 1 < len(phases) else None
            span = f"{phase.milestone} <= e < {until}" if until else f"e >= {phase.milestone}"
            text = f"{text}  ({span})"
        words.append(text)
        pieces.append((form, phase))
    if len(pieces) == 1:
        expr = pieces[0][0]
    else:
        branches = [
            (form, epoch < phases[k + 1].milestone) for k, (form, _) in enumerate(pieces[:-1])
        ]
        expr = sp.Piecewise(*branches, (pieces[-1][0], True))
    return LearningRates(tuple(phases), expr, tuple(words))
