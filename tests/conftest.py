"""Hypothesis profiles: "ci" (the default) draws the same examples in every fresh venv,
so that CI is repeatable; ``pytest --hypothesis-profile=explore`` draws new ones."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, suppress_health_check=[HealthCheck.too_slow], deadline=None
)
settings.register_profile("explore", deadline=None)
settings.load_profile("ci")
