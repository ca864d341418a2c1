"""The CUDA target: the derived program, staged as the C target stages it
(:mod:`symbp.targets.c.stages`), laid out as kernels for templates/.

Each stage is one kernel launch or one cuBLAS call: ``map`` stages are fused elementwise
kernels over a grid-stride loop, ``rows`` one thread per sample, ``reduce`` one block per
sum over the batch, ``gemm`` and ``colsum`` cuBLAS. The optimizer updates all
parameters, stored contiguously, in one kernel; a model whose batch fits one block's
shared memory also gets a trainer that runs every epoch in one launch.
"""

from __future__ import annotations

from ...derive import Derivation
from ...errors import SpecError
from ...optim import update_rule
from ...templating import environment
from ..c.stages import StagedProgram
from ..c.stages import unsupported as unstaged
from .printer import CudaPrinter

SHARED_MEMORY_LIMIT = 48 * 1024  # bytes of dynamic shared memory without an opt-in


class CudaTarget(StagedProgram):
    """Everything the CUDA templates need, from one Derivation."""

    TARGET = "CUDA"
    PRINTER = CudaPrinter

    # --- the single-launch trainer -----------------------------------------------------------

    def single_launch(self, grads: dict, optimizer: dict) -> dict | None:
        """Shared-memory layout of the whole training loop in one block, or None when the
        spec's batch does not fit."""
        batch = self.spec.train.batch_size
        size = {"float32": 4, "float64": 8}[self.dtype]
        regions = [("_params", self.param_count), ("_grads", self.param_count)]
        regions += [(f"_s_{b['name']}", self.param_count) for b in optimizer["state"]]
        regions += [("_loss", 1)]
        if "_scal" in grads["buffers"]:
            regions.append(("_scal", grads["scalar_slots"]))
        regions.append(("_x", batch * self.n_in))
        if self.n_target:
            regions.append(("_y", batch * self.n_target))
        for name, (batched, count) in sorted(self.work.items()):
            if f"_w_{name}" in grads["buffers"]:
                regions.append((f"_w_{name}", count * batch if batched else count))
        layout, offset = [], 0
        for name, count in regions:
            layout.append({"name": name, "offset": offset, "count": count})
            offset += count
        if offset * size > SHARED_MEMORY_LIMIT:
            return None
        return {"regions": layout, "elements": offset, "bytes": offset * size, "batch": batch}

    def context(self) -> dict:
        context = self.common_context()
        context["single"] = self.single_launch(context["entries"]["grads"], context["optimizer"])
        return context


def supported(derivation: Derivation) -> bool:
    """Whether every tensor operation of the program has CUDA kernels (dense stacks and
    expression models do; convolution and pooling layers and tensor models do not yet)."""
    return unsupported(derivation) is None


def unsupported(derivation: Derivation) -> SpecError | None:
    """Why the CUDA target cannot generate this model, in the spec's terms, or None."""
    spec = derivation.spec
    rule = update_rule(spec.train.optimizer, spec.train.options)
    if rule.reads_grad_norm:  # clip_grad_norm: the norm is a reduction over the device
        return SpecError(
            spec.source,
            "train.clip_grad_norm",
            "the CUDA target has no kernel for the gradient's norm yet (clip_grad_value"
            " clips on the GPU); --target numpy or c generates this model",
        )
    if rule.carried:
        return SpecError(
            spec.source,
            "train.optimizer",
            f"the CUDA target has no {spec.train.optimizer} yet (its kernels take step"
            " scalars of the step count alone); --target numpy or c generates this model",
        )
    if spec.train.lr_schedule:
        return SpecError(
            spec.source,
            "train.lr_schedule",
            "the CUDA target has no learning-rate schedules yet; --target numpy or c"
            " generates this model",
        )
    return unstaged(derivation, "CUDA", tensor=False)


def render_cuda(derivation: Derivation, dtype: str | None = None) -> str:
    """The .cu source of a model: kernels, C API, host emulation and a standalone main."""
    context = CudaTarget(derivation, dtype or "float32").context()
    return environment(__package__).get_template("model.cu.j2").render(context)


def render_loader(derivation: Derivation, cu_name: str, dtype: str | None = None) -> str:
    """The CuPy loader beside the .cu: the NumPy module's contract on CuPy arrays."""
    context = CudaTarget(derivation, dtype or "float32").context()
    context["cu_name"] = cu_name
    return environment(__package__).get_template("loader.py.j2").render(context)
