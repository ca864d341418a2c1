"""The random tensor models of the tests: the strategy is public API now, in
:mod:`symbp.strategies` (:func:`~symbp.strategies.tensor_graphs`); this module keeps the
names the tests import."""

from __future__ import annotations

from symbp.strategies import TENSOR_SMOOTH as SMOOTH
from symbp.strategies import TensorGraph as TensorModelCase
from symbp.strategies import tensor_graphs as tensor_models

__all__ = ["SMOOTH", "TensorModelCase", "tensor_models"]
