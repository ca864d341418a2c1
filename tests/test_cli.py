"""The ``symbp`` command line: examples, generate, derive, check, run, regenerate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from support import REPO, import_file

from symbp import check as check_mod
from symbp.cli import main
from symbp.derive import derive
from symbp.documents import render_document
from symbp.spec import builtin_names, load, resolve
from symbp.targets.c.target import supported as c_supported
from symbp.targets.cuda.target import supported as cuda_supported
from symbp.targets.numpy.module import render_module, render_tests


def test_examples_lists_every_builtin_with_its_description(capsys):
    assert main(["examples"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "batchnorm_digits",
        "digits_cnn",
        "digits_mlp",
        "least_squares",
        "logistic",
        "micrograd_ops",
        "micrograd_sanity",
        "mnist_cnn",
        "quadratic",
        "residual_digits",
        "sine_lstm",
        "sum_sign_rnn",
        "tanh_units",
        "tied_autoencoder",
        "xor_mlp",
        "xor_sigmoid",
    ]
    for line, name in zip(lines, builtin_names(), strict=True):
        description = tomllib.loads(resolve(name)[1])["description"]
        assert line == f"{name:<20} {description}"


def test_generate_writes_the_module_and_its_tests(tmp_path, capsys):
    module, tests = tmp_path / "quad.py", tmp_path / "test_quad.py"
    assert main(["generate", "quadratic", "-o", str(module), "--tests"]) == 0
    assert capsys.readouterr().out == f"wrote {module}\nwrote {tests}\n"
    derivation = derive(load("quadratic"))
    options = f"-o {module} --tests"  # the docstring's regenerate line repeats them
    assert module.read_text(encoding="utf-8") == render_module(derivation, options=options)
    assert f"symbp generate quadratic.toml --target numpy -o {module} --tests\n" in (
        module.read_text(encoding="utf-8")
    )
    assert tests.read_text(encoding="utf-8") == render_tests(derivation, "quad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quad.py", "test_quad.py"]  # no temps


def test_generated_files_get_the_usual_permissions(tmp_path, capsys):
    import os

    umask = os.umask(0o022)
    try:
        assert main(["generate", "quadratic", "-o", str(tmp_path / "quadratic.py")]) == 0
    finally:
        os.umask(umask)
    assert (tmp_path / "quadratic.py").stat().st_mode & 0o777 == 0o644


def test_generate_replaces_an_existing_module(tmp_path, capsys):
    module = tmp_path / "quadratic.py"
    module.write_text("old\n", encoding="utf-8")
    assert main(["generate", "quadratic", "-o", str(module), "--dtype", "float32"]) == 0
    assert module.read_text(encoding="utf-8") == render_module(
        derive(load("quadratic")), "float32", options=f"-o {module}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quadratic.py"]
    assert import_file(module).DTYPE is np.float32


def test_generate_defaults_to_name_py_in_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "logistic"]) == 0
    assert capsys.readouterr().out == "wrote logistic.py\n"
    assert (tmp_path / "logistic.py").read_text(encoding="utf-8") == render_module(
        derive(load("logistic"))
    )


def test_generate_is_all_or_nothing_when_a_later_file_cannot_be_written(tmp_path, capsys):
    module = tmp_path / "quadratic.py"
    module.write_text("# mine\n", encoding="utf-8")
    blocker = tmp_path / "test_quadratic.py"  # a non-empty folder where the test file goes
    blocker.mkdir()
    (blocker / "keep").write_text("x", encoding="utf-8")
    status = main(["generate", "quadratic", "-o", str(module), "--tests"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quadratic.py", "test_quadratic.py"]
    assert module.read_text(encoding="utf-8") == "# mine\n"


def test_derive_markdown_to_a_file(tmp_path, capsys):
    out = tmp_path / "quadratic.md"
    assert main(["derive", "quadratic", "--format", "markdown", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    text = out.read_text(encoding="utf-8")
    assert text == render_document(derive(load("quadratic")), "markdown")
    for name in ("w1", "w2", "b", "yhat"):
        assert name in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quadratic.md"]


def test_derive_text_to_stdout(capsys):
    assert main(["derive", "tanh_units"]) == 0
    assert capsys.readouterr().out == render_document(derive(load("tanh_units")), "text")


@pytest.mark.parametrize("name", builtin_names())
def test_check_prints_the_worst_error_per_parameter(name, capsys):
    assert main(["check", name, "--points", "3", "--seed", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["parameter", "worst", "relative", "error", "over", "3", "point(s)"]
    rows = [line.split() for line in out[1:-1]]
    assert [row[0] for row in rows] == list(load(name).params)
    for _, error, flag in rows:
        assert float(error) <= check_mod.TOLERANCE
        assert flag == "ok"
    assert out[-1] == "gradients match finite differences"


def test_check_samples_the_entries_of_large_arrays():
    # a convolution's tens of thousands of weights are sampled, small arrays checked whole
    rng = np.random.default_rng(0)
    sampled = check_mod.sampled_indices((200, 300), rng)
    assert len(sampled) == len(set(sampled)) == check_mod.MAX_ENTRIES
    assert all(0 <= i < 200 and 0 <= j < 300 for i, j in sampled)
    assert check_mod.sampled_indices((3, 4), rng) == list(np.ndindex((3, 4)))
    assert check_mod.sampled_indices((), rng) == [()]


def test_check_points_must_be_positive(capsys):
    assert main(["check", "quadratic", "--points", "0"]) == 2
    assert capsys.readouterr().err == "quadratic: --points: must be at least 1\n"


def test_check_module_reports_a_wrong_gradient(tmp_path, monkeypatch):
    path = tmp_path / "quadratic.py"
    path.write_text(render_module(derive(load("quadratic"))), encoding="utf-8")
    module = import_file(path)
    assert check_mod.check_module(module).ok

    correct = module.loss_and_grads

    def off_by_one_percent(params, X, Y):
        value, grads = correct(params, X, Y)
        return value, {**grads, "w2": grads["w2"] * 1.01}

    monkeypatch.setattr(module, "loss_and_grads", off_by_one_percent)
    result = check_mod.check_module(module)
    assert not result.ok
    assert result.points == 5
    assert result.worst["w2"] > 1e-3
    assert result.worst["w1"] <= check_mod.TOLERANCE
    assert result.worst["b"] <= check_mod.TOLERANCE


def test_symbp_check_fails_on_a_wrong_gradient(monkeypatch, capsys):
    def sabotaged(derivation, dtype="float64"):
        source = render_module(derivation, dtype)
        line = '"b": np.asarray(d_b, dtype=DTYPE)'
        assert line in source
        return source.replace(line, '"b": np.asarray(d_b + 0.5, dtype=DTYPE)')

    monkeypatch.setattr(check_mod, "render_module", sabotaged)
    assert main(["check", "quadratic"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^b\s+\S+\s+MISMATCH$", out, re.MULTILINE), out
    assert re.search(r"^w1\s+\S+\s+ok$", out, re.MULTILINE), out
    assert out.splitlines()[-1] == "gradient check FAILED"


def test_run_derives_generates_and_trains(tmp_path, capsys):
    folder = tmp_path / "out"
    assert main(["run", "quadratic", "-o", str(folder)]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == [
        "quadratic.md",
        "quadratic.py",
        "test_quadratic.py",
    ]
    assert out.startswith(render_document(derive(load("quadratic")), "text"))
    assert "w1 = 2.9767\nw2 = 2.1572\nb = 2.7839\n" in out
    assert "prediction after training at x = 6: 122.8882" in out


# --- regenerate ---------------------------------------------------------------------------


def test_regenerate_writes_and_checks_a_folder(tmp_path, capsys):
    folder = tmp_path / "generated"
    assert main(["regenerate", str(folder)]) == 0
    names = sorted(p.name for p in folder.iterdir())
    # every built-in's module and derivation; the dense ones' CUDA and C sources and
    # loaders too
    cuda = [n for n in builtin_names() if cuda_supported(derive(load(n)))]
    c = [n for n in builtin_names() if c_supported(derive(load(n)))]
    assert names == sorted(
        [f"{n}{ext}" for n in builtin_names() for ext in (".py", ".md")]
        + [f"{n}{ext}" for n in cuda for ext in (".cu", "_cuda.py")]
        + [f"{n}{ext}" for n in c for ext in (".c", "_c.py")]
    )
    assert capsys.readouterr().out == f"wrote {len(names)} files to {folder}\n"
    assert main(["regenerate", "--check", str(folder)]) == 0
    assert capsys.readouterr().out == ""

    module = folder / "quadratic.py"
    module.write_text(module.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    (folder / "logistic.md").unlink()
    assert main(["regenerate", "--check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{folder / 'quadratic.py'} is stale: run 'symbp regenerate {folder}'" in out
    assert f"{folder / 'logistic.md'} is stale" in out
    assert len(out.splitlines()) == 2


GENERATED = REPO / "generated"
needs_generated = pytest.mark.skipif(
    not any(GENERATED.glob("*.py")), reason="generated/ has not been written yet"
)


@needs_generated
def test_committed_generated_folder_is_up_to_date():
    result = subprocess.run(
        [sys.executable, "-m", "symbp", "regenerate", "--check", "generated"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_generated
def test_a_modified_copy_of_generated_is_stale(tmp_path, capsys):
    copy = tmp_path / "generated"
    shutil.copytree(GENERATED, copy)
    assert main(["regenerate", "--check", str(copy)]) == 0
    target = copy / "tanh_units.py"
    target.write_text(target.read_text(encoding="utf-8").replace("0.05", "0.5", 1), "utf-8")
    assert main(["regenerate", "--check", str(copy)]) == 1
    assert "tanh_units.py is stale" in capsys.readouterr().out


@needs_generated
def test_regeneration_does_not_depend_on_what_the_process_derived_before():
    # a derivative first taken outside undistributed() (the layer costs count operations
    # that way) must not be reused in SymPy's distributed form: 2*(yhat - y), not -2*y + 2*yhat
    from symbp.builtins import stale_files
    from symbp.documents.layers import layer_costs
    from symbp.spec import parse_spec

    mse_stack = 'name = "s"\n[model]\ninput = 1\nlayers = [{ dense = 1 }]\nloss = "mse"\n'
    layer_costs(parse_spec(mse_stack, "s.toml"))
    assert stale_files(GENERATED) == []


@pytest.mark.parametrize("seed", ["0", "1", "random"])
def test_every_builtin_regenerates_byte_for_byte_under_any_hash_seed(seed):
    """generated/ (modules, tests' sources, documents, CUDA sources and loaders) equals
    a fresh regeneration in a process with PYTHONHASHSEED 0, 1 or random."""
    env = {**os.environ, "PYTHONHASHSEED": seed}
    run = subprocess.run(
        [sys.executable, "-m", "symbp", "regenerate", "--check", str(REPO / "generated")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
