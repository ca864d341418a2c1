"""symbp's pytest plugin: check hand-written backprop against symbp's derivation.

Loaded by its ``pytest11`` entry point (``symbp``) wherever symbp is installed, or with
``pytest -p symbp.pytest_plugin``. It provides

- the marker ``@pytest.mark.symbp(SPEC)``, SPEC a built-in example's name or a TOML
  file's path (relative to the test file's folder, or to the working directory);
- the fixture ``symbp_model``: symbp's :class:`symbp.testing.Reference` of the marked
  spec (``spec``, ``derivation``, ``module``, ``random_point(seed)``,
  ``loss_and_grads(params, X, Y)``, ``assert_gradients(fn)``, ``assert_forward(fn)``,
  ``assert_torch_gradients(module)``), or of each spec of an indirect
  ``@pytest.mark.parametrize("symbp_model", [...], indirect=True)``;
- ``pytest --symbp-report``: a summary, after the run, of every check that
  :mod:`symbp.testing` made (through the fixture or called directly): the test, the
  spec, each array's worst relative error and the entries compared, pass or fail.

It imports nothing heavy until a test asks for ``symbp_model``: it loads in every
pytest run of a project that installs symbp.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Record:
    test: str  # the node id of the test that ran the check
    kind: str  # "gradients", "outputs", "torch gradients"
    spec: str
    result: object  # a symbp.testing.Verification, or None when the check errored
    error: str  # the failure or error message; "" when it passed


class _Session:
    def __init__(self):
        self.records: list[Record] = []
        self.test = ""  # the node id of the test running now


# one per configured pytest session, innermost last (pytester runs sessions in sessions)
_SESSIONS: list[_Session] = []


def record(kind: str, spec: str, result, error: str) -> None:
    """Called by symbp.testing after each check."""
    if _SESSIONS:
        session = _SESSIONS[-1]
        session.records.append(Record(session.test, kind, spec, result, error))


def pytest_addoption(parser):
    group = parser.getgroup("symbp", "symbp: hand-written backprop against symbp's derivation")
    group.addoption(
        "--symbp-report",
        action="store_true",
        default=False,
        help="after the run, summarize every symbp.testing check: spec, worst errors, entries",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "symbp(spec): the spec (a built-in example's name or a TOML path) that the"
        " symbp_model fixture derives and checks against",
    )
    _SESSIONS.append(_Session())


def pytest_unconfigure(config):
    if _SESSIONS:
        _SESSIONS.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    session = _SESSIONS[-1] if _SESSIONS else None
    if session is not None:
        session.test = item.nodeid
    try:
        return (yield)
    finally:
        if session is not None:
            session.test = ""


def _spec_argument(request):
    if hasattr(request, "param"):
        return request.param
    marker = request.node.get_closest_marker("symbp")
    if marker is None:
        pytest.fail(
            "the symbp_model fixture needs a spec: mark the test @pytest.mark.symbp('quadratic')"
            " (a built-in example's name or a TOML path), or parametrize symbp_model with"
            " indirect=True",
            pytrace=False,
        )
    if marker.kwargs.keys() - {"spec"} or len(marker.args) + len(marker.kwargs) != 1:
        pytest.fail(
            "@pytest.mark.symbp takes one spec: @pytest.mark.symbp('quadratic') or"
            " @pytest.mark.symbp(spec='model.toml')",
            pytrace=False,
        )
    return marker.args[0] if marker.args else marker.kwargs["spec"]


def _beside_the_test(spec, request):
    """A relative spec path that is not a built-in's name and not found from the working
    directory, found beside the test file instead."""
    if not isinstance(spec, str | Path):
        return spec
    path = Path(spec)
    if path.is_absolute() or path.exists() or ("/" not in str(spec) and path.suffix != ".toml"):
        return spec
    beside = Path(request.path).parent / path
    return str(beside) if beside.exists() else spec


@pytest.fixture
def symbp_model(request):
    """symbp's reference for the test's spec (@pytest.mark.symbp(SPEC), or an indirect
    parametrization): a symbp.testing.Reference, derived once per spec and process."""
    from symbp.errors import SpecError
    from symbp.testing import reference

    spec = _beside_the_test(_spec_argument(request), request)
    try:
        return reference(spec)
    except (SpecError, TypeError) as err:
        pytest.fail(str(err), pytrace=False)


def _report_lines(records: list[Record]) -> list[str]:
    lines = []
    for r in records:
        result = r.result
        state = "ERROR" if result is None else ("PASS" if result.ok else "FAIL")
        where = r.test or "(outside a test)"
        if result is None:
            lines.append(f"{state} {where}: {r.kind} of {r.spec}: {r.error}")
            continue
        lines.append(
            f"{state} {where}: {r.kind} of {r.spec}, {result.points} point(s) of batch"
            f" {result.batch}, seed {result.seed}, rtol {result.rtol:g}"
        )
        if result.problem:
            lines.append(f"    {result.problem}")
        lines.extend(f"    {line}" for line in result.summary())
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not config.getoption("symbp_report") or not _SESSIONS:
        return
    records = _SESSIONS[-1].records
    terminalreporter.write_sep("=", "symbp verifications")
    if not records:
        terminalreporter.write_line("no symbp.testing check ran")
        return
    for line in _report_lines(records):
        terminalreporter.write_line(line)
    failed = sum(1 for r in records if r.result is None or not r.result.ok)
    terminalreporter.write_line(f"{len(records) - failed} passed, {failed} failed")
