"""The random expression models of the tests: the strategies are public API now, in
:mod:`symbp.strategies`; this module keeps the names the tests import."""

from __future__ import annotations

from symbp.strategies import (
    BINARY,
    CONSTANTS,
    INPUTS,
    KINKED,
    LETS,
    PARAMS,
    SMOOTH,
    formulas,
)
from symbp.strategies import LOSS_FORMULAS as LOSSES
from symbp.strategies import ExpressionModel as RandomModel
from symbp.strategies import expression_models as models

__all__ = [
    "BINARY",
    "CONSTANTS",
    "INPUTS",
    "KINKED",
    "LETS",
    "LOSSES",
    "PARAMS",
    "SMOOTH",
    "RandomModel",
    "formulas",
    "models",
]
