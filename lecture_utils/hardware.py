"""What the machine can do, read from the system or measured: the CPU's int8 instruction sets and the memory
bandwidth (both decide what compression buys in speed), and how busy the machine is right now.

- :func:`cpu_features` says which instruction sets matter for int8 (AVX2, AVX-512, VNNI, AMX, ARM's dot product),
  from torch's own CPU detection and, on Linux, the kernel's flags in ``/proc/cpuinfo``; :func:`int8_outlook` says
  in one sentence what they mean (lessons 06 and 10 print it).
- :func:`memory_bandwidth_gbs` measures how fast memory delivers bytes (lesson 10's bound on decoding).
- :func:`load_per_core` is the load average per core (above 1, timings are noisy).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import validate

__all__ = ["CpuFeatures", "cpu_features", "load_per_core", "int8_outlook", "Bandwidth", "memory_bandwidth_gbs"]


# Linux /proc/cpuinfo flag names of each feature (x86), and ARM's int8 dot-product flags.
_X86_FLAGS = {"avx2": ("avx2",), "avx512": ("avx512f",), "vnni": ("avx512_vnni", "avx_vnni"),
              "amx": ("amx_int8", "amx_tile")}
_ARM_DOT_FLAGS = ("asimddp", "i8mm")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU features that decide how fast int8 runs. ``None`` means "could not tell on this system"."""

    machine: str  # platform.machine(): x86_64, AMD64, arm64, aarch64, ...
    model_name: str  # the processor's name, or "" when unknown
    torch_capability: str  # torch's vectorised-kernel level: "AVX512", "AVX2", "DEFAULT", "NO AVX", ...
    avx2: bool | None  # 256-bit vectors (x86)
    avx512: bool | None  # 512-bit vectors (AVX-512 Foundation)
    vnni: bool | None  # int8 dot product: 4 int8 products summed into int32 in one instruction (AVX-512/AVX VNNI)
    amx: bool | None  # Intel AMX tiles (int8 and bf16 matrix units)
    arm_dot: bool | None  # ARM's int8 dot product (SDOT/UDOT, "asimddp") or int8 matrix multiply ("i8mm")
    source: str  # where the flags came from: "/proc/cpuinfo" or "torch"

    def as_dict(self) -> dict:
        return asdict(self)


def _cpuinfo_flags(text: str) -> tuple[set[str], str]:
    """The feature flags and model name in the text of ``/proc/cpuinfo`` (first processor)."""
    flags: set[str] = set()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not name:
            name = value.strip()
    return flags, name


def _torch_probe(name: str) -> bool | None:
    """One of torch's private CPU probes (``torch.cpu._is_vnni_supported`` ...) if this torch has it."""
    probe = getattr(torch.cpu, name, None)
    if probe is None:
        return None
    try:
        return bool(probe())
    except Exception:  # noqa: BLE001 - a probe that fails means "unknown", never a crash
        return None


def cpu_features(cpuinfo: str | Path | None = "/proc/cpuinfo") -> CpuFeatures:
    """What this CPU supports for int8 inference.

    On Linux the flags come from ``cpuinfo`` (the kernel's list, ``/proc/cpuinfo``); elsewhere (macOS, Windows), or
    when the file cannot be read, from torch's own detection (``torch.backends.cpu.get_cpu_capability()`` and
    torch's CPU probes); features neither source knows are ``None``. Pass ``cpuinfo=None`` to skip the file.
    """
    capability = str(torch.backends.cpu.get_cpu_capability())
    machine = platform.machine()
    text = None
    if cpuinfo is not None:
        with contextlib.suppress(OSError):
            text = Path(cpuinfo).read_text(errors="replace")
    if text:
        flags, name = _cpuinfo_flags(text)
        has = {k: any(f in flags for f in names) for k, names in _X86_FLAGS.items()}
        arm = machine.lower() in ("aarch64", "arm64")
        return CpuFeatures(machine=machine, model_name=name, torch_capability=capability,
                           avx2=None if arm else has["avx2"], avx512=None if arm else has["avx512"],
                           vnni=None if arm else has["vnni"], amx=None if arm else has["amx"],
                           arm_dot=any(f in flags for f in _ARM_DOT_FLAGS) if arm else None, source=str(cpuinfo))
    x86 = capability.upper() in ("AVX2", "AVX512", "DEFAULT", "NO AVX") and not machine.lower().startswith("arm")
    avx2 = _torch_probe("_is_avx2_supported")
    avx512 = _torch_probe("_is_avx512_supported")
    if avx2 is None and x86:
        avx2 = capability.upper() in ("AVX2", "AVX512")
    if avx512 is None and x86 and capability.upper() == "AVX512":
        avx512 = True
    amx = _torch_probe("_is_amx_tile_supported")
    return CpuFeatures(machine=machine, model_name=platform.processor(), torch_capability=capability,
                       avx2=avx2 if x86 else None, avx512=avx512 if x86 else None,
                       vnni=_torch_probe("_is_vnni_supported") if x86 else None, amx=amx if x86 else None,
                       arm_dot=None, source="torch")


def load_per_core() -> float | None:
    """The machine's 1-minute load average divided by its cores (above 1: processes are waiting for a core, and
    timings are noisy), or None where the OS does not report a load average (Windows)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


def int8_outlook(features: CpuFeatures) -> str:
    """One sentence on what ``features`` mean for int8 speed (what the lessons print under the flags)."""
    if features.amx:
        return ("AMX: matrix tiles multiply int8 (and bf16) blocks directly — the fastest int8 on a CPU, "
                "if the runtime uses them.")
    if features.vnni:
        return ("VNNI: one instruction multiplies four int8 pairs and adds them into int32, so int8 matrix "
                "products do up to 4× the work of fp32 per instruction — expect real int8 speed-ups.")
    if features.arm_dot:
        return ("ARM int8 dot product (SDOT/UDOT): four int8 products per lane per instruction — int8 kernels "
                "that use it run well ahead of fp32.")
    if features.avx2 or features.avx512:
        return ("no VNNI: int8 products need several instructions each (widen, multiply, add), so int8 gains "
                "little compute over fp32 — what it saves is memory traffic (4× fewer weight bytes), and kernels "
                "built for VNNI can even be slower than fp32.")
    return ("no vector int8 support detected: int8 saves memory; speed depends entirely on the runtime's "
            "fallback kernels.")


@dataclass(frozen=True)
class Bandwidth:
    """Memory bandwidth in GB/s (10^9 bytes per second): ``copy`` (bytes read *and* written by a copy) and ``read``
    (bytes read by a sum), measured on a buffer of ``megabytes`` MB with ``threads`` torch threads."""

    copy: float
    read: float
    megabytes: int
    threads: int


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> Bandwidth:
    """The machine's memory bandwidth, measured with torch on a float32 buffer of ``megabytes`` MB (far larger than
    any cache): a ``copy_`` into a second buffer and a sum over the buffer, the best of ``repeats`` each. Uses
    torch's current threads. Returns a :class:`Bandwidth`.

    Example: ``lu.hardware.memory_bandwidth_gbs(256).read``."""
    validate.integer(megabytes, "megabytes", 16)
    validate.integer(repeats, "repeats", 1)
    n = megabytes * 1_000_000 // 4
    a, b = torch.ones(n), torch.empty(n)
    b.copy_(a)
    best_copy = best_read = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        b.copy_(a)
        best_copy = min(best_copy, time.perf_counter() - start)
        start = time.perf_counter()
        a.sum()
        best_read = min(best_read, time.perf_counter() - start)
    nbytes = n * 4
    return Bandwidth(copy=2 * nbytes / best_copy / 1e9, read=nbytes / best_read / 1e9, megabytes=megabytes,
                     threads=torch.get_num_threads())
