"""Benchmark: the course's XOR network, 2-2-1, trained by full-batch SGD (issue 3).

The network is Linear(2, 2), ReLU, Linear(2, 1) giving a logit, with
nn.BCEWithLogitsLoss (mean over the batch), trained by SGD with lr 0.1 for 10000 epochs
on the four XOR points, all four in one batch, in float32. Every contender starts from
the same weights, torch's default nn.Linear initialisation after torch.manual_seed(5);
from that seed the network learns XOR (from seeds 0 to 4 it gets stuck). The script
times the whole training for:

(a) the module that symbp generates from the spec below (the CLI,
    ``symbp generate SPEC --target numpy -o FILE``, into a temporary directory at the
    start; layer stacks default to float32), its ``train(params, X, Y, epochs=10000,
    batch_size=4, lr=0.1, shuffle=False)``. A network this small trains on Python
    floats there (the module's float step, in double precision) unless told otherwise;
    (a') is the same call with ``floats=False``: the module's array step, in float32.
    When the spec cannot be generated the script prints "skipped: symbp cannot generate
    layer stacks yet" and goes on without (a) and (a');
(b) a hand-written NumPy loop: float32 arrays of the batch's shapes, the gradient of
    BCE-with-logits as (sigmoid(z) - y) / N with the learning rate folded into it once,
    updates in place;
(c) PyTorch as the course writes it: a module with two nn.Linear and a ReLU,
    nn.BCEWithLogitsLoss, optim.SGD, and per epoch ``zero_grad()``, ``backward()``,
    ``step()``, with torch's default threads;
(d) for reference, the same loop by hand in plain Python floats (float64), looping over
    the four samples: the floor for a network this small, where NumPy's per-call cost
    is most of the work.

The contenders run interleaved in one process, in alternating order, with a pause after
each run because NumPy's and torch's worker threads keep spinning for a moment after
work and take a core; the figures are medians of several full runs. All contenders
must end at the weights and loss that (c) ends at: to 1e-4 for the float32 ones, to
2e-3 for those in float64 ((d), and (a) on floats: float32 and float64 runs drift apart
along a flat direction), the loss to 1e-5; and (a) on floats must end where (d) ends, to
1e-6.

Run from the repository root (about a minute, most of it in (c)):

    python benchmarks/xor_training.py

The exit status is 1 when the contenders disagree.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

X_DATA = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
Y_DATA = [[0.0], [1.0], [1.0], [0.0]]
EPOCHS = 10000
LR = 0.1
SEED = 5
# the weights must match (c)'s to these; (d) runs in float64, and the float32 and float64
# runs drift apart by a few 1e-4 along the flat direction where the hidden units' two
# input weights are equal
TOLERANCE = {"a": 1e-4, "a'": 1e-4, "b": 1e-4, "c": 0.0, "d": 2e-3}
FLOAT64_AGREEMENT = 1e-6  # (a) on Python floats against (d)
PAUSE_S = 0.5
MODULE_NAME = "xor_bench"

SPEC = """\
name = "xor_bench"
[model]
input = 2
layers = [{dense = 2, activation = "relu"}, {dense = 1}]
loss = "bce_with_logits"
[train]
optimizer = "sgd"
lr = 0.1
epochs = 10000
batch_size = 4
[data]
X = [[0, 0], [0, 1], [1, 0], [1, 1]]
Y = [[0], [1], [1], [0]]
"""

# W1 (2, 2), b1 (2,), W2 (1, 2), b2 (1,): torch.nn.Linear's layout, Z = X W^T + b
Params = list[np.ndarray]
Result = tuple[Params, float]  # final weights, final loss


def torch_init(torch) -> Params:
    """The course's initial weights: torch's nn.Linear defaults after manual_seed(SEED)."""
    torch.manual_seed(SEED)
    fc1, fc2 = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    return [p.detach().numpy().copy() for p in (*fc1.parameters(), *fc2.parameters())]


def bce_with_logits(z: np.ndarray, y: np.ndarray) -> float:
    """mean(max(z, 0) - z y + log(1 + exp(-|z|))), as torch computes it."""
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


# -- the contenders ----------------------------------------------------------------------


def hand_numpy(init: Params) -> Callable[[], Result]:
    """(b) the loop in NumPy, float32, with every update in place."""
    X = np.array(X_DATA, dtype=np.float32)
    Y = np.array(Y_DATA, dtype=np.float32)
    lr_n = np.float32(LR / len(X))

    def run() -> Result:
        W1, b1, W2, b2 = (a.copy() for a in init)
        for _ in range(EPOCHS):
            Z1 = X @ W1.T
            Z1 += b1
            A1 = np.maximum(Z1, 0)
            z = A1 @ W2.T
            z += b2
            # lr * dL/dz = lr (sigmoid(z) - y) / N: the learning rate folded in once
            dz = np.exp(-z)
            dz += 1
            np.reciprocal(dz, out=dz)
            dz -= Y
            dz *= lr_n
            dZ1 = dz @ W2
            dZ1 *= Z1 > 0
            W2 -= dz.T @ A1
            b2 -= dz.sum(axis=0)
            W1 -= dZ1.T @ X
            b1 -= dZ1.sum(axis=0)
        z = np.maximum(X @ W1.T + b1, 0) @ W2.T + b2
        return [W1, b1, W2, b2], bce_with_logits(z, Y)

    return run


def hand_floats(init: Params) -> Callable[[], Result]:
    """(d) the loop in plain Python floats: per sample, gradients summed over the batch."""
    samples = [(x1, x2, y) for (x1, x2), (y,) in zip(X_DATA, Y_DATA, strict=True)]
    scale = LR / len(samples)

    def run() -> Result:
        (w11, w12), (w21, w22) = init[0].tolist()
        c1, c2 = init[1].tolist()
        ((v1, v2),) = init[2].tolist()
        (c,) = init[3].tolist()
        for _ in range(EPOCHS):
            g11 = g12 = g21 = g22 = gc1 = gc2 = gv1 = gv2 = gc = 0.0
            for x1, x2, y in samples:
                z1 = w11 * x1 + w12 * x2 + c1
                z2 = w21 * x1 + w22 * x2 + c2
                a1 = z1 if z1 > 0.0 else 0.0
                a2 = z2 if z2 > 0.0 else 0.0
                z = v1 * a1 + v2 * a2 + c
                dz = 1.0 / (1.0 + math.exp(-z)) - y
                gv1 += dz * a1
                gv2 += dz * a2
                gc += dz
                if z1 > 0.0:
                    d1 = dz * v1
                    g11 += d1 * x1
                    g12 += d1 * x2
                    gc1 += d1
                if z2 > 0.0:
                    d2 = dz * v2
                    g21 += d2 * x1
                    g22 += d2 * x2
                    gc2 += d2
            w11 -= scale * g11
            w12 -= scale * g12
            w21 -= scale * g21
            w22 -= scale * g22
            c1 -= scale * gc1
            c2 -= scale * gc2
            v1 -= scale * gv1
            v2 -= scale * gv2
            c -= scale * gc
        params = [
            np.array([[w11, w12], [w21, w22]]),
            np.array([c1, c2]),
            np.array([[v1, v2]]),
            np.array([c]),
        ]
        X = np.array(X_DATA)
        z = np.maximum(X @ params[0].T + params[1], 0) @ params[2].T + params[3]
        return params, bce_with_logits(z, np.array(Y_DATA))

    return run


def torch_course(torch, init: Params) -> Callable[[], Result]:
    """(c) the course's PyTorch loop."""
    nn = torch.nn

    class XOR(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(2, 2)
            self.fc2 = nn.Linear(2, 1)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    X = torch.tensor(X_DATA)
    Y = torch.tensor(Y_DATA)

    def run() -> Result:
        model = XOR()
        with torch.no_grad():
            for p, a in zip(model.parameters(), init, strict=True):
                p.copy_(torch.from_numpy(a))
        loss_fn = nn.BCEWithLogitsLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        for _ in range(EPOCHS):
            optimizer.zero_grad()
            loss = loss_fn(model(X), Y)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            final = loss_fn(model(X), Y).item()
        return [p.detach().numpy().copy() for p in model.parameters()], final

    return run


def generate(directory: Path):
    """Write the spec, run the symbp CLI on it, import the result: (module, s) or (None, why)."""
    spec = directory / f"{MODULE_NAME}.toml"
    spec.write_text(SPEC)
    out = directory / f"{MODULE_NAME}.py"
    command = [sys.executable, "-m", "symbp", "generate", str(spec), "--target", "numpy"]
    start = time.perf_counter()
    done = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit status {done.returncode}"
    module_spec = importlib.util.spec_from_file_location(MODULE_NAME, out)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module, seconds


def generated(module, init: Params, **options) -> Callable[[], Result] | str:
    """(a) the generated module's train() (with ``options``), or why it does not fit."""
    names = list(getattr(module, "PARAM_SHAPES", {}))
    shapes = [tuple(module.PARAM_SHAPES[n]) for n in names]
    if shapes != [a.shape for a in init]:
        return f"PARAM_SHAPES {shapes} is not the XOR network's {[a.shape for a in init]}"
    X = np.array(X_DATA)
    Y = np.array(Y_DATA)

    def run() -> Result:
        start = dict(zip(names, init, strict=True))
        params, _ = module.train(
            start, X, Y, epochs=EPOCHS, batch_size=4, lr=LR, shuffle=False, **options
        )
        final = [np.asarray(params[n]) for n in names]
        return final, float(module.loss(params, X, Y))

    return run


# -- measuring and reporting -------------------------------------------------------------


def run_interleaved(contenders: dict[str, Callable[[], Result]], repeats: dict[str, int]):
    """Time each contender repeats[key] times, alternating the order between rounds."""
    times: dict[str, list[float]] = {key: [] for key in contenders}
    results: dict[str, Result] = {}
    keys = list(contenders)
    for key in keys:  # warm-up: imports, first calls, caches
        results[key] = contenders[key]()
        time.sleep(PAUSE_S)
    for r in range(max(repeats.values())):
        for key in keys if r % 2 == 0 else reversed(keys):
            if r < repeats[key]:
                start = time.perf_counter()
                results[key] = contenders[key]()
                times[key].append(time.perf_counter() - start)
                time.sleep(PAUSE_S)
    return times, results


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


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


def ratio(label: str, numerator: float, denominator: float, need: str = "") -> None:
    print(f"  {label:<40} {numerator / denominator:7.1f}x  {need}")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


LABELS = {
    "a": "(a) generated train()",
    "a'": "(a') generated train(floats=False)",
    "b": "(b) hand-written NumPy (float32)",
    "c": "(c) PyTorch, as the course writes it",
    "d": "(d) hand-written plain Python floats",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive, default=9, help="runs of (a), (b), (d)")
    parser.add_argument("--torch-repeats", type=positive, default=5, help="runs of (c)")
    args = parser.parse_args(argv)

    import torch

    import symbp

    print(f"machine: {machine()}, load average {load_average()}")
    print(
        f"Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} threads, default), symbp {symbp.__version__}"
    )
    print(f"XOR 2-2-1: {EPOCHS} full-batch epochs of SGD, lr {LR}, from torch's init, seed {SEED}")
    init = torch_init(torch)
    contenders: dict[str, Callable[[], Result]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        module, result = generate(Path(tmp))
    if module is None:
        print(f"(a) skipped: symbp cannot generate layer stacks yet ({result})")
    else:
        run = generated(module, init)
        if isinstance(run, str):
            print(f"(a) skipped: {run}")
        else:
            dtype = np.dtype(module.DTYPE).name
            print(f"(a) generated {MODULE_NAME} ({dtype}) with the symbp CLI in {result:.2f} s")
            contenders["a"] = run
            on_floats = getattr(module, "FLOAT_BATCH_MAX", 0) >= len(X_DATA)
            if on_floats:
                print(f"    (a) trains on Python floats (FLOAT_BATCH_MAX {module.FLOAT_BATCH_MAX})")
                TOLERANCE["a"] = TOLERANCE["d"]
                contenders["a'"] = generated(module, init, floats=False)
    contenders["b"] = hand_numpy(init)
    contenders["c"] = torch_course(torch, init)
    contenders["d"] = hand_floats(init)
    repeats = {key: args.torch_repeats if key == "c" else args.repeats for key in contenders}
    times, results = run_interleaved(contenders, repeats)

    print(f"\nmedian time of the whole training (10000 epochs), load {load_average()}")
    for key in sorted(contenders):
        med = statistics.median(times[key])
        note = f"n={len(times[key])}, {med / EPOCHS * 1e6:.1f} us per epoch"
        print(f"  {LABELS[key]:<40} {med * 1e3:9.1f} ms   {note}")
    med = {key: statistics.median(values) for key, values in times.items()}
    print("\nratios of medians")
    if "a" in med:
        ratio("torch / generated", med["c"], med["a"], "(need >= 10x)")
        ratio("generated / hand-written NumPy", med["a"], med["b"])
    if "a'" in med:
        ratio("torch / generated array step", med["c"], med["a'"])
        ratio("generated array step / hand NumPy", med["a'"], med["b"])
    else:
        print("  torch / generated                        skipped: no generated module")
    ratio("torch / hand-written NumPy", med["c"], med["b"])
    ratio("torch / hand-written plain floats", med["c"], med["d"])

    print("\nfinal weights (W1, b1, W2, b2) and loss, against (c)'s")
    ref_params, ref_loss = results["c"]
    ok = True
    for key in sorted(results):
        params, final = results[key]
        diff = max(float(np.max(np.abs(p - r))) for p, r in zip(params, ref_params, strict=True))
        good = diff <= TOLERANCE[key] and abs(final - ref_loss) <= 1e-5
        ok &= good
        flat = ", ".join(f"{v:.5f}" for p in params for v in np.ravel(p))
        verdict = f"{'ok' if good else 'MISMATCH'} (tolerance {TOLERANCE[key]:g})"
        print(f"  {key}: loss {final:.6f}, max |diff| {diff:.1e}  [{flat}]  {verdict}")
    if "a'" in results:  # (a) ran on floats: it must end where (d) ends
        diff = max(
            float(np.max(np.abs(p - r)))
            for p, r in zip(results["a"][0], results["d"][0], strict=True)
        )
        good = diff <= FLOAT64_AGREEMENT
        ok &= good
        verdict = f"{'ok' if good else 'MISMATCH'} (tolerance {FLOAT64_AGREEMENT:g})"
        print(f"  a against d (both on Python floats): max |diff| {diff:.1e}  {verdict}")
    print(f"load average at the end: {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
