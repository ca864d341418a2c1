"""Benchmark: one Adam training step of an LSTM classifier, backpropagation through time.

The network: torch.nn.LSTM(32, 128, batch_first=True) over sequences of T = 50 steps,
its last hidden state through nn.Linear(128, 10), cross-entropy on integer labels (mean
over the batch), Adam (lr 1e-3, torch.optim's defaults), float32, batch 64. At that
size this script times one step (forward over the 50 steps, backward through them,
update) for:

(a) the module symbp generates from the layer-stack spec below (``{ lstm = 128 }``,
    ``--dtype float32``): train() on 8 copies of the batch, per step (one epoch of 8
    steps per call);
(b) a hand-written NumPy BPTT step: the input projection of all steps as one product
    (X Wih^T, (N T, 32) by (32, 512)), the loop over t with the four gates sliced from
    one (N, 512) array, the gates and cell values of every step kept, the backward loop
    writing each step's gate adjoints into one (T, N, 512) array, and the weight
    gradients as one product each after the loop (dWhh = dG^T H_prev, dWih = dG^T X);
    Adam in place with ``out=`` (what a NumPy user who knows BPTT writes);
(c) PyTorch eager on CPU: nn.LSTM, nn.Linear, F.cross_entropy, torch.optim.Adam;
(d) JAX, when it is importable (its own venv: pip install jax): the same step under one
    jax.jit, the recurrence as jax.lax.scan, Adam as torch.optim.Adam.

Before timing, (a) and (b) are checked against (c) on one step from the same weights
(float64: loss and every gradient to 1e-10). Timing interleaves the contenders in
rotating order, blocks of about 100 ms, a pause after each block (BLAS threads spin),
and reports medians per step and the ratio to (b). Then (a) alone at T = 25, 50 and
100: the generated program does not depend on T, and its time per step grows linearly
in T.

    python benchmarks/lstm_step.py
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
from harness import interleaved_medians, jax_adam_runner

D, H, K, T, BATCH = 32, 128, 10, 50, 64
SPEC = f"""
name = "lstm_bench"
[model]
input = ["T", {D}]
layers = [{{ lstm = {H} }}, {{ dense = {K} }}]
loss = "cross_entropy"
[train]
optimizer = "adam"
lr = 0.001
"""
NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "W2", "b2")
STEPS_PER_CALL = 8


def generate(folder: Path, dtype: str):
    return harness.generate(folder, "lstm_bench", SPEC, dtype)


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))  # exact sigmoid, no overflow


class HandWritten:
    """The BPTT step a NumPy user writes for this network, Adam in place."""

    def __init__(self, params, dtype):
        self.p = {k: np.array(v, dtype=dtype) for k, v in params.items()}
        self.adam = harness.InPlaceAdam(self.p)

    def grads(self, X, onehot):
        p = self.p
        N, steps, _ = X.shape
        Wih, Whh = p["weight_ih_l0"], p["weight_hh_l0"]
        XT = np.ascontiguousarray(X.transpose(1, 0, 2))  # (T, N, D)
        G = (XT.reshape(steps * N, D) @ Wih.T).reshape(steps, N, 4 * H)
        G += p["bias_ih_l0"] + p["bias_hh_l0"]
        acts = np.empty((steps, N, 4 * H), X.dtype)  # i, f, g, o after their nonlinearity
        cells = np.empty((steps + 1, N, H), X.dtype)
        hs = np.empty((steps + 1, N, H), X.dtype)
        tanh_c = np.empty((steps, N, H), X.dtype)
        cells[0] = 0
        hs[0] = 0
        for t in range(steps):
            g = G[t] + hs[t] @ Whh.T
            a = acts[t]
            a[:, : 2 * H] = _sigmoid(g[:, : 2 * H])
            a[:, 2 * H : 3 * H] = np.tanh(g[:, 2 * H : 3 * H])
            a[:, 3 * H :] = _sigmoid(g[:, 3 * H :])
            cells[t + 1] = a[:, H : 2 * H] * cells[t] + a[:, :H] * a[:, 2 * H : 3 * H]
            tanh_c[t] = np.tanh(cells[t + 1])
            hs[t + 1] = a[:, 3 * H :] * tanh_c[t]
        z = hs[steps] @ p["W2"].T + p["b2"]
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - (onehot * z).sum(axis=1)))
        dz = (e / s - onehot) / N
        grads = {"W2": dz.T @ hs[steps], "b2": dz.sum(axis=0)}
        dh = dz @ p["W2"]
        dc = np.zeros((N, H), X.dtype)
        dG = np.empty((steps, N, 4 * H), X.dtype)
        for t in reversed(range(steps)):
            a = acts[t]
            i, f, gg, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            dc += dh * o * (1 - tanh_c[t] ** 2)
            d = dG[t]
            d[:, :H] = dc * gg * i * (1 - i)
            d[:, H : 2 * H] = dc * cells[t] * f * (1 - f)
            d[:, 2 * H : 3 * H] = dc * i * (1 - gg**2)
            d[:, 3 * H :] = dh * tanh_c[t] * o * (1 - o)
            dc *= f
            dh = d @ Whh
        flat = dG.reshape(steps * N, 4 * H)
        grads["weight_hh_l0"] = flat.T @ hs[:steps].reshape(steps * N, H)
        grads["weight_ih_l0"] = flat.T @ XT.reshape(steps * N, D)
        grads["bias_ih_l0"] = flat.sum(axis=0)
        grads["bias_hh_l0"] = grads["bias_ih_l0"].copy()
        return loss, grads

    def step(self, X, onehot):
        loss, g = self.grads(X, onehot)
        self.adam.update(g)
        return loss


def torch_net(params, dtype=None):
    import torch

    dtype = dtype or torch.float32
    lstm = torch.nn.LSTM(D, H, batch_first=True).to(dtype)
    head = torch.nn.Linear(H, K).to(dtype)
    with torch.no_grad():
        for k, v in lstm.named_parameters():
            v.copy_(torch.tensor(params[k]))
        head.weight.copy_(torch.tensor(params["W2"]))
        head.bias.copy_(torch.tensor(params["b2"]))
    return lstm, head


def torch_reference(params, X, labels):
    import torch

    lstm, head = torch_net(params, torch.float64)
    out, _ = lstm(torch.tensor(X))
    loss = torch.nn.functional.cross_entropy(head(out[:, -1]), torch.tensor(labels))
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in lstm.named_parameters()}
    grads.update({"W2": head.weight.grad.numpy(), "b2": head.bias.grad.numpy()})
    return loss.item(), grads


def check(module64) -> None:
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float64) for k, v in module64.init_params(0).items()}
    X = rng.normal(size=(8, 7, D))
    labels = rng.integers(0, K, 8)
    expected, grads = torch_reference(params, X, labels)
    ours, our_grads = module64.loss_and_grads(params, X, labels)
    hand, hand_grads = HandWritten(params, np.float64).grads(X, np.eye(K)[labels])
    for name, (value, g) in {"generated": (ours, our_grads), "hand": (hand, hand_grads)}.items():
        assert abs(value - expected) < 1e-10, name
        for k in NAMES:
            err = np.abs(g[k] - grads[k]).max() / max(1.0, np.abs(grads[k]).max())
            assert err < 1e-10, (name, k, err)
    print("checked: generated and hand-written loss and gradients equal torch's (float64)")


def contenders(module):
    rng = np.random.default_rng(1)
    params = module.init_params(0)
    X = rng.normal(size=(BATCH, T, D)).astype(np.float32)
    labels = rng.integers(0, K, BATCH)
    onehot = np.eye(K, dtype=np.float32)[labels]
    Xs = np.concatenate([X] * STEPS_PER_CALL)
    ys = np.concatenate([labels] * STEPS_PER_CALL)

    def generated(k):
        for _ in range(k):
            module.train(params, Xs, ys, epochs=1, batch_size=BATCH, lr=1e-3, shuffle=False)

    hand = HandWritten(params, np.float32)

    def handwritten(k):
        for _ in range(k * STEPS_PER_CALL):
            hand.step(X, onehot)

    import torch

    lstm, head = torch_net(params)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-3)
    tx, ty = torch.tensor(X), torch.tensor(labels)

    def torch_eager(k):
        for _ in range(k * STEPS_PER_CALL):
            opt.zero_grad(set_to_none=True)
            out, _ = lstm(tx)
            loss = torch.nn.functional.cross_entropy(head(out[:, -1]), ty)
            loss.backward()
            opt.step()

    runs = {"generated train()": generated, "hand-written": handwritten, "torch eager": torch_eager}
    jax_step = _jax_contender(params, X, labels)
    if jax_step is not None:
        runs["jax jit"] = jax_step
    return runs


def _jax_contender(params, X, labels):
    """The step under jax.jit with the recurrence as lax.scan, or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def loss(p, x, y):
        xw = jnp.einsum("ntd,gd->tng", x, p["weight_ih_l0"]) + p["bias_ih_l0"] + p["bias_hh_l0"]

        def cell(carry, g_in):
            h, c = carry
            g = g_in + h @ p["weight_hh_l0"].T
            i, f = jax.nn.sigmoid(g[:, :H]), jax.nn.sigmoid(g[:, H : 2 * H])
            gg, o = jnp.tanh(g[:, 2 * H : 3 * H]), jax.nn.sigmoid(g[:, 3 * H :])
            c = f * c + i * gg
            return (o * jnp.tanh(c), c), None

        zeros = jnp.zeros((x.shape[0], H), x.dtype)
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), xw)
        z = h @ p["W2"].T + p["b2"]
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])

    return jax_adam_runner(loss, params, X, labels, STEPS_PER_CALL)


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        module64 = generate(Path(folder), "float64")
        print(f"generating the module (derivation included): {time.perf_counter() - start:.2f} s")
        check(module64)
        module = generate(Path(folder), "float32")
        try:
            import torch

            torch_version = f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
        except ImportError:
            print("torch is not installed: it is the reference, pip install torch")
            return 1
        try:
            import jax

            jax_version = f", JAX {jax.__version__}"
        except ImportError:
            jax_version = " (JAX not installed: no JAX contender)"
        print(
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()},"
            f" NumPy {np.__version__}{torch_version}{jax_version}"
        )
        print(f"LSTM {D}->{H}, T = {T}, batch {BATCH}, Adam, float32")
        print(f"{'contender':<20} {'ms/step':>9} {'vs hand':>8}")
        runs = contenders(module)
        medians = interleaved_medians(runs, STEPS_PER_CALL, rounds=9, block_s=0.1, pause_s=0.1)
        for name, value in medians.items():
            ratio = value / medians["hand-written"]
            print(f"{name:<20} {value * 1e3:>9.3f} {ratio:>8.2f}")
        scaling(module)
    return 0


def scaling(module) -> None:
    """The generated step at T = 25, 50 and 100 (interleaved, medians): the program is
    the same for every T and its cost grows linearly in T. (Longer sequences of this
    untrained network make the backward pass's adjoints vanish into float32's subnormal
    numbers, about 1e-40, where BLAS slows down tenfold: at T = 200 the hand-written step
    does too.)"""
    rng = np.random.default_rng(2)
    params = module.init_params(0)
    runs = {}
    for steps in (25, 50, 100):
        X = rng.normal(size=(BATCH * STEPS_PER_CALL, steps, D)).astype(np.float32)
        y = rng.integers(0, K, BATCH * STEPS_PER_CALL)

        def run(k, X=X, y=y):
            for _ in range(k):
                module.train(params, X, y, epochs=1, batch_size=BATCH, lr=1e-3, shuffle=False)

        runs[steps] = run
    medians = interleaved_medians(runs, STEPS_PER_CALL, rounds=5, block_s=0.0, pause_s=0.1)
    base = medians[25] / 25
    print(f"{'T':>5} {'ms/step':>9} {'per step and T, vs T = 25':>27}")
    for steps, value in medians.items():
        print(f"{steps:>5} {value * 1e3:>9.3f} {value / steps / base:>27.2f}")


if __name__ == "__main__":
    sys.exit(main())
