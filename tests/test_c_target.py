"""The C target against the NumPy module: the same values (float64 to 1e-12, float32 to
1e-5) on every built-in it takes and on random expression models and stacks; warning-free
C99 under gcc and clang; the standalone main; the loader's cache and its one-line
failure without a compiler; NumPy's generator reimplemented in C."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support import OPTIMIZER_CASES, import_file, optimizer_stack

from symbp.check import random_point
from symbp.derive import derive
from symbp.errors import SpecError
from symbp.spec import builtin_names, load, parse_spec
from symbp.strategies import expression_models, layer_stacks, tensor_graphs
from symbp.targets.c.target import render_c, render_c_loader, supported, unsupported
from symbp.targets.numpy.module import render_module

REPO = Path(__file__).resolve().parent.parent
STRICT = ("-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2")
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
_unique = itertools.count()

pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("cc", "gcc", "clang")), reason="no C compiler"
)


def build(derivation, folder: Path, dtype: str = "float64"):
    """(the C module, the NumPy module) of one derivation, each in a file of its own."""
    stem = f"{derivation.spec.name}_{dtype}_{next(_unique)}"
    (folder / f"{stem}.c").write_text(render_c(derivation, dtype), encoding="utf-8")
    loader = folder / f"{stem}_c.py"
    loader.write_text(render_c_loader(derivation, f"{stem}.c", dtype), encoding="utf-8")
    module = folder / f"{stem}.py"
    module.write_text(render_module(derivation, dtype), encoding="utf-8")
    return import_file(loader), import_file(module)


def close(actual, expected, tolerance: float) -> bool:
    """Within tolerance of the largest value (at least 1); a run that overflowed must
    overflow in the same places (nan where nan, the same infinity)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    finite = np.isfinite(expected)
    same_overflow = np.array_equal(actual[~finite], expected[~finite], equal_nan=True)
    scale = max(1.0, float(np.max(np.abs(expected[finite]), initial=0.0)))
    error = np.abs(actual[finite] - expected[finite])
    return same_overflow and bool(np.all(error <= tolerance * scale))


def assert_same_module(c, numpy_module, params, X, Y, dtype: str, batches=(None, 3)):
    """forward, loss, loss_and_grads and 3 epochs of train (shuffled and in order, full
    and mini-batches with a short last one) of the two modules agree."""
    tol = TOLERANCE[dtype]
    assert close(c.forward(params, X), numpy_module.forward(params, X), tol)
    assert close(c.loss(params, X, Y), numpy_module.loss(params, X, Y), tol)
    value, grads = c.loss_and_grads(params, X, Y)
    expected_value, expected = numpy_module.loss_and_grads(params, X, Y)
    assert close(value, expected_value, tol)
    assert set(grads) == set(expected)
    for name in expected:
        assert grads[name].shape == np.shape(expected[name])
        assert close(grads[name], expected[name], tol), name
    for batch, shuffle in itertools.product(batches, (False, True)):
        options = {"epochs": 3, "shuffle": shuffle, "seed": 5}
        if batch is not None:
            options["batch_size"] = batch
        trained, losses = c.train(params, X, Y, **options)
        trained_np, losses_np = numpy_module.train(params, X, Y, **options)
        assert close(losses, losses_np, tol), (batch, shuffle)
        for name in trained_np:
            assert close(trained[name], trained_np[name], tol * 10), (name, batch, shuffle)


SUPPORTED = [n for n in builtin_names() if supported(derive(load(n)))]


def test_the_dense_stacks_expression_and_vector_tensor_models_are_supported():
    assert set(SUPPORTED) == {
        "digits_mlp",
        "least_squares",
        "logistic",
        "quadratic",
        "residual_digits",
        "tanh_units",
        "tied_autoencoder",
        "xor_mlp",
        "xor_sigmoid",
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_builtin_equals_the_numpy_module(tmp_path, name, dtype):
    c, numpy_module = build(derive(load(name)), tmp_path, dtype)
    assert c.PARAM_SHAPES == numpy_module.PARAM_SHAPES
    for seed in (0, 3):
        initial, expected = c.init_params(seed), numpy_module.init_params(seed)
        assert all(np.array_equal(initial[k], expected[k]) for k in expected)
        assert all(initial[k].dtype == np.dtype(dtype) for k in initial)
    params, X, Y = random_point(numpy_module, np.random.default_rng(1), 7)
    params = {k: np.asarray(v, dtype=dtype) for k, v in params.items()}
    assert_same_module(c, numpy_module, params, X, Y, dtype)


def test_class_labels_are_one_hot_rows(tmp_path):
    c, numpy_module = build(derive(load("digits_mlp")), tmp_path)
    params = c.init_params(0)
    X = np.random.default_rng(0).uniform(0, 16, size=(5, 64))
    labels = np.array([0, 3, 9, 3, 1])
    assert c.loss(params, X, labels) == pytest.approx(numpy_module.loss(params, X, labels), 1e-12)
    with pytest.raises(ValueError, match="class labels must be integers"):
        c.loss(params, X, np.array([0, 10, 1, 1, 1]))


@pytest.mark.parametrize("name", ["xor_mlp", "quadratic", "digits_mlp"])
def test_unshuffled_default_training_equals_numpy(tmp_path, name):
    """The spec's own training run (its epochs, batch size, lr, shuffle), shortened."""
    spec = load(name)
    c, numpy_module = build(derive(spec), tmp_path)
    if spec.data is None:
        X = np.random.default_rng(2).uniform(0, 16, size=(40, 64))
        Y = np.random.default_rng(3).integers(0, 10, size=40)
    else:
        X, Y = c._load_data(None)
    params = c.init_params(spec.train.seed)
    trained, losses = c.train(params, X, Y, epochs=25)
    trained_np, losses_np = numpy_module.train(params, X, Y, epochs=25)
    assert close(losses, losses_np, 1e-12)
    assert all(close(trained[k], trained_np[k], 1e-11) for k in trained_np)


def test_progress_is_called_after_each_epoch_with_the_same_run(tmp_path):
    c, _ = build(derive(load("xor_mlp")), tmp_path)
    params, X = c.init_params(0), np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    Y = np.array([0.0, 1, 1, 0])
    seen = []
    trained, losses = c.train(params, X, Y, epochs=6, progress=lambda e, v: seen.append((e, v)))
    again, losses_again = c.train(params, X, Y, epochs=6)
    assert seen == list(enumerate(losses, start=1))
    assert losses == losses_again
    assert all(np.array_equal(trained[k], again[k]) for k in trained)


def test_arguments_are_checked_in_the_loader(tmp_path):
    c, _ = build(derive(load("xor_mlp")), tmp_path)
    params, X, Y = c.init_params(0), np.zeros((4, 2)), np.zeros((4, 1))
    with pytest.raises(ValueError, match=r"X must have shape \(N, 2\)"):
        c.forward(params, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X has 4 samples but Y has 3"):
        c.loss(params, X, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="missing"):
        c.loss(dict(list(params.items())[:-1]), X, Y)
    with pytest.raises(ValueError, match="expected"):
        c.loss({**params, "W1": np.zeros((3, 3))}, X, Y)
    for bad in ({"batch_size": 0}, {"epochs": -1}, {"lr": float("nan")}):
        with pytest.raises(ValueError):
            c.train(params, X, Y, **bad)


@settings(max_examples=12, deadline=None)
@given(model=expression_models(), seed=st.integers(0, 2**16))
def test_random_expression_models_equal_numpy(tmp_path_factory, model, seed):
    folder = tmp_path_factory.mktemp("c_expr")
    derivation = derive(parse_spec(model.spec_text, "random.toml"))
    c, numpy_module = build(derivation, folder)
    params, X, Y = model.random_point(seed, batch=5)
    assert_same_module(c, numpy_module, params, X, Y, "float64", batches=(2,))


@settings(max_examples=12, deadline=None)
@given(stack=layer_stacks(), seed=st.integers(0, 2**16))
def test_random_stacks_equal_numpy(tmp_path_factory, stack, seed):
    folder = tmp_path_factory.mktemp("c_stack")
    derivation = derive(parse_spec(stack.spec_text, "stack.toml"))
    c, numpy_module = build(derivation, folder)
    params, X, Y = stack.random_point(seed, batch=6)
    assert_same_module(c, numpy_module, params, X, Y, "float64", batches=(4,))


@settings(max_examples=15, deadline=None)
@given(graph=tensor_graphs(), seed=st.integers(0, 2**16))
def test_random_tensor_graphs_equal_numpy(tmp_path_factory, graph, seed):
    """Matrix products, tied weights, fan-out, slices, concat, softmax, reductions, one
    or two inputs, labels or a vector target: the C module equals the NumPy module. Only
    outer products (a matrix per sample) are refused, in one line."""
    derivation = derive(parse_spec(graph.toml(), "graph.toml"))
    problem = unsupported(derivation)
    if problem is not None:
        assert "per-sample matrices (outer(u, v)" in str(problem)
        assert "\n" not in str(problem)
    assume(problem is None)
    c, numpy_module = build(derivation, tmp_path_factory.mktemp("c_tensor"))
    params, X, Y = graph.random_point(seed, batch=5)
    assert_same_module(c, numpy_module, params, X, Y, "float64", batches=(2,))


PARTS = """
name = "parts"
[model]
inputs = { x = [3], u = [2] }
targets = { y = [] }
output = "h3"
loss = "cross_entropy(h3, y)"
[model.params]
W = [3, 3]
V = [2, 3]
c = { shape = [2], init = 0.5 }
[model.let]
g = "tanh(V @ x + c)"
h1 = "concat(g[1:], tanh(u), g[0] * u, g[0:1] * sum(g))"
h2 = "W @ h1[0:3] + x[2] + h1[4] + dot(g, u) * (W.T @ x)"
h3 = "h2 * 2"
"""


def test_slices_concat_dot_and_two_inputs_equal_numpy(tmp_path):
    """index, its adjoint pad, concat, dot, a transpose and a constant init, with X and
    Y as dicts and as arrays: the same values as the NumPy module."""
    c, numpy_module = build(derive(parse_spec(PARTS, "parts.toml")), tmp_path)
    assert c.init_params(0)["c"].tolist() == [0.5, 0.5]
    params, X, Y = random_point(numpy_module, np.random.default_rng(2), 6)
    assert_same_module(c, numpy_module, params, X, Y, "float64")
    labels = np.asarray(Y["y"])
    assert c.loss(params, X, labels) == pytest.approx(numpy_module.loss(params, X, labels), 1e-12)
    assert c.accuracy(params, X, labels) == numpy_module.accuracy(params, X, labels)
    with pytest.raises(ValueError, match="must be a dict of arrays x: \\(N, 3\\), u"):
        c.forward(params, X["x"])
    with pytest.raises(ValueError, match="integer class labels in \\[0, 3\\)"):
        c.loss(params, X, {"y": labels + 3})


IMAGE = """
name = "parts"
[model]
inputs = { x = [1, 4, 4] }
output = "h"
loss = "sum(h**2)"
[model.params]
W = [2, 16]
[model.let]
h = "W @ flatten(x)"
"""


@pytest.mark.parametrize(
    ("change", "field", "what"),
    [
        ("W = [3, 3]", "model.params.W", "normal initialization"),
        ('h3 = "h2 * 2"', "model", "per-sample matrices (outer(u, v), a matrix-valued"),
        ("inputs = { x = [3], u = [2] }", "model.inputs.x", "per-sample matrices or images"),
    ],
)
def test_tensor_models_without_kernels_are_refused_in_one_line(change, field, what):
    replacement = {
        "W = [3, 3]": 'W = { shape = [3, 3], init = "normal" }',
        'h3 = "h2 * 2"': 'h3 = "h2 * 2 + outer(h2, x) @ x"',
        "inputs = { x = [3], u = [2] }": IMAGE,
    }[change]
    text = IMAGE if change.startswith("inputs") else PARTS.replace(change, replacement)
    problem = unsupported(derive(parse_spec(text, "parts.toml")))
    assert str(problem).startswith(f"parts.toml: {field}: the C target has no kernels for")
    assert what in str(problem) and "--target numpy" in str(problem)
    assert "\n" not in str(problem)


# --- the C source ---------------------------------------------------------------------


COMPILERS = [c for c in ("gcc", "clang") if shutil.which(c)]


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_builtin_compiles_warning_free(tmp_path, compiler, dtype):
    for name in SUPPORTED:
        source = tmp_path / f"{name}.c"
        source.write_text(render_c(derive(load(name)), dtype), encoding="utf-8")
        for extra in ((), ("-DSYMBP_NO_MAIN", "-fPIC", "-shared")):
            done = subprocess.run(
                [compiler, *STRICT, *extra, str(source), "-o", str(tmp_path / name), "-lm"],
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, f"{name} ({dtype}, {compiler}): {done.stderr}"


def test_generated_loaders_are_ruff_clean_and_committed():
    """generated/ holds each supported built-in's .c and loader (regenerate --check
    compares them byte for byte); here: they exist, and only for those."""
    folder = REPO / "generated"
    assert sorted(p.stem for p in folder.glob("*.c")) == SUPPORTED
    assert sorted(p.stem[:-2] for p in folder.glob("*_c.py")) == SUPPORTED
    ruff = shutil.which("ruff") or str(Path(os.sys.executable).with_name("ruff"))
    done = subprocess.run([ruff, "check", *map(str, folder.glob("*_c.py"))], capture_output=True)
    assert done.returncode == 0, done.stdout.decode()


def _trainer(tmp_path: Path, name: str) -> Path:
    source = tmp_path / f"{name}.c"
    source.write_text(render_c(derive(load(name))), encoding="utf-8")
    binary = tmp_path / name
    subprocess.run(
        [COMPILERS[0], "-std=c99", "-O2", str(source), "-o", str(binary), "-lm"], check=True
    )
    return binary


@pytest.mark.skipif(not COMPILERS, reason="no gcc or clang")
def test_standalone_main_trains_as_the_numpy_module(tmp_path):
    """./xor_mlp starts from init_params(seed) and draws the module's permutations: its
    printed losses are the NumPy module's train() losses."""
    binary = _trainer(tmp_path, "xor_mlp")
    out = subprocess.run([binary, "--epochs", "50", "--seed", "3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    printed = {int(e): float(v) for e, v in re.findall(r"epoch (\d+)/50  loss (\S+)", out.stdout)}
    assert sorted(printed) == list(range(5, 51, 5))
    numpy_module = import_file(_numpy_file(tmp_path, "xor_mlp"))
    X, Y = numpy_module._load_data(None)
    _, losses = numpy_module.train(numpy_module.init_params(3), X, Y, epochs=50, seed=3)
    for epoch, value in printed.items():
        assert value == pytest.approx(losses[epoch - 1], rel=1e-5)
    assert "final loss:" in out.stdout and "W1 =" in out.stdout


def _numpy_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}_np_{next(_unique)}.py"
    path.write_text(render_module(derive(load(name)), "float64"), encoding="utf-8")
    return path


@pytest.mark.skipif(not COMPILERS, reason="no gcc or clang")
def test_standalone_main_reads_npy_files_and_refuses_bad_ones(tmp_path):
    binary = _trainer(tmp_path, "digits_mlp")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.uniform(0, 16, size=(30, 64)))
    np.save(tmp_path / "Y.npy", rng.integers(0, 10, size=30))
    np.save(tmp_path / "bad.npy", np.zeros((30, 3)))
    args = ["--epochs", "2", "--batch-size", "8"]
    good = subprocess.run(
        [binary, tmp_path / "X.npy", tmp_path / "Y.npy", *args], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    assert "epoch 2/2" in good.stdout
    bad = subprocess.run(
        [binary, tmp_path / "bad.npy", tmp_path / "Y.npy"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip() == "X must have shape (N, 64)"
    none = subprocess.run([binary], capture_output=True, text=True)
    assert none.returncode == 2 and "pass X.npy Y.npy" in none.stderr


# --- the loader -------------------------------------------------------------------------


def test_the_library_is_built_once_and_cached_by_the_source_hash(tmp_path):
    c, _ = build(derive(load("quadratic")), tmp_path)
    c.loss(c.init_params(0), np.ones(2), np.ones(2))
    libraries = list(tmp_path.glob(".*.so"))
    assert len(libraries) == 1
    stamp = libraries[0].stat().st_mtime_ns
    again = import_file(next(tmp_path.glob("*_c.py")))
    again.loss(again.init_params(0), np.ones(2), np.ones(2))
    assert list(tmp_path.glob(".*.so")) == libraries
    assert libraries[0].stat().st_mtime_ns == stamp


def test_no_compiler_is_one_clear_line(tmp_path, monkeypatch):
    c, _ = build(derive(load("quadratic")), tmp_path)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError) as error:
        c.loss(c.init_params(0), np.ones(2), np.ones(2))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("symbp: no C compiler found") and "$CC" in message


def test_cc_names_the_compiler(tmp_path, monkeypatch):
    c, _ = build(derive(load("quadratic")), tmp_path)
    monkeypatch.setenv("CC", f"{COMPILERS[0]} -O1")
    assert c.loss(c.init_params(0), [1.0], [8.0]) == pytest.approx((3.0 - 8.0) ** 2)


def test_numpys_generator_in_c(tmp_path):
    """symbp_seed is numpy.random.default_rng(seed)'s PCG64 state (SeedSequence), and
    the permutations the C loop draws are Generator.permutation's."""
    import ctypes

    c, _ = build(derive(load("xor_mlp")), tmp_path)
    library = c._load()
    for seed in (0, 1, 12345, 2**40 + 3):
        words = (ctypes.c_uint64 * 6)()
        library.symbp_seed(ctypes.c_uint64(seed), words)
        state = np.random.default_rng(seed).bit_generator.state["state"]
        assert (words[0] << 64 | words[1], words[2] << 64 | words[3]) == (
            state["state"],
            state["inc"],
        )


def test_unsupported_models_are_refused_in_one_line():
    for name in ("digits_cnn", "batchnorm_digits", "micrograd_ops", "sine_lstm"):
        problem = unsupported(derive(load(name)))
        assert isinstance(problem, SpecError)
        assert "\n" not in str(problem) and "--target numpy" in str(problem)


def _sanitizers_work(tmp_path: Path) -> bool:
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n", encoding="utf-8")
    flags = ["-fsanitize=address,undefined", str(probe), "-o", str(tmp_path / "probe")]
    return subprocess.run([COMPILERS[0], *flags], capture_output=True).returncode == 0


@pytest.mark.skipif(not COMPILERS, reason="no gcc or clang")
@pytest.mark.parametrize("name", SUPPORTED)
def test_trainer_runs_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path, name):
    """Every buffer the stages, products and the shuffled gather touch is in bounds:
    3 epochs, shuffled, with a short last batch, under ASan and UBSan."""
    if not _sanitizers_work(tmp_path):
        pytest.skip("this compiler has no sanitizer runtime")
    source = tmp_path / f"{name}.c"
    source.write_text(render_c(derive(load(name))), encoding="utf-8")
    binary = tmp_path / name
    flags = ["-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    subprocess.run([COMPILERS[0], *flags, str(source), "-o", str(binary), "-lm"], check=True)
    files = []
    if load(name).data is None:  # digits: a small stand-in of its shape
        rng = np.random.default_rng(0)
        np.save(tmp_path / "X.npy", rng.uniform(0, 16, size=(23, 64)))
        np.save(tmp_path / "Y.npy", rng.integers(0, 10, size=23))
        files = [tmp_path / "X.npy", tmp_path / "Y.npy"]
    done = subprocess.run(
        [binary, *files, "--epochs", "3", "--batch-size", "3"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "final loss:" in done.stdout


# --- the NumPy module's train(backend=) ---------------------------------------------------


def _pair(folder: Path, name: str, dtype: str = "float64", c_dtype: str | None = None):
    """NAME.py and, beside it, NAME.c and NAME_c.py (of c_dtype): the NumPy module."""
    derivation = derive(load(name))
    stem = f"{name}_pair_{next(_unique)}"
    (folder / f"{stem}.py").write_text(render_module(derivation, dtype), encoding="utf-8")
    if c_dtype is not None:
        (folder / f"{stem}.c").write_text(render_c(derivation, c_dtype), encoding="utf-8")
        loader = render_c_loader(derivation, f"{stem}.c", c_dtype)
        (folder / f"{stem}_c.py").write_text(loader, encoding="utf-8")
    return import_file(folder / f"{stem}.py")


def test_train_hands_the_run_to_the_c_module_beside_it(tmp_path):
    module = _pair(tmp_path, "xor_mlp", "float64", "float64")
    assert module.C_FASTER is True
    X, Y = module._load_data(None)
    params = module.init_params(1)
    options = {"epochs": 4, "batch_size": 3, "shuffle": True, "seed": 2}
    by_c, losses_c = module.train(params, X, Y, backend="c", **options)
    by_numpy, losses_numpy = module.train(params, X, Y, backend="numpy", floats=False, **options)
    assert close(losses_c, losses_numpy, 1e-12)
    assert all(close(by_c[k], by_numpy[k], 1e-12) for k in by_numpy)
    default, losses_default = module.train(params, X, Y, **options)
    assert module._compiled(None) is not None and losses_default == losses_c
    assert all(np.array_equal(default[k], by_c[k]) for k in by_c)


def test_without_a_matching_c_module_train_stays_in_numpy(tmp_path):
    alone = _pair(tmp_path, "quadratic")
    assert alone._compiled(None) is None
    with pytest.raises(ValueError, match="no matching C module beside this one"):
        alone.train(alone.init_params(0), [1.0], [8.0], backend="c")
    other_dtype = _pair(tmp_path, "quadratic", "float64", "float32")
    assert other_dtype._compiled(None) is None
    with pytest.raises(ValueError, match="backend must be 'numpy', 'c' or None"):
        alone.train(alone.init_params(0), [1.0], [8.0], backend="cuda")


def test_c_is_the_default_only_where_it_was_measured_faster(tmp_path):
    wide = tmp_path / "wide.toml"
    wide.write_text(
        'name = "wide"\n[model]\ninput = 4\nlayers = [{ dense = 128, activation = "relu" },'
        ' { dense = 3 }]\nloss = "cross_entropy"\n',
        encoding="utf-8",
    )
    derivation = derive(load(str(wide)))
    (tmp_path / "wide.py").write_text(render_module(derivation, "float32"), encoding="utf-8")
    (tmp_path / "wide.c").write_text(render_c(derivation, "float32"), encoding="utf-8")
    (tmp_path / "wide_c.py").write_text(render_c_loader(derivation, "wide.c"), encoding="utf-8")
    module = import_file(tmp_path / "wide.py")
    assert module.C_FASTER is False and module._compiled(None) is None
    assert module._compiled("c") is not None
    tensor = render_module(derive(load("residual_digits")))
    assert "backend" not in tensor  # the C target does not take tensor models


def test_concurrent_calls_each_get_a_workspace(tmp_path):
    """The C code runs without the GIL: calls from threads at once, and a call from
    train()'s progress callback, each get a workspace of their own."""
    from concurrent.futures import ThreadPoolExecutor

    c, _ = build(derive(load("digits_mlp")), tmp_path)
    rng = np.random.default_rng(0)
    X, Y = rng.uniform(0, 1, size=(200, 64)), rng.integers(0, 10, size=200)
    params = c.init_params(0)
    expected = c.train(params, X, Y, epochs=3, batch_size=16, shuffle=True)
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda _: c.train(params, X, Y, epochs=3, batch_size=16, shuffle=True), range(8)
            )
        )
    for trained, losses in runs:
        assert losses == expected[1]
        assert all(np.array_equal(trained[k], expected[0][k]) for k in trained)
    inner = []
    outer = c.train(
        params,
        X,
        Y,
        epochs=2,
        batch_size=16,
        shuffle=True,
        progress=lambda e, v: inner.append(c.loss(params, X, Y)),
    )
    assert outer[1] == expected[1][:2] and len(inner) == 2
    assert len(c._workspaces) >= 2


def test_constants_print_as_c99_literals_not_posix_macros(tmp_path):
    """erf' = 2/sqrt(pi) exp(-z^2) and (2^z)' = log(2) 2^z: SymPy's C printer writes
    M_2_SQRTPI and M_LN2, which strict C99 does not define (a fresh Hypothesis example
    found it); symbp prints literals."""
    spec = tmp_path / "constants.toml"
    spec.write_text(
        'name = "constants"\n[model]\ninputs = ["x"]\ntargets = ["y"]\n'
        'output = "erf(w*x) + 2**(v*x) + pi*w/sqrt(2)"\nloss = "mse"\n',
        encoding="utf-8",
    )
    derivation = derive(load(str(spec)))
    for dtype in ("float64", "float32"):
        source = render_c(derivation, dtype)
        assert not re.search(r"\bM_[A-Z0-9_]+\b", source)
        path = tmp_path / f"constants_{dtype}.c"
        path.write_text(source, encoding="utf-8")
        done = subprocess.run(
            [COMPILERS[0], *STRICT, str(path), "-o", str(tmp_path / dtype), "-lm"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    c, numpy_module = build(derivation, tmp_path)
    params = {"w": np.array(0.7), "v": np.array(-0.3)}
    X, Y = np.linspace(-1, 1, 6), np.linspace(0, 2, 6)
    assert_same_module(c, numpy_module, params, X, Y, "float64", batches=(4,))


def test_every_optimizer_of_the_registry_has_a_case():
    from symbp.optim import OPTIMIZERS

    assert set(OPTIMIZER_CASES) == set(OPTIMIZERS)


@pytest.mark.parametrize(
    ("name", "extra"),
    [(name, "") for name in sorted(OPTIMIZER_CASES)]
    + [("adam", "clip_grad_norm = 0.1\n"), ("sgd", "clip_grad_value = 0.01\n")],
)
def test_every_optimizer_equals_numpy_and_compiles_strictly(tmp_path, name, extra):
    """The rule as C: 3 epochs of mini-batches (RAdam past its rectification point,
    clipping's bounds tight) equal the NumPy module's; the source compiles under -Werror."""
    derivation = derive(parse_spec(optimizer_stack(name, extra), "opt.toml"))
    c, numpy_module = build(derivation, tmp_path)
    params, X, Y = random_point(numpy_module, np.random.default_rng(2), 8)
    assert_same_module(c, numpy_module, params, X, Y, "float64", batches=(1, 3))
    compiler = (COMPILERS or ["cc"])[0]
    source = next(tmp_path.glob("opt_*.c"))
    done = subprocess.run(
        [compiler, *STRICT, "-DSYMBP_NO_MAIN", "-c", str(source), "-o", str(tmp_path / "o.o")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
