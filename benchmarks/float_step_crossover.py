"""Benchmark: where a layer stack's float step stops paying (issue 3).

symbp prints a tiny layer stack's training step twice: for arrays (NumPy calls, about a
microsecond each whatever the size) and unrolled for Python floats (tens of nanoseconds
an operation, per sample). train() picks the floats up to FLOAT_BATCH_MAX, estimated at
generation from the two steps' sizes with one machine constant,
``symbp.targets.numpy.float_step.OP_PER_CALL``. This script measures, for the built-in XOR
networks, the time per training step of both paths at several batch sizes (interleaved,
medians of 7 runs of 300 steps each, a short pause between runs) so that the constant
can be checked: the estimate should sit near the measured crossover.

Run from the repository root (about half a minute):

    python benchmarks/float_step_crossover.py
"""

from __future__ import annotations

import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (2, 4, 8, 12, 16, 24, 32, 48)
EPOCHS, RUNS, PAUSE_S = 300, 7, 0.02


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "generated" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_times(module, batch: int) -> tuple[float, float]:
    """Median microseconds per step on floats and on arrays, one batch per epoch."""
    rng = np.random.default_rng(0)
    X = rng.random((batch, module.LAYER_WIDTHS[0])).astype(module.DTYPE)
    Y = (rng.random((batch, module.LAYER_WIDTHS[-1])) > 0.5).astype(module.DTYPE)
    params = module.init_params(0)
    times: dict[bool, list[float]] = {True: [], False: []}
    for run in range(RUNS):
        for floats in (True, False) if run % 2 else (False, True):
            start = time.perf_counter()
            module.train(
                params,
                X,
                Y,
                epochs=EPOCHS,
                batch_size=batch,
                shuffle=False,
                floats=floats,
                backend="numpy",  # not the C module beside it in generated/
            )
            times[floats].append((time.perf_counter() - start) / EPOCHS * 1e6)
            time.sleep(PAUSE_S)
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> int:
    print(f"Python {platform.python_version()}, NumPy {np.__version__}, {platform.machine()}")
    for name in ("xor_mlp", "xor_sigmoid"):
        module = load(name)
        print(f"\n{name}: FLOAT_BATCH_MAX = {module.FLOAT_BATCH_MAX} (estimated)")
        print(f"  {'batch':>5}  {'floats':>10}  {'arrays':>10}  floats / arrays")
        crossover = None
        for batch in BATCHES:
            floats, arrays = step_times(module, batch)
            if crossover is None and floats > arrays:
                crossover = batch
            print(f"  {batch:>5}  {floats:8.1f} us  {arrays:8.1f} us  {floats / arrays:6.2f}")
        print(f"  measured: floats slower from batch {crossover or f'> {BATCHES[-1]}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
