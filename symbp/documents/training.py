"""The training paragraph of every derivation document: the optimizer's rule in words,
its options as a spec writes them, and the learning-rate schedule, if any."""

from __future__ import annotations

from ..optim import update_rule
from ..schedules import learning_rates
from .notation import TORCH_NAMES, _option_value


def training_context(train, samples: int | None) -> dict:
    """What the documents' templates read of [train] (``train`` a TrainSpec)."""
    rule = update_rule(train.optimizer, train.options)
    options = [(k, _option_value(v)) for k, v in rule.options.items() if k != "lr"]
    schedule = None
    if train.lr_schedule:
        rates = learning_rates(train.lr_schedule)
        schedule = {"torch": rates.torch_text, "words": list(rates.words)}
    return {
        "optimizer": train.optimizer,
        "torch": TORCH_NAMES[train.optimizer],
        "formulas": list(rule.formulas),
        "counts_steps": rule.counts_steps,
        "options": options,
        "options_text": ", ".join(f"{k} = {v}" for k, v in options),
        "lr": _option_value(train.lr),
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "shuffle": train.shuffle,
        "seed": train.seed,
        "samples": samples,
        "schedule": schedule,
    }
