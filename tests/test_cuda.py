"""The CUDA target without a GPU: the printer's C++, nvcc compiling every built-in's .cu
warning-free (cuBLAS from the nvidia-cublas wheel), NVRTC compiling the kernels as CuPy
would, and the host emulation of the same source (g++, -DSYMBP_HOST_EMULATION) against
the NumPy module: loss, gradients, output and training, on every built-in and on random
models and layer stacks. With CuPy and a GPU, the CuPy loader against NumPy as well."""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import subprocess

import numpy as np
import pytest
import sympy as sp
from cuda_support import (
    Emulated,
    build_emulation,
    cublas_paths,
    emulation_command,
    gxx,
    nvcc,
    nvcc_command,
    relative,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_strategies import LayerDef, Stack, random_batch, random_params, stacks
from strategies import models
from support import OPTIMIZER_CASES, REPO, import_file, optimizer_stack

from symbp import cli
from symbp.derive import derive
from symbp.functions import clamped_log, leaky_relu, relu, sigmoid, softplus
from symbp.ir.graph import N
from symbp.optim import OPTIMIZERS
from symbp.spec import builtin_names, load, parse_spec
from symbp.targets.cuda.printer import CudaPrinter
from symbp.targets.cuda.target import render_cuda, supported
from symbp.targets.numpy.module import render_module

needs_gxx = pytest.mark.skipif(gxx() is None, reason="needs g++ for the host emulation")
needs_nvcc = pytest.mark.skipif(
    nvcc() is None or cublas_paths() is None,
    reason="needs nvcc (CUDA 13) and the nvidia-cublas wheel (pip install '.[test]')",
)
TOLERANCE = {"float64": 1e-9, "float32": 2e-5}
CUDA_BUILTINS = [n for n in builtin_names() if supported(derive(load(n)))]
_unique = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda")


# --- the printer --------------------------------------------------------------------------

x, y = sp.symbols("x y", real=True)


@pytest.mark.parametrize(
    ("expr", "float32", "float64"),
    [
        (sp.exp(x) + y / 2, "v_y/2.0F + expf(v_x)", "v_y/2.0 + exp(v_x)"),
        (x**2, "(v_x*v_x)", "(v_x*v_x)"),
        (y / x**2, "v_y/(v_x*v_x)", "v_y/(v_x*v_x)"),  # not y/x*x, which is y
        (x**-2, "1.0F/(v_x*v_x)", "1.0/(v_x*v_x)"),
        (sp.sqrt(x), "sqrtf(v_x)", "sqrt(v_x)"),
        (2 * x / N, "2*v_x/((float)N)", "2*v_x/((double)N)"),
        (sp.Float(1e-8) * x, "1e-08F*v_x", "1e-08*v_x"),
        (sp.Max(x, y), "fmaxf(v_x, v_y)", "fmax(v_x, v_y)"),
        (sp.tanh(x), "tanhf(v_x)", "tanh(v_x)"),
        (sp.pi * x, "3.141592653589793F*v_x", "3.141592653589793*v_x"),
    ],
)
def test_printer_writes_each_dtype(expr, float32, float64):
    assert CudaPrinter("float32").doprint(expr) == float32
    assert CudaPrinter("float64").doprint(expr) == float64


def test_printer_custom_functions_and_kinks():
    p = CudaPrinter("float32")
    assert p.doprint(sigmoid(x)) == "symbp_sigmoid(v_x)"
    assert p.doprint(softplus(x)) == "symbp_softplus(v_x)"
    assert p.helpers == {"sigmoid", "softplus"}
    assert p.doprint(relu(x)) == "fmaxf(v_x, 0.0F)"
    # relu'(0) = 0 and leaky_relu'(0) = slope, as functions.py and PyTorch chose them
    assert p.doprint(sp.diff(relu(x), x)) == "((v_x > 0) ? 1.0F : 0.0F)"
    assert p.doprint(leaky_relu(x, sp.Float(0.1))) == "((v_x > 0) ? v_x : 0.1F*v_x)"
    assert p.doprint(clamped_log(x)) == "logf(fmaxf(v_x, 3.720075976020836e-44F))"
    assert p.doprint(sp.Heaviside(x)) == "((v_x > 0) ? 1.0F : ((v_x == 0) ? 0.5F : 0.0F))"
    assert p.doprint(sp.sign(x)) == "((float)((v_x > 0) - (v_x < 0)))"


# names that collided before every value got its prefix: keywords, the math functions the
# printer calls, macros of the C headers, symbp's helpers, the keyword renaming's own form
COLLIDING_NAMES = [
    *("double", "double_", "asm", "constexpr", "decltype", "noexcept", "concept", "requires"),
    *("thread_local", "char8_t", "co_await", "alignas", "bitand", "compl", "not_eq", "and_eq"),
    *("expf", "tanhf", "sqrtf", "erff", "fmaxf", "fabsf", "fmax", "fabs", "exp", "pow"),
    *("NAN", "INFINITY", "M_PI", "EOF", "NULL", "errno", "HUGE_VAL", "RAND_MAX"),
    *("EXIT_FAILURE", "symbp_softplus", "symbp_sigmoid", "real", "N", "pow", "grads_s1"),
]


def test_printer_prefixes_every_name():
    p = CudaPrinter("float64")
    assert p.doprint(sp.Symbol("double", real=True) + sp.Symbol("double_", real=True)) == (
        "v_double + v_double_"
    )


# --- the host emulation against the NumPy module -------------------------------------------


def numpy_module(derivation, folder, dtype):
    path = folder / f"numpy_{dtype}_{next(_unique)}.py"
    path.write_text(render_module(derivation, dtype), encoding="utf-8")
    return import_file(path)


def emulated(derivation, folder, dtype, module):
    library = build_emulation(render_cuda(derivation, dtype), folder)
    return Emulated(library, module.PARAM_SHAPES, dtype)


def batch_for(module, rng, n=7):
    """A batch of the model's kind: one-hot rows for cross_entropy, probabilities for bce."""
    if hasattr(module, "LAYER_WIDTHS"):
        n_in, n_out = module.LAYER_WIDTHS[0], module.LAYER_WIDTHS[-1]
        X = rng.normal(size=(n, n_in))
        if module.LOSS == "cross_entropy":
            return X, np.eye(n_out)[rng.integers(0, n_out, n)]
        if module.LOSS.startswith("bce"):
            return X, rng.uniform(size=(n, n_out))
        return X, rng.normal(size=(n, n_out))
    X = rng.uniform(-1, 1, size=(n, len(module.INPUTS)))
    return X, rng.uniform(-1, 1, size=(n, max(1, len(module.TARGETS))))[:, : len(module.TARGETS)]


def assert_same(emu, module, params, X, Y, tolerance):
    value, grads = module.loss_and_grads(params, X, Y)
    got_value, got = emu.loss_and_grads(params, X, Y)
    assert relative(got_value, value) < tolerance, (got_value, value)
    assert relative(emu.loss(params, X, Y), value) < tolerance
    for name, grad in grads.items():
        assert np.all(np.isfinite(got[name])), name
        assert relative(got[name], grad) < tolerance, (name, got[name], grad)
    expected = np.asarray(module.forward(params, X)).reshape(len(X), -1)
    assert relative(emu.forward(params, X), expected) < tolerance
    return max([relative(got_value, value)] + [relative(got[k], g) for k, g in grads.items()])


@needs_gxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CUDA_BUILTINS)
def test_builtin_emulation_matches_numpy(folder, name, dtype):
    derivation = derive(load(name))
    module = numpy_module(derivation, folder, dtype)
    emu = emulated(derivation, folder, dtype, module)
    rng = np.random.default_rng(7)
    X, Y = (a.astype(dtype) for a in batch_for(module, rng))
    params = module.init_params(3)
    if not hasattr(module, "LAYER_WIDTHS"):  # away from the spec's starting values
        params = {k: np.asarray(rng.uniform(-1, 1), dtype=dtype) for k in params}
    tolerance = TOLERANCE[dtype]
    assert_same(emu, module, params, X, Y, tolerance)

    # training: every stage, the optimizer kernel and the loss accumulation, 3 epochs
    batch = 3
    expected_params, expected_losses = module.train(
        params, X, Y, epochs=3, batch_size=batch, lr=0.05, shuffle=False
    )
    got_params, got_losses = emu.train(params, X, Y, epochs=3, batch_size=batch, lr=0.05)
    assert relative(got_losses, expected_losses) < 10 * tolerance
    for k, v in expected_params.items():
        assert relative(got_params[k], v) < 10 * tolerance, k
    if emu.single:  # the whole loop in one launch of one block, threads at barriers
        expected_params, expected_losses = module.train(
            params, X, Y, epochs=3, batch_size=emu.single, lr=0.05, shuffle=False
        )
        got_params, got_losses = emu.train(
            params, X, Y, epochs=3, batch_size=emu.single, lr=0.05, single=True
        )
        assert relative(got_losses, expected_losses) < 10 * tolerance
        for k, v in expected_params.items():
            assert relative(got_params[k], v) < 10 * tolerance, k
    emu.close()


@needs_gxx
@pytest.mark.parametrize(
    ("name", "extra"),
    [(name, "") for name in sorted(OPTIMIZER_CASES) if not OPTIMIZERS[name].carried]
    + [("sgd", "clip_grad_value = 0.01\n")],
)
def test_every_optimizer_in_emulation_matches_numpy(folder, name, extra):
    """The optimizer kernel of every registry entry (per-element rule, step scalars on
    the host): 3 epochs of batches of 1 and 3 equal the NumPy module's."""
    derivation = derive(parse_spec(optimizer_stack(name, extra), "opt.toml"))
    module = numpy_module(derivation, folder, "float64")
    emu = emulated(derivation, folder, "float64", module)
    rng = np.random.default_rng(4)
    X, Y = batch_for(module, rng, n=6)
    params = module.init_params(1)
    for batch in (1, 3):
        expected, expected_losses = module.train(
            params, X, Y, epochs=3, batch_size=batch, lr=0.05, shuffle=False
        )
        got, got_losses = emu.train(params, X, Y, epochs=3, batch_size=batch, lr=0.05)
        assert relative(got_losses, expected_losses) < 1e-10, batch
        for k, v in expected.items():
            assert relative(got[k], v) < 1e-10, (k, batch)
    emu.close()


@needs_gxx
def test_single_launch_and_per_stage_training_shuffle_alike(folder):
    """Both trainers draw the same splitmix64 permutations, so they agree exactly in
    float64 (up to summation order)."""
    derivation = derive(load("quadratic"))
    module = numpy_module(derivation, folder, "float64")
    emu = emulated(derivation, folder, "float64", module)
    X = np.linspace(-1, 1, 9)[:, None]
    Y = 3 * X**2 + 2 * X + 3
    params = module.init_params()
    kwargs = {"epochs": 20, "batch_size": 1, "lr": 0.01, "shuffle": True, "seed": 5}
    a, losses_a = emu.train(params, X, Y, **kwargs)
    b, losses_b = emu.train(params, X, Y, single=True, **kwargs)
    assert relative(losses_a, losses_b) < 1e-12
    assert all(relative(a[k], b[k]) < 1e-12 for k in a)
    assert losses_a[-1] < losses_a[0] / 2
    emu.close()


@needs_gxx
def test_names_that_collided_compile_and_match_numpy(folder):
    """One expression model over all the names above (as inputs, parameters and
    let-names) builds with g++ and trains as its NumPy module does."""
    names = [n for n in COLLIDING_NAMES if n not in ("N", "pow")]  # reserved by the spec
    lets = "\n".join(f'{n} = "tanh(x*p{i}) + {names[i - 1] if i else "x"}"'
                      for i, n in enumerate(names))  # fmt: skip
    text = f"""name = "collide"
[model]
inputs = ["x"]
targets = ["y"]
output = "{names[-1]}*q"
loss = "mse"
[model.let]
{lets}
"""
    derivation = derive(parse_spec(text, "collide.toml"))
    module = numpy_module(derivation, folder, "float64")
    emu = emulated(derivation, folder, "float64", module)
    rng = np.random.default_rng(3)
    X, Y = batch_for(module, rng)
    params = {k: np.asarray(rng.uniform(-1, 1)) for k in module.PARAM_SHAPES}
    assert_same(emu, module, params, X, Y, TOLERANCE["float64"])
    emu.close()


SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@needs_gxx
@SETTINGS
@given(model=models(), seed=st.integers(0, 2**32 - 1))
def test_random_expression_models_match_numpy(folder, model, seed):
    derivation = derive(parse_spec(model.toml, "random_model.toml"))
    module = numpy_module(derivation, folder, "float64")
    emu = emulated(derivation, folder, "float64", module)
    rng = np.random.default_rng(seed)
    params = {p: np.asarray(rng.uniform(-1.5, 1.5)) for p in module.PARAM_SHAPES}
    X = rng.uniform(-2, 2, size=(6, len(module.INPUTS)))
    Y = rng.uniform(-2, 2, size=(6, len(module.TARGETS)))
    value, _ = module.loss_and_grads(params, X, Y)
    if np.isfinite(value) and abs(value) < 1e8:
        assert_same(emu, module, params, X, Y, TOLERANCE["float64"])
    emu.close()


@needs_gxx
@SETTINGS
@given(stack=stacks(), seed=st.integers(0, 2**32 - 1))
def test_random_layer_stacks_match_numpy(folder, stack, seed):
    stack_matches_numpy(folder, stack, seed)


# stacks that hypothesis found wrong in CI: a forward output of a bias-free layer copied
# as if it did not depend on the batch; a softmax over one feature read as a scalar
FOUND = [
    Stack(1, (LayerDef(2, "silu", bias=False),), "mse"),
    Stack(1, (LayerDef(1, "softmax"),), "mse"),
    Stack(1, (LayerDef(1, "z/(1 + Abs(z))", bias=False),), "mse"),  # y/(c*c) printed y/c*c
]


@needs_gxx
@pytest.mark.parametrize("stack", FOUND, ids=["bias_free_output", "softmax_width_1", "power"])
def test_stacks_found_by_hypothesis_match_numpy(folder, stack):
    stack_matches_numpy(folder, stack, 0)


def stack_matches_numpy(folder, stack, seed):
    derivation = derive(parse_spec(stack.toml(), "random_stack.toml"))
    rng = np.random.default_rng(seed)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng)
    if stack.loss == "cross_entropy":
        Y = np.eye(stack.outputs)[Y]
    for dtype in ("float64", "float32"):
        module = numpy_module(derivation, folder, dtype)
        emu = emulated(derivation, folder, dtype, module)
        typed = {k: v.astype(dtype) for k, v in params.items()}
        tolerance = TOLERANCE[dtype] if dtype == "float64" else 1e-4
        assert_same(emu, module, typed, X.astype(dtype), Y.astype(dtype), tolerance)
        emu.close()


# --- the standalone trainer ------------------------------------------------------------------


@needs_gxx
def test_standalone_trainer_reads_npy_files(folder):
    source = folder / "quadratic_main.cu"
    source.write_text(render_cuda(derive(load("quadratic")), "float64"), encoding="utf-8")
    program = folder / "quadratic_main"
    command = [c for c in emulation_command(source, program) if c not in ("-shared", "-fPIC")]
    command.remove("-DSYMBP_NO_MAIN")
    subprocess.run(command, check=True, capture_output=True, text=True)
    X = np.linspace(-2, 2, 11)
    np.save(folder / "X.npy", X.astype(np.float32))  # any float dtype is read
    np.save(folder / "Y.npy", 3 * X**2 + 2 * X + 3)
    run = subprocess.run(
        [str(program), str(folder / "X.npy"), str(folder / "Y.npy"), "--epochs", "2000"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.splitlines()
    assert lines[0] == "trained quadratic for 2000 epochs (one kernel launch)"
    final = float(next(line for line in lines if line.startswith("final loss:")).split()[-1])
    first = float(lines[1].split()[-1])
    assert final < first and final < 1.0
    # the spec's own data when no files are given; bad arguments are one line, status 2
    assert "final loss" in subprocess.run([str(program)], capture_output=True, text=True).stdout
    bad = subprocess.run([str(program), str(folder / "X.npy")], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


# --- nvcc and NVRTC ------------------------------------------------------------------------


@needs_nvcc
@pytest.mark.parametrize("name", CUDA_BUILTINS)
def test_generated_cuda_compiles_warning_free_with_nvcc(folder, name):
    """generated/NAME.cu, linked against cuBLAS: an executable, no warning at all."""
    source = REPO / "generated" / f"{name}.cu"
    result = subprocess.run(
        nvcc_command(source, folder / f"{name}_gpu"), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert (folder / f"{name}_gpu").exists()


@needs_nvcc
def test_float64_cuda_compiles_warning_free_with_nvcc(folder):
    source = folder / "tanh_units64.cu"
    source.write_text(render_cuda(derive(load("tanh_units")), "float64"), encoding="utf-8")
    result = subprocess.run(nvcc_command(source, folder / "t64"), capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def _nvrtc():
    paths = cublas_paths()
    if paths is None:
        return None
    found = sorted(paths[1].glob("libnvrtc.so*"))
    return ctypes.CDLL(str(found[0])) if found else None


@pytest.mark.skipif(_nvrtc() is None, reason="needs libnvrtc (nvidia-cuda-nvrtc wheel)")
@pytest.mark.parametrize("name", ["digits_mlp", "tanh_units"])
def test_kernels_compile_with_nvrtc_as_cupy_would(name):
    """The CuPy loader compiles the .cu with NVRTC: the host part must drop out."""
    nvrtc = _nvrtc()
    code = (REPO / "generated" / f"{name}.cu").read_bytes()
    program = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), code, b"m.cu", 0, None, None) == 0
    options = (ctypes.c_char_p * 2)(b"--gpu-architecture=compute_90", b"-std=c++17")
    status = nvrtc.nvrtcCompileProgram(program, 2, options)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    assert status == 0, log.value.decode()


# --- the command line -------------------------------------------------------------------------


def test_generate_cuda_writes_the_source_and_its_loader(tmp_path, capsys):
    out = tmp_path / "xor.cu"
    assert cli.main(["generate", "xor_mlp", "--target", "cuda", "-o", str(out)]) == 0
    assert (tmp_path / "xor.cu").read_text() == render_cuda(derive(load("xor_mlp")))
    loader = (tmp_path / "xor_cuda.py").read_text()
    assert 'SOURCE = Path(__file__).with_name("xor.cu")' in loader
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["generate", "quadratic", "--target", "cuda", "--dtype", "float64",
                     "-o", str(tmp_path / "q.cu")]) == 0  # fmt: skip
    assert "typedef double real;" in (tmp_path / "q.cu").read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "model.py"],  # not a .cu
        ["-o", "my-model.cu"],  # not a module name for the loader
        ["--tests"],  # generated tests are the NumPy target's
    ],
)
def test_generate_cuda_bad_input_is_one_line_and_status_2(tmp_path, capsys, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["generate", "xor_mlp", "--target", "cuda", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_tensor_models_are_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "r.cu"
    assert cli.main(["generate", "residual_digits", "--target", "cuda", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "residual_digits.toml: model.params: the CUDA target does not take tensor models yet"
        " (a model with shapes); --target numpy generates this model\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("optimizer", "extra", "message"),
    [
        (
            "adam",
            "clip_grad_norm = 1.0\n",
            "train.clip_grad_norm: the CUDA target has no kernel for",
        ),
        ("nadam", "", "train.optimizer: the CUDA target has no nadam yet"),
        (
            "sgd",
            'lr_schedule = { name = "exponential", gamma = 0.9 }\n',
            "train.lr_schedule: the CUDA target has no learning-rate",
        ),
    ],
    ids=["clip_grad_norm", "carried-step-scalars", "lr_schedule"],
)
def test_training_options_without_kernels_are_refused_in_one_line(
    tmp_path, capsys, optimizer, extra, message
):
    spec = tmp_path / "refused.toml"
    spec.write_text(optimizer_stack(optimizer, extra), encoding="utf-8")
    status = cli.main(["generate", str(spec), "--target", "cuda", "-o", str(tmp_path / "r.cu")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"refused.toml: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refused.toml"]  # nothing written


def test_unsupported_layers_are_bad_input(tmp_path, capsys):
    convolutional = [
        n for n in builtin_names() if n not in CUDA_BUILTINS and hasattr(load(n), "layers")
    ]
    if not convolutional:
        pytest.skip("every built-in has CUDA kernels")
    out = tmp_path / "c.cu"
    assert cli.main(["generate", convolutional[0], "--target", "cuda", "-o", str(out)]) == 2
    assert "the CUDA target has no kernels for" in capsys.readouterr().err
    assert not out.exists()


# --- on a GPU: the CuPy loader ------------------------------------------------------------------


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("cupy") is None:
        return "needs CuPy"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "needs a GPU"
    except Exception as err:  # noqa: BLE001 - any CUDA failure means no usable GPU
        return f"needs a GPU ({err})"
    return None


@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
@pytest.mark.parametrize("name", CUDA_BUILTINS)
def test_cupy_loader_matches_numpy_on_a_gpu(folder, name):
    import cupy

    derivation = derive(load(name))
    module = numpy_module(derivation, folder, "float32")
    loader = import_file(REPO / "generated" / f"{name}_cuda.py")
    rng = np.random.default_rng(1)
    X, Y = (a.astype(np.float32) for a in batch_for(module, rng, n=33))
    params = module.init_params(0)
    value, grads = module.loss_and_grads(params, X, Y)
    gpu = {k: cupy.asarray(v) for k, v in params.items()}
    got_value, got = loader.loss_and_grads(gpu, cupy.asarray(X), cupy.asarray(Y))
    assert relative(got_value, value) < 1e-4
    for k, g in grads.items():
        assert relative(cupy.asnumpy(got[k]), g) < 1e-4, k
    trained, losses = loader.train(gpu, cupy.asarray(X), cupy.asarray(Y), epochs=2, shuffle=False)
    expected, expected_losses = module.train(params, X, Y, epochs=2, shuffle=False)
    assert relative(losses, expected_losses) < 1e-4
