"""Learning-rate schedules against torch.optim.lr_scheduler: each registry entry and a
sequence give torch's rate epoch by epoch, and training with one follows torch.optim
with its scheduler stepped once per epoch, in every NumPy training loop and in C."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from support import SCHEDULE_NAMES, import_file, schedule_cases

from symbp.derive import derive
from symbp.schedules import SCHEDULES
from symbp.spec import parse_spec
from symbp.targets.numpy.module import render_module

torch = pytest.importorskip("torch")

STACK = """name = "scheduled"
[model]
input = 3
layers = [{ dense = 4, activation = "tanh" }, { dense = 2 }]
loss = "mse"
[train]
optimizer = "OPT"
lr = 0.05
"""

EXPRESSION = """name = "sched_expr"
[model]
inputs = ["x"]
targets = ["y"]
output = "w*x + b"
loss = "(yhat - y)**2"
[params]
w = 0.5
b = -0.2
[train]
optimizer = "OPT"
lr = 0.1
"""


def torch_rates(factory, epochs: int, lr: float) -> list[float]:
    leaf = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([leaf], lr=lr)
    scheduler = factory(opt)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping without optimizer.step
        for _ in range(epochs):
            rates.append(opt.param_groups[0]["lr"])
            scheduler.step()
    return rates


def module_of(text: str, folder, dtype: str = "float64"):
    path = folder / f"m_{abs(hash(text)) % 10**8}.py"
    path.write_text(render_module(derive(parse_spec(text, "m.toml")), dtype), encoding="utf-8")
    return import_file(path)


def test_every_schedule_has_a_case():
    assert set(SCHEDULE_NAMES) == {*SCHEDULES, "sequence"}


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_learning_rate_is_torchs_epoch_by_epoch(tmp_path, name):
    line, factory = schedule_cases()[name]
    module = module_of(STACK.replace("OPT", "sgd") + line + "\n", tmp_path)
    expected = torch_rates(factory, 12, 0.05)
    got = [module.learning_rate(0.05, e) for e in range(12)]
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-17)
    assert len(set(np.round(expected, 12))) > 2  # the schedule changes the rate


def torch_epochs(opt, scheduler, X, Y, batch: int, epochs: int, loss_of) -> list[float]:
    """torch's loop: batches in order, the scheduler stepped after each epoch; each
    epoch's sample-weighted mean loss. ``loss_of(x, y)`` is a batch's loss."""
    losses = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, len(X), batch):
            x, y = torch.tensor(X[start : start + batch]), torch.tensor(Y[start : start + batch])
            opt.zero_grad()
            value = loss_of(x, y)
            value.backward()
            opt.step()
            total += value.item() * len(x)
        losses.append(total / len(X))
        scheduler.step()
    return losses


def _torch_train_stack(params, X, Y, optimizer, factory, epochs, batch):
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](
        list(leaves.values()), lr=0.05
    )
    scheduler = factory(opt)

    def loss_of(x, y):
        h = torch.tanh(x @ leaves["W1"].T + leaves["b1"])
        return torch.nn.functional.mse_loss(h @ leaves["W2"].T + leaves["b2"], y)

    losses = torch_epochs(opt, scheduler, X, Y, batch, epochs, loss_of)
    return {k: v.detach().numpy() for k, v in leaves.items()}, losses


@pytest.mark.parametrize("floats", [False, True], ids=["arrays", "floats"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_stack_training_follows_torch_with_its_scheduler(tmp_path, name, optimizer, floats):
    line, factory = schedule_cases()[name]
    module = module_of(STACK.replace("OPT", optimizer) + line + "\n", tmp_path)
    rng = np.random.default_rng(3)
    params = module.init_params(1)
    X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    trained, losses = module.train(
        params, X, Y, epochs=7, batch_size=2, lr=0.05, shuffle=False, floats=floats
    )
    expected, expected_losses = _torch_train_stack(params, X, Y, optimizer, factory, 7, 2)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10)
    for k, v in expected.items():
        np.testing.assert_allclose(trained[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("batch", [1, 3], ids=["per-sample", "batches"])
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_expression_training_follows_torch_with_its_scheduler(tmp_path, name, batch):
    line, factory = schedule_cases()[name]
    module = module_of(EXPRESSION.replace("OPT", "adam") + line + "\n", tmp_path)
    X = np.array([[-1.0], [0.5], [1.5], [2.0], [-0.5], [1.0]])
    Y = np.array([[-1.5], [0.8], [2.9], [4.2], [-0.7], [2.1]])
    params = module.init_params(0)
    trained, losses = module.train(params, X, Y, epochs=7, batch_size=batch, lr=0.1, shuffle=False)
    w = torch.tensor(float(params["w"]), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(float(params["b"]), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.1)
    expected = torch_epochs(
        opt, factory(opt), X, Y, batch, 7, lambda x, y: ((w * x + b - y) ** 2).mean()
    )
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    assert float(trained["w"]) == pytest.approx(w.item(), rel=1e-10)
    assert float(trained["b"]) == pytest.approx(b.item(), rel=1e-10)


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("cc", "gcc", "clang")), reason="no C compiler"
)
@pytest.mark.parametrize("name", ["cosine", "sequence"])
def test_c_training_follows_the_numpy_module_and_its_trainer_compiles(tmp_path, name):
    import subprocess

    from symbp.targets.c.target import render_c, render_c_loader

    line, _ = schedule_cases()[name]
    text = STACK.replace("OPT", "adam") + line + "\n"
    derivation = derive(parse_spec(text, "m.toml"))
    (tmp_path / "sched.c").write_text(render_c(derivation, "float64"), encoding="utf-8")
    loader = tmp_path / "sched_c.py"
    loader.write_text(render_c_loader(derivation, "sched.c", "float64"), encoding="utf-8")
    c = import_file(loader)
    module = module_of(text, tmp_path)
    rng = np.random.default_rng(4)
    params = module.init_params(2)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    options = {"epochs": 7, "batch_size": 4, "lr": 0.05, "seed": 1, "shuffle": True}
    trained, losses = c.train(params, X, Y, **options)
    expected, expected_losses = module.train(params, X, Y, backend="numpy", **options)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    for k, v in expected.items():
        np.testing.assert_allclose(trained[k], v, rtol=1e-11, atol=1e-13)
    compiler = next(c for c in ("gcc", "clang", "cc") if shutil.which(c))
    strict = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-O2"]
    out = tmp_path / "sched_main"
    done = subprocess.run(
        [compiler, *strict, str(tmp_path / "sched.c"), "-o", str(out), "-lm"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_tensor_model_training_follows_torch_with_its_scheduler(tmp_path):
    line, factory = schedule_cases()["sequence"]
    text = (
        'name = "scheduled_tensor"\n[model]\ninputs = { x = [3] }\ntargets = { y = [2] }\n'
        'output = "yhat"\nloss = "mse(yhat, y)"\n[model.params]\nW = [2, 3]\nb = [2]\n'
        '[model.let]\nyhat = "tanh(W @ x + b)"\n[train]\noptimizer = "sgd"\nmomentum = 0.5\n'
        f"{line}\n"
    )
    module = module_of(text, tmp_path)
    rng = np.random.default_rng(6)
    params = module.init_params(0)
    X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    trained, losses = module.train(params, X, Y, epochs=7, batch_size=2, lr=0.1, shuffle=False)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.SGD(list(t.values()), lr=0.1, momentum=0.5)

    def loss_of(x, y):
        return torch.nn.functional.mse_loss(torch.tanh(x @ t["W"].T + t["b"]), y)

    expected = torch_epochs(opt, factory(opt), X, Y, 2, 7, loss_of)
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    for k, leaf in t.items():
        np.testing.assert_allclose(trained[k], leaf.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["stack", "expression", "tensor"])
def test_documents_state_the_schedule(tmp_path, kind):
    """The training paragraph of every document format says the schedule, as torch
    writes it and epoch by epoch; the LaTeX compiles."""
    from test_document import compile_latex

    from symbp.documents import render_document

    line, _ = schedule_cases()["sequence"]
    text = (
        {
            "stack": STACK.replace("OPT", "adam"),
            "expression": EXPRESSION.replace("OPT", "sgd"),
            "tensor": (
                'name = "scheduled_tensor"\n[model]\ninputs = { x = [3] }\ntargets = { y = [] }\n'
                'output = "z"\nloss = "(z - y)**2"\n[model.params]\nw = [3]\n'
                '[model.let]\nz = "dot(w, x)"\n[train]\n'
            ),
        }[kind]
        + line
        + "\n"
    )
    derivation = derive(parse_spec(text, "m.toml"))
    torch_text = "SequentialLR(optimizer, [LinearLR(optimizer, start_factor=0.1, total_iters=2)"
    for fmt in ("markdown", "text", "latex"):
        document = render_document(derivation, fmt)
        flat = " ".join(document.split())
        assert "The learning rate changes once per epoch" in flat, fmt
        assert torch_text in flat.replace("\\_", "_"), fmt
        assert "lr_e = lr (1 + cos(pi (e - 2) / 4)) / 2 (2 <= e < 5)" in flat, fmt
    if shutil.which("pdflatex"):
        compile_latex(render_document(derivation, "latex"), tmp_path)
