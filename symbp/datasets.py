"""Datasets for the example runner (never for generated code): a real one that a package
ships, and sequences symbp makes itself, seeded.

A spec names one with ``[data] dataset = "digits"``; ``symbp run`` loads it here, holds
out a test split, trains the generated module on the rest and reports held-out accuracy
(or, for a regression, the held-out loss beside a baseline's).
"""

from __future__ import annotations

import numpy as np

from .errors import SpecError

DATASETS = {
    "digits": "scikit-learn's 8x8 handwritten digits (1797 images, 10 classes)",
    "sum_sign": "2000 sequences of 12 standard normal numbers, labelled 1 where their sum"
    " is positive (2 classes)",
    "sine": "2000 windows of 20 steps of a noisy sine (random frequency and phase, noise"
    " sd 0.05), each with the next value to predict",
}
# what a model trained on each needs: per-sample features (or the same as one image, or a
# sequence of steps of that many features) and the number of classes its cross-entropy
# output must have, or the number of outputs of a regression
DATASET_SHAPES = {
    "digits": {"features": 64, "image": (1, 8, 8), "classes": 10},
    "sum_sign": {"features": 1, "steps": 12, "classes": 2},
    "sine": {"features": 1, "steps": 20, "outputs": 1},
}
SEQUENCE_COUNT = 2000
SINE_NOISE = 0.05


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
        raise SpecError(
            source, "data.dataset", f"unknown dataset {name!r} (known: {', '.join(DATASETS)})"
        )
    if name in ("sum_sign", "sine"):
        X, y = _sequences(name)
        order = np.random.default_rng(seed).permutation(len(X))
        cut = int(len(X) * (1 - test_share))
        return X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]]
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


def _sequences(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The sequence datasets, drawn from a fixed seed (the same on every machine)."""
    rng = np.random.default_rng(20261204)
    steps = DATASET_SHAPES[name]["steps"]
    if name == "sum_sign":
        X = rng.standard_normal((SEQUENCE_COUNT, steps, 1))
        return X, (X.sum(axis=(1, 2)) > 0).astype(np.int64)
    frequency = rng.uniform(0.3, 0.9, (SEQUENCE_COUNT, 1))
    phase = rng.uniform(0, 2 * np.pi, (SEQUENCE_COUNT, 1))
    t = np.arange(steps + 1)
    wave = np.sin(frequency * t + phase) + SINE_NOISE * rng.standard_normal(
        (SEQUENCE_COUNT, steps + 1)
    )
    return wave[:, :steps, None], wave[:, steps:]


def baseline(name: str, X: np.ndarray, y: np.ndarray) -> tuple[str, float] | None:
    """A regression's reference point: for the sine, the mean squared error of repeating
    the window's last value."""
    if name != "sine":
        return None
    return "repeating the last value", float(np.mean((X[:, -1, :] - y) ** 2))
