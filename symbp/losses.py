"""The losses symbp knows, one entry each, shared by every front end and target.

An elementwise loss is a SymPy formula of one prediction element ``yhat`` and its target
``y`` (keyword options as symbols), averaged over a sample's elements and then over the
batch, as torch.nn's losses do with reduction 'mean'; its numerically stable form is
chosen here, once: binary cross-entropy on logits as softplus(z) - z y, on
probabilities with each log clamped at -100 (torch.nn.BCELoss). A row loss (the
cross-entropy, the negative log-likelihood) acts on a whole vector of logits and has no
element formula; the model language writes it with logsumexp
(:mod:`symbp.language.library`), layer stacks with their fused cross-entropy op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .functions import clamped_log, softplus

yhat, y = sp.symbols("yhat y", real=True)
delta, beta = sp.symbols("delta beta", positive=True)


@dataclass(frozen=True)
class Loss:
    name: str
    torch: str  # the torch.nn loss it equals
    described: str  # how documents name it
    element: sp.Expr | None = None  # f(yhat, y) of one element; None for a row loss
    keywords: dict[str, float] = field(default_factory=dict)  # option -> default

    def element_with(self, options: dict[str, object]) -> sp.Expr:
        """The element formula with its options (torch's defaults where not given)."""
        values = {**self.keywords, **options}
        return self.element.xreplace(
            {sp.Symbol(k, positive=True): sp.sympify(v) for k, v in values.items()}
        )


def _huber() -> sp.Expr:
    d = yhat - y
    return sp.Piecewise((d**2 / 2, sp.Abs(d) < delta), (delta * (sp.Abs(d) - delta / 2), True))


def _smooth_l1() -> sp.Expr:
    d = yhat - y
    return sp.Piecewise((d**2 / (2 * beta), sp.Abs(d) < beta), (sp.Abs(d) - beta / 2, True))


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in [
        Loss("mse", "MSELoss", "mean squared error", (yhat - y) ** 2),
        Loss("l1", "L1Loss", "mean absolute error", sp.Abs(yhat - y)),
        Loss(
            "bce",
            "BCELoss",
            "binary cross-entropy",
            -(y * clamped_log(yhat) + (1 - y) * clamped_log(1 - yhat)),
        ),
        # softplus(z) - z y = max(z, 0) - z y + log(1 + exp(-|z|)): no overflow for any z
        Loss(
            "bce_with_logits",
            "BCEWithLogitsLoss",
            "binary cross-entropy on logits",
            softplus(yhat) - yhat * y,
        ),
        Loss("huber", "HuberLoss", "Huber loss", _huber(), {"delta": 1.0}),
        Loss("smooth_l1", "SmoothL1Loss", "smooth L1 loss", _smooth_l1(), {"beta": 1.0}),
        Loss(
            "cross_entropy", "CrossEntropyLoss", "cross-entropy", keywords={"label_smoothing": 0.0}
        ),
        Loss("nll", "NLLLoss", "negative log-likelihood"),
    ]
}
