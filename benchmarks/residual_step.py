"""Benchmark: one Adam training step of a residual MLP written in the model language.

The network, per sample: h1 = relu(W1 x + b1), h2 = h1 + relu(W2 h1 + b2),
yhat = W3 h2 + b3, cross-entropy on integer labels (mean over the batch), Adam (lr 1e-3,
torch.optim's defaults), float32, sizes 784-256-256-10. At batch sizes 32, 128 and
1024 this script times one step (forward, backward, update) for:

(a) the module symbp generates from the spec below (``--dtype float32``): train() on
    64 copies of the batch, per step (one epoch of 64 steps per call);
(b) a hand-written NumPy step: the same formulas with ``@``, the fused softmax
    cross-entropy gradient (softmax - onehot) / N, relu masks, the skip connection's
    two adjoints added, and Adam updated in place with ``out=`` (what a NumPy user writes);
(c) PyTorch eager: the same network, F.cross_entropy, torch.optim.Adam;
(d) JAX, when it is importable (its own venv: pip install jax): the same step (loss,
    jax.grad, Adam as torch.optim.Adam) under one jax.jit, the parameters and moments
    carried from call to call; its float32 gradients are checked against torch's float64
    ones (1e-4 relative) before timing.

Before timing, (a) and (b) are checked against (c) on one step from the same weights
(float64: loss and every gradient to 1e-10). Timing interleaves the contenders in
rotating order, blocks of about 50 ms, a pause after each block (BLAS threads spin),
and reports medians per step and the ratio to (b).

    python benchmarks/residual_step.py
"""

from __future__ import annotations

import platform
import sys
import tempfile
from pathlib import Path

import harness
import numpy as np
from harness import interleaved_medians, jax_adam_runner

SPEC = """
name = "residual_bench"
[model]
inputs  = { x = [784] }
targets = { y = [] }
output  = "yhat"
loss    = "cross_entropy(yhat, y)"
[model.params]
W1 = [256, 784]
b1 = [256]
W2 = [256, 256]
b2 = [256]
W3 = [10, 256]
b3 = [10]
[model.let]
h1   = "relu(W1 @ x + b1)"
h2   = "h1 + relu(W2 @ h1 + b2)"
yhat = "W3 @ h2 + b3"
[train]
optimizer = "adam"
lr = 0.001
"""
NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
STEPS_PER_CALL = 64


def generate(folder: Path, dtype: str):
    return harness.generate(folder, "residual_bench", SPEC, dtype)


class HandWritten:
    """The step a NumPy user writes for this network, Adam in place."""

    def __init__(self, params, dtype):
        self.p = {k: np.array(v, dtype=dtype) for k, v in params.items()}
        self.adam = harness.InPlaceAdam(self.p)

    def grads(self, X, onehot):
        p = self.p
        N = X.shape[0]
        z1 = X @ p["W1"].T + p["b1"]
        h1 = np.maximum(z1, 0)
        z2 = h1 @ p["W2"].T + p["b2"]
        r = np.maximum(z2, 0)
        h2 = h1 + r
        z3 = h2 @ p["W3"].T + p["b3"]
        m = z3.max(axis=1, keepdims=True)
        e = np.exp(z3 - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - (onehot * z3).sum(axis=1)))
        d3 = (e / s - onehot) / N
        g = {"W3": d3.T @ h2, "b3": d3.sum(axis=0)}
        dh2 = d3 @ p["W3"]
        dz2 = dh2 * (z2 > 0)
        g["W2"], g["b2"] = dz2.T @ h1, dz2.sum(axis=0)
        dh1 = dh2 + dz2 @ p["W2"]
        dz1 = dh1 * (z1 > 0)
        g["W1"], g["b1"] = dz1.T @ X, dz1.sum(axis=0)
        return loss, g

    def step(self, X, onehot):
        loss, g = self.grads(X, onehot)
        self.adam.update(g)
        return loss


def torch_reference(params, X, labels):
    import torch

    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x = torch.tensor(X)
    h1 = torch.relu(x @ t["W1"].T + t["b1"])
    h2 = h1 + torch.relu(h1 @ t["W2"].T + t["b2"])
    loss = torch.nn.functional.cross_entropy(h2 @ t["W3"].T + t["b3"], torch.tensor(labels))
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in t.items()}


def check(module64) -> None:
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float64) for k, v in module64.init_params(0).items()}
    X = rng.uniform(0, 1, (32, 784))
    labels = rng.integers(0, 10, 32)
    expected, grads = torch_reference(params, X, labels)
    ours, our_grads = module64.loss_and_grads(params, X, labels)
    hand, hand_grads = HandWritten(params, np.float64).grads(X, np.eye(10)[labels])
    for name, (value, g) in {"generated": (ours, our_grads), "hand": (hand, hand_grads)}.items():
        assert abs(value - expected) < 1e-10, name
        for k in NAMES:
            err = np.abs(g[k] - grads[k]).max() / max(1.0, np.abs(grads[k]).max())
            assert err < 1e-10, (name, k, err)
    print("checked: generated and hand-written loss and gradients equal torch's (float64)")


def contenders(module, batch: int):
    rng = np.random.default_rng(1)
    params = module.init_params(0)
    X = rng.uniform(0, 1, (batch, 784)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    onehot = np.eye(10, dtype=np.float32)[labels]
    Xs = np.concatenate([X] * STEPS_PER_CALL)
    ys = np.concatenate([labels] * STEPS_PER_CALL)

    def generated(k):
        for _ in range(k):
            module.train(params, Xs, ys, epochs=1, batch_size=batch, lr=1e-3, shuffle=False)

    hand = HandWritten(params, np.float32)

    def handwritten(k):
        for _ in range(k * STEPS_PER_CALL):
            hand.step(X, onehot)

    import torch

    torch.set_num_threads(torch.get_num_threads())
    net = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.Adam(list(net.values()), lr=1e-3)
    tx, ty = torch.tensor(X), torch.tensor(labels)

    def torch_eager(k):
        for _ in range(k * STEPS_PER_CALL):
            opt.zero_grad(set_to_none=True)
            h1 = torch.relu(tx @ net["W1"].T + net["b1"])
            h2 = h1 + torch.relu(h1 @ net["W2"].T + net["b2"])
            loss = torch.nn.functional.cross_entropy(h2 @ net["W3"].T + net["b3"], ty)
            loss.backward()
            opt.step()

    runs = {"generated train()": generated, "hand-written": handwritten, "torch eager": torch_eager}
    jax_step = _jax_contender(params, X, labels)
    if jax_step is not None:
        runs["jax jit"] = jax_step
    return runs


def _jax_contender(params, X, labels):
    """The step under jax.jit, or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def loss(p, x, y):
        h1 = jax.nn.relu(x @ p["W1"].T + p["b1"])
        h2 = h1 + jax.nn.relu(h1 @ p["W2"].T + p["b2"])
        z = h2 @ p["W3"].T + p["b3"]
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])

    expected, grads = torch_reference(
        {k: a.astype(np.float64) for k, a in params.items()}, X.astype(np.float64), labels
    )
    theirs = jax.grad(loss)(
        {k: jnp.asarray(a) for k, a in params.items()}, jnp.asarray(X), jnp.asarray(labels)
    )
    for k in NAMES:  # float32 against torch's float64
        scale = max(1.0, float(np.abs(grads[k]).max()))
        assert float(np.abs(np.asarray(theirs[k]) - grads[k]).max()) / scale < 1e-4, k
    return jax_adam_runner(loss, params, X, labels, STEPS_PER_CALL)


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        module64 = generate(Path(folder), "float64")
        check(module64)
        module = generate(Path(folder), "float32")
        import torch

        try:
            import jax

            jax_version = f", JAX {jax.__version__}"
        except ImportError:
            jax_version = " (JAX not installed: no JAX contender)"
        print(
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()},"
            f" NumPy {np.__version__}, torch {torch.__version__}{jax_version}"
        )
        print(f"{'batch':>6} {'contender':<20} {'ms/step':>9} {'vs hand':>8}")
        for batch in (32, 128, 1024):
            runs = contenders(module, batch)
            medians = interleaved_medians(
                runs, STEPS_PER_CALL, rounds=7, block_s=0.05, pause_s=0.05
            )
            for name, value in medians.items():
                ratio = value / medians["hand-written"]
                print(f"{batch:>6} {name:<20} {value * 1e3:>9.3f} {ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
