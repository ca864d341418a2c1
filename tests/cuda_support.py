"""Building and driving the CUDA target's generated source without a GPU.

- ``nvcc_command``: nvcc (CUDA 13 at /usr/local/bin/nvcc) with cuBLAS's headers and
  library from the ``nvidia-cublas`` wheel, found through importlib (this machine's CUDA
  has no cuBLAS of its own).
- ``Emulated``: the same .cu built by g++ with -DSYMBP_HOST_EMULATION as a shared
  library and called through ctypes: "device" pointers are host memory there. Builds
  are cached by the hash of the source, so a test session compiles each model once.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np

NVCC = Path("/usr/local/bin/nvcc")


def cublas_paths() -> tuple[Path, Path] | None:
    """(include folder, lib folder) of the nvidia-cublas wheel, or None."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        base = Path(root) / "cu13"
        if (base / "include" / "cublas_v2.h").exists() and (base / "lib").is_dir():
            return base / "include", base / "lib"
    return None


def nvcc() -> Path | None:
    if NVCC.exists():
        return NVCC
    found = shutil.which("nvcc")
    return Path(found) if found else None


def gxx() -> str | None:
    return shutil.which("g++")


def nvcc_command(source: Path, output: Path) -> list[str]:
    """nvcc, warnings as errors, linked against the wheel's libcublas."""
    include, lib = cublas_paths()
    library = next(lib.glob("libcublas.so*"))
    return [
        str(nvcc()),
        "-O3",
        "-arch=sm_90",
        "-Werror",
        "all-warnings",
        f"-I{include}",
        str(source),
        "-o",
        str(output),
        f"-L{lib}",
        f"-l:{library.name}",  # the wheel has libcublas.so.13 only, no libcublas.so
        f"-Xlinker=-rpath-link={lib}",
    ]


def emulation_command(source: Path, output: Path) -> list[str]:
    return [
        gxx(),
        "-std=c++20",
        "-O0",
        "-Wall",
        "-Werror",
        "-shared",
        "-fPIC",
        "-x",
        "c++",
        "-DSYMBP_HOST_EMULATION",
        "-DSYMBP_NO_MAIN",
        str(source),
        "-o",
        str(output),
    ]


def build_emulation(source_text: str, folder: Path) -> Path:
    """The shared library of a generated source (cached by content)."""
    digest = hashlib.sha256(source_text.encode()).hexdigest()[:16]
    library = folder / f"emu_{digest}.so"
    if not library.exists():
        source = folder / f"emu_{digest}.cu"
        source.write_text(source_text, encoding="utf-8")
        result = subprocess.run(
            emulation_command(source, library), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"g++ failed on {source}:\n{result.stderr[:4000]}")
    return library


class Emulated:
    """The generated C API, run on the CPU; parameters as dicts of NumPy arrays."""

    def __init__(self, library: Path, param_shapes: dict[str, tuple], dtype: str, max_batch=64):
        self.lib = ctypes.CDLL(str(library))
        self.dtype = np.dtype(dtype)
        self.shapes = dict(param_shapes)
        sizes = (ctypes.c_int * 6)()
        self.lib.symbp_sizes(sizes)
        self.P, self.buffers, self.n_in, self.n_target, self.n_out, self.single = list(sizes)
        assert self.P == sum(int(np.prod(s)) for s in self.shapes.values())
        p = ctypes.c_void_p
        self.lib.symbp_init.restype = p
        self.lib.symbp_init.argtypes = [ctypes.c_int]
        self.lib.symbp_free.argtypes = [p]
        i, d, u = ctypes.c_int, ctypes.c_double, ctypes.c_ulonglong
        self.lib.symbp_forward.argtypes = [p, i, p, p, p]
        self.lib.symbp_loss.argtypes = [p, i, p, p, p, p]
        self.lib.symbp_loss_and_grads.argtypes = [p, i, p, p, p, p, p]
        self.lib.symbp_train_step.argtypes = [p, i, p, p, p, p, i, d, p]
        self.lib.symbp_train.argtypes = [p, i, p, p, p, p, i, i, d, i, u, p]
        self.lib.symbp_train_single_launch.argtypes = [i, p, p, p, p, i, d, i, u, p]
        self.lib.symbp_init_params.argtypes = [p, u]
        self.max_batch = max_batch
        self.model = self.lib.symbp_init(max_batch)
        assert self.model

    def close(self):
        if self.model:
            self.lib.symbp_free(self.model)
            self.model = None

    def __del__(self):
        self.close()

    # --- packing -------------------------------------------------------------------------

    def pack(self, params: dict) -> np.ndarray:
        return np.concatenate(
            [np.asarray(params[k], dtype=self.dtype).reshape(-1) for k in self.shapes]
        ).astype(self.dtype)

    def unpack(self, flat: np.ndarray) -> dict:
        out, at = {}, 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            out[name] = flat[at : at + size].reshape(shape).copy()
            at += size
        return out

    def _array(self, A, columns: int) -> np.ndarray:
        A = np.ascontiguousarray(np.asarray(A, dtype=self.dtype))
        return A.reshape(len(A), columns) if columns else np.zeros((len(A), 1), self.dtype)

    @staticmethod
    def _ptr(array: np.ndarray):
        return ctypes.c_void_p(array.ctypes.data)

    def _check(self, status: int, what: str):
        if status != 0:
            raise RuntimeError(f"{what} returned {status}")

    # --- the contract ----------------------------------------------------------------------

    def forward(self, params, X) -> np.ndarray:
        X = self._array(X, self.n_in)
        flat = self.pack(params)
        out = np.zeros((len(X), self.n_out), dtype=self.dtype)
        status = self.lib.symbp_forward(
            self.model, len(X), self._ptr(X), self._ptr(flat), self._ptr(out)
        )
        self._check(status, "symbp_forward")
        return out

    def loss(self, params, X, Y) -> float:
        X, Y = self._array(X, self.n_in), self._array(Y, self.n_target)
        flat = self.pack(params)
        loss = np.zeros(1, dtype=self.dtype)
        status = self.lib.symbp_loss(
            self.model, len(X), self._ptr(X), self._ptr(Y), self._ptr(flat), self._ptr(loss)
        )
        self._check(status, "symbp_loss")
        return float(loss[0])

    def loss_and_grads(self, params, X, Y):
        X, Y = self._array(X, self.n_in), self._array(Y, self.n_target)
        flat = self.pack(params)
        loss = np.zeros(1, dtype=self.dtype)
        grads = np.full(self.P, np.nan, dtype=self.dtype)
        status = self.lib.symbp_loss_and_grads(
            self.model,
            len(X),
            self._ptr(X),
            self._ptr(Y),
            self._ptr(flat),
            self._ptr(loss),
            self._ptr(grads),
        )
        self._check(status, "symbp_loss_and_grads")
        return float(loss[0]), self.unpack(grads)

    def initial_state(self) -> np.ndarray:
        state = np.zeros(max(1, self.buffers * self.P), dtype=self.dtype)
        self.lib.symbp_init_state.argtypes = [ctypes.c_void_p]
        self.lib.symbp_init_state(self._ptr(state))
        return state

    def train(self, params, X, Y, *, epochs, batch_size, lr, shuffle=False, seed=0, single=False):
        X, Y = self._array(X, self.n_in), self._array(Y, self.n_target)
        flat, state = self.pack(params), self.initial_state()
        losses = np.zeros(epochs, dtype=self.dtype)
        if single:
            status = self.lib.symbp_train_single_launch(
                len(X),
                self._ptr(X),
                self._ptr(Y),
                self._ptr(flat),
                self._ptr(state),
                epochs,
                lr,
                int(shuffle),
                seed,
                self._ptr(losses),
            )
        else:
            status = self.lib.symbp_train(
                self.model,
                len(X),
                self._ptr(X),
                self._ptr(Y),
                self._ptr(flat),
                self._ptr(state),
                epochs,
                batch_size,
                lr,
                int(shuffle),
                seed,
                self._ptr(losses),
            )
        self._check(status, "symbp_train")
        return self.unpack(flat), [float(v) for v in losses]


def relative(actual, expected) -> float:
    """max |actual - expected| / max(1e-300, max |expected|): a relative error of the
    whole array, so that elements near zero do not blow it up."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale
