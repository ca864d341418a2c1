"""Benchmark: one Adam training step of a 784-256-256-10 ReLU MLP (issue 3).

The network is nn.Sequential(Linear(784, 256), ReLU, Linear(256, 256), ReLU,
Linear(256, 10)) with nn.CrossEntropyLoss (mean over the batch) on integer labels,
trained by torch.optim.Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8), in float32. One
step is the forward pass, the backward pass and the Adam update of all six parameters.
At batch sizes 32, 128 and 1024 this script times that step for:

(a) the module that symbp generates from the layer-stack spec below (written by the
    CLI, ``symbp generate SPEC --target numpy --dtype float32 -o FILE``, into a
    temporary directory at the start). Two ways:
    (a)  ``train(params, X, Y, epochs=1, batch_size=N, lr=1e-3, shuffle=False)`` on
         exactly one batch of N rows, as a user streaming data calls it: one step, with
         Adam's state made fresh by every call (its first step, which reads no state)
         and the parameters copied in;
    (a') ``loss_and_grads(params, X, Y)`` followed by the same in-place Adam update as
         (b) uses, applied parameter by parameter;
    (a'') train() on 64 copies of the batch (one epoch of 64 steps per call, so that
         the call's set-up, allocating the flat parameter, gradient and Adam arrays and
         the step's buffers, is shared as in any real training run), per step. This is
         the generated training step that the requirements are measured on.
    When the spec cannot be generated (layer stacks not implemented yet) the script
    prints "skipped: symbp cannot generate layer stacks yet" and goes on without (a);
(b) a hand-written NumPy step: float32 throughout, every buffer preallocated, products
    by ``np.matmul(..., out=)`` with transposed operands passed as views, ReLU by
    ``np.maximum(z, 0, out=z)``, the fused softmax-cross-entropy gradient
    (softmax - onehot) / N, bias gradients as ones @ dZ, and Adam in place on one flat
    buffer that holds all six parameters (and one each for the gradients, m and v), with
    the moments kept unscaled so that the update takes ten passes over memory (see
    adam_update);
(c) PyTorch eager: the nn.Sequential above, CrossEntropyLoss, torch.optim.Adam with
    ``zero_grad(set_to_none=True)``, ``loss.backward()``, ``opt.step()``;
(d) the eight matrix products a step needs, alone: three forward (X W1^T, A1 W2^T,
    A2 W3^T) and five backward (dW3, dA2, dW2, dA1, dW1), same shapes and layouts;
(e) for reference, (b)'s Adam update alone (what a step costs beyond its products is
    mostly this at small batches).

Before timing, (b) is checked against (c): the same initial weights (torch's default
init copied into NumPy) and one step on the same batch must give the same loss
(rtol 1e-5), the same gradients and the same updated parameters (atol 1e-6). In float32
Adam's first step, lr*g/(|g| + eps), turns the rounding of a gradient near zero into
update differences up to about 1e-5, so there the parameters are compared only for the
elements with |g| >= 1e-6 (the rest are counted in the output); the same step in
float64 is compared on every element. (a) is checked against (b) the same way.

Timing: the contenders take turns in rounds, in rotating order, each round one block of
k steps per contender (k chosen so that a block takes about 50 ms; each block starts
from the initial weights, then one untimed step creates the optimizer state), with a
pause after every block because NumPy's BLAS threads (and torch's) keep spinning for a
moment after work and take a core. Each contender is warmed up first. The figures are
medians over the blocks of the time per step. The data are a fixed random batch:
pixels uniform in [0, 1), labels uniform in 0..9. Each row also gives the median
number of minor page faults per step (getrusage): memory the step touches for the first
time, which is what allocating fresh arrays every step costs, whatever the load.

Run from the repository root (about three minutes):

    python benchmarks/mlp_step.py
    python benchmarks/mlp_step.py --threads 1      # one BLAS / torch thread

The exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SIZES = (784, 256, 256, 10)
BATCHES = (32, 128, 1024)
LR = 1e-3
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
SEED = 0
BLOCK_S = 0.05  # aim for blocks of about this long
TINY_GRAD = 1e-6  # below this, Adam's first step is ill-conditioned in float32
MODULE_NAME = "mlp_bench"
TRAIN_BATCHES = 64  # steps per train() call in (a'')

SPEC = """\
name = "mlp_bench"
[model]
input = 784
layers = [ { dense = 256, activation = "relu" }, { dense = 256, activation = "relu" }, \
{ dense = 10 } ]
loss = "cross_entropy"
[train]
optimizer = "adam"
lr = 0.001
epochs = 1
batch_size = 128
"""

Arrays = list[np.ndarray]


# -- the shared Adam update --------------------------------------------------------------


def adam_update(params: Arrays, grads: Arrays, ms: Arrays, vs: Arrays, tmps: Arrays, t: int):
    """torch.optim.Adam's update, in place, allocating nothing: ten passes over memory.

    torch keeps m = beta1 m + (1 - beta1) g and v = beta2 v + (1 - beta2) g^2, and sets
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
    Here the buffers hold m' = m / (1 - beta1) and v' = v / (1 - beta2), updated as
    m' <- beta1 m' + g and v' <- beta2 v' + g^2 (three passes fewer), and the two factors
    move into the scalars: with k = sqrt((1 - beta2) / (1 - beta2^t)),
        p <- p - (lr (1 - beta1) / (1 - beta1^t) / k) * m' / (sqrt(v') + eps / k),
    which is the same update up to float rounding. tmps are scratch arrays of the
    parameters' shapes; all moments start at zero.
    """
    k = ((1.0 - BETA2) / (1.0 - BETA2**t)) ** 0.5
    step_size = LR * (1.0 - BETA1) / (1.0 - BETA1**t) / k
    eps = EPS / k
    for p, g, m, v, tmp in zip(params, grads, ms, vs, tmps, strict=True):
        m *= BETA1
        m += g
        v *= BETA2
        np.multiply(g, g, out=tmp)
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= -step_size
        p += tmp


# -- (b) the hand-written step -----------------------------------------------------------


class HandStep:
    """(b) the MLP's training step in NumPy, every buffer allocated once.

    The parameters W1, b1, W2, b2, W3, b3 (torch.nn.Linear layout: Z = A W^T + b) are
    views into one flat array, and so are their gradients, so that Adam runs as a single
    pass of a dozen ufunc calls over all of them. The activations overwrite their
    pre-activations in place; ReLU's derivative is then read off A > 0.
    """

    def __init__(self, init: Arrays, batch: int, dtype=np.float32):
        total = sum(a.size for a in init)
        self.flat = np.empty(total, dtype)
        self.grad_flat = np.empty(total, dtype)
        self.m = np.zeros(total, dtype)
        self.v = np.zeros(total, dtype)
        self.tmp = np.empty(total, dtype)
        self.params, self.grads, offset = [], [], 0
        for a in init:
            view = slice(offset, offset + a.size)
            self.params.append(self.flat[view].reshape(a.shape))
            self.grads.append(self.grad_flat[view].reshape(a.shape))
            offset += a.size
        widths = [a.shape[0] for a in init[::2]]
        self.acts = [np.empty((batch, w), dtype) for w in widths]  # Z, then A = relu(Z)
        self.d_acts = [np.empty((batch, w), dtype) for w in widths[:-1]]
        self.ones = np.ones(batch, dtype)
        self.rows = np.arange(batch)
        self.batch = batch
        self.reset(init)

    def reset(self, init: Arrays) -> None:
        """Back to the given weights, with a fresh optimizer state."""
        for p, a in zip(self.params, init, strict=True):
            p[...] = a
        self.m.fill(0)
        self.v.fill(0)
        self.t = 0

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> float:
        """Forward and backward pass; the gradients land in self.grads."""
        layers = len(self.acts)
        W = self.params[0::2]
        b = self.params[1::2]
        dW = self.grads[0::2]
        db = self.grads[1::2]
        # forward: Z_i = A_{i-1} W_i^T + b_i, A_i = relu(Z_i) in place
        A = X
        for i, Z in enumerate(self.acts):
            np.matmul(A, W[i].T, out=Z)
            Z += b[i]
            if i < layers - 1:
                np.maximum(Z, 0, out=Z)
            A = Z
        # softmax cross-entropy on the logits, in place: L = mean(log sum exp z - z_y)
        Z = self.acts[-1]
        Z -= Z.max(axis=1, keepdims=True)
        picked = Z[self.rows, y]
        np.exp(Z, out=Z)
        sums = Z.sum(axis=1, keepdims=True)
        loss = float(np.log(sums).mean() - picked.mean())
        # dL/dZ = (softmax - onehot) / N, written over the logits' buffer
        Z /= sums
        Z[self.rows, y] -= 1
        Z *= 1.0 / self.batch
        # backward: dW_i = dZ_i^T A_{i-1}, db_i = 1^T dZ_i, dZ_{i-1} = (dZ_i W_i) * relu'
        dZ = Z
        for i in reversed(range(layers)):
            A_prev = self.acts[i - 1] if i > 0 else X
            np.matmul(dZ.T, A_prev, out=dW[i])
            np.matmul(self.ones, dZ, out=db[i])
            if i > 0:
                dA = self.d_acts[i - 1]
                np.matmul(dZ, W[i], out=dA)
                np.multiply(dA, A_prev > 0, out=dA)
                dZ = dA
        return loss

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        loss = self.loss_and_grads(X, y)
        self.t += 1
        adam_update([self.flat], [self.grad_flat], [self.m], [self.v], [self.tmp], self.t)
        return loss


# -- (c) PyTorch, (d) products alone -----------------------------------------------------


def torch_net(torch, dtype):
    """The MLP as nn.Sequential, with torch's default initialisation from SEED."""
    torch.manual_seed(SEED)
    layers = []
    for i in range(len(SIZES) - 1):
        layers.append(torch.nn.Linear(SIZES[i], SIZES[i + 1]))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(dtype)


class TorchStep:
    """(c) PyTorch eager, the usual loop body."""

    def __init__(self, torch, init: Arrays, X: np.ndarray, y: np.ndarray, dtype):
        self.torch = torch
        self.net = torch_net(torch, dtype)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.X = torch.from_numpy(X)
        self.y = torch.from_numpy(y)
        self.reset(init)

    def reset(self, init: Arrays) -> None:
        with self.torch.no_grad():
            for p, a in zip(self.net.parameters(), init, strict=True):
                p.copy_(self.torch.from_numpy(a))
        self.opt = self.torch.optim.Adam(self.net.parameters(), lr=LR)

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.net(self.X), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()


def products_alone(batch: int) -> Callable[[], None]:
    """(d) the step's eight matrix products on fixed random operands of its shapes."""
    rng = np.random.default_rng(SEED + 1)

    def r(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    n0, n1, n2, n3 = SIZES
    X, W1, W2, W3 = r(batch, n0), r(n1, n0), r(n2, n1), r(n3, n2)
    A1, A2, dZ1, dZ2, dZ3 = r(batch, n1), r(batch, n2), r(batch, n1), r(batch, n2), r(batch, n3)
    Z1, Z2, Z3 = np.empty((batch, n1), np.float32), np.empty_like(A2), np.empty_like(dZ3)
    dA1, dA2 = np.empty_like(A1), np.empty_like(A2)
    dW1, dW2, dW3 = np.empty_like(W1), np.empty_like(W2), np.empty_like(W3)

    def run() -> None:
        np.matmul(X, W1.T, out=Z1)
        np.matmul(A1, W2.T, out=Z2)
        np.matmul(A2, W3.T, out=Z3)
        np.matmul(dZ3.T, A2, out=dW3)
        np.matmul(dZ3, W3, out=dA2)
        np.matmul(dZ2.T, A1, out=dW2)
        np.matmul(dZ2, W2, out=dA1)
        np.matmul(dZ1.T, X, out=dW1)

    return run


# -- (a) the generated module ------------------------------------------------------------


def generate(directory: Path, dtype: str):
    """Write the spec, run the symbp CLI on it, import the result: (module, s) or (None, why)."""
    spec = directory / "mlp_bench.toml"
    spec.write_text(SPEC)
    out = directory / f"{MODULE_NAME}_{dtype}.py"
    command = [sys.executable, "-m", "symbp", "generate", str(spec), "--target", "numpy"]
    command += ["--dtype", dtype, "-o", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit status {done.returncode}"
    module_spec = importlib.util.spec_from_file_location(f"{MODULE_NAME}_{dtype}", out)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module, seconds


def generated_names(module, init: Arrays) -> list[str] | str:
    """The module's parameter names in layer order, or why they do not fit the MLP."""
    shapes = getattr(module, "PARAM_SHAPES", None)
    if not isinstance(shapes, dict):
        return "the module has no PARAM_SHAPES"
    names = list(shapes)
    got = [tuple(shapes[n]) for n in names]
    want = [a.shape for a in init]
    if got != want:
        return f"PARAM_SHAPES {got} is not the MLP's {want}"
    return names


class GeneratedGradsStep:
    """(a') the generated loss_and_grads, then the same Adam update as (b), per parameter."""

    def __init__(self, module, names: list[str], init: Arrays, X, y):
        self.module, self.names, self.X, self.y = module, names, X, y
        self.params = {n: np.empty_like(a) for n, a in zip(names, init, strict=True)}
        self.m = [np.zeros_like(a) for a in init]
        self.v = [np.zeros_like(a) for a in init]
        self.tmp = [np.empty_like(a) for a in init]
        self.reset(init)

    def reset(self, init: Arrays) -> None:
        for n, a in zip(self.names, init, strict=True):
            self.params[n][...] = a
        for a in (*self.m, *self.v):
            a.fill(0)
        self.t = 0

    def step(self) -> float:
        loss, grads = self.module.loss_and_grads(self.params, self.X, self.y)
        self.t += 1
        params = [self.params[n] for n in self.names]
        adam_update(params, [grads[n] for n in self.names], self.m, self.v, self.tmp, self.t)
        return loss


def generated_train(module, names: list[str], init: Arrays, X, y, batches: int = 1):
    """A call of train() on the batch repeated `batches` times: one epoch of that many steps.

    With batches=1 this is (a), one step with a fresh Adam state (train() starts one per
    call); with more it is (a''), where the call's set-up is shared by its steps.
    """
    start = dict(zip(names, init, strict=True))
    X = np.tile(X, (batches, 1))
    y = np.tile(y, batches)
    size = len(X) // batches

    def run() -> float:
        _, losses = module.train(start, X, y, epochs=1, batch_size=size, lr=LR, shuffle=False)
        return losses[0]

    return run


# -- checks ------------------------------------------------------------------------------


def compare_step(label, loss, params, grads, ref_loss, ref_params, ref_grads, strict) -> bool:
    """Print and return whether one step agrees with a reference step.

    Parameters are compared to atol 1e-6 on every element when strict, otherwise only
    where the reference gradient has |g| >= TINY_GRAD (see the module docstring).
    """
    ok = bool(np.isclose(loss, ref_loss, rtol=1e-5, atol=0))
    grad_err = max(float(np.max(np.abs(g - r))) for g, r in zip(grads, ref_grads, strict=True))
    ok &= grad_err <= 1e-6
    worst, worst_tiny, tiny = 0.0, 0.0, 0
    for p, r, g in zip(params, ref_params, ref_grads, strict=True):
        diff = np.abs(p.astype(np.float64) - r)
        small = np.zeros(diff.shape, bool) if strict else np.abs(g) < TINY_GRAD
        tiny += int(small.sum())
        worst = max(worst, float(np.max(diff, where=~small, initial=0.0)))
        worst_tiny = max(worst_tiny, float(np.max(diff, where=small, initial=0.0)))
    ok &= worst <= 1e-6
    note = (
        ""
        if strict
        else f"; {tiny} elements with |g| < {TINY_GRAD:g} differ by <= {worst_tiny:.1e}"
    )
    print(
        f"  {label:<34} loss {loss:.7f} vs {ref_loss:.7f}, max |grad diff| {grad_err:.1e},"
        f" max |param diff| {worst:.1e}{note}  {'ok' if ok else 'MISMATCH'}"
    )
    return ok


def torch_reference(torch, init: Arrays, X, y, dtype):
    """One torch step: (loss, updated parameters, gradients), as float64 NumPy arrays."""
    step = TorchStep(torch, init, X, y, dtype)
    step.opt.zero_grad(set_to_none=True)
    loss = step.loss_fn(step.net(step.X), step.y)
    loss.backward()
    grads = [p.grad.double().numpy().copy() for p in step.net.parameters()]
    step.opt.step()
    params = [p.detach().double().numpy().copy() for p in step.net.parameters()]
    return loss.item(), params, grads


def hand_reference(init: Arrays, X, y, dtype):
    """One hand-written step: (loss, gradients, updated parameters)."""
    hand = HandStep([a.astype(dtype) for a in init], len(X), dtype)
    loss = hand.loss_and_grads(X.astype(dtype), y)
    grads = [g.copy() for g in hand.grads]
    hand.t += 1
    adam_update([hand.flat], [hand.grad_flat], [hand.m], [hand.v], [hand.tmp], hand.t)
    return loss, grads, [p.copy() for p in hand.params]


def verify(torch, generated: dict, init: Arrays, X, y) -> bool:
    """(b) against (c), and (a) against (b), one step from the same weights and batch."""
    ok = True
    for name, tdtype, strict in (
        ("float32", torch.float32, False),
        ("float64", torch.float64, True),
    ):
        dtype = np.dtype(name).type
        init_d = [a.astype(dtype) for a in init]
        X_d = X.astype(dtype)
        ref = torch_reference(torch, init_d, X_d, y, tdtype)
        hand_loss, hand_grads, hand_params = hand_reference(init, X, y, dtype)
        ok &= compare_step(f"(b) vs (c), {name}", hand_loss, hand_params, hand_grads, *ref, strict)
        if name not in generated:
            continue
        module, names = generated[name]
        start = dict(zip(names, init_d, strict=True))
        loss, grads = module.loss_and_grads(start, X_d, y)
        trained, losses = module.train(
            start, X_d, y, epochs=1, batch_size=len(X), lr=LR, shuffle=False
        )
        ok &= bool(np.isclose(losses[0], loss, rtol=1e-5, atol=0))
        grads = [grads[n] for n in names]
        trained = [trained[n] for n in names]
        ok &= compare_step(
            f"(a) vs (b), {name}", loss, trained, grads, hand_loss, hand_params, hand_grads, strict
        )
    return ok


# -- timing ------------------------------------------------------------------------------


@dataclass
class Contender:
    key: str
    label: str
    run: Callable[[], object]  # one step, or `steps` steps
    reset: Callable[[], object] = lambda: None  # before a block, untimed
    steps: int = 1  # steps per call of run
    k: int = 1  # calls per block
    times: list[float] = field(default_factory=list)  # seconds per step, one per block
    faults: list[float] = field(default_factory=list)  # minor page faults per step


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where getrusage is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def warm_up(c: Contender) -> None:
    """A few untimed calls, then k for blocks of about BLOCK_S (at least 3 calls)."""
    c.reset()
    for _ in range(3):
        c.run()
    start = time.perf_counter()
    for _ in range(3):
        c.run()
    per_call = (time.perf_counter() - start) / 3
    c.k = max(3, min(200, round(BLOCK_S / per_call)))


def run_rounds(contenders: list[Contender], rounds: int, pause: float) -> None:
    """Each round one block per contender, the starting contender rotating."""
    for c in contenders:
        warm_up(c)
        time.sleep(pause)
    for r in range(rounds):
        shift = r % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            c.reset()
            faults = minor_faults()
            start = time.perf_counter()
            for _ in range(c.k):
                c.run()
            c.times.append((time.perf_counter() - start) / (c.k * c.steps))
            faults = minor_faults() - faults
            c.faults.append(faults / (c.k * c.steps))
            time.sleep(pause)


def from_start(reset: Callable[[], object], run: Callable[[], object]) -> Callable[[], None]:
    """Before a block: back to the initial weights, then one untimed step (optimizer state)."""

    def go() -> None:
        reset()
        run()

    return go


def make_contenders(torch, module, names, init: Arrays, X, y) -> list[Contender]:
    """(a) to (e) for one batch; the (a) rows only with a generated module."""
    contenders = []
    if module is not None:
        train_step = generated_train(module, names, init, X, y)
        contenders.append(Contender("(a)", "(a) generated train(), one batch", train_step))
        g = GeneratedGradsStep(module, names, init, X, y)
        label = "(a') generated loss_and_grads + Adam"
        contenders.append(
            Contender("(a')", label, g.step, from_start(lambda: g.reset(init), g.step))
        )
        train_steps = generated_train(module, names, init, X, y, TRAIN_BATCHES)
        label = f"(a'') generated train(), {TRAIN_BATCHES} batches"
        contenders.append(Contender("(a'')", label, train_steps, steps=TRAIN_BATCHES))
    hand = HandStep(init, len(X))

    def hand_step() -> float:
        return hand.step(X, y)

    reset = from_start(lambda: hand.reset(init), hand_step)
    contenders.append(Contender("(b)", "(b) hand-written NumPy", hand_step, reset))
    t = TorchStep(torch, init, X, y, torch.float32)
    reset = from_start(lambda: t.reset(init), t.step)
    contenders.append(Contender("(c)", "(c) PyTorch eager", t.step, reset))
    contenders.append(Contender("(d)", "(d) the 8 matrix products alone", products_alone(len(X))))
    other = HandStep(init, len(X))  # its own buffers: (b)'s weights stay untouched
    other.loss_and_grads(X, y)

    def adam_alone() -> None:
        other.t += 1
        adam_update([other.flat], [other.grad_flat], [other.m], [other.v], [other.tmp], other.t)

    reset = from_start(lambda: other.reset(init), adam_alone)
    contenders.append(Contender("(e)", "(e) (b)'s Adam update alone", adam_alone, reset))
    return contenders


# -- machine and library information ------------------------------------------------------


def openblas_library():
    """The OpenBLAS that NumPy loaded (ctypes handle and symbol prefix), or None."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            if hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                return lib, prefix, suffix
    return None


def blas_info() -> str:
    """NumPy's BLAS as np.show_config names it, with its thread count and kernel."""
    parts = []
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        parts.append(f"{blas['name']} {blas['version']}")
        if blas.get("openblas configuration"):
            parts.append(f"({' '.join(blas['openblas configuration'].split())})")
    except Exception:  # noqa: BLE001 - older NumPy: no dict mode
        parts.append("(np.show_config gives no summary)")
    found = openblas_library()
    if found:
        lib, prefix, suffix = found
        threads = getattr(lib, f"{prefix}_get_num_threads{suffix}")()
        corename = getattr(lib, f"{prefix}_get_corename{suffix}", None)
        if corename is not None:
            corename.restype = ctypes.c_char_p
            parts.append(f"kernel {corename().decode()}")
        parts.append(f"{threads} threads")
    return ", ".join(parts)


def set_threads(torch, threads: int) -> None:
    """One thread count for NumPy's OpenBLAS (through ctypes) and torch."""
    found = openblas_library()
    if found:
        lib, prefix, suffix = found
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(threads)
    else:
        print("  (could not find OpenBLAS to set its threads)")
    torch.set_num_threads(threads)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# -- main --------------------------------------------------------------------------------


def ratio_line(label: str, num: list[float] | None, den: list[float] | None, need: str) -> None:
    if not num or not den:
        print(f"  {label:<44} -")
        return
    value = statistics.median(num) / statistics.median(den)
    print(f"  {label:<44} {value:6.2f}  {need}")


def sums(times: dict[str, list[float]], *keys: str) -> list[float]:
    """Blockwise sums of the times of several contenders (same number of blocks)."""
    return [sum(row) for row in zip(*(times[k] for k in keys), strict=True)]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive, default=20, help="timed blocks per contender")
    parser.add_argument("--pause", type=float, default=0.4, help="seconds after each block")
    parser.add_argument("--batches", type=positive, nargs="+", default=list(BATCHES))
    parser.add_argument("--threads", type=positive, help="BLAS and torch threads (default: theirs)")
    args = parser.parse_args(argv)

    import torch

    import symbp

    if args.threads:
        set_threads(torch, args.threads)
    print(f"machine: {machine()}, load average {load_average()}")
    print(
        f"Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__},"
        f" symbp {symbp.__version__}"
    )
    print(f"NumPy BLAS: {blas_info()}")
    print(
        f"torch: {torch.get_num_threads()} intra-op threads{'' if args.threads else ' (default)'}"
    )

    generated = {}
    with tempfile.TemporaryDirectory() as tmp:
        module, result = generate(Path(tmp), "float32")
        if module is None:
            print(f"(a) skipped: symbp cannot generate layer stacks yet ({result})")
        else:
            print(f"(a) generated {MODULE_NAME} (float32) with the symbp CLI in {result:.2f} s")
            print(
                "    (a) is train() on exactly one batch of N rows: each call starts a fresh"
                " Adam state\n    and copies the parameters, as train() does;"
                f" (a'') shares that over {TRAIN_BATCHES} steps"
            )
            generated["float32"] = module
            module64, _ = generate(Path(tmp), "float64")
            if module64 is not None:
                generated["float64"] = module64

    torch.manual_seed(SEED)
    init = [p.detach().numpy().copy() for p in torch_net(torch, torch.float32).parameters()]
    rng = np.random.default_rng(SEED)
    names = None
    if generated:
        names = generated_names(generated["float32"], init)
        if isinstance(names, str):
            print(f"(a) skipped: {names}")
            generated, names = {}, None
    gen_with_names = {k: (m, names) for k, m in generated.items()}

    print("\nchecks: one step from torch's initial weights on a batch of 128")
    X = rng.uniform(0, 1, size=(128, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=128)
    if not verify(torch, gen_with_names, init, X, y):
        print("FAILED")
        return 1
    print("verified")

    summary = []
    for batch in args.batches:
        X = rng.uniform(0, 1, size=(batch, SIZES[0])).astype(np.float32)
        y = rng.integers(0, SIZES[-1], size=batch)
        contenders = make_contenders(torch, generated.get("float32"), names, init, X, y)
        run_rounds(contenders, args.rounds, args.pause)
        times = {c.key: c.times for c in contenders}
        print(
            f"\nbatch {batch}: median ms per step over {args.rounds} blocks, load {load_average()}"
        )
        for c in contenders:
            q = statistics.quantiles(c.times, n=4)
            print(
                f"  {c.label:<40} {statistics.median(c.times) * 1e3:8.3f}"
                f"   IQR {q[0] * 1e3:.3f}-{q[2] * 1e3:.3f}   k={c.k * c.steps:<3}"
                f" page faults/step {statistics.median(c.faults):.0f}"
            )
        gen = times.get("(a'')")
        ratio_line("generated step / hand-written", gen, times["(b)"], "(need <= 1.1)")
        ratio_line("generated step / torch", gen, times["(c)"], "(need < 1)")
        if batch == 1024:
            ratio_line("generated step / products alone", gen, times["(d)"], "(need <= 1.25)")
        ratio_line(
            "generated loss_and_grads+Adam / hand-written", times.get("(a')"), times["(b)"], ""
        )
        ratio_line(
            "generated train(), one batch / hand-written", times.get("(a)"), times["(b)"], ""
        )
        ratio_line("hand-written / torch", times["(b)"], times["(c)"], "")
        ratio_line("hand-written / products alone", times["(b)"], times["(d)"], "")
        ratio_line(
            "(products alone + Adam alone) / hand-written",
            sums(times, "(d)", "(e)"),
            times["(b)"],
            "",
        )
        summary.append((batch, {k: statistics.median(v) for k, v in times.items()}))

    print("\nsummary (median ms per step)")
    keys = ["(a)", "(a')", "(a'')", "(b)", "(c)", "(d)", "(e)"]
    print("| batch | " + " | ".join(keys) + " |")
    print("|---:|" + "---:|" * len(keys))
    for batch, med in summary:
        cells = [f"{med[k] * 1e3:.3f}" if k in med else "skipped" for k in keys]
        print(f"| {batch} | " + " | ".join(cells) + " |")
    if not generated:
        print("(a) skipped: symbp cannot generate layer stacks yet")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
