"""Benchmark: the C target's train() against JAX's jitted training loop, the NumPy module
and hand-written loops (issue 15), in one run, as ratios.

Two course runs, every contender from the same start and in the same order:

- quadratic: yhat = w1 x^2 + w2 x + b on x = 1..5, per-sample SGD, lr 0.0005, 10000
  epochs in order: 50,000 dependent updates, float64;
- XOR: the 2-2-1 ReLU network with BCE-with-logits, full-batch SGD, lr 0.1, 10000
  epochs, float32, from the module's init_params(0).

Contenders, timed interleaved in blocks of three calls in alternating order, with a
pause after each block; the first call of a block is left out (steady state):

(a) the C target: ``symbp generate SPEC --target c``, the loader's train() (the whole
    loop in one C call; the library compiled before timing);
(b) the NumPy module symbp generates, its train();
(c) hand-written: the plain-float loop for the quadratic, a NumPy loop for XOR;
(d) JAX: the whole training jitted (``lax.fori_loop`` over epochs and samples), its
    steady-state call, in a long-lived child process (JAX lives in its own venv: pass
    ``--jax-python``) that times one call per request, so that its runs interleave with
    the others; the gradient only, as JAX users write the loop;
(e) the same with each epoch's mean loss kept (``value_and_grad``), the work train()
    does: it returns the loss curve.

Then, in fresh processes (median wall time of several): symbp end to end (import,
generate the C file and loader, compile, train, into a new folder each time so that
nothing is cached) against JAX's first call (import, trace, compile, run).

Then the MLP 784-256-256-10 (Adam, float32, batch 32, 64 batches in one train() call)
and the crossover: the same for square stacks H-H-H-10 at H = 16 ... 256, C against the
NumPy module, per step.

    python benchmarks/c_training.py --jax-python /path/to/jaxvenv/bin/python

The exit status is 1 when the contenders end at different parameters.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PAUSE_S = 0.3
XS = [1.0, 2.0, 3.0, 4.0, 5.0]
YS = [8.0, 19.0, 36.0, 59.0, 88.0]
XOR_X = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
XOR_Y = [0.0, 1.0, 1.0, 0.0]
EPOCHS = 10000
_unique = itertools.count()


def generate(spec: str, folder: Path, target: str, dtype: str | None = None):
    """Generate and import one target's module of a built-in or a spec file."""
    from symbp.derive import derive
    from symbp.spec import load
    from symbp.targets.c.target import render_c, render_c_loader
    from symbp.targets.numpy.module import render_module

    derivation = derive(load(spec))
    stem = f"bench_{next(_unique)}"
    if target == "c":
        (folder / f"{stem}.c").write_text(render_c(derivation, dtype))
        path = folder / f"{stem}_c.py"
        path.write_text(render_c_loader(derivation, f"{stem}.c", dtype))
    else:
        path = folder / f"{stem}.py"
        path.write_text(render_module(derivation, dtype))
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


# -- hand-written loops ------------------------------------------------------------------


def quadratic_by_hand():
    w1 = w2 = b = 1.0
    lr = 0.0005
    samples = list(zip(XS, YS, strict=True))
    for _ in range(EPOCHS):
        for x, y in samples:
            d = 2.0 * (x * x * w1 + x * w2 + b - y)
            w1 -= lr * d * x * x
            w2 -= lr * d * x
            b -= lr * d
    return np.array([w1, w2, b])


def xor_by_hand(start: dict):
    """Full-batch SGD on the four points in float32 NumPy, written as one would."""
    X = np.array(XOR_X, np.float32)
    Y = np.array(XOR_Y, np.float32)[:, None]
    W1, b1, W2, b2 = (start[k].astype(np.float32).copy() for k in ("W1", "b1", "W2", "b2"))
    lr = np.float32(0.1)
    for _ in range(EPOCHS):
        Z1 = X @ W1.T + b1
        A1 = np.maximum(Z1, 0)
        Z2 = A1 @ W2.T + b2
        G2 = (1 / (1 + np.exp(-Z2)) - Y) / np.float32(4)
        G1 = (G2 @ W2) * (Z1 > 0)
        W2 -= lr * (G2.T @ A1)
        b2 -= lr * G2.sum(axis=0)
        W1 -= lr * (G1.T @ X)
        b1 -= lr * G1.sum(axis=0)
    return np.concatenate([W1.ravel(), b1, W2.ravel(), b2])


# -- JAX, in a child process ---------------------------------------------------------------

JAX_CHILD = r"""
import json, sys, time
start = time.perf_counter()
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import_s = time.perf_counter() - start
XS, YS, XOR_X, XOR_Y, EPOCHS = json.loads(sys.argv[1])
start_xor = json.loads(sys.argv[2])

def quadratic(losses):
    xs, ys = jnp.array(XS), jnp.array(YS)
    sample = lambda p, x, y: (x * x * p[0] + x * p[1] + p[2] - y) ** 2
    grad = jax.value_and_grad(sample) if losses else jax.grad(sample)
    @jax.jit
    def train(p):
        def step(i, carry):
            p, total = carry
            if losses:
                l, g = grad(p, xs[i], ys[i])
                total = total + l
            else:
                g = grad(p, xs[i], ys[i])
            return tuple(a - 0.0005 * b for a, b in zip(p, g)), total
        def epoch(e, carry):
            p, curve = carry
            p, total = jax.lax.fori_loop(0, 5, step, (p, jnp.float64(0)))
            return p, curve.at[e].set(total / 5) if losses else curve
        return jax.lax.fori_loop(0, EPOCHS, epoch, (p, jnp.zeros(EPOCHS)))
    p0 = tuple(jnp.float64(1.0) for _ in range(3))
    return lambda: [float(v) for v in jax.block_until_ready(train(p0))[0]]

def xor(losses):
    X = jnp.array(XOR_X, jnp.float32)
    Y = jnp.array(XOR_Y, jnp.float32)[:, None]
    def loss(p):
        W1, b1, W2, b2 = p
        z = jax.nn.relu(X @ W1.T + b1) @ W2.T + b2
        return jnp.mean(jax.nn.softplus(z) - Y * z)
    grad = jax.value_and_grad(loss) if losses else jax.grad(loss)
    @jax.jit
    def train(p):
        def epoch(e, carry):
            p, curve = carry
            if losses:
                value, g = grad(p)
                curve = curve.at[e].set(value)
            else:
                g = grad(p)
            return tuple(a - jnp.float32(0.1) * b for a, b in zip(p, g)), curve
        return jax.lax.fori_loop(0, EPOCHS, epoch, (p, jnp.zeros(EPOCHS, jnp.float32)))
    p0 = tuple(jnp.array(start_xor[k], jnp.float32) for k in ("W1", "b1", "W2", "b2"))
    def run():
        params = jax.block_until_ready(train(p0))[0]
        return jnp.concatenate([jnp.ravel(v) for v in params]).tolist()
    return run

runs = {
    "quadratic": quadratic(False), "xor": xor(False),
    "quadratic+losses": quadratic(True), "xor+losses": xor(True),
}
first = {}
for name, run in runs.items():
    start = time.perf_counter()
    run()
    first[name] = time.perf_counter() - start
print(json.dumps({"version": jax.__version__, "import_s": import_s, "first_s": first}), flush=True)
for line in sys.stdin:
    name = line.strip()
    start = time.perf_counter()
    result = runs[name]()
    print(json.dumps({"s": time.perf_counter() - start, "result": result}), flush=True)
"""


class JaxChild:
    """JAX's jitted loops in a process of their own, timed one call per request."""

    def __init__(self, python: str, start_xor: dict):
        data = json.dumps([XS, YS, XOR_X, XOR_Y, EPOCHS])
        params = json.dumps({k: v.tolist() for k, v in start_xor.items()})
        self.process = subprocess.Popen(
            [python, "-c", JAX_CHILD, data, params],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.hello = json.loads(self.process.stdout.readline())

    def __call__(self, name: str) -> tuple[float, np.ndarray]:
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return answer["s"], np.array(answer["result"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


# -- fresh processes -----------------------------------------------------------------------

SYMBP_FRESH = r"""
import sys, time, importlib.util, tempfile
from pathlib import Path
start = time.perf_counter()
import numpy as np
from symbp.derive import derive
from symbp.spec import load
from symbp.targets.c.target import render_c, render_c_loader
import_s = time.perf_counter() - start
folder = Path(tempfile.mkdtemp())
start = time.perf_counter()
d = derive(load("quadratic"))
(folder / "q.c").write_text(render_c(d))
(folder / "q_c.py").write_text(render_c_loader(d, "q.c"))
spec = importlib.util.spec_from_file_location("q_c", folder / "q_c.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
generate_s = time.perf_counter() - start
start = time.perf_counter()
m._load()
compile_s = time.perf_counter() - start
start = time.perf_counter()
params, _ = m.train(m.init_params(), np.array(%(xs)r), np.array(%(ys)r))
train_s = time.perf_counter() - start
print(import_s, generate_s, compile_s, train_s, params["w1"])
"""

JAX_FRESH = r"""
import time
start = time.perf_counter()
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
xs, ys = jnp.array(%(xs)r), jnp.array(%(ys)r)
grad = jax.grad(lambda p, x, y: (x * x * p[0] + x * p[1] + p[2] - y) ** 2)
@jax.jit
def train(p):
    def step(i, p):
        g = grad(p, xs[i], ys[i])
        return tuple(a - 0.0005 * b for a, b in zip(p, g))
    return jax.lax.fori_loop(0, %(epochs)d, lambda _, p: jax.lax.fori_loop(0, 5, step, p), p)
result = jax.block_until_ready(train(tuple(jnp.float64(1.0) for _ in range(3))))
print(time.perf_counter() - start, float(result[0]))
"""


def fresh_walls(command: list[str], repeats: int) -> tuple[list[float], list[str]]:
    walls, outputs = [], []
    subprocess.run(command, check=True, capture_output=True)  # fills bytecode caches
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        outputs.append(done.stdout.split())
        time.sleep(PAUSE_S)
    return walls, outputs


# -- reporting -----------------------------------------------------------------------------


def med(values) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def interleave(contenders: dict, repeats: int, block: int = 3) -> tuple[dict, dict]:
    """Blocks of ``block`` calls per contender, in alternating order, with a pause after
    each block (BLAS and XLA threads spin for a moment after work); the first call of a
    block, slowed by a core just woken, is left out: the figures are steady state."""
    times = {k: [] for k in contenders}
    results = {}
    keys = list(contenders)
    for r in range(repeats):
        for key in keys if r % 2 == 0 else reversed(keys):
            for call in range(block):
                seconds, results[key] = contenders[key]()
                if call > 0 or block == 1:
                    times[key].append(seconds)
            time.sleep(PAUSE_S)
    return times, results


def timed(fn):
    def run():
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    return run


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout
    return (
        f"CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy "
        f"{np.__version__}; {cc.splitlines()[0] if cc else 'no cc'}"
    )


def course_runs(folder: Path, args, jax: JaxChild | None) -> bool:
    quad_c = generate("quadratic", folder, "c")
    quad_np = generate("quadratic", folder, "numpy")
    xor_c = generate("xor_mlp", folder, "c")
    xor_np = generate("xor_mlp", folder, "numpy")
    quad_c._load(), xor_c._load()
    X, Y = np.array(XS), np.array(YS)
    start = {k: v for k, v in xor_np.init_params(0).items()}
    XX, XY = np.array(XOR_X), np.array(XOR_Y)

    def flat(params):
        return np.concatenate([np.ravel(params[k]) for k in params])

    def quad(module):
        def run():
            p = module.init_params(0)
            return flat(module.train(p, X, Y, shuffle=False)[0])

        return run

    def xor(module):
        def run():
            return flat(module.train(start, XX, XY, shuffle=False)[0])

        return run

    ok = True
    for name, contenders in (
        (
            "quadratic",
            {
                "a": timed(quad(quad_c)),
                "b": timed(quad(quad_np)),
                "c": timed(quadratic_by_hand),
            },
        ),
        (
            "xor",
            {
                "a": timed(xor(xor_c)),
                "b": timed(xor(xor_np)),
                "c": timed(lambda: xor_by_hand(start)),
            },
        ),
    ):
        if jax is not None:
            contenders["d"] = lambda name=name: jax(name)
            contenders["e"] = lambda name=name: jax(name + "+losses")
        times, results = interleave(contenders, args.repeats)
        print(f"\n{name}: medians of {args.repeats} interleaved blocks, steady state")
        labels = {
            "a": "(a) C target train()",
            "b": "(b) NumPy module train()",
            "c": "(c) hand-written " + ("plain floats" if name == "quadratic" else "NumPy"),
            "d": "(d) JAX jitted loop, steady state",
            "e": "(e) JAX jitted loop with per-epoch losses",
        }
        for key in times:
            print(f"  {labels[key]:<40} {ms(med(times[key]))}")
        a = med(times["a"])
        for key in times:
            if key != "a":
                print(f"  {labels[key][4:]:<36} / C: {med(times[key]) / a:8.2f}x")
        if name == "quadratic":
            per = a / (EPOCHS * 5) * 1e9
            print(f"  C per update: {per:.1f} ns (50,000 dependent updates of ~15 flops)")
        tolerance = 1e-9 if name == "quadratic" else 2e-3
        for key, value in results.items():
            error = float(np.max(np.abs(np.asarray(value) - results["a"])))
            agree = error <= (1e-4 if key in "cde" else tolerance)
            ok &= agree
            verdict = "ok" if agree else "MISMATCH"
            print(f"  final parameters {key} vs a: max difference {error:.2e} {verdict}")
    return ok


def fresh(args, jax_python: str | None) -> None:
    print(f"\nend to end in fresh processes (median wall of {args.cold_repeats})")
    values = {"xs": XS, "ys": YS, "epochs": EPOCHS}
    walls, outputs = fresh_walls([sys.executable, "-c", SYMBP_FRESH % values], args.cold_repeats)
    parts = np.median(np.array([[float(v) for v in out[:4]] for out in outputs]), axis=0)
    print(
        f"  symbp: import {ms(parts[0])}, derive+render+import {ms(parts[1])}, compile"
        f" {ms(parts[2])}, train {ms(parts[3])}; process wall {ms(med(walls))}"
    )
    if jax_python is None:
        print("  JAX: skipped (no --jax-python)")
        return
    jwalls, jout = fresh_walls([jax_python, "-c", JAX_FRESH % values], args.cold_repeats)
    inside = med([float(o[0]) for o in jout])
    print(f"  JAX: import + trace + compile + run {ms(inside)}; process wall {ms(med(jwalls))}")
    print(f"  JAX process wall / symbp process wall: {med(jwalls) / med(walls):.2f}x")


def mlp_stack(folder: Path, widths: tuple[int, ...]) -> Path:
    layers = ", ".join(f'{{ dense = {w}, activation = "relu" }}' for w in widths[1:-1])
    path = folder / f"mlp_{'_'.join(map(str, widths))}.toml"
    path.write_text(
        f'name = "mlp_bench"\n[model]\ninput = {widths[0]}\nlayers = [{layers}, '
        f'{{ dense = {widths[-1]} }}]\nloss = "cross_entropy"\n'
        '[train]\noptimizer = "adam"\nlr = 0.001\nbatch_size = 32\n'
    )
    return path


def crossover(folder: Path, args) -> None:
    print("\ndense stacks, Adam, float32, batch 32, 64 batches per train() call: per step")
    print(f"  {'widths':<22} {'C':>12} {'NumPy':>12} {'NumPy / C':>10}")
    rng = np.random.default_rng(0)
    for widths in [
        (16, 16, 16, 10),
        (32, 32, 32, 10),
        (64, 64, 64, 10),
        (128, 128, 128, 10),
        (256, 256, 256, 10),
        (784, 256, 256, 10),
    ]:
        spec = str(mlp_stack(folder, widths))
        c, numpy_module = generate(spec, folder, "c"), generate(spec, folder, "numpy")
        c._load()
        X = rng.standard_normal((32 * 64, widths[0])).astype(np.float32)
        Y = rng.integers(0, 10, 32 * 64)
        params = numpy_module.init_params(0)

        def run(module, params=params, X=X, Y=Y):
            return timed(lambda: module.train(params, X, Y, epochs=1, shuffle=False))

        times, _ = interleave({"c": run(c), "np": run(numpy_module)}, args.step_repeats, 2)
        tc, tn = med(times["c"]) / 64, med(times["np"]) / 64
        label = "-".join(map(str, widths))
        print(f"  {label:<22} {ms(tc)} {ms(tn)} {tn / tc:9.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jax-python", help="an interpreter with JAX, for (d)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cold-repeats", type=int, default=5)
    parser.add_argument("--step-repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = {k: v for k, v in generate("xor_mlp", folder, "numpy").init_params(0).items()}
        jax = JaxChild(args.jax_python, start) if args.jax_python else None
        if jax is not None:
            hello = jax.hello
            print(
                f"JAX {hello['version']}: import {ms(hello['import_s'])}, first calls "
                + ", ".join(f"{k} {ms(v)}" for k, v in hello["first_s"].items())
            )
        ok = course_runs(folder, args, jax)
        if jax is not None:
            jax.close()
        fresh(args, args.jax_python)
        crossover(folder, args)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
