"""Real datasets that a package ships, for the example runner (never for generated code).

A spec names one with ``[data] dataset = "digits"``; ``symbp run`` loads it here, holds
out a test split, trains the generated module on the rest and reports held-out accuracy.
"""

from __future__ import annotations

import numpy as np

from .errors import SpecError

DATASETS = {"digits": "scikit-learn's 8x8 handwritten digits (1797 images, 10 classes)"}


def load_dataset(name: str, source: str, seed: int = 0, test_share: float = 0.25):
    """(X_train, y_train, X_test, y_test): features scaled to [0, 1], integer labels,
    a seeded stratification-free shuffle split."""
    if name not in DATASETS:
        raise SpecError(source, "data.dataset", f"unknown dataset {name!r} (known: digits)")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SpecError(
            source,
            "data.dataset",
            "the digits dataset needs scikit-learn: pip install scikit-learn",
        ) from None
    digits = load_digits()
    X = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    cut = int(len(X) * (1 - test_share))
    train, test = order[:cut], order[cut:]
    return X[train], y[train], X[test], y[test]
