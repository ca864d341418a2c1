"""The C target: the derived program, staged (:mod:`.stages`), laid out as loops in one
C99 file for templates/, and the ctypes loader beside it.

Each stage becomes a loop nest in the function of its entry point (forward, loss,
grads): a ``map`` stage one loop over its index space (samples, then features), its
math printed inline; ``rows`` a loop over samples; ``reduce`` one sum per value;
``gemm`` a call of the blocked product ``symbp_gemm`` (a transposed operand is first
copied into scratch memory so that every inner loop runs over contiguous memory and
vectorizes); ``colsum`` a loop over samples adding rows. The training loop, with the
NumPy module's permutations (NumPy's PCG64 and its shuffle, reimplemented), runs
inside one call.
"""

from __future__ import annotations

import re

from ...derive import Derivation
from ...errors import SpecError
from ...ir.graph import BATCH
from ...templating import environment
from ..registry import default_dtype
from .printer import HostPrinter
from .stages import StagedProgram
from .stages import unsupported as unstaged

# compiler flags the loader builds with (the .so is cached under a hash of source and flags)
# (-fno-math-errno: the code never reads errno, so exp and log are pure functions the
# compiler may compute once for two readers)
CFLAGS = ("-std=c99", "-O3", "-fno-math-errno", "-fPIC", "-shared")
NATIVE = "-march=native"  # tried first; left out where the compiler refuses it


# each entry point's buffer arguments (after the workspace and N), in order
ARGUMENTS = {
    "forward": ("_x", "_params", "_out"),
    "loss": ("_x", "_y", "_params", "_loss"),
    "grads": ("_x", "_y", "_params", "_grads", "_loss"),
}
READ_ONLY = ("_x", "_y", "_params")


def _uses(name: str, texts) -> bool:
    return any(re.search(rf"\b{name}\b", text) for text in texts)


def _linear(term) -> tuple[int, int]:
    """A size in the product of gemm dimensions as (per sample, fixed): "N" is (1, 0)."""
    return (1, 0) if term == "N" else (0, int(term))


def _product(a, b) -> tuple[int, int]:
    """Elements of an a x b block, as (per sample, fixed); at most one of them is N."""
    (na, fa), (nb, fb) = _linear(a), _linear(b)
    return (na * fb + nb * fa, fa * fb)


class CTarget(StagedProgram):
    """Everything the C templates need, from one Derivation."""

    TARGET = "C"
    PRINTER = HostPrinter

    def context(self) -> dict:
        context = self.common_context()
        scratch = (0, 0)
        for entry in context["entries"].values():
            for stage in entry["stages"]:
                if stage["kind"] == "map":
                    self._loop(stage)
                elif stage["kind"] == "gemm":
                    need = (0, 0)
                    if stage["trans_a"] == "1":  # A (k x m) is copied as m x k
                        need = _product(stage["m"], stage["k"])
                    if stage["trans_b"] == "1":  # B (n x k) is copied as k x n
                        extra = _product(stage["n"], stage["k"])
                        need = (need[0] + extra[0], need[1] + extra[1])
                    scratch = (max(scratch[0], need[0]), max(scratch[1], need[1]))
            # the entry's buffer arguments, and those it does not read (cast to void)
            arguments = ARGUMENTS[entry["name"]]
            entry["arguments"] = ", ".join(
                f"{'const ' if b in READ_ONLY else ''}real* restrict {b}" for b in arguments
            )
            entry["unused"] = [b for b in arguments if b not in entry["buffers"]]
            entry["has_gemm"] = any(s["kind"] == "gemm" for s in entry["stages"])
            entry["uses_model"] = bool(entry["local_buffers"]) or entry["has_gemm"]
        # batch sizes the training loop has a step of its own for: one sample, and the
        # spec's batch size (for small models only: each is a copy of the grads code)
        small = self.param_count <= 4096
        context["fixed_batches"] = sorted({1, self.spec.train.batch_size}) if small else []
        context["scratch"] = {"per_sample": scratch[0], "fixed": scratch[1]}
        # each workspace buffer's elements as (per sample, fixed)
        sizes = {
            f"_w_{w['name']}": (w["count"], 0) if w["batched"] else (0, w["count"])
            for w in context["work"]
        }
        sizes["_scal"] = (0, context["scalar_slots"])
        context["buffer_sizes"] = sizes
        # fixed batch sizes whose whole workspace fits on the stack (at most 32 KiB of it)
        context["local_batches"] = [
            size
            for size in context["fixed_batches"]
            if sum(a * size + b for a, b in sizes.values()) + scratch[0] * size + scratch[1] <= 4096
        ]
        context["local_params"] = self.param_count <= 256
        context["fan_in"] = {p["name"]: p["init"].get("fan_in", 1) for p in context["params"]}
        return context

    @staticmethod
    def _loop(stage: dict) -> None:
        """How a map stage loops: over samples and features (N x k), over samples (N),
        or over a parameter-sized space; whether its loads and stores read the flat
        index _i (the planner says whether they read the row _n and column _j)."""
        texts = [i["load"] for i in stage["inputs"]] + [o["store"] for o in stage["outputs"]]
        stage["batched"] = stage["space"].split(" x ")[0] == BATCH
        stage["uses_i"] = _uses("_i", texts)


def supported(derivation: Derivation) -> bool:
    """Whether the C target stages every operation of the program (dense stacks and
    expression models; convolution and pooling layers and tensor models not yet)."""
    return unsupported(derivation) is None


def unsupported(derivation: Derivation) -> SpecError | None:
    """Why the C target cannot generate this model, in the spec's terms, or None."""
    return unstaged(derivation, "C")


# the widest layer up to which the C target's train() is faster than the NumPy module's
# (benchmarks/c_training.py: 2-9x at widths 16-64, even at 128, NumPy's BLAS 2x faster
# from 256 on; docs/benchmarks.md)
FASTER_UP_TO_WIDTH = 64


def faster_than_numpy(derivation: Derivation) -> bool:
    """Whether the C target trains this model faster than the NumPy target (measured):
    every expression model, dense stacks up to FASTER_UP_TO_WIDTH units wide."""
    if not supported(derivation):
        return False
    widths = getattr(derivation.spec, "widths", None)
    return widths is None or max(widths) <= FASTER_UP_TO_WIDTH


def render_c(derivation: Derivation, dtype: str | None = None) -> str:
    """The .c source of a model: the C API (training loop included) and a main."""
    context = CTarget(derivation, dtype or default_dtype(derivation.spec)).context()
    return environment(__package__).get_template("model.c.j2").render(context)


def render_c_loader(derivation: Derivation, c_name: str, dtype: str | None = None) -> str:
    """The loader beside the .c: the NumPy module's contract, the work done in C."""
    context = CTarget(derivation, dtype or default_dtype(derivation.spec)).context()
    context["c_name"] = c_name
    context["cflags"] = list(CFLAGS)
    context["native"] = NATIVE
    return environment(__package__).get_template("loader.py.j2").render(context)
