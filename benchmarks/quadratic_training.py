"""Benchmark: the course's quadratic model trained by per-sample SGD (issue 2).

The course fits yhat = w1*x**2 + w2*x + b to x = 1..5, y = 8, 19, 36, 59, 88 from
w1 = w2 = b = 1 with 10000 epochs of per-sample SGD, samples in order, lr 0.0005.
This script runs that training several ways and prints medians and ratios:

(a) the module symbp generates from symbp/examples/quadratic.toml (generated into a
    temporary directory at the start, imported, and its ``train()`` called);
(b) the same loop with PyTorch autograd, as the course writes it (float64 tensors of
    shape [1] with requires_grad, ``l.backward()`` per sample, the update under
    ``torch.no_grad()``, ``grad.zero_()``); full 10000-epoch runs, fewer of them;
(c) a hand-written loop in plain Python floats: the floor set by the interpreter;
(d) symbp's end-to-end cost: load + derive + render + write + import of the module,
    then its training, each timed inside fresh processes (the first call, as a user
    meets it), plus the wall time of whole cold processes (interpreter start and
    imports included): ``python -m symbp generate quadratic``, training the generated
    module, and both in one process;
(e) JAX, when an interpreter with JAX is available: the whole loop jitted
    (``lax.fori_loop`` over epochs and samples, float64), first call (trace + compile +
    run) and steady state, timed inside fresh processes, plus the cold process wall.

(a), (b) and (c) run interleaved in this one process, with a pause after each block
because NumPy/torch worker threads keep spinning for a moment after work and steal a
core. PyTorch runs with its default number of intra-op threads (printed). (b) and (e)
print "skipped: not installed" when torch or JAX cannot be imported. Cold processes
run with bytecode caching on (an untimed first run fills a cache in a temporary
directory), as for an installed package, whatever PYTHONDONTWRITEBYTECODE says.

Run from the repository root (takes about two minutes, most of it in (b)):

    python benchmarks/quadratic_training.py
    python benchmarks/quadratic_training.py --jax-python /path/to/jaxvenv/bin/python

``--jax-python`` names an interpreter with JAX, used for (e) when this one has none.
The exit status is 1 when a run does not end at the course's parameters.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

EPOCHS = 10000
LR = 0.0005
XS = (1.0, 2.0, 3.0, 4.0, 5.0)
YS = (8.0, 19.0, 36.0, 59.0, 88.0)
START = (1.0, 1.0, 1.0)  # w1, w2, b
EXPECTED = (2.9767, 2.1572, 2.7839)  # w1, w2, b after training, to 4 decimals
TOLERANCE = 1e-4
PAUSE_S = 0.5
MODULE_NAME = "quadratic_bench"

Params = tuple[float, float, float]


# -- the contenders ------------------------------------------------------------------


def train_plain() -> Params:
    """(c) the course's loop by hand, in plain Python floats."""
    w1, w2, b = START
    samples = list(zip(XS, YS, strict=True))
    for _ in range(EPOCHS):
        for x, y in samples:
            d_yhat = 2.0 * (x * x * w1 + x * w2 + b - y)
            w1 -= LR * d_yhat * x * x
            w2 -= LR * d_yhat * x
            b -= LR * d_yhat
    return w1, w2, b


def generate_module(directory: Path):
    """Load, derive, render, write and import the built-in spec; return (module, seconds)."""
    from symbp.derive import derive
    from symbp.spec import load
    from symbp.targets.numpy.module import render_module

    start = time.perf_counter()
    path = directory / f"{MODULE_NAME}.py"
    path.write_text(render_module(derive(load("quadratic"))))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, time.perf_counter() - start


def generated_trainer(module) -> Callable[[], Params]:
    """(a) the generated module's train() on the course's data."""
    import numpy as np

    inputs = np.array(XS)[:, None]
    targets = np.array(YS)[:, None]

    def run() -> Params:
        start = dict(zip(("w1", "w2", "b"), map(np.float64, START), strict=True))
        params, _ = module.train(
            start, inputs, targets, epochs=EPOCHS, batch_size=1, lr=LR, shuffle=False
        )
        return float(params["w1"]), float(params["w2"]), float(params["b"])

    return run


def torch_trainer() -> Callable[[], Params] | None:
    """(b) the course's PyTorch autograd loop, or None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None

    def run() -> Params:
        w1 = torch.tensor([START[0]], dtype=torch.float64, requires_grad=True)
        w2 = torch.tensor([START[1]], dtype=torch.float64, requires_grad=True)
        b = torch.tensor([START[2]], dtype=torch.float64, requires_grad=True)
        for _ in range(EPOCHS):
            for x, y in zip(XS, YS, strict=True):
                l = (x * x * w1 + x * w2 + b - y) ** 2  # noqa: E741 - the course's name
                l.backward()
                with torch.no_grad():
                    w1 -= LR * w1.grad
                    w2 -= LR * w2.grad
                    b -= LR * b.grad
                w1.grad.zero_()
                w2.grad.zero_()
                b.grad.zero_()
        return w1.item(), w2.item(), b.item()

    return run


# -- fresh processes: this script run with --child symbp|jax --------------------------


def symbp_child(steady_repeats: int) -> dict:
    """(d) as a user meets it: imports, the first generation, the first training."""
    del steady_repeats  # only the first call counts here
    start = time.perf_counter()
    import numpy  # noqa: F401 - the generated module needs it; count it with the imports

    import symbp.derive
    import symbp.spec.expression
    import symbp.targets.numpy.module  # noqa: F401

    import_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        module, generate_s = generate_module(Path(tmp))
    train_s, params = timed(generated_trainer(module))
    return {"import_s": import_s, "generate_s": generate_s, "first_s": train_s, "params": params}


def jax_child(steady_repeats: int) -> dict:
    """(e) import, backend setup, the first call (trace + compile + run), steady state."""
    start = time.perf_counter()
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    import_s = time.perf_counter() - start
    start = time.perf_counter()
    xs = jnp.array(XS)  # the first arrays start the CPU backend
    ys = jnp.array(YS)
    p0 = tuple(jnp.float64(v) for v in START)
    jax.block_until_ready((xs, ys, p0))
    setup_s = time.perf_counter() - start

    def sample_loss(p, x, y):
        w1, w2, b = p
        return (x * x * w1 + x * w2 + b - y) ** 2

    sample_grad = jax.grad(sample_loss)

    @jax.jit
    def train(p, xs, ys):
        def step(i, p):
            g = sample_grad(p, xs[i], ys[i])
            return tuple(pi - LR * gi for pi, gi in zip(p, g, strict=True))

        def epoch(_, p):
            return jax.lax.fori_loop(0, len(XS), step, p)

        return jax.lax.fori_loop(0, EPOCHS, epoch, p)

    start = time.perf_counter()
    result = jax.block_until_ready(train(p0, xs, ys))
    first_s = time.perf_counter() - start
    steady = []
    for _ in range(steady_repeats):
        start = time.perf_counter()
        jax.block_until_ready(train(p0, xs, ys))
        steady.append(time.perf_counter() - start)
    return {
        "version": jax.__version__,
        "import_s": import_s,
        "setup_s": setup_s,
        "first_s": first_s,
        "steady_s": steady,
        "params": [float(v) for v in result],
    }


CHILDREN = {"symbp": symbp_child, "jax": jax_child}


def cold_environment(directory: Path) -> dict[str, str]:
    """The environment for fresh processes: bytecode cached under directory.

    Some setups export PYTHONDONTWRITEBYTECODE, which would make every fresh process
    compile symbp (installed editable) from source; an installed package has its .pyc
    files. The prefix keeps the cache out of the source tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")
    return env


def wall_times(command: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    """Wall times of repeats runs of command, after one untimed run that fills caches."""
    return [wall for wall, _ in run_fresh(command, repeats, env)]


def run_fresh(command: list[str], repeats: int, env: dict[str, str]) -> list[tuple[float, str]]:
    """(wall seconds, stdout) of repeats runs of command, after one untimed run."""
    subprocess.run(command, check=True, capture_output=True, env=env)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        runs.append((time.perf_counter() - start, done.stdout))
        time.sleep(PAUSE_S)
    return runs


def measure_children(python: str, kind: str, args, env: dict[str, str]) -> dict:
    """Run a child in fresh processes; its timings (lists over runs) and wall times."""
    script = str(Path(__file__).resolve())
    command = [python, script, "--child", kind, "--steady-repeats", str(args.steady_repeats)]
    runs = run_fresh(command, args.cold_repeats, env)
    reports = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout in runs]
    merged = {key: [r[key] for r in reports] for key in reports[0] if key.endswith("_s")}
    if "steady_s" in merged:
        merged["steady_s"] = [t for times in merged["steady_s"] for t in times]
    merged["wall_s"] = [wall for wall, _ in runs]
    merged["params"] = tuple(reports[-1]["params"])
    merged["version"] = reports[0].get("version")
    return merged


def jax_python(option: str | None) -> str | None:
    """An interpreter that can import JAX: this one, or --jax-python; None if neither."""
    if importlib.util.find_spec("jax") is not None:
        return sys.executable
    if option is None:
        return None
    probe = subprocess.run([option, "-c", "import jax"], capture_output=True, check=False)
    return option if probe.returncode == 0 else None


# Train an already generated module in a fresh interpreter: argv[1] is its path.
COLD_TRAIN = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("quadratic", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
X, Y = module._load_data(None)
module.train(module.init_params(), X, Y)
"""


# -- measuring in this process -------------------------------------------------------


def timed(fn: Callable[[], Params]) -> tuple[float, Params]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_interleaved(contenders: dict[str, Callable[[], Params]], repeats: dict[str, int]):
    """Time each contender repeats[key] times, interleaved, pausing after every block.

    The order alternates between rounds so that no contender always runs first.
    Returns (times, results): the seconds of every run and the last run's parameters.
    """
    times: dict[str, list[float]] = {key: [] for key in contenders}
    results: dict[str, Params] = {}
    keys = list(contenders)
    for r in range(max(repeats.values())):
        for key in keys if r % 2 == 0 else reversed(keys):
            if r < repeats[key]:
                seconds, results[key] = timed(contenders[key])
                times[key].append(seconds)
                time.sleep(PAUSE_S)
    return times, results


# -- reporting -----------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:10.1f} ms" if seconds < 10 else f"{seconds:10.2f} s "


def row(label: str, values: list[float] | None, note: str = "") -> None:
    if values is None:
        print(f"  {label:<54} skipped: not installed")
        return
    print(f"  {label:<54} {fmt_time(median(values))}  n={len(values):<3} {note}")


def ratio(label: str, numerator: float | None, denominator: float | None, need: str = "") -> None:
    if numerator is None or denominator is None:
        print(f"  {label:<60} skipped: not installed")
        return
    print(f"  {label:<60} {numerator / denominator:9.1f}x  {need}")


def agrees(params: Params) -> bool:
    return all(abs(a - b) <= TOLERANCE for a, b in zip(params, EXPECTED, strict=True))


def versions() -> str:
    import numpy
    import sympy

    import symbp

    parts = [
        f"Python {platform.python_version()}",
        f"NumPy {numpy.__version__}",
        f"SymPy {sympy.__version__}",
        f"symbp {symbp.__version__}",
    ]
    if importlib.util.find_spec("torch") is not None:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads, default)")
    return ", ".join(parts)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1-minute load average, to tell a quiet machine from a busy one."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def report(times, results, generate_again, cold, fresh, jax) -> bool:
    """Print medians, ratios and final parameters; True when every run agrees."""
    gen_s = median(times["a"])
    torch_s = median(times["b"]) if "b" in times else None
    e2e = [g + t for g, t in zip(fresh["generate_s"], fresh["first_s"], strict=True)]
    print("medians")
    row("(a) generated train()", times["a"])
    row("(b) torch autograd, as the course writes it", times.get("b"), "full runs")
    row("(c) hand-written plain-float loop", times["c"])
    row("(d) fresh process: import symbp + NumPy", fresh["import_s"])
    row("(d) fresh process: load+derive+render+write+import", fresh["generate_s"])
    row("(d) fresh process: first train() of the new module", fresh["first_s"])
    row("(d) fresh process: end to end (the two above)", e2e)
    row("(d) load+derive+render+write+import, SymPy caches warm", generate_again)
    row("(d) cold `python -m symbp generate quadratic`", cold["generate"], "wall")
    row("(d) cold `python -c` import generated + train", cold["train"], "wall")
    row("(d) cold one process: import, generate, train", fresh["wall_s"], "wall")
    if jax is None:
        row("(e) JAX", None)
    else:
        row(f"(e) fresh process: import jax {jax['version']}", jax["import_s"])
        row("(e) fresh process: backend setup (first arrays)", jax["setup_s"])
        row("(e) fresh process: first call (trace+compile+run)", jax["first_s"])
        row("(e) steady-state call", jax["steady_s"])
        row("(e) cold one process: import jax + first call", jax["wall_s"], "wall")

    print("\nratios (of medians)")
    jax_first = median(jax["first_s"]) if jax else None
    jax_wall = median(jax["wall_s"]) if jax else None
    jax_steady = median(jax["steady_s"]) if jax else None
    ratio("torch / generated", torch_s, gen_s, "(need >= 100x)")
    ratio("generated / hand-written", gen_s, median(times["c"]))
    ratio("JAX first call / symbp end to end, fresh", jax_first, median(e2e), "(need > 1x)")
    ratio("JAX cold process / symbp cold one process", jax_wall, median(fresh["wall_s"]))
    ratio("generated / JAX steady-state call", gen_s, jax_steady)
    print(f"\nload average at the end: {load_average()} (other work on the machine skews times)")

    print(f"\nfinal parameters (w1, w2, b); expected {EXPECTED}, tolerance {TOLERANCE:g}")
    finals = {
        "(a) generated": results["a"],
        "(b) torch": results.get("b"),
        "(c) hand-written": results["c"],
        "(d) fresh process": fresh["params"],
        "(e) JAX": jax["params"] if jax else None,
    }
    ok = True
    for label, params in finals.items():
        if params is None:
            print(f"  {label:<18} skipped: not installed")
            continue
        good = agrees(params)
        ok &= good
        values = ", ".join(f"{v:.6f}" for v in params)
        print(f"  {label:<18} {values}  {'ok' if good else 'MISMATCH'}")
    return ok


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive, default=11, help="runs of (a) and (c)")
    parser.add_argument("--torch-repeats", type=positive, default=3, help="runs of (b)")
    parser.add_argument("--cold-repeats", type=positive, default=5, help="fresh processes per row")
    parser.add_argument("--steady-repeats", type=positive, default=20, help="JAX calls per process")
    parser.add_argument("--jax-python", help="an interpreter with JAX, for (e)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.steady_repeats)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        module, _ = generate_module(directory)
        print(versions())
        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {load_average()}")
        print(f"course run: {EPOCHS} epochs x {len(XS)} samples, per-sample SGD, lr {LR}\n")

        contenders = {"a": generated_trainer(module), "c": train_plain}
        repeats = {"a": args.repeats, "c": args.repeats}
        run_torch = torch_trainer()
        if run_torch is not None:
            contenders["b"] = run_torch
            repeats["b"] = args.torch_repeats
        times, results = run_interleaved(contenders, repeats)
        generate_again = [generate_module(directory)[1] for _ in range(args.repeats)]
        time.sleep(PAUSE_S)

        env = cold_environment(directory)
        path = directory / "quadratic_cold.py"
        python = sys.executable
        generate = [python, "-m", "symbp", "generate", "quadratic", "-o", str(path)]
        cold = {
            "generate": wall_times(generate, args.cold_repeats, env),
            "train": wall_times([python, "-c", COLD_TRAIN, str(path)], args.cold_repeats, env),
        }
        fresh = measure_children(python, "symbp", args, env)
        with_jax = jax_python(args.jax_python)
        jax = measure_children(with_jax, "jax", args, env) if with_jax else None

    return 0 if report(times, results, generate_again, cold, fresh, jax) else 1


if __name__ == "__main__":
    sys.exit(main())
