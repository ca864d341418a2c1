"""Random expression models from the spec's grammar: generated gradients against central
finite differences and against ``sympy.diff`` of the full per-sample loss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import RandomModel, models
from support import Kinks, SympyReference, central_differences, generate, relative_error

from symbp import stats
from symbp.spec import parse_spec

BATCH = 6
KINK_MARGIN = 1e-2  # samples this close to a kink are left out (FD steps are ~1e-4)
FD_TOLERANCE = 1e-5
SYMPY_TOLERANCE = 1e-8

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("random_models")


def point(spec, kinks: Kinks, seed: int):
    """Parameters in [-1.5, 1.5] and a batch in [-2, 2], away from every kink: samples
    near a kink are dropped, and parameters are redrawn if too few samples remain."""
    rng = np.random.default_rng(seed)
    for _ in range(5):
        params = {p: np.asarray(rng.uniform(-1.5, 1.5)) for p in spec.params}
        X = rng.uniform(-2.0, 2.0, size=(BATCH, len(spec.inputs)))
        Y = rng.uniform(-2.0, 2.0, size=(BATCH, len(spec.targets)))
        keep = kinks.distance(params, X, Y) > KINK_MARGIN
        if keep.sum() >= 2:
            return params, X[keep], Y[keep]
    return None


@SETTINGS
@given(model=models(), seed=st.integers(0, 2**32 - 1))
def test_gradients_match_finite_differences_and_sympy(folder, model: RandomModel, seed):
    spec = parse_spec(model.toml, "random_model.toml")
    module = generate(spec, folder)
    assert list(module.PARAM_SHAPES) == spec.params

    found = point(spec, Kinks(spec), seed)
    assume(found is not None)
    params, X, Y = found
    reference = SympyReference(spec)
    try:
        expected_loss, expected = reference(params, X, Y)
    except (OverflowError, ValueError, ZeroDivisionError):  # math.exp overflow and the like
        assume(False)
    assume(np.isfinite(expected_loss) and abs(expected_loss) < 1e8)
    assume(all(np.isfinite(g) for g in expected.values()))

    value, grads = module.loss_and_grads(params, X, Y)
    assert sorted(grads) == sorted(spec.params)
    assert value == pytest.approx(module.loss(params, X, Y), rel=1e-12, abs=1e-12)
    assert relative_error(value, expected_loss) <= SYMPY_TOLERANCE

    numeric = central_differences(lambda p: module.loss(p, X, Y), params)
    for name in spec.params:
        assert grads[name].shape == ()
        assert relative_error(grads[name], numeric[name]) <= FD_TOLERANCE, (name, "fd")
        assert relative_error(grads[name], expected[name]) <= SYMPY_TOLERANCE, (name, "sympy")


@pytest.mark.skipif(not hasattr(stats, "op_stats"), reason="symbp.stats has no op_stats yet")
@settings(SETTINGS, max_examples=20)
@given(model=models())
def test_generated_program_stays_within_five_times_the_forward(model: RandomModel):
    counts = stats.op_stats(parse_spec(model.toml, "random_model.toml"))
    assert counts.forward > 0
    assert counts.generated <= 5 * counts.forward, (counts.generated, counts.forward)
