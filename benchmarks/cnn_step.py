"""Benchmark: one Adam training step of the course's CNN (issue 4), float32, batch 64.

The network: Conv2d(1, 32, 3, padding=1), ReLU, MaxPool2d(2), Flatten,
Linear(32*14*14, 10), cross-entropy (mean), Adam (lr 1e-3), on 28x28 images. Contenders:

(a) the module symbp generates from the built-in spec mnist_cnn (written by the CLI into
    a temporary directory), two ways: "generated train()" is the module's own train() on
    16 copies of the batch (one epoch of 16 steps per call: its in-place step, buffers
    allocated once per call, Adam in place on flat arrays), per step; "generated l&g" is
    its allocating ``loss_and_grads`` followed by the in-place Adam update that (b) uses;
(b) a hand-written NumPy step: every buffer allocated once; im2col rows ordered so that
    each 2x2 pooling window is four consecutive rows (N, 14, 14, 2, 2 pixels), the bias
    folded into the product as a ones column, ReLU in place, max-pooling as a running
    maximum over the four contiguous window slices with the first-maximum index kept for
    the backward pass, the dense layer on the pooled (h, w, c) features with W2's
    columns permuted once per step, no input gradient for the first layer, and Adam in
    place;
(c) PyTorch eager: nn.Sequential of the layers above, CrossEntropyLoss, torch.optim.Adam.

Before timing, (a) and (b) are checked against (c) on the same weights and batch:
loss (rtol 1e-5) and all gradients (atol 1e-5 relative to the largest).

Timing: rounds in rotating order, each a block of k steps per contender (k so that a
block takes about 0.1 s; one train() call of 16 steps for "generated train()"), with a
pause after each block (BLAS threads spin after work); medians over blocks of the time
per step. Peak memory: tracemalloc's peak over one step for (a) and (b) (for train(),
over one call of 16 steps, its set-up included); NumPy reports its buffers to
tracemalloc, torch does not, so (c) has none. Run from the repository root:
python benchmarks/cnn_step.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

N, LR, BETA1, BETA2, EPS = 64, 1e-3, 0.9, 0.999, 1e-8


def adam_update(params, grads, ms, vs, tmps, t):
    """torch.optim.Adam in place (moments kept unscaled, see benchmarks/mlp_step.py)."""
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


class HandStep:
    """(b): the CNN's step, buffers allocated once, pooling windows contiguous."""

    def __init__(self, init: dict[str, np.ndarray]):
        f = np.float32
        self.W1, self.b1 = init["W1"].copy(), init["b1"].copy()
        self.W2, self.b2 = init["W2"].copy(), init["b2"].copy()
        self.params = [self.W1, self.b1, self.W2, self.b2]
        self.pad = np.zeros((N, 30, 30), f)
        self.cols = np.ones((N, 14, 14, 2, 2, 10), f)  # 9 patch values + the ones column
        self.wb = np.empty((10, 32), f)
        self.Z = np.empty((N, 14, 14, 4, 32), f)
        self.P = np.empty((N, 14, 14, 32), f)
        self.idx = np.empty((N, 14, 14, 32), np.uint8)
        self.gt = np.empty((N, 14, 14, 32), bool)
        self.tmp8 = np.empty((N, 14, 14, 32), np.uint8)
        self.W2p = np.empty((10, 14, 14, 32), f)
        self.Z2 = np.empty((N, 10), f)
        self.dW2p = np.empty((10, 14, 14, 32), f)
        self.dP = np.empty((N, 14, 14, 32), f)
        self.dZ = np.empty((N, 14, 14, 4, 32), f)
        self.dwb = np.empty((10, 32), f)
        self.gW1, self.gb1 = np.empty_like(self.W1), np.empty_like(self.b1)
        self.gW2, self.gb2 = np.empty_like(self.W2), np.empty_like(self.b2)
        self.grads = [self.gW1, self.gb1, self.gW2, self.gb2]
        self.ms = [np.zeros_like(p) for p in self.params]
        self.vs = [np.zeros_like(p) for p in self.params]
        self.tmps = [np.empty_like(p) for p in self.params]
        self.t = 0

    def loss_and_grads(self, X, y):
        pad, cols, Z, P, idx, gt = self.pad, self.cols, self.Z, self.P, self.idx, self.gt
        pad[:, 1:29, 1:29] = X.reshape(N, 28, 28)
        blocked = cols.reshape(N, 14, 14, 2, 2, 10)
        for i in range(3):  # rows (n, h/2, w/2, dh, dw): each window's 4 pixels adjacent
            for j in range(3):
                src = pad[:, i : i + 28, j : j + 28].reshape(N, 14, 2, 14, 2)
                blocked[..., 3 * i + j] = src.transpose(0, 1, 3, 2, 4)
        self.wb[:9] = self.W1.reshape(32, 9).T
        self.wb[9] = self.b1
        np.matmul(cols.reshape(-1, 10), self.wb, out=Z.reshape(-1, 32))
        np.maximum(Z, 0, out=Z)
        P[...] = Z[:, :, :, 0]
        idx.fill(0)
        for k in range(1, 4):  # running maximum; the first maximum's index on ties
            np.greater(Z[:, :, :, k], P, out=gt)
            np.maximum(P, Z[:, :, :, k], out=P)
            np.subtract(k, idx, out=self.tmp8)  # idx = k where gt: uint8 arithmetic
            self.tmp8 *= gt
            idx += self.tmp8
        self.W2p[...] = self.W2.reshape(10, 32, 14, 14).transpose(0, 2, 3, 1)
        feats = P.reshape(N, -1)
        np.matmul(feats, self.W2p.reshape(10, -1).T, out=self.Z2)
        self.Z2 += self.b2
        z = self.Z2
        m = z.max(axis=1, keepdims=True)
        z -= m
        np.exp(z, out=z)
        s = z.sum(axis=1, keepdims=True)
        z /= s  # softmax
        loss = float(np.mean(-np.log(z[np.arange(N), y])))
        z[np.arange(N), y] -= 1
        z /= N  # dL/dZ2
        np.matmul(z.T, feats, out=self.dW2p.reshape(10, -1))
        self.gW2.reshape(10, 32, 14, 14)[...] = self.dW2p.transpose(0, 3, 1, 2)
        np.sum(z, axis=0, out=self.gb2)
        np.matmul(z, self.W2p.reshape(10, -1), out=self.dP.reshape(N, -1))
        dZ = self.dZ
        for k in range(4):  # route to the first maximum; ReLU's mask through Z > 0
            np.equal(idx, k, out=gt)
            np.multiply(self.dP, gt, out=dZ[:, :, :, k])
        dZ *= Z > 0
        np.matmul(cols.reshape(-1, 10).T, dZ.reshape(-1, 32), out=self.dwb)
        self.gW1.reshape(32, 9)[...] = self.dwb[:9].T
        self.gb1[...] = self.dwb[9]
        return loss

    def step(self, X, y):
        loss = self.loss_and_grads(X, y)
        self.t += 1
        adam_update(self.params, self.grads, self.ms, self.vs, self.tmps, self.t)
        return loss


class GeneratedTrain:
    """(a): the generated module's train() over REPEAT copies of the batch, per step."""

    REPEAT = 16

    def __init__(self, module, init):
        self.module = module
        self.params = {k: v.copy() for k, v in init.items()}
        self.steps = self.REPEAT

    def step(self, X, y):
        Xs, ys = np.concatenate([X] * self.REPEAT), np.concatenate([y] * self.REPEAT)
        _, losses = self.module.train(self.params, Xs, ys, epochs=1, batch_size=len(X), lr=LR)
        return losses[0]


class GeneratedStep:
    """(a): the generated module's loss_and_grads, then the same in-place Adam."""

    def __init__(self, module, init):
        self.module = module
        self.params = {k: v.copy() for k, v in init.items()}
        names = list(self.params)
        self.names = names
        self.ms = [np.zeros_like(self.params[k]) for k in names]
        self.vs = [np.zeros_like(self.params[k]) for k in names]
        self.tmps = [np.empty_like(self.params[k]) for k in names]
        self.t = 0

    def step(self, X, y):
        loss, grads = self.module.loss_and_grads(self.params, X, y)
        self.t += 1
        adam_update(
            [self.params[k] for k in self.names],
            [grads[k] for k in self.names],
            self.ms,
            self.vs,
            self.tmps,
            self.t,
        )
        return loss


def torch_model(init):
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 14 * 14, 10),
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(init["W1"]))
        model[0].bias.copy_(torch.from_numpy(init["b1"]))
        model[4].weight.copy_(torch.from_numpy(init["W2"]))
        model[4].bias.copy_(torch.from_numpy(init["b2"]))
    return model


class TorchStep:
    def __init__(self, init):
        import torch

        self.torch = torch
        self.model = torch_model(init)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.lossf = torch.nn.CrossEntropyLoss()

    def step(self, X, y):
        self.opt.zero_grad(set_to_none=True)
        loss = self.lossf(self.model(X), y)
        loss.backward()
        self.opt.step()
        return loss.item()


def generate_module(folder: Path):
    path = folder / "mnist_cnn_bench.py"
    subprocess.run(
        [sys.executable, "-m", "symbp", "generate", "mnist_cnn", "-o", str(path)],
        check=True,
        capture_output=True,
    )
    spec = importlib.util.spec_from_file_location("mnist_cnn_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(module, init, X, y) -> None:
    import torch

    model = torch_model(init)
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    expected = {
        "W1": model[0].weight.grad.numpy(),
        "b1": model[0].bias.grad.numpy(),
        "W2": model[4].weight.grad.numpy(),
        "b2": model[4].bias.grad.numpy(),
    }
    hand = HandStep(init)
    hand_loss = hand.loss_and_grads(X, y)
    hand_grads = dict(zip(["W1", "b1", "W2", "b2"], hand.grads, strict=True))
    gen_loss, gen_grads = module.loss_and_grads(
        {"W1": init["W1"], "b1": init["b1"], "W4": init["W2"], "b4": init["b2"]}, X, y
    )
    gen_grads = {k.replace("4", "2"): v for k, v in gen_grads.items()}
    for name, loss_value, grads in (
        ("generated", gen_loss, gen_grads),
        ("hand", hand_loss, hand_grads),
    ):
        assert abs(loss_value - loss.item()) <= 1e-5 * abs(loss.item()), (name, loss_value)
        for key, ref in expected.items():
            err = np.abs(grads[key] - ref).max() / np.abs(ref).max()
            assert err < 1e-5, (name, key, err)
    print("checked: generated and hand-written loss and gradients equal torch's")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    import torch

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.Linear(6272, 10))
    init = {
        "W1": fresh[0].weight.detach().numpy().copy(),
        "b1": fresh[0].bias.detach().numpy().copy(),
        "W2": fresh[1].weight.detach().numpy().copy(),
        "b2": fresh[1].bias.detach().numpy().copy(),
    }
    X = rng.random((N, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, N)
    with tempfile.TemporaryDirectory() as folder:
        module = generate_module(Path(folder))
        check(module, init, X, y)
        gen_init = {"W1": init["W1"], "b1": init["b1"], "W4": init["W2"], "b4": init["b2"]}
        contenders = {
            "generated train()": (GeneratedTrain(module, gen_init), (X, y)),
            "generated l&g": (GeneratedStep(module, gen_init), (X, y)),
            "hand-written": (HandStep(init), (X, y)),
            "torch eager": (TorchStep(init), (torch.from_numpy(X), torch.from_numpy(y))),
        }
        peaks = {}
        for name in ("generated train()", "generated l&g", "hand-written"):
            stepper, data = contenders[name]
            stepper.step(*data)
            tracemalloc.start()
            stepper.step(*data)
            peaks[name] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        blocks = {}
        for name, (stepper, data) in contenders.items():
            for _ in range(3):
                stepper.step(*data)
            start = time.perf_counter()
            stepper.step(*data)
            blocks[name] = max(
                1 if name == "generated train()" else 3, int(0.1 / (time.perf_counter() - start))
            )
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                stepper, data = contenders[name]
                start = time.perf_counter()
                for _ in range(blocks[name]):
                    stepper.step(*data)
                steps = blocks[name] * getattr(stepper, "steps", 1)
                times[name].append((time.perf_counter() - start) / steps)
                time.sleep(0.05)
    med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}"
    )
    print(f"course CNN step, batch {N}, float32, Adam; medians over {args.rounds} rounds")
    for name in names:
        extra = f"  peak {peaks[name] / 2**20:.1f} MiB (tracemalloc)" if name in peaks else ""
        print(f"  {name:<17} {med[name]:7.2f} ms{extra}")
    for name in ("generated train()", "generated l&g"):
        print(f"  {name} / torch eager:  {med[name] / med['torch eager']:.2f}")
        print(f"  {name} / hand-written: {med[name] / med['hand-written']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
