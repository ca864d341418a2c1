"""Real datasets that a package ships, for the example runner (never for generated code).

A spec names one with ``[data] dataset = "digits"``; ``symbp run`` loads it here, holds
out a test split, trains the generated module on the rest and reports held-out accuracy.
"""

from __future__ import annotations

import numpy as np

from .errors import SpecError

DATASETS = {"digits": "scikit-learn's 8x8 handwritten digits (1797 images, 10 classes)"}
# what a model trained on each needs: per-sample features (or the same as one image) and
# the number of classes its cross-entropy output must have
DATASET_SHAPES = {"digits": {"features": 64, "image": (1, 8, 8), "classes": 10}}


def check_fits(name: str, input_shape: tuple[int, ...], outputs: int, loss: str, source: str):
    """That a model can train on dataset ``name``: checked with the spec, before anything
    is written, rather than as a shape error from the generated module."""
    need = DATASET_SHAPES[name]
    if tuple(input_shape) not in ((need["features"],), need["image"]):
        image = "x".join(map(str, need["image"]))
        raise SpecError(
            source,
            "model.input",
            f"the {name} dataset has {need['features']} features per sample (input ="
            f" {need['features']}, or [{', '.join(map(str, need['image']))}] as {image} images);"
            f" got {list(input_shape) if len(input_shape) > 1 else input_shape[0]}",
        )
    if loss != "cross_entropy" or outputs != need["classes"]:
        raise SpecError(
            source,
            "model.loss",
            f"the {name} dataset is {need['classes']}-class labels: it needs loss ="
            f' "cross_entropy" over {need["classes"]} outputs (got {loss!r} over {outputs})',
        )


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
