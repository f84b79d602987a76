"""What the machine offers, read without torch (a re-run of a finished study plans its keys without
loading any model library): the CPU's name and flags from /proc/cpuinfo, the NVIDIA GPUs the driver
lists, and the facts `precision: auto` decides on (compute/hardware.py resolves it with torch)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # native bf16 matrix instructions


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (Linux); empty elsewhere."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    info: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU model as lscpu names it, with family/model numbers where the name is generic."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def gpu_models() -> tuple[str, ...]:
    """The NVIDIA GPUs the driver lists (/proc/driver/nvidia/gpus/*/information), by model name."""
    root = Path("/proc/driver/nvidia/gpus")
    names = []
    for info in sorted(root.glob("*/information")) if root.is_dir() else ():
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                names.append(line.partition(":")[2].strip())
    return tuple(names)


def auto_precision_facts() -> str:
    """What `precision: auto` decides on here, as one string for a stage's key: the GPU models, or
    whether the CPU has native bf16 instructions and how oneDNN is capped (ONEDNN_MAX_CPU_ISA)."""
    gpus = gpu_models()
    if gpus:
        return "cuda:" + ",".join(gpus)
    native = "bf16" if cpu_flags() & BF16_FLAGS else "no-bf16"
    return f"cpu:{native}:{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}"
