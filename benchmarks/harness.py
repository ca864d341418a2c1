"""What the training-step benchmarks share: the module symbp generates from a spec (by
the CLI, in a folder), the hand-written steps' Adam in place, JAX's Adam step under one
jax.jit, and the interleaved timing (rotating order, blocks of a fixed duration, a
pause after each block because BLAS threads spin for a moment after work, medians)."""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def generate(folder: Path, name: str, spec_text: str, dtype: str):
    """The NumPy module ``symbp generate`` writes from ``spec_text``, imported."""
    spec = folder / f"{name}.toml"
    spec.write_text(spec_text, encoding="utf-8")
    out = folder / f"{name}_{dtype}.py"
    subprocess.run(
        [sys.executable, "-m", "symbp", "generate", str(spec), "--dtype", dtype, "-o", str(out)],
        check=True,
        capture_output=True,
    )
    module_spec = importlib.util.spec_from_file_location(out.stem, out)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


class InPlaceAdam:
    """torch.optim.Adam's update (defaults) on a hand-written step's dict of arrays, in
    place with ``out=`` and one scratch array per parameter."""

    def __init__(self, params: dict[str, np.ndarray]):
        self.p = params
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.tmp = {k: np.empty_like(v) for k, v in params.items()}
        self.t = 0

    def update(self, g, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8) -> None:
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for k, p in self.p.items():
            m, v, t = self.m[k], self.v[k], self.tmp[k]
            m *= b1
            m += (1 - b1) * g[k]
            v *= b2
            np.multiply(g[k], g[k], out=t)
            t *= 1 - b2
            v += t
            np.sqrt(v, out=t)
            t /= np.sqrt(c2)
            t += eps
            np.divide(m, t, out=t)
            t *= lr / c1
            p -= t


def jax_adam_runner(loss, params, X, labels, steps_per_call: int, lr: float = 1e-3):
    """run(k): k * steps_per_call steps of torch.optim.Adam's rule (defaults, lr) on
    ``loss(p, x, y)`` under one jax.jit, the parameters and moments carried from call to
    call; None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    @jax.jit
    def step(p, m, v, t, x, y):
        g = jax.grad(loss)(p, x, y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
        c1, c2 = 1 - 0.9**t, jnp.sqrt(1 - 0.999**t)
        p = jax.tree_util.tree_map(
            lambda a, mm, vv: a - lr / c1 * mm / (jnp.sqrt(vv) / c2 + 1e-8), p, m, v
        )
        return p, m, v, t

    state = {
        "p": {k: jnp.asarray(a) for k, a in params.items()},
        "m": {k: jnp.zeros_like(jnp.asarray(a)) for k, a in params.items()},
        "v": {k: jnp.zeros_like(jnp.asarray(a)) for k, a in params.items()},
        "t": jnp.asarray(0.0, jnp.float32),
    }
    x, y = jnp.asarray(X), jnp.asarray(labels)

    def run(k):
        p, m, v, t = state["p"], state["m"], state["v"], state["t"]
        for _ in range(k * steps_per_call):
            p, m, v, t = step(p, m, v, t, x, y)
        jax.block_until_ready(p)
        state.update(p=p, m=m, v=v, t=t)

    return run


def timed(run, k: int, steps_per_call: int) -> float:
    """Seconds per step of run(k)."""
    start = time.perf_counter()
    run(k)
    return (time.perf_counter() - start) / (k * steps_per_call)


def interleaved_medians(
    runs: dict, steps_per_call: int, *, rounds: int, block_s: float, pause_s: float
) -> dict[str, float]:
    """Median seconds per step of each contender: warmed up, then ``rounds`` rounds in
    rotating order, each a block of about ``block_s`` seconds, a pause after each."""
    for run in runs.values():
        run(1)  # warm up
    per_block = {
        name: max(1, round(block_s / timed(run, 1, steps_per_call))) for name, run in runs.items()
    }
    samples = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            samples[name].append(timed(runs[name], per_block[name], steps_per_call))
            time.sleep(pause_s)
    return {name: statistics.median(v) for name, v in samples.items()}
