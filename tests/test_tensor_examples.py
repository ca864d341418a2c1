"""The built-in tensor models: the results their descriptions state, the published
values they reproduce, the cheap-gradient bound, and their derivation documents."""

from __future__ import annotations

import re

import numpy as np
import pytest
from support import generate

from symbp.cli import main
from symbp.derive import derive
from symbp.documents import render_document
from symbp.language.model import TensorModel
from symbp.program.flops import program_flops
from symbp.spec import builtin_names, load

TENSOR_NAMES = [n for n in builtin_names() if isinstance(load(n), TensorModel)]


def test_the_model_language_examples_are_built_in():
    assert {
        "residual_digits",
        "batchnorm_digits",
        "least_squares",
        "tied_autoencoder",
        "micrograd_ops",
        "micrograd_sanity",
    } <= set(TENSOR_NAMES)


@pytest.mark.parametrize("name", ["residual_digits", "batchnorm_digits", "sum_sign_rnn"])
def test_symbp_run_reaches_the_held_out_accuracy_its_description_states(name, tmp_path, capsys):
    if load(name).dataset == "digits":
        pytest.importorskip("sklearn")
    stated = re.search(r"(\d+\.\d+)% with seed 0", load(name).description).group(1)
    assert main(["run", name, "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # a model with batch statistics reports it in eval mode, by their running averages
    assert re.search(rf"held-out accuracy( \(eval mode: running statistics\))?: {stated}%", out)


def test_the_sine_lstm_reaches_the_held_out_loss_its_description_states(tmp_path, capsys):
    """The LSTM predicts the next value of a noisy sine far better than repeating the
    last value does, the figures its description states."""
    stated, baseline = re.search(
        r"value: (\d\.\d+) with seed 0, against (\d\.\d+)", load("sine_lstm").description
    ).groups()
    assert main(["run", "sine_lstm", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"held-out loss: {stated}\n" in out
    assert f"held-out loss of repeating the last value: {baseline}\n" in out


def test_least_squares_recovers_the_matrix_of_its_data(tmp_path):
    spec = load("least_squares")
    module = generate(spec, tmp_path)
    params, losses = module.train(module.init_params(), {"x": spec.data["x"]}, spec.data["y"])
    A = np.array([[1, -2, 0.5], [0, 3, -1]])
    assert np.abs(params["W"] - A).max() < 1e-7
    assert losses[-1] < 1e-15


def test_tied_autoencoder_reaches_its_stated_loss(tmp_path):
    spec = load("tied_autoencoder")
    module = generate(spec, tmp_path)
    X = spec.data["x"]
    assert module.loss(module.init_params(), X) == pytest.approx(0.0436, abs=5e-5)
    params, _ = module.train(module.init_params(), X)
    assert module.loss(params, X) == pytest.approx(0.000309, abs=5e-7)


@pytest.mark.parametrize(
    ("name", "value", "grads"),
    [
        ("micrograd_ops", 24.70408163265306, {"a": 138.83381924198252, "b": 645.5772594752186}),
        ("micrograd_sanity", -20.0, {"x": 46.0}),
    ],
)
def test_micrograd_examples_give_the_published_values(name, value, grads, tmp_path):
    module = generate(load(name), tmp_path)
    loss, ours = module.loss_and_grads(module.init_params())
    assert loss == pytest.approx(value, rel=1e-14)
    for key, expected in grads.items():
        assert float(ours[key]) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("name", TENSOR_NAMES)
def test_the_program_keeps_the_cheap_gradient_bound(name):
    """Forward and backward cost at most 5 forward passes, counted in flops, per sample
    and at the training batch size."""
    spec = load(name)
    program = derive(spec).program
    for n in (1, spec.train.batch_size):
        flops = program_flops(program, n)
        assert flops["program"] <= 5 * flops["forward"], (n, flops)


def test_the_residual_document_sums_both_paths_of_the_skip_connection():
    text = render_document(derive(load("residual_digits")), "markdown")
    assert "$h_{1}$ is read by $h_{2}$ (2 times): 2 contributions." in text
    assert r"h_{2} &= h_{1} + \operatorname{relu}{\left(W_{2} h_{1} + b_{2} \right)}" in text
    assert r"\bar{h_{1}} &= \bar{h_{2}} + \mathit{v}_{" in text


def test_the_tied_autoencoder_document_shows_both_uses_of_w():
    text = render_document(derive(load("tied_autoencoder")), "text")
    assert "- W is read by h, xhat: 2 contributions." in text
    assert "W = " not in text.split("1. The model")[0]  # nothing before the model section


@pytest.mark.parametrize("fmt", ["text", "markdown", "latex"])
@pytest.mark.parametrize("name", TENSOR_NAMES)
def test_documents_render_in_every_format(name, fmt):
    text = render_document(derive(load(name)), fmt)
    assert "generalized backpropagation" in text
    assert "What it costs" in text


def test_a_100_block_residual_network_generates_and_derives_in_seconds(tmp_path):
    """Closed forms stop substituting past a budget: a deep network's first weight
    would otherwise collect every block's formula."""
    import time

    from symbp.targets.numpy.module import render_module

    blocks = 100
    lines = [
        'name = "deep_residual"',
        "[model]",
        "inputs = { x = [16] }",
        "targets = { y = [] }",
        'output = "yhat"',
        'loss = "cross_entropy(yhat, y)"',
        "[model.params]",
        *(f"W{i} = [16, 16]\nb{i} = [16]" for i in range(1, blocks + 1)),
        "Wo = [4, 16]",
        "[model.let]",
        'h0 = "x"',
        *(f'h{i} = "h{i - 1} + relu(W{i} @ h{i - 1} + b{i})"' for i in range(1, blocks + 1)),
        f'yhat = "Wo @ h{blocks}"',
    ]
    from symbp.spec import parse_spec

    start = time.perf_counter()
    derivation = derive(parse_spec("\n".join(lines) + "\n", "deep.toml"))
    render_module(derivation)
    text = render_document(derivation, "markdown")
    elapsed = time.perf_counter() - start
    assert elapsed < 10  # about 1.5 s here; generous for a loaded machine
    assert r"\bar{h_{1}} &=" in text  # the local forms stay


def test_derive_stats_reports_flops_of_a_tensor_model(capsys):
    assert main(["derive", "least_squares", "--stats"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "least_squares: floating-point operations of one training step"
    flops = program_flops(derive(load("least_squares")).program, 6)
    ratio = flops["program"] / flops["forward"]
    assert out[-1].split() == [
        "6",
        f"{flops['forward']:,}",
        f"{flops['program']:,}",
        f"{ratio:.2f}",
    ]


def test_run_trains_a_model_without_inputs(tmp_path, capsys):
    assert main(["run", "micrograd_sanity", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "initial loss: -20" in out
    assert "x = -4.046" in out
    assert (tmp_path / "micrograd_sanity.py").exists()
    assert (tmp_path / "test_micrograd_sanity.py").exists()
