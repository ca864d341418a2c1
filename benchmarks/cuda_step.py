"""GPU benchmark of the CUDA target against PyTorch CUDA eager, on the same GPU.

NOT RUN YET: written on a machine without a GPU; no figure from it has been measured
or recorded. It needs an NVIDIA GPU, nvcc, cuBLAS and torch with CUDA.

1. One training step (forward, loss, backward, Adam) of the MLP 784-256-256-10 with
   ReLU, cross_entropy and Adam, float32, at batch 128 and 8192: the generated .cu built
   by nvcc as a shared library and called through its C API (symbp_train_step on
   torch's device pointers) against torch.nn + torch.optim.Adam eager. Goals (issue 5):
   at batch 128 at least 2x faster than PyTorch eager, at batch 8192 within 1.1x.
2. 10000 full-batch epochs of the course's XOR network (2-2-1, ReLU, bce_with_logits,
   SGD): the single-launch trainer (symbp_train_single_launch, one kernel launch for
   all epochs) against a PyTorch loop. Goal: at least 100x faster.

Usage: python benchmarks/cuda_step.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLP_SPEC = """
name = "mlp_784"
[model]
input = 784
layers = [
  { dense = 256, activation = "relu" },
  { dense = 256, activation = "relu" },
  { dense = 10 },
]
loss = "cross_entropy"
[train]
optimizer = "adam"
lr = 0.001
batch_size = 128
"""


def build(spec_text: str, name: str, folder: Path) -> ctypes.CDLL:
    """symbp generate --target cuda, then nvcc into a shared library."""
    from symbp.derive import derive
    from symbp.spec import parse_spec
    from symbp.targets.cuda.target import render_cuda

    source = folder / f"{name}.cu"
    source.write_text(render_cuda(derive(parse_spec(spec_text, f"{name}.toml"))))
    library = folder / f"lib{name}.so"
    command = ["nvcc", "-O3", "-shared", "-Xcompiler", "-fPIC", "-DSYMBP_NO_MAIN"]
    subprocess.run([*command, str(source), "-o", str(library), "-lcublas"], check=True)
    lib = ctypes.CDLL(str(library))
    lib.symbp_init.restype = ctypes.c_void_p
    return lib


def timed(fn, repeats: int, torch) -> float:
    """Median milliseconds of fn() over repeats, with CUDA events."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def mlp_step(lib, torch, batch: int, repeats: int) -> tuple[float, float]:
    p = ctypes.c_void_p
    device = torch.device("cuda")
    sizes = (ctypes.c_int * 6)()
    lib.symbp_sizes(sizes)
    params = torch.randn(sizes[0], device=device) * 0.05
    state = torch.zeros(sizes[1] * sizes[0], device=device)
    X = torch.randn(batch, 784, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    Y = torch.nn.functional.one_hot(labels, 10).float()
    model = lib.symbp_init(batch)
    lib.symbp_train_step.argtypes = [p, ctypes.c_int, p, p, p, p, ctypes.c_int, ctypes.c_double, p]
    step = [0]

    def generated():
        step[0] += 1
        lib.symbp_train_step(
            model, batch, X.data_ptr(), Y.data_ptr(), params.data_ptr(), state.data_ptr(),
            step[0], 1e-3, None,
        )  # fmt: skip

    net = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
        torch.nn.ReLU(), torch.nn.Linear(256, 10),
    ).to(device)  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def eager():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(X), labels).backward()
        optimizer.step()

    ours, theirs = [], []
    for _ in range(3):  # interleaved blocks
        ours.append(timed(generated, repeats, torch))
        theirs.append(timed(eager, repeats, torch))
    lib.symbp_free(ctypes.c_void_p(model))
    return statistics.median(ours), statistics.median(theirs)


def xor_epochs(lib, torch, epochs: int) -> tuple[float, float]:
    p = ctypes.c_void_p
    device = torch.device("cuda")
    X = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32, device=device)
    Y = torch.tensor([[0], [1], [1], [0]], dtype=torch.float32, device=device)
    sizes = (ctypes.c_int * 6)()
    lib.symbp_sizes(sizes)
    assert sizes[5] == 4, "the XOR network should fit the single-launch trainer"
    losses = (ctypes.c_float * epochs)()
    lib.symbp_train_single_launch.argtypes = [
        ctypes.c_int, p, p, p, p, ctypes.c_int, ctypes.c_double, ctypes.c_int,
        ctypes.c_ulonglong, p,
    ]  # fmt: skip

    def generated():
        params = torch.tensor([0.5, -0.3, -0.6, 0.7, 0.1, 0.0, 0.4, -0.5, 0.0], device=device)
        state = torch.zeros(1, device=device)
        lib.symbp_train_single_launch(
            4, X.data_ptr(), Y.data_ptr(), params.data_ptr(), state.data_ptr(), epochs, 0.1,
            0, 0, ctypes.addressof(losses),
        )  # fmt: skip
        torch.cuda.synchronize()

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    net = net.to(device)

    def eager():
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(epochs):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(X), Y).backward()
            optimizer.step()
        torch.cuda.synchronize()

    def seconds(fn) -> float:
        fn()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return seconds(generated), seconds(eager)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark needs one", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mlp = build(MLP_SPEC, "mlp_784", folder)
        for batch in (128, 8192):
            ours, theirs = mlp_step(mlp, torch, batch, args.repeats)
            print(
                f"MLP step, batch {batch:>5}: generated {ours:.3f} ms, PyTorch eager "
                f"{theirs:.3f} ms ({theirs / ours:.2f}x)"
            )
        from symbp.spec import resolve

        xor = build(resolve("xor_mlp")[1], "xor_mlp", folder)
        ours, theirs = xor_epochs(xor, torch, 10000)
        print(
            f"XOR, 10000 epochs: generated single launch {ours * 1e3:.2f} ms, PyTorch eager "
            f"{theirs * 1e3:.1f} ms ({theirs / ours:.0f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
