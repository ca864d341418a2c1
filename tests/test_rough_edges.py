"""Rough edges a new user meets: each bad layer-stack input is one line naming the field
with the way out (a did-you-mean, the valid choices), exit 2, nothing written; and the
small promises of the command line (--version, a trailing newline)."""

from __future__ import annotations

import pytest

from symbp.cli import main

STACK = """name = "m"
[model]
input = {input}
layers = [{layer}, {{ dense = 1 }}]
loss = "{loss}"
{extra}"""


def stack(layer='{ dense = 3, activation = "tanh" }', loss="mse", input="2", extra=""):
    return STACK.format(layer=layer, loss=loss, input=input, extra=extra)


DIGITS = """name = "d"
[model]
input = {input}
layers = [{{ dense = 10 }}]
loss = "{loss}"
[data]
dataset = {dataset}
"""

CASES = [
    (
        "kernel-size",
        stack("{ conv2d = 2, kernel_size = 3 }", input="[1, 4, 4]"),
        "model.layers[1].kernel_size",
        "unknown field (did you mean 'kernel'? known: activation, alpha, bias, conv2d, kernel,",
    ),
    (
        "dropout",
        stack("{ dropout = 0.5 }"),
        "model.layers[1].dropout",
        "not a layer kind symbp has (layer kinds: dense, conv2d, maxpool2d, avgpool2d, flatten,"
        " activation)",
    ),
    (
        "activation-typo",
        stack('{ dense = 3, activation = "rlu" }'),
        "model.layers[1].activation",
        "unknown activation 'rlu' (did you mean 'relu'? known: identity, relu,",
    ),
    (
        "loss-typo",
        stack(loss="bce_logits"),
        "model.loss",
        "unknown loss 'bce_logits' (did you mean 'bce_with_logits'? known: mse, l1,",
    ),
    (
        "alpha-on-tanh",
        stack('{ dense = 3, activation = "tanh", alpha = 1.0 }'),
        "model.layers[1].alpha",
        'only activation = "elu" has alpha (this layer\'s: tanh)',
    ),
    (
        "negative-slope-nan",
        stack('{ dense = 3, activation = "leaky_relu", negative_slope = nan }'),
        "model.layers[1].negative_slope",
        "must be a finite number, got nan",
    ),
    (
        "elu-alpha-inf",
        stack('{ dense = 3, activation = "elu", alpha = inf }'),
        "model.layers[1].alpha",
        "must be a finite number, got inf",
    ),
    (
        "data-x-nan",
        stack(extra="[data]\nX = [[1.0, nan]]\nY = [[1.0]]\n"),
        "data.X[0][1]",
        "must be a finite number",
    ),
    (
        "train-option-typo",
        stack(extra="[train]\nlearning_rate = 1\n"),
        "train.learning_rate",
        "unknown option for optimizer 'sgd' (known: batch_size, clip_grad_norm,",
    ),
    (
        "train-schedule-not-a-table",
        stack(extra="[train]\nlr_schedule = 1\n"),
        "train.lr_schedule",
        'expected a table such as { name = "step", step_size = 10 } or a list of them',
    ),
    (
        "digits-wrong-input",
        DIGITS.format(input="2", loss="cross_entropy", dataset='"digits"'),
        "model.input",
        "the digits dataset has 64 features per sample (input = 64, or [1, 8, 8] as 1x8x8"
        " images); got 2",
    ),
    (
        "digits-wrong-loss",
        DIGITS.format(input="64", loss="mse", dataset='"digits"'),
        "model.loss",
        "the digits dataset is 10-class labels",
    ),
    (
        "dataset-list",
        DIGITS.format(input="64", loss="cross_entropy", dataset="[]"),
        "data.dataset",
        "unknown dataset [] (known: digits, sum_sign, sine)",
    ),
    (
        "formula-activation-comment",
        stack('{ dense = 3, activation = "z # tanh" }'),
        "model.layers[1].activation",
        "'#' (a comment) is not allowed in a formula at column 3",
    ),
]


@pytest.mark.parametrize("text, field, problem", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["check", "run", "derive"])
def test_bad_layer_input_is_one_line_with_a_way_out(
    tmp_path, capsys, monkeypatch, text, field, problem, command
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    assert main([command, str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.strip() == f"m.toml: {field}: " + captured.err.strip().split(": ", 2)[2]
    assert problem in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]


def test_a_model_too_large_for_memory_is_refused_with_the_figure(tmp_path, capsys):
    path = tmp_path / "big.toml"
    path.write_text(stack("{ dense = 1000000000 }"), encoding="utf-8")
    for command in ("check", "run"):
        assert (
            main([command, str(path), *(["-o", str(tmp_path / "o")] if command == "run" else [])])
            == 2
        )
        line = capsys.readouterr().err.strip()
        assert line.startswith("big.toml: model.layers[1]: ")
        assert "needs about 119.2 GiB" in line and "this machine has" in line
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("symbp 0.")


def test_stats_end_with_a_newline(capsys):
    for name in ("quadratic", "xor_mlp"):
        assert main(["derive", name, "--stats"]) == 0
        assert capsys.readouterr().out.endswith("\n")


def test_a_slow_check_says_so_with_the_figure_before_it_runs(monkeypatch):
    """The check times one loss evaluation at its first point and warns, before the
    long part, when the whole will take more than WARN_SECONDS."""
    from symbp import check as check_module_source
    from symbp.derive import derive
    from symbp.spec import load

    monkeypatch.setattr(check_module_source, "WARN_SECONDS", 0.0)
    lines = []
    result = check_module_source.check(derive(load("xor_mlp")), 2, 0, warn=lines.append)
    assert result.ok
    assert len(lines) == 1
    assert lines[0].startswith("the check evaluates the loss 36 times (9 entries of 4 parameters")
    assert "; --points 1 takes about" in lines[0]


def test_a_deep_stack_warns_with_the_figure(tmp_path, capsys):
    layers = ", ".join(['{ dense = 2, activation = "tanh" }'] * 700 + ["{ dense = 1 }"])
    path = tmp_path / "deep.toml"
    path.write_text(f'name = "deep"\n[model]\ninput = 2\nlayers = [{layers}]\nloss = "mse"\n')
    from symbp.spec import load
    from symbp.stats import layer_size_warning

    assert layer_size_warning(load(str(path))) == (
        "model.layers: 701 layers; deriving takes about 6 s (about 9 ms per layer)"
    )
    assert layer_size_warning(load("xor_mlp")) is None


@pytest.mark.parametrize("name", ["random", "re", "typing", "enum", "pickle", "numpy"])
def test_a_model_named_like_a_module_is_refused(name, tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(
        f'name = "{name}"\n[model]\ninputs = ["x"]\ntargets = ["y"]\noutput = "w*x"\nloss = "mse"\n'
    )
    assert main(["generate", str(path), "-o", str(tmp_path / "m.py")]) == 2
    assert f"s.toml: name: '{name}' is " in capsys.readouterr().err
    assert main(["generate", "quadratic", "-o", str(tmp_path / f"{name}.py")]) == 2
    assert f"{name}.py: -o: '{name}' is " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_builtin_name_means_the_builtin_beside_a_file_of_that_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quadratic").write_bytes(b"\x7fELF binary from nvcc -o quadratic")
    assert main(["derive", "quadratic", "--stats"]) == 0
    assert main(["derive", "./quadratic"]) == 2
    assert "quadratic: not valid TOML" in capsys.readouterr().err  # the file was read


def test_cuda_names_the_layer_it_has_no_kernels_for(capsys, tmp_path):
    assert main(["generate", "digits_cnn", "--target", "cuda", "-o", str(tmp_path / "d.cu")]) == 2
    assert capsys.readouterr().err == (
        "digits_cnn.toml: model.layers[1]: the CUDA target has no kernels for conv2d layers yet"
        " (it has dense layers and expression models); --target numpy generates this model\n"
    )


def test_documents_read_as_a_course_would_write_them():
    from symbp.derive import derive
    from symbp.documents import render_document
    from symbp.spec import load

    cnn = render_document(derive(load("digits_cnn")), "markdown")
    assert "### Layer 2: none (2x2 max pool)" in cnn and "### Layer 3: none (flatten)" in cnn
    assert "| training step | 1,965,384 |" in cnn  # thousands separated
    assert "\\operatorname{unpool\\_max}" in cnn
    # the memory table names what reads a kept value in the course's notation, not as the
    # program's temporaries (v1 = delta^(1)T U^(1), d_A2_masked)
    start = cnn.index("| kept for |")
    table = cnn[start : cnn.index("| total |", start)]
    assert "`v1`" not in table and "`d_A2_masked`" not in table
    assert (
        "| $U^{(1)}$ | 32 x 8 x 8 x 10 | 20,480 | $\\frac{\\partial L}{\\partial W^{(1)}}$" in table
    )
    sgd = render_document(derive(load("quadratic")), "markdown")
    assert "counts the steps" not in sgd  # plain SGD has no step counter
    adam = render_document(derive(load("digits_cnn")), "markdown")
    assert "($t$ counts the steps)" in adam
    latex = render_document(derive(load("digits_cnn")), "latex")
    assert "-{}-{}data" in latex  # --data, not an en dash
    logistic = render_document(derive(load("logistic")), "markdown")
    assert " &= \\hat{y} - y\n" in logistic  # dl/dz cancelled to yhat - y
