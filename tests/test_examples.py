"""The built-in examples end to end: checked gradients, reproducible generation, clean
and dependency-free modules, the course's numbers, and the module's own entry points."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from support import (
    OPTIMIZER_CASES,
    REPO,
    SympyReference,
    central_differences,
    data_arrays,
    generate,
    import_file,
    optimizer_stack,
    relative_error,
)

from symbp.cli import main as symbp_main
from symbp.derive import derive
from symbp.language.model import TensorModel
from symbp.spec import builtin_names, load, parse_spec
from symbp.spec.expression import ExpressionSpec
from symbp.targets.numpy.module import render_module, render_tests

# expression models: the layer stacks have their own tests (tests/test_layers.py), the
# tensor models theirs (tests/test_tensor_examples.py); the tests of what every generated
# module must be (deterministic, ruff-clean, standalone) run on those too
NAMES = [n for n in builtin_names() if isinstance(load(n), ExpressionSpec)]
TENSOR_NAMES = [n for n in builtin_names() if isinstance(load(n), TensorModel)]
MODULE_NAMES = NAMES + TENSOR_NAMES


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return {name: render_module(derive(load(name))) for name in MODULE_NAMES}


def test_the_course_examples_are_built_in():
    assert {"logistic", "quadratic", "tanh_units"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_symbp_check_passes(name, capsys):
    assert symbp_main(["check", name]) == 0
    out = capsys.readouterr().out
    assert "gradients match finite differences" in out
    for param in load(name).params:
        assert re.search(rf"^{param}\s+\S+\s+ok$", out, re.MULTILINE), param


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences_and_sympy(folder, name):
    spec = load(name)
    module = generate(spec, folder)
    reference = SympyReference(spec)
    X, Y = data_arrays(spec)
    rng = np.random.default_rng(2024)
    for _ in range(3):
        params = {k: np.asarray(v + rng.normal(0.0, 0.5)) for k, v in module.init_params(0).items()}
        value, grads = module.loss_and_grads(params, X, Y)
        expected_value, expected = reference(params, X, Y)
        numeric = central_differences(lambda p: module.loss(p, X, Y), params)
        assert relative_error(value, expected_value) <= 1e-12
        assert relative_error(module.loss(params, X, Y), expected_value) <= 1e-12
        assert sorted(grads) == sorted(spec.params)
        for p in spec.params:
            assert relative_error(grads[p], numeric[p]) <= 1e-7, p
            assert relative_error(grads[p], expected[p]) <= 1e-10, p


# --- the generated text ------------------------------------------------------------------


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_generation_is_deterministic_within_a_process(name, sources):
    again = render_module(derive(load(name)))
    assert again == sources[name]
    assert render_tests(derive(load(name)), name) == render_tests(derive(load(name)), name)


RENDER_ALL = """
import json, sys
from symbp.derive import derive
from symbp.spec import builtin_names, load
from symbp.targets.numpy.module import render_module
json.dump({n: render_module(derive(load(n))) for n in sys.argv[1:]}, sys.stdout)
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_generation_does_not_depend_on_the_hash_seed(sources, hash_seed):
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", RENDER_ALL, *MODULE_NAMES],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    assert json.loads(result.stdout) == sources


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", MODULE_NAMES)
def test_generated_module_is_ruff_clean(name, dtype):
    """Checked as the file it becomes in generated/ (the project's config and ignores)."""
    source = render_module(derive(load(name)), dtype)
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--stdin-filename", f"generated/{name}.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [(name, "") for name in sorted(OPTIMIZER_CASES)]
    + [
        ("adam", "clip_grad_norm = 1.0\n"),
        (
            "sgd",
            'lr_schedule = [{ name = "linear" }, { name = "cosine", T_max = 9, milestone = 5 }]\n',
        ),
    ],
)
def test_every_optimizer_prints_ruff_clean_code(optimizer, extra):
    """A stack small enough for the float loop, which prints the rule once per parameter
    element (the longest lines a rule makes), for each registry entry."""
    from symbp.targets.c.target import render_c_loader
    from symbp.targets.cuda.target import render_loader, unsupported

    text = optimizer_stack(optimizer, extra)
    derivation = derive(parse_spec(text, "opt.toml"))
    sources = {"opt.py": render_module(derivation, "float64")}
    assert "def _train_floats" in sources["opt.py"]
    sources["opt_c.py"] = render_c_loader(derivation, "opt.c", "float64")
    if unsupported(derivation) is None:  # the loaders print the step scalars in Python
        sources["opt_cuda.py"] = render_loader(derivation, "opt.cu", "float32")
    for name, source in sources.items():
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--stdin-filename", f"generated/{name}", "-"],
            input=source,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert result.returncode == 0, name + result.stdout + result.stderr


def _guarded_by_import_error(tree: ast.Module, node: ast.AST) -> bool:
    """Whether ``node`` sits in the body of a ``try`` that catches ImportError."""
    for candidate in ast.walk(tree):
        if isinstance(candidate, ast.Try) and any(
            node is inner for stmt in candidate.body for inner in ast.walk(stmt)
        ):
            caught = [h.type for h in candidate.handlers]
            if any(isinstance(t, ast.Name) and t.id == "ImportError" for t in caught):
                return True
    return False


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_generated_module_imports_only_numpy_and_the_standard_library(name, sources):
    tree = ast.parse(sources[name])
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [(node.module or "").split(".")[0]]
        else:
            continue
        for module in modules:
            if module in allowed:
                continue
            # an optional extra (matplotlib for --plot) may only be tried, never required
            assert node not in tree.body and _guarded_by_import_error(tree, node), module
    top = {alias.name for n in tree.body if isinstance(n, ast.Import) for alias in n.names}
    assert "numpy" in top


# --- the course's numbers and the two training paths -------------------------------------


def test_quadratic_reproduces_the_course_run(folder):
    module = generate(load("quadratic"), folder)
    X, Y = module._load_data(None)
    params = module.init_params(0)
    assert {k: float(v) for k, v in params.items()} == {"w1": 1.0, "w2": 1.0, "b": 1.0}
    trained, losses = module.train(params, X, Y)
    assert len(losses) == 10000
    assert float(trained["w1"]) == pytest.approx(2.9767, abs=1e-4)
    assert float(trained["w2"]) == pytest.approx(2.1572, abs=1e-4)
    assert float(trained["b"]) == pytest.approx(2.7839, abs=1e-4)
    assert float(module.forward(trained, np.array([[6.0]]))[0]) == pytest.approx(122.9, abs=0.05)
    # train() leaves its arguments alone
    assert {k: float(v) for k, v in params.items()} == {"w1": 1.0, "w2": 1.0, "b": 1.0}


def _with_sgd(name: str):
    spec = load(name)
    spec.train.optimizer, spec.train.options = "sgd", {}
    return spec


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_per_sample_float_path_equals_the_vectorized_program(folder, name, shuffle):
    """train(batch_size=1) in float64 runs a separately printed float program; it must
    match loss_and_grads on one-row batches plus the SGD rule, with the same shuffling."""
    module = generate(_with_sgd(name), folder)
    X, Y = module._load_data(None)
    lr, epochs, seed = 0.01, 4, 3
    trained, losses = module.train(
        module.init_params(1), X, Y, epochs=epochs, batch_size=1, lr=lr, seed=seed, shuffle=shuffle
    )

    params = module.init_params(1)
    rng = np.random.default_rng(seed)
    expected_losses = []
    for _ in range(epochs):
        order = rng.permutation(len(X)) if shuffle else np.arange(len(X))
        total = 0.0
        for i in order:
            value, grads = module.loss_and_grads(params, X[i : i + 1], Y[i : i + 1])
            total += value
            params = {k: params[k] - lr * grads[k] for k in params}
        expected_losses.append(total / len(X))
    for k in params:
        assert float(trained[k]) == pytest.approx(float(params[k]), rel=1e-12, abs=1e-15), k
    assert losses == pytest.approx(expected_losses, rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_mini_batches_and_shuffling_follow_the_documented_order(folder, name):
    """Batches of 4 (the last one shorter), each epoch's order from default_rng(seed);
    an epoch's loss is the mean per-sample loss over its batches."""
    module = generate(_with_sgd(name), folder)
    X, Y = module._load_data(None)
    lr, epochs, seed, size = 0.02, 3, 11, 4
    trained, losses = module.train(
        module.init_params(0), X, Y, epochs=epochs, batch_size=size, lr=lr, seed=seed, shuffle=True
    )
    params, rng, expected_losses = module.init_params(0), np.random.default_rng(seed), []
    for _ in range(epochs):
        order, total = rng.permutation(len(X)), 0.0
        for start in range(0, len(X), size):
            batch = order[start : start + size]
            value, grads = module.loss_and_grads(params, X[batch], Y[batch])
            total += value * len(batch)
            params = {k: params[k] - lr * grads[k] for k in params}
        expected_losses.append(total / len(X))
    for k in params:
        assert float(trained[k]) == pytest.approx(float(params[k]), rel=1e-12, abs=1e-15), k
    assert losses == pytest.approx(expected_losses, rel=1e-12)


def test_train_returns_arrays_on_both_paths(folder):
    module = generate(load("tanh_units"), folder)
    X, Y = module._load_data(None)
    for batch_size in (1, 8):
        trained, _ = module.train(module.init_params(0), X, Y, epochs=1, batch_size=batch_size)
        for value in trained.values():
            assert isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.float64


def test_main_reads_data_from_an_npz_file(folder, tmp_path, capsys):
    module = generate(load("quadratic"), folder)
    x = np.linspace(-1.0, 1.0, 7)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=2 * x**2 - x + 0.5, unused=x)
    assert module.main(["--data", str(path), "--epochs", "50", "--lr", "0.01"]) == 0
    out = capsys.readouterr().out
    X, Y = x[:, None], (2 * x**2 - x + 0.5)[:, None]
    trained, _ = module.train(module.init_params(0), X, Y, epochs=50, lr=0.01)
    assert f"final loss: {module.loss(trained, X, Y):.6g}\n" in out
    np.savez(path, x=x)
    with pytest.raises(SystemExit, match=r"missing arrays \['y'\]"):
        module.main(["--data", str(path)])


@pytest.mark.parametrize("name", NAMES)
def test_float32_generation(folder, name):
    spec = load(name)
    single = generate(spec, folder, "float32")
    double = generate(spec, folder, "float64")
    assert single.DTYPE is np.float32
    X, Y = single._load_data(None)
    assert X.dtype == np.float32
    params = single.init_params(0)
    assert all(v.dtype == np.float32 for v in params.values())
    value, grads = single.loss_and_grads(params, X, Y)
    assert np.isfinite(value)
    assert all(g.dtype == np.float32 and np.isfinite(g) for g in grads.values())
    expected_value, expected = double.loss_and_grads(
        double.init_params(0), *double._load_data(None)
    )
    assert value == pytest.approx(expected_value, rel=1e-5)
    for k in expected:
        assert float(grads[k]) == pytest.approx(float(expected[k]), rel=1e-4, abs=1e-5)
    trained, losses = single.train(params, X, Y, epochs=5, batch_size=1)  # float32: vectorized
    assert all(v.dtype == np.float32 for v in trained.values())
    assert np.all(np.isfinite(losses))
    reference, _ = double.train(
        double.init_params(0), *double._load_data(None), epochs=5, batch_size=1
    )
    for k in reference:
        assert float(trained[k]) == pytest.approx(float(reference[k]), rel=1e-3, abs=1e-4)


# --- the generated module's own tests and entry point ---------------------------------------


def test_generated_test_files_pass_under_pytest(tmp_path):
    """Every built-in's test file, the CNNs' 63,050 weights included: each parameter is
    checked in at most 48 sampled entries per point, so the whole folder runs in seconds."""
    names = builtin_names()
    for name in names:
        derivation = derive(load(name))
        (tmp_path / f"{name}.py").write_text(render_module(derivation), encoding="utf-8")
        (tmp_path / f"test_{name}.py").write_text(render_tests(derivation, name), encoding="utf-8")
    # the float32 build: its tests run the module in float64 (they set DTYPE)
    single = derive(load("quadratic"))
    (tmp_path / "quadratic32.py").write_text(render_module(single, "float32"), encoding="utf-8")
    (tmp_path / "test_quadratic32.py").write_text(render_tests(single, "quadratic32"), "utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"\b{2 * (len(names) + 1)} passed\b", result.stdout), result.stdout


def test_a_generated_test_names_the_wrong_entry_it_sampled(tmp_path):
    """The sampled check fails on a wrong gradient in one entry of a large parameter."""
    derivation = derive(load("digits_mlp"))
    source = render_module(derivation).replace(
        "    return float(L), grads",
        '    grads["W1"][3, 5] += 1e-3  # a wrong entry\n    return float(L), grads',
    )
    assert 'grads["W1"][3, 5]' in source
    (tmp_path / "dm.py").write_text(source, encoding="utf-8")
    tests = render_tests(derivation, "dm").replace("MAX_ENTRIES = 48", "MAX_ENTRIES = 100000")
    (tmp_path / "test_dm.py").write_text(tests, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "central",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout
    assert "W1[3, 5] (4096 of 4096 entries)" in result.stdout, result.stdout


def test_running_the_module_trains_and_reports(folder, tmp_path, sources):
    path = tmp_path / "quadratic.py"
    path.write_text(sources["quadratic"], encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    module = import_file(path)
    X, Y = module._load_data(None)
    trained, _ = module.train(module.init_params(0), X, Y)
    assert f"final loss: {module.loss(trained, X, Y):.6g}\n" in result.stdout
    match = re.search(r"^prediction after training at x = 6: (\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    assert float(match.group(1)) == pytest.approx(122.9, abs=0.05)
    assert "w1 = 2.9767" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("name", ["logistic", "tanh_units"])
def test_main_runs_in_process(folder, name, capsys):
    module = generate(load(name), folder)
    assert module.main(["--epochs", "20"]) == 0
    out = capsys.readouterr().out
    assert "final loss: " in out
    assert out.count("prediction after training at") == len(next(iter(load(name).predict.values())))
