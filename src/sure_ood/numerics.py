"""CPU numerics modes: ``portable`` (the same bits on every x86-64 CPU with AVX2) or ``native``.

The math libraries under torch, numpy and numba pick their kernels by instruction set (AVX-512
or AVX2), by vendor and by thread count. Each choice changes the last bits of a result, and a
training run amplifies those bits into AUROC points. ``portable`` fixes every choice to one
that any x86-64 CPU with AVX2, Intel or AMD, can run. ``native`` leaves each library free to
use the fastest path of the machine it runs on (the GPU configs use it).

Most pins are environment variables that a library reads only once, when it is loaded, so
:func:`apply` must run before numpy, torch or numba are imported. The CLI calls it first,
before it imports the stage's module. It overrides the caller's values on purpose: a pin
that a user's shell could undo would not be a pin. :func:`configure_torch` sets what torch
only offers as function calls (threads, oneDNN, deterministic algorithms). What each pin
protects against, and what it costs, is in docs/reproducibility.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

from sure_ood.io import InputError

MODES = ("portable", "native")
# The CLI's mode when neither --numerics nor SURE_OOD_NUMERICS is given. It must equal the
# default of `numerics` in workflow/schemas/config.schema.yaml (a test checks this).
DEFAULT = "portable"
# The workflow passes the config's mode to every job in this variable; apply() sets it too,
# so that processes a job starts (torchrun workers) inherit the mode.
ENV = "SURE_OOD_NUMERICS"


@dataclass(frozen=True)
class Pin:
    """One environment variable of portable mode; ``value`` None = removed from the env."""

    var: str
    value: str | None
    protects: str


# One table: variable -> portable value -> what it protects against.
PINS: tuple[Pin, ...] = (
    Pin(
        "ATEN_CPU_CAPABILITY",
        "avx2",
        "ATen's vectorised CPU kernels (softmax, layer norm, GELU, reductions, optimizer "
        "updates, interpolation) use AVX-512 code on AVX-512 CPUs",
    ),
    Pin(
        "MKL_CBWR",
        "COMPATIBLE",
        "MKL (torch's CPU matrix products) picks its code path by instruction set and vendor; "
        "COMPATIBLE is the one branch besides AUTO that MKL documents for non-Intel CPUs",
    ),
    Pin("MKL_ENABLE_INSTRUCTIONS", None, "a caller's MKL instruction cap; MKL_CBWR decides"),
    Pin("MKL_DEBUG_CPU_TYPE", None, "a caller forcing MKL's CPU type on AMD CPUs"),
    Pin(
        "MKL_DYNAMIC",
        "FALSE",
        "MKL changing its thread count at run time (a reproducibility condition of MKL)",
    ),
    Pin("OMP_DYNAMIC", "FALSE", "OpenMP changing the thread count at run time"),
    Pin(
        "ONEDNN_MAX_CPU_ISA",
        "AVX2",
        "oneDNN's JIT kernels (torch convolutions and matmuls routed to oneDNN) use "
        "AVX-512/AMX code where the CPU has it",
    ),
    Pin(
        "ONEDNN_DEFAULT_FPMATH_MODE",
        "STRICT",
        "oneDNN silently computing float32 in bf16/tf32 on CPUs with AMX",
    ),
    Pin(
        "OPENBLAS_CORETYPE",
        "Haswell",
        "numpy's and scipy's OpenBLAS picks its kernels per CPU model (SkylakeX, Cooperlake, "
        "SapphireRapids on AVX-512 CPUs; Zen and Haswell share the AVX2 kernels)",
    ),
    Pin(
        "NPY_DISABLE_CPU_FEATURES",
        "X86_V4 AVX512_ICL AVX512_SPR",
        "numpy's own SIMD loops (exp, log, sums, sorting) have AVX-512 variants",
    ),
    Pin("NPY_ENABLE_CPU_FEATURES", None, "a caller restricting numpy's SIMD loops further"),
    Pin(
        "NUMBA_CPU_NAME",
        "haswell",
        "numba compiles the GradNorm kernel for the host CPU (AVX-512 vectors, other FMA "
        "contraction) unless told the target",
    ),
    Pin(
        "NUMBA_CPU_FEATURES",
        "",
        "numba adds the host's features to the named CPU; empty = exactly the named CPU's",
    ),
    Pin("OMP_NUM_THREADS", "1", "thread count of torch's and MKL's OpenMP pools"),
    Pin("MKL_NUM_THREADS", "1", "MKL's thread count (its reductions split by thread)"),
    Pin("OPENBLAS_NUM_THREADS", "1", "OpenBLAS's thread count (its reductions split by thread)"),
)

_LIBRARIES = ("numpy", "torch", "numba", "scipy")


def check_mode(mode: str, source: str = "numerics") -> str:
    """``mode`` if it is a known mode, else an InputError naming ``source`` and the choices."""
    if mode not in MODES:
        raise InputError(f"{source}: unknown numerics mode {mode!r} (choose one of {MODES})")
    return mode


def resolve(option: str | None, environ: MutableMapping[str, str] | None = None) -> str:
    """The mode to use: the ``--numerics`` option, else ``$SURE_OOD_NUMERICS``, else DEFAULT."""
    environ = os.environ if environ is None else environ
    if option is not None:
        return check_mode(option, "--numerics")
    if environ.get(ENV):
        return check_mode(environ[ENV], ENV)
    return DEFAULT


def pinned_env(mode: str) -> dict[str, str | None]:
    """``{variable: value}`` that :func:`apply` sets for ``mode`` (None = removed)."""
    check_mode(mode)
    env: dict[str, str | None] = {ENV: mode}
    if mode == "portable":
        env.update({p.var: p.value for p in PINS})
    return env


def apply(mode: str, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Set ``mode``'s pins in ``environ`` (default: this process's), overriding the caller's.

    The libraries read their pins once, when they load: this must run before numpy, torch or
    numba are imported. Returns the libraries among those that this process had already
    loaded (empty in the CLI; where not, the pins reach only processes started afterwards).
    """
    env = pinned_env(mode)
    target = os.environ if environ is None else environ
    for var, value in env.items():
        if value is None:
            target.pop(var, None)
        else:
            target[var] = value
    return [m for m in _LIBRARIES if m in sys.modules] if target is os.environ else []


def current() -> str:
    """The mode this process runs in (set by :func:`apply`; DEFAULT when never applied)."""
    return os.environ.get(ENV) or DEFAULT


def configure_torch(threads: int = 1) -> int:
    """torch's settings for the current mode; returns the intra-op thread count it set.

    portable: one intra-op thread (matrix products and ATen's reductions split their work by
    thread count), oneDNN and NNPACK off (their convolution kernels block by the CPU's cache
    sizes; ATen's own convolution runs on the pinned MKL instead), deterministic algorithms on,
    and the linear layers' and attention's matrix products on numpy's pinned OpenBLAS
    (:mod:`sure_ood.portable_blas`: MKL's one vendor-neutral branch is ~3x slower).
    native: ``threads`` threads, everything else as torch chooses.
    """
    import torch

    if current() == "portable":
        torch.set_num_threads(1)
        torch.backends.mkldnn.enabled = False
        torch.backends.nnpack.set_flags(False)
        torch.use_deterministic_algorithms(True, warn_only=True)
        from sure_ood import portable_blas

        portable_blas.install()
        return 1
    torch.set_num_threads(max(1, int(threads)))
    return max(1, int(threads))
