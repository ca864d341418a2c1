"""Benchmark: `symbp generate` of deep MLPs, end to end (issue 3).

The issue asks that generating the NumPy module of a 100-layer MLP take under 2 s,
interpreter start and imports included, and at most 12x the 10-layer time: derivation
works on whole tensors, so its cost must not depend on the widths and must grow
linearly with the depth. This script writes specs of 10- and 100-layer tanh MLPs
(width 64, mse, Adam) into a temporary folder and times the CLI in fresh processes,
``python -m symbp generate SPEC --target numpy -o FILE``, alternating the depths,
medians of 7 runs each (and, for scale, ``python -c "import sympy, numpy, jinja2"``).

Run from the repository root (about half a minute):

    python benchmarks/layer_generation.py
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEPTHS, WIDTH, RUNS = (10, 100), 64, 7


def spec(depth: int) -> str:
    hidden = ", ".join([f'{{ dense = {WIDTH}, activation = "tanh" }}'] * (depth - 1))
    return (
        f'name = "mlp{depth}"\n[model]\ninput = {WIDTH}\n'
        f"layers = [{hidden}, {{ dense = 1 }}]\n"
        'loss = "mse"\n[train]\noptimizer = "adam"\nlr = 0.001\n'
    )


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )
    times: dict[object, list[float]] = {d: [] for d in (*DEPTHS, "imports")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        commands = {}
        for depth in DEPTHS:
            path = folder / f"mlp{depth}.toml"
            path.write_text(spec(depth))
            out = folder / f"mlp{depth}.py"
            commands[depth] = [
                sys.executable,
                "-m",
                "symbp",
                "generate",
                str(path),
                "--target",
                "numpy",
                "-o",
                str(out),
            ]
        commands["imports"] = [sys.executable, "-c", "import sympy, numpy, jinja2"]
        for key in commands:  # warm the file cache
            timed(commands[key])
        for run in range(RUNS):
            for key in commands if run % 2 == 0 else reversed(commands):
                times[key].append(timed(commands[key]))
    med = {key: statistics.median(values) for key, values in times.items()}
    for key, value in med.items():
        label = f"{key}-layer generate" if key != "imports" else "import sympy, numpy, jinja2"
        print(
            f"  {label:<30} {value:6.2f} s  (min {min(times[key]):.2f}, max {max(times[key]):.2f})"
        )
    ratio = med[DEPTHS[1]] / med[DEPTHS[0]]
    print(f"  100-layer / 10-layer           {ratio:6.2f}x  (need <= 12x; 100 layers need < 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
