"""The machine a stage runs on: device, CPU capabilities, usable cores, and the precision `auto` picks.

`training.precision: auto` resolves per machine (`resolve_precision`, a pure function of `Hardware`):
- a CUDA GPU with bf16 (compute capability >= 8.0: A100, H100, RTX 30xx/40xx)  -> bf16 autocast
- an older CUDA GPU (V100, T4)                                                -> fp16 autocast + gradient scaler
- a CPU with native bf16 matrix instructions (avx512_bf16 or AMX), usable by oneDNN -> bf16 autocast
- any other CPU                                                               -> fp32
On a CPU without native bf16 the bf16 products are emulated: measured on an AMD EPYC with oneDNN capped
to AVX2, a 1024^3 bf16 product ran at 1 GFLOP/s against 149 GFLOP/s in fp32 (BENCHMARKS.md).

Threads: the cores this process may run on (CPU affinity, and a cgroup CPU quota when one is set), not
the host's count; `training.threads` wins, then $INTERTASK_THREADS (what a Ray executor gives each
stage), then that count.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from intertask.compute.machine import BF16_FLAGS, cpu_flags, cpu_model

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
THREADS_ENV = (
    "INTERTASK_THREADS"  # a stage's share of the cores, set by executors that run stages side by side
)
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class EmulatedPrecisionWarning(UserWarning):
    """A precision the hardware runs only in emulation (bf16 on a CPU without bf16 instructions)."""


@dataclass(frozen=True)
class Hardware:
    """What the precision and thread choices depend on."""

    device: str  # "cuda" or "cpu": where stages run
    name: str  # the GPU's name, or the CPU model
    cpu_isa: str  # the vector instruction set torch's CPU kernels use (AVX512, AVX2, ...)
    cpu_bf16: bool  # native bf16 matrix instructions (avx512_bf16 or AMX) that oneDNN may use
    cuda_bf16: bool = False  # the GPU computes in bf16 natively (compute capability >= 8.0)
    cores: int = 1  # cores this process may run on (affinity, cgroup quota)

    def describe(self) -> str:
        if self.device == "cuda":
            return f"cuda ({self.name}, {'bf16' if self.cuda_bf16 else 'no bf16'})"
        return f"cpu ({self.name}; {self.cpu_isa}, {'native' if self.cpu_bf16 else 'no native'} bf16)"


@dataclass(frozen=True)
class Precision:
    """A resolved precision: the autocast dtype (none for fp32) and whether losses need scaling."""

    name: str  # fp32 | bf16 | fp16
    requested: str  # what the config asked for (auto, or one of the three)
    reason: str  # why, in a few words (printed and logged)

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    @property
    def scaled(self) -> bool:
        """fp16 gradients underflow without loss scaling (torch.amp.GradScaler)."""
        return self.name == "fp16"

    def autocast(self, device_type: str):
        """The forward (and so backward) under autocast in this precision; fp32: nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)


FP32 = Precision("fp32", "fp32", "requested")


@dataclass(frozen=True)
class Runtime:
    """What one stage runs with: the machine, the resolved precision and the thread count."""

    hardware: Hardware
    precision: Precision
    threads: int

    def params(self) -> dict[str, str]:
        """Recorded with every stage (as parameters of its run)."""
        hw = self.hardware
        return {
            "runtime.precision": self.precision.name,
            "runtime.precision_requested": self.precision.requested,
            "runtime.device": hw.device,
            "runtime.device_name": hw.name,
            "runtime.cpu": cpu_model(),
            "runtime.cpu_isa": hw.cpu_isa,
            "runtime.cpu_bf16": "native" if hw.cpu_bf16 else "emulated",
            "runtime.threads": str(self.threads),
            "runtime.cores": str(hw.cores),
        }

    def line(self) -> str:
        return (
            f"runtime: {self.hardware.describe()}; precision {self.precision.requested} -> "
            f"{self.precision.name} ({self.precision.reason}); {self.threads} threads "
            f"of {self.hardware.cores} usable cores"
        )


# --- the probe ------------------------------------------------------------------------------------


def native_cpu_bf16(flags: frozenset[str], onednn_bf16: bool) -> bool:
    """bf16 matrix instructions in the CPU (avx512_bf16, amx_bf16) and oneDNN allowed to use them
    (ONEDNN_MAX_CPU_ISA can cap it below). oneDNN alone also says yes on AVX-512 CPUs without them,
    where it emulates bf16, so both must hold."""
    return bool(flags & BF16_FLAGS) and onednn_bf16


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 cpu.max, or v1 cfs quota), None if unlimited."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.is_file():
            quota, *period = v2.read_text().split()  # "max 100000" or "150000 100000"
            return None if quota == "max" else int(quota) / int(period[0] if period else 100000)
        v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        if v1.is_file():
            quota = int(v1.read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def usable_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota rounded down (a quota
    of 1.5 cores runs 1 thread without throttling; at least 1)."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if quota is None:
        quota = _cgroup_cpus()
    return max(1, min(affinity, math.floor(quota))) if quota else max(1, affinity)


@functools.lru_cache(maxsize=1)
def probe() -> Hardware:
    """This machine, read once per process."""
    cores = usable_cores()
    if torch.cuda.is_available():
        return Hardware(
            device="cuda",
            name=torch.cuda.get_device_name(0),
            cpu_isa=torch.backends.cpu.get_cpu_capability(),
            cpu_bf16=native_cpu_bf16(cpu_flags(), _onednn_bf16()),
            cuda_bf16=torch.cuda.is_bf16_supported(including_emulation=False),
            cores=cores,
        )
    return Hardware(
        device="cpu",
        name=cpu_model(),
        cpu_isa=torch.backends.cpu.get_cpu_capability(),
        cpu_bf16=native_cpu_bf16(cpu_flags(), _onednn_bf16()),
        cores=cores,
    )


# --- choices --------------------------------------------------------------------------------------


def resolve_precision(requested: str, hw: Hardware) -> Precision:
    """`auto` -> the fastest precision the hardware runs natively; an explicit choice is kept."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; expected one of {PRECISIONS}")
    if requested != "auto":
        return Precision(requested, requested, "requested")
    if hw.device == "cuda":
        if hw.cuda_bf16:
            return Precision("bf16", "auto", "the GPU has bf16")
        return Precision("fp16", "auto", "the GPU has no bf16: fp16 with loss scaling")
    if hw.cpu_bf16:
        return Precision("bf16", "auto", "the CPU has native bf16")
    return Precision("fp32", "auto", "the CPU has no native bf16")


def threads_for(requested: int | None, hw: Hardware) -> int:
    """training.threads, else $INTERTASK_THREADS (a stage's share), else the usable cores."""
    if requested:
        return requested
    share = os.environ.get(THREADS_ENV, "").strip()
    if share.isdigit() and int(share) >= 1:
        return min(int(share), hw.cores)
    return hw.cores


def bf16_slowdown(size: int = 384, rows: int = 512) -> float:
    """How many times slower a bf16 product of an encoder layer's shape runs than the fp32 one, here."""

    def seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(rows, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
        return best

    return seconds(torch.bfloat16) / seconds(torch.float32)


_announced: set[str] = set()


def runtime(precision: str = "auto", threads: int | None = None, *, announce: bool = True) -> Runtime:
    """Resolve a stage's precision and threads on this machine, set torch's thread count, and say it
    once per process (stderr). An explicit bf16 on a CPU that only emulates it runs, with a warning
    that gives the slowdown measured here."""
    hw = probe()
    chosen = resolve_precision(precision, hw)
    count = threads_for(threads, hw)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    rt = Runtime(hw, chosen, count)
    line = rt.line()
    if announce and line not in _announced:
        _announced.add(line)
        print(line, file=sys.stderr)
        if chosen.name == "bf16" and hw.device == "cpu" and not hw.cpu_bf16:
            warnings.warn(
                f"training.precision: bf16 on a CPU without native bf16 ({hw.name}, {hw.cpu_isa}): bf16 is "
                f"emulated here, and an encoder-sized product measured {bf16_slowdown():.0f}x slower than "
                "in fp32; use precision: auto (fp32 here) unless you need bf16 numerics",
                EmulatedPrecisionWarning,
                stacklevel=2,
            )
    return rt
