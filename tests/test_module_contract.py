"""The generated modules check their arguments once per call: a wrong parameter shape, a
misspelt or missing key, an empty batch, mismatched rows or a training option out of
range is one ValueError naming the argument, never a silently wrong loss; the command
line refuses a non-positive --lr and an unreadable --data in one line; the float path
of batch size 1 gives what the array path gives where a float cannot hold a value."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from support import REPO, generate, import_file

from symbp.spec import parse_spec

MODULES = {
    name: import_file(REPO / "generated" / f"{name}.py")
    for name in ("quadratic", "xor_mlp", "digits_cnn")
}


def batch(module, n=4):
    rng = np.random.default_rng(0)
    if hasattr(module, "LAYER_WIDTHS"):
        X = rng.normal(size=(n, module.LAYER_WIDTHS[0]))
        if module.LOSS == "cross_entropy":
            return X, rng.integers(0, module.LAYER_WIDTHS[-1], n)
        return X, rng.uniform(size=(n, module.LAYER_WIDTHS[-1]))
    return rng.uniform(size=(n, len(module.INPUTS))), rng.uniform(size=(n, len(module.TARGETS)))


@pytest.fixture(params=list(MODULES))
def module(request):
    return MODULES[request.param]


def calls(module, params, X, Y):
    return {
        "forward": lambda: module.forward(params, X),
        "loss": lambda: module.loss(params, X, Y),
        "loss_and_grads": lambda: module.loss_and_grads(params, X, Y),
        "train": lambda: module.train(params, X, Y, epochs=1),
    }


def test_a_wrong_shape_is_refused(module):
    X, Y = batch(module)
    params = module.init_params(0)
    name = next(iter(params))
    params[name] = np.zeros((*params[name].shape, 2))
    for call in calls(module, params, X, Y).values():
        with pytest.raises(ValueError, match=rf"params\['{name}'\] must have shape"):
            call()


def test_a_missing_or_unknown_key_is_refused(module):
    X, Y = batch(module)
    params = module.init_params(0)
    first = next(iter(params))
    extra = {**params, "typo": np.zeros(())}
    missing = {k: v for k, v in params.items() if k != first}
    for bad, pattern in ((extra, r"unknown \['typo'\]"), (missing, rf"missing \['{first}'\]")):
        for call in calls(module, bad, X, Y).values():
            with pytest.raises(ValueError, match=pattern):
                call()


def test_an_empty_batch_and_mismatched_rows_are_refused(module):
    X, Y = batch(module)
    params = module.init_params(0)
    for call in calls(module, params, X[:0], Y[:0]).values():
        with pytest.raises(ValueError, match="X is empty"):
            call()
    for name in ("loss", "loss_and_grads", "train"):
        with pytest.raises(ValueError, match="X has 4 samples but Y has 3"):
            calls(module, params, X, Y[:3])[name]()


@pytest.mark.parametrize(
    "option, pattern",
    [
        ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 1.5}, "batch_size must be a positive integer"),
        ({"epochs": -1}, "epochs must be a non-negative integer, got -1"),
        ({"lr": -1.0}, "lr must be a positive finite number, got -1.0"),
        ({"lr": float("nan")}, "lr must be a positive finite number"),
        ({"lr": True}, "lr must be a positive finite number"),
    ],
)
def test_training_options_out_of_range_are_refused(module, option, pattern):
    X, Y = batch(module)
    with pytest.raises(ValueError, match=pattern):
        module.train(module.init_params(0), X, Y, **option)


def test_main_refuses_a_bad_lr_and_an_unreadable_data_file(module, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--lr", "-1"])
    assert exit_info.value.code == 2
    assert "must be a positive finite number, got -1" in capsys.readouterr().err
    missing = tmp_path / "missing.npz"
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--data", str(missing), "--epochs", "1"])
    assert str(exit_info.value) == f"{missing}: cannot read an .npz file: No such file or directory"


def test_the_float_path_behaves_as_the_array_path_where_floats_fail(tmp_path):
    text = """name = "inverse"
[model]
inputs = ["x"]
targets = ["y"]
output = "w/x + log(x)*v"
loss = "mse"
[train]
batch_size = 1
"""
    module = generate(parse_spec(text, "inverse.toml"), tmp_path)
    X = np.array([[0.0], [1.0], [2.0]])
    Y = np.array([[1.0], [2.0], [3.0]])
    with np.errstate(all="ignore"):
        params, losses = module.train(module.init_params(0), X, Y, epochs=2)
        assert not np.isfinite(losses[0])
        expected = module.loss(module.init_params(0), X[:1], Y[:1])
    assert not np.isfinite(expected)


def test_progress_is_called_after_every_epoch_on_every_path(module):
    X, Y = batch(module, n=6)
    seen = []
    paths = [{"batch_size": 1}, {"batch_size": 4}]
    if hasattr(module, "FLOAT_BATCH_MAX"):
        paths += [{"batch_size": 2, "floats": True}, {"batch_size": 2, "floats": False}]
    for options in paths:
        seen.clear()
        _, losses = module.train(
            module.init_params(0),
            X,
            Y,
            epochs=4,
            progress=lambda e, v: seen.append((e, v)),
            **options,
        )
        assert seen == list(enumerate(losses, 1)), options


def test_main_reports_progress_while_training(capsys):
    module = MODULES["quadratic"]
    assert module.main(["--epochs", "20"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == [str(e) for e in range(2, 21, 2)]


def test_plot_without_matplotlib_says_so_before_training(module, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(module, "train", lambda *a, **k: pytest.fail("trained first"))
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--plot", str(tmp_path / "loss.png"), "--epochs", "1"])
    assert "--plot needs matplotlib, which is not installed" in str(exit_info.value)
    assert not (tmp_path / "loss.png").exists()


def test_train_keeps_its_arrays_between_calls_and_returns_copies(tmp_path):
    """One-batch train() calls reuse the flat parameter, gradient and optimizer arrays
    and the step's workspace; a call made while another runs (from its progress
    callback) gets arrays of its own; the results never alias the kept arrays."""
    from support import import_file

    from symbp.derive import derive
    from symbp.spec import load
    from symbp.targets.numpy.module import render_module

    path = tmp_path / "digits_keep.py"
    path.write_text(render_module(derive(load("digits_mlp")), "float64"), encoding="utf-8")
    module = import_file(path)
    rng = np.random.default_rng(0)
    X, Y = rng.uniform(0, 1, size=(32, 64)), rng.integers(0, 10, size=32)
    params = module.init_params(0)
    first, losses = module.train(params, X, Y, epochs=1, batch_size=32)
    (kept,) = module._kept
    again, losses_again = module.train(params, X, Y, epochs=1, batch_size=32)
    assert module._kept == [kept] and kept["p"] is module._kept[0]["p"]
    assert list(kept["workspaces"]) == [32]
    assert losses == losses_again
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert all(not np.shares_memory(first[k], kept["p"]) for k in first)

    # a run of several steps leaves its Adam state in the kept arrays; the next call's
    # first step must not read it, and no result may change when a later call runs
    several, several_losses = module.train(params, X, Y, epochs=3, batch_size=8, shuffle=True)
    held = {k: v.copy() for k, v in several.items()}
    after, after_losses = module.train(params, X, Y, epochs=1, batch_size=32)
    assert after_losses == losses and all(np.array_equal(after[k], first[k]) for k in first)
    repeat, repeat_losses = module.train(params, X, Y, epochs=3, batch_size=8, shuffle=True)
    assert repeat_losses == several_losses
    assert all(np.array_equal(repeat[k], held[k]) for k in held)
    assert all(np.array_equal(several[k], held[k]) for k in held)  # not overwritten
    assert all(not np.shares_memory(repeat[k], kept["p"]) for k in repeat)

    inner = {}

    def nested(epoch, value):
        inner["result"] = module.train(params, X, Y, epochs=1, batch_size=32)

    outer, outer_losses = module.train(params, X, Y, epochs=1, batch_size=32, progress=nested)
    assert len(module._kept) == 2  # the nested call's arrays are kept too
    assert outer_losses == losses and inner["result"][1] == losses
    assert all(np.array_equal(outer[k], first[k]) for k in first)
