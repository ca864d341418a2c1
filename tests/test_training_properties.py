"""Training as a property: random stacks trained by random optimizer configurations
(every registry entry, its options, gradient clipping, a learning-rate schedule) follow
torch.optim epoch by epoch, and the C module follows the NumPy module.

The configurations are drawn from the registries (symbp.optim.OPTIMIZERS,
symbp.schedules.SCHEDULES), so an optimizer or schedule added there is drawn here
without a change to this file; torch's side is built from the same names.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layer_strategies import random_batch, random_params, stacks, torch_forward, torch_loss
from layer_strategies import torch_tensors as tensors
from support import import_file, torch_float64

from symbp.derive import derive
from symbp.optim import BOOLEAN_OPTIONS, OPTIMIZERS
from symbp.spec import parse_spec
from symbp.targets.numpy.module import render_module

torch = pytest.importorskip("torch")

# a few values of each numeric option, around torch's defaults
NUMBERS = {
    "momentum": (0.0, 0.5, 0.9),
    "dampening": (0.0, 0.3),
    "weight_decay": (0.0, 0.01, 0.1),
    "lr_decay": (0.0, 0.05),
    "initial_accumulator_value": (0.0, 0.1),
    "alpha": (0.99, 0.9),
    "eps": (1e-8, 1e-4),
    "rho": (0.9, 0.6),
    "momentum_decay": (4e-3, 0.02),
}
BETAS = ((0.9, 0.999), (0.8, 0.9), (0.5, 0.99))
SCHEDULES = {  # [train] text, torch.optim.lr_scheduler's
    "step": ('{ name = "step", step_size = 2, gamma = 0.5 }', lambda s, o: s.StepLR(o, 2, 0.5)),
    "exponential": ('{ name = "exponential", gamma = 0.7 }', lambda s, o: s.ExponentialLR(o, 0.7)),
    "cosine": (
        '{ name = "cosine", T_max = 3, eta_min = 0.001 }',
        lambda s, o: s.CosineAnnealingLR(o, 3, 0.001),
    ),
    "linear": (
        '{ name = "linear", start_factor = 0.25, total_iters = 2 }',
        lambda s, o: s.LinearLR(o, 0.25, total_iters=2),
    ),
}


@dataclass
class Training:
    optimizer: str
    options: dict = field(default_factory=dict)
    clip: tuple[str, float] | None = None
    schedule: str | None = None

    def toml(self) -> str:
        def value(v):
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, tuple):
                return "[" + ", ".join(map(repr, v)) + "]"
            return repr(v)

        lines = [f'optimizer = "{self.optimizer}"', "lr = 0.05"]
        lines += [f"{k} = {value(v)}" for k, v in self.options.items()]
        if self.clip:
            lines.append(f"{self.clip[0]} = {self.clip[1]!r}")
        if self.schedule:
            lines.append(f"lr_schedule = {SCHEDULES[self.schedule][0]}")
        return "[train]\n" + "\n".join(lines) + "\n"

    def torch_optimizer(self, leaves):
        entry = OPTIMIZERS[self.optimizer]
        kwargs = {**self.options}
        if self.optimizer == "momentum":
            kwargs.setdefault("momentum", entry.defaults["momentum"])
        optimizer = getattr(torch.optim, entry.torch_class)(
            leaves, lr=0.05, foreach=False, **kwargs
        )
        if self.schedule is None:
            return optimizer, None
        return optimizer, SCHEDULES[self.schedule][1](torch.optim.lr_scheduler, optimizer)


@st.composite
def trainings(draw) -> Training:
    name = draw(st.sampled_from(sorted(OPTIMIZERS)))
    options = {}
    for key in OPTIMIZERS[name].defaults:
        # maximize is tested on its own (tests/test_torch.py): here it would climb the
        # loss into saturation (bce's x (1 - x) near 0), where the two sides' rounding
        # of an ill-conditioned gradient, not the rule, sets the difference
        if key in ("lr", "maximize") or not draw(st.booleans()):
            continue  # torch's default
        if key in BOOLEAN_OPTIONS:
            options[key] = draw(st.booleans())
        elif key == "betas":
            options[key] = draw(st.sampled_from(BETAS))
        elif key in NUMBERS:
            options[key] = draw(st.sampled_from(NUMBERS[key]))
    if options.get("nesterov"):  # torch's condition: momentum > 0, no dampening
        options["momentum"] = options.get("momentum") or 0.9
        options["dampening"] = 0.0
    clip = draw(
        st.sampled_from(
            (
                None,
                ("clip_grad_norm", 0.1),
                ("clip_grad_norm", 1.0),
                ("clip_grad_value", 0.02),
            )
        )
    )
    schedule = draw(st.sampled_from((None, *SCHEDULES)))
    return Training(name, options, clip, schedule)


def module_of(text: str, folder, name: str):
    path = folder / f"{name}.py"
    path.write_text(render_module(derive(parse_spec(text, "t.toml")), "float64"), "utf-8")
    return import_file(path)


def torch_run(stack, training: Training, params, X, Y, epochs: int, batch: int):
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tX, tY = tensors(stack, X, Y)
    losses = []
    with torch_float64(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer, scheduler = training.torch_optimizer(list(leaves.values()))
        for _ in range(epochs):
            total = 0.0
            for start in range(0, len(X), batch):
                x, y = tX[start : start + batch], tY[start : start + batch]
                optimizer.zero_grad()
                value = torch_loss(stack, torch_forward(stack, leaves, x), y)
                value.backward()
                if training.clip:
                    clip = getattr(torch.nn.utils, f"{training.clip[0]}_")
                    clip(list(leaves.values()), training.clip[1])
                optimizer.step()
                total += value.item() * len(x)
            losses.append(total / len(X))
            if scheduler is not None:
                scheduler.step()
    return {k: v.detach().numpy() for k, v in leaves.items()}, losses


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=stacks(), training=trainings(), seed=st.integers(0, 2**16), floats=st.booleans())
def test_random_trainings_follow_torch_optim(tmp_path_factory, stack, training, seed, floats):
    folder = tmp_path_factory.mktemp("training")
    module = module_of(stack.toml() + training.toml(), folder, "trained")
    rng = np.random.default_rng(seed)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng, n=5)
    # the float loop where the stack is small enough to have one
    paths = {"floats": floats} if hasattr(module, "_train_floats") else {}
    with np.errstate(all="ignore"):
        trained, losses = module.train(
            params, X, Y, epochs=4, batch_size=2, lr=0.05, shuffle=False, **paths
        )
    expected, expected_losses = torch_run(stack, training, params, X, Y, 4, 2)
    if not (np.all(np.isfinite(expected_losses)) and np.all(np.isfinite(losses))):
        return  # a run that overflowed (torch too) says nothing about the rule
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-9, atol=1e-12)
    for k, v in expected.items():
        np.testing.assert_allclose(trained[k], v, rtol=1e-8, atol=1e-11, err_msg=k)


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("cc", "gcc", "clang")), reason="no C compiler"
)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=stacks(), training=trainings(), seed=st.integers(0, 2**16))
def test_random_trainings_in_c_follow_numpy(tmp_path_factory, stack, training, seed):
    from symbp.targets.c.target import render_c, render_c_loader

    folder = tmp_path_factory.mktemp("training_c")
    text = stack.toml() + training.toml()
    derivation = derive(parse_spec(text, "t.toml"))
    (folder / "trained_c_src.c").write_text(render_c(derivation, "float64"), "utf-8")
    loader = folder / "trained_c_src_c.py"
    loader.write_text(render_c_loader(derivation, "trained_c_src.c", "float64"), "utf-8")
    c = import_file(loader)
    module = module_of(text, folder, "trained_np")
    rng = np.random.default_rng(seed)
    params = random_params(stack, rng)
    X, Y = random_batch(stack, rng, n=5)
    options = {"epochs": 4, "batch_size": 2, "lr": 0.05, "shuffle": True, "seed": seed}
    with np.errstate(all="ignore"):
        expected, expected_losses = module.train(params, X, Y, backend="numpy", **options)
    if not np.all(np.isfinite(expected_losses)):
        return
    trained, losses = c.train(params, X, Y, **options)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-11, atol=1e-13)
    for k, v in expected.items():
        np.testing.assert_allclose(trained[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
