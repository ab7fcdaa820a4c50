"""Lesson 08: putting the course together — the numbers other lessons recorded, and bytes at an equal budget.

Recorded results. ``python -m lecture_utils course`` collects every ``lu.record`` into ``build/results.json``
(``{"scale", "notebooks", "results"}``) and keeps each notebook's own numbers in ``build/results/<name>.json``.
:func:`read_results` reads them back for the scale this notebook runs at, and says what it skipped and why:
a lesson that has not been run simply has no keys. :data:`COURSE_VARIANTS` lists the compressed models other
lessons measure — which key holds the accuracy, the speed-up and the size — and :func:`recorded_variants` turns
whatever was recorded into rows for one chart, placing each variant relative to the teacher measured *now*
(latency = teacher latency / recorded speed-up; size = teacher size / recorded size ratio).

Equal-bytes budgets (Li et al. 2020, "Train Large, Then Compress"). A small MLP stored in int8 against a large MLP
pruned and stored in int8: :func:`dense_int8_bytes` and :func:`sparse_int8_bytes` count the bytes of one weight
matrix in each format, :func:`mlp_bytes` a whole MLP, :func:`width_for_bytes` the widest small MLP that fits a
budget, and :func:`budget_experiment` runs the comparison for one seed. Sizes are bytes; MB = 10^6 bytes.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import validate as check
from .config import RESULTS_ENV, project_root
from .lottery import LotterySetup, check_data, full_masks, magnitude_masks, make_model, train_masked
from .quantize import fake_quantize
from .training import evaluate

__all__ = ["SCALE_BYTES", "BIAS_BYTES", "build_dir", "read_results", "CourseVariant", "COURSE_VARIANTS",
           "recorded_variants", "missing_variants", "dense_int8_bytes", "sparse_int8_bytes", "linear_layers",
           "mlp_bytes", "mlp_sizes", "width_for_bytes", "quantize_weights_int8", "budget_experiment"]

SCALE_BYTES = 4  # one float32 scale per output row
BIAS_BYTES = 4  # biases stay float32


# --------------------------------------------------------------------------------------------------------------
# Reading what the course recorded
# --------------------------------------------------------------------------------------------------------------

def build_dir() -> Path:
    """Where the course runner writes: the folder above ``$LECTURE_UTILS_RESULTS_FILE``'s when the runner (or a
    test) executes this notebook, else ``<checkout>/build``, else ``./build``."""
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env).resolve().parent.parent
    root = project_root()
    return (root / "build") if root is not None else Path("build").resolve()


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _numbers(d: Mapping) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()
            if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _finite(value) -> bool:
    try:
        check.real(value, "value")
    except (TypeError, ValueError):
        return False
    return True


def read_results(build: Path | str | None = None, scale: str | None = None) -> dict:
    """Every number recorded so far for ``scale`` (default: the current scale), from ``build`` (default
    :func:`build_dir`).

    ``build/results.json`` counts only if its ``scale`` matches. The per-notebook files ``build/results/*.json``
    fill in keys the summary lacks (they store no scale, so they are skipped when a summary of another scale
    exists); this notebook's own file is never read. Unreadable files are skipped.

    Returns ``{"scale", "results": {key: value}, "sources": {key: file name}, "notes": [what was skipped and
    why]}``.
    """
    sc = check.scale(scale).name
    if build is not None and not isinstance(build, (str, Path)):
        raise check.BadType(f"build must be a folder (str or Path), got {check.show(build)}")
    folder = Path(build) if build is not None else build_dir()
    own = Path(os.environ[RESULTS_ENV]).resolve() if os.environ.get(RESULTS_ENV) else None
    results: dict[str, float] = {}
    sources: dict[str, str] = {}
    notes: list[str] = []
    summary_path = folder / "results.json"
    per_notebook = True
    if summary_path.exists():
        summary = _read_json(summary_path)
        if summary is None:
            notes.append(f"{summary_path} is not readable JSON: skipped")
        elif summary.get("scale") != sc:
            notes.append(f"{summary_path} holds a {summary.get('scale')!r}-scale run, this notebook runs at {sc!r} "
                         "scale: skipped (run `python -m lecture_utils course` at this scale to fill it)")
            per_notebook = False
        else:
            for key, value in _numbers(summary.get("results", {})).items():
                results[key], sources[key] = value, summary_path.name
    else:
        notes.append(f"no {summary_path} yet (`python -m lecture_utils course` writes it)")
    if per_notebook and (folder / "results").is_dir():
        filled = 0
        for path in sorted((folder / "results").glob("*.json")):
            if own is not None and path.resolve() == own:
                continue
            data = _read_json(path)
            if data is None:
                notes.append(f"{path} is not readable JSON: skipped")
                continue
            for key, value in _numbers(data).items():
                if key not in results:
                    results[key], sources[key] = value, f"results/{path.name}"
                    filled += 1
        if filled:
            notes.append(f"{filled} numbers read from {folder / 'results'}/*.json, the last run of each notebook "
                         "(those files do not store their scale)")
    if not results:
        notes.append("nothing recorded for this scale: only what this notebook measures itself will be shown")
    return {"scale": sc, "results": results, "sources": sources, "notes": notes}


@dataclass(frozen=True)
class CourseVariant:
    """A compressed model another lesson measures, and where its numbers are recorded.

    ``prefix`` is a key prefix or an ``fnmatch`` pattern (``"layers.*.k3"``) that may match several variants.
    For a match ``P`` the accuracy is ``P.test_accuracy``, the speed-up over the teacher ``P.speedup`` (or the key
    ``speedup``, if given), the size ratio (teacher bytes / variant bytes) ``P.size_ratio`` (or ``size_ratio``) and
    the size ``P.size_mb``. ``stored_dense``: the model keeps the teacher's dense size on disk (a masked, pruned
    model); then ``latency_ratio`` (variant / teacher latency) is read instead of a speed-up when given.
    """

    label: str
    lesson: str
    prefix: str
    speedup: str | None = None
    size_ratio: str | None = None
    latency_ratio: str | None = None
    stored_dense: bool = False
    note: str = ""


COURSE_VARIANTS: tuple[CourseVariant, ...] = (
    CourseVariant("KD student, 3 layers", "03", "distill.kd", speedup="distill.speedup"),
    CourseVariant("KD + intermediate student", "03", "distill.kd_intermediate", speedup="distill.speedup",
                  note="same architecture as the KD student: its speed-up"),
    CourseVariant("1-layer student", "03", "distill.small"),
    CourseVariant("pruned 90% layer-wise + fine-tune", "04", "prune.layerwise90_ft", stored_dense=True,
                  latency_ratio="prune.latency_ratio_90"),
    CourseVariant("pruned 90% layer-wise + fine-tune on soft targets", "04", "prune.layerwise90_kd",
                  stored_dense=True, latency_ratio="prune.latency_ratio_90"),
    CourseVariant("pruned 90% layer-wise, gradual, soft targets", "04", "prune.layerwise90_gradual",
                  stored_dense=True, latency_ratio="prune.latency_ratio_90"),
    CourseVariant("pruned 90%, one-shot", "04", "prune.global90_oneshot", stored_dense=True,
                  latency_ratio="prune.latency_ratio_90"),
    CourseVariant("heads removed 50%", "05", "heads.removed50"),
    CourseVariant("3 layers kept ({0})", "05", "layers.*.k3"),
    CourseVariant("int8 Linear (dynamic)", "06", "quant.int8_dynamic"),
    CourseVariant("int8 Linear + embeddings", "06", "quant.int8_all", speedup="quant.int8_dynamic.speedup",
                  note="speed-up of int8 Linear: 8-bit embeddings add lookups, not matrix products"),
    CourseVariant("teacher in ONNX Runtime int8", "06", "runtime.ort_int8", speedup="runtime.ort_int8.speedup_b32"),
    CourseVariant("3-bit weights, QAT (simulated)", "06", "quant.qat3",
                  note="simulated in float: no 3-bit kernel, so no real size or speed"),
    CourseVariant("3-bit weights, fp32 fine-tune then PTQ (simulated)", "06", "quant.ft_ptq3",
                  note="QAT's control; simulated in float: no 3-bit kernel, so no real size or speed"),
)


def _matches(variant: CourseVariant, results: Mapping[str, float]) -> list[tuple[str, tuple[str, ...]]]:
    """(prefix, wildcard parts) for every recorded accuracy key that matches the variant."""
    want = variant.prefix.split(".")
    out = []
    for key in sorted(results):
        if not key.endswith(".test_accuracy"):
            continue
        prefix = key[: -len(".test_accuracy")]
        got = prefix.split(".")  # a wildcard stands for one part: layers.*.k3 is not layers.meanpool.top.k3
        if len(got) == len(want) and all(fnmatch.fnmatchcase(g, w) for g, w in zip(got, want, strict=True)):
            out.append((prefix, tuple(g for g, w in zip(got, want, strict=True) if w == "*")))
    return out


def recorded_variants(results: Mapping[str, float], teacher_latency_ms: float, teacher_size_mb: float,
                      variants: Sequence[CourseVariant] = COURSE_VARIANTS) -> list[dict]:
    """One row per recorded variant: ``name``, ``lesson``, ``key`` (its accuracy key), ``accuracy`` (fraction),
    ``speedup`` and ``size_ratio`` as recorded (None if not), ``latency_ms`` and ``size_mb`` placed relative to
    the teacher measured now (None when the lesson recorded no speed-up or size), ``on_chart`` (both known) and
    ``note`` (why a variant cannot be placed, or how it was). Variants whose accuracy was never recorded are left
    out; see :func:`missing_variants`."""
    check.mapping(results, "results", what="a dict {key: number} (read_results()['results'])")
    teacher_latency_ms = check.positive(teacher_latency_ms, "teacher_latency_ms", "measure the teacher first")
    teacher_size_mb = check.positive(teacher_size_mb, "teacher_size_mb", "measure the teacher first")
    variants = check.items(variants, "variants", non_empty=False, what="a list of CourseVariant")
    if not all(isinstance(v, CourseVariant) for v in variants):
        raise check.BadType("variants must be CourseVariant entries (see lu.combine.COURSE_VARIANTS)")
    results = {k: v for k, v in results.items() if _finite(v)}  # NaN or text cannot be placed on a chart
    rows = []
    for v in variants:
        for prefix, parts in _matches(v, results):
            speedup = results.get(v.speedup) if v.speedup else results.get(f"{prefix}.speedup")
            size_ratio = results.get(v.size_ratio) if v.size_ratio else results.get(f"{prefix}.size_ratio")
            size_mb = results.get(f"{prefix}.size_mb")
            notes = [v.note] if v.note else []
            if v.stored_dense:
                size_ratio = 1.0
                ratio = results.get(v.latency_ratio) if v.latency_ratio else None
                speedup = 1 / ratio if ratio else 1.0
                notes.append("stored dense: the teacher's size" + ("" if ratio else " and speed (masks do not "
                                                                                     "skip work)"))
            if size_mb is None and size_ratio:
                size_mb = teacher_size_mb / size_ratio
            latency = teacher_latency_ms / speedup if speedup else None
            if latency is None:
                notes.append("no speed-up recorded")
            if size_mb is None:
                notes.append("no size recorded")
            rows.append({"name": v.label.format(*parts), "lesson": v.lesson, "key": f"{prefix}.test_accuracy",
                         "accuracy": results[f"{prefix}.test_accuracy"], "speedup": speedup, "size_ratio": size_ratio,
                         "latency_ms": latency, "size_mb": size_mb,
                         "on_chart": latency is not None and size_mb is not None, "note": "; ".join(notes)})
    return rows


def missing_variants(results: Mapping[str, float], variants: Sequence[CourseVariant] = COURSE_VARIANTS) -> list[str]:
    """The variants of :data:`COURSE_VARIANTS` with no recorded accuracy, as "label (lesson NN: key)"."""
    check.mapping(results, "results", what="a dict {key: number}")
    variants = check.items(variants, "variants", non_empty=False, what="a list of CourseVariant")
    return [f"{v.label.format(*['*'] * v.prefix.count('*'))} (lesson {v.lesson}: {v.prefix}.test_accuracy)"
            for v in variants if not _matches(v, results)]


# --------------------------------------------------------------------------------------------------------------
# Bytes at an equal budget: a large network heavily compressed against a small one lightly compressed
# --------------------------------------------------------------------------------------------------------------

def _check_shape(rows: int, cols: int) -> tuple[int, int]:
    return check.integer(rows, "rows", 1), check.integer(cols, "cols", 1)


def dense_int8_bytes(rows: int, cols: int) -> int:
    """Bytes of a (rows, cols) weight stored densely in int8 with one float32 scale per row:
    ``rows·cols + 4·rows``."""
    rows, cols = _check_shape(rows, cols)
    return rows * cols + SCALE_BYTES * rows


def sparse_int8_bytes(rows: int, cols: int, nnz: int) -> int:
    """Bytes of a pruned (rows, cols) weight with ``nnz`` non-zeros stored as: the non-zeros in int8 (1 byte
    each, in row-major order), a bitmask of which positions are non-zero (1 bit per position, rounded up to whole
    bytes: ``ceil(rows·cols / 8)``), and one float32 scale per row (``4·rows``)."""
    rows, cols = _check_shape(rows, cols)
    nnz = check.integer(nnz, "nnz (non-zeros, at most rows·cols)", 0, rows * cols)
    return nnz + math.ceil(rows * cols / 8) + SCALE_BYTES * rows


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The model's ``nn.Linear`` layers in order (an MLP from ``lu.models.mlp``)."""
    check.linear_model(model, "linear_layers")
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers")
    return layers


def mlp_bytes(model: nn.Module, fmt: str = "int8") -> int:
    """Bytes to store every ``nn.Linear`` of ``model``: weights in ``fmt`` — ``"fp32"`` (4 bytes each),
    ``"int8"`` (:func:`dense_int8_bytes`) or ``"sparse_int8"`` (:func:`sparse_int8_bytes`, counting the zeros of
    the weight as pruned) — plus float32 biases."""
    check.choice(fmt, "fmt", ("fp32", "int8", "sparse_int8"))
    total = 0
    for layer in linear_layers(model):
        rows, cols = layer.weight.shape
        if fmt == "fp32":
            total += 4 * rows * cols
        elif fmt == "int8":
            total += dense_int8_bytes(rows, cols)
        else:
            total += sparse_int8_bytes(rows, cols, int((layer.weight != 0).sum()))
        total += BIAS_BYTES * rows if layer.bias is not None else 0
    return total


def mlp_sizes(n_in: int, width: int, n_out: int, hidden_layers: int = 2) -> list[int]:
    """Layer sizes ``[n_in, width × hidden_layers, n_out]`` for ``lu.models.mlp``."""
    n_in, width, n_out = (check.integer(v, name, 1) for v, name in ((n_in, "n_in"), (width, "width"), (n_out, "n_out")))
    hidden_layers = check.integer(hidden_layers, "hidden_layers", 0)
    return [n_in, *([width] * hidden_layers), n_out]


def _mlp_int8_bytes(sizes: Sequence[int]) -> int:
    return sum(dense_int8_bytes(b, a) + BIAS_BYTES * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def width_for_bytes(budget_bytes: int, n_in: int, n_out: int, hidden_layers: int = 2) -> int:
    """The widest MLP ``n_in → width (× hidden_layers) → n_out`` whose int8 weights, scales and float32 biases
    (:func:`mlp_bytes` with ``"int8"``) fit in ``budget_bytes``. Raises if not even width 1 fits, or for a budget
    that is not a finite number of bytes."""
    budget_bytes = check.real(budget_bytes, "budget_bytes", 0, hint="bytes")
    mlp_sizes(n_in, 1, n_out, hidden_layers)
    if _mlp_int8_bytes(mlp_sizes(n_in, 1, n_out, hidden_layers)) > budget_bytes:
        raise ValueError(f"{budget_bytes} bytes cannot hold even a width-1 MLP {n_in}→1→{n_out}")
    lo, hi = 1, 2
    while _mlp_int8_bytes(mlp_sizes(n_in, hi, n_out, hidden_layers)) <= budget_bytes:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if _mlp_int8_bytes(mlp_sizes(n_in, mid, n_out, hidden_layers)) <= budget_bytes:
            lo = mid
        else:
            hi = mid
    return lo


@torch.no_grad()
def quantize_weights_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` weights are rounded to int8 levels (symmetric, one scale per row)
    and stored back as floats — the values an int8 kernel would use. Zeros stay exactly zero."""
    model = copy.deepcopy(model)
    for layer in linear_layers(model):
        layer.weight.copy_(fake_quantize(layer.weight, bits=8, scheme="symmetric", per_channel=True))
    return model


def budget_experiment(data: Mapping[str, torch.Tensor], large_width: int = 512,
                      densities: Sequence[float] = (0.05, 0.1, 0.2), steps: int = 1000, seed: int = 0,
                      hidden_layers: int = 2) -> list[dict]:
    """Li et al.'s comparison in miniature, for one seed, on MNIST-1D-shaped ``data`` (``x_train``, ``y_train``,
    ``x_test``, ``y_test``).

    The large MLP (``large_width`` units per hidden layer) trains for ``steps``; for each density it is pruned by
    magnitude, layer by layer, to that fraction of its weights, fine-tuned for ``steps // 2`` with the mask held,
    and rounded to int8 (:func:`sparse_int8_bytes` format). For each such budget the widest small MLP that fits in
    dense int8 (:func:`width_for_bytes`) trains for the same total number of steps (``steps + steps // 2``) and is
    rounded to int8. Training as in lesson 07 (Adam, lr 1.2e-3, batches of 100, one thread).

    Returns rows ``{"seed", "model" ("large dense fp32" | "large pruned + int8" | "small int8"), "width",
    "density" (fraction of the model's weights kept), "budget_density" (the large model's density that set this
    row's budget; None for the dense reference), "bytes", "budget_bytes" (None for the dense reference),
    "accuracy" (test, fraction)}``.
    """
    densities = [check.fraction(d, "densities[...]", low_open=True, high_open=False, hint="fractions of weights kept")
                 for d in check.items(densities, "densities", what="a list of fractions of weights kept")]
    steps = check.integer(steps, "steps", 2)
    large_width = check.integer(large_width, "large_width", 1)
    seed = check.integer(seed, "seed", 0)
    check_data(data)
    n_in, n_out = data["x_train"].shape[1], int(data["y_train"].max()) + 1
    large_setup = LotterySetup(sizes=tuple(mlp_sizes(n_in, large_width, n_out, hidden_layers)), steps=steps)
    large = make_model(large_setup, seed)
    masks = full_masks(large)
    rows = [{"seed": seed, "model": "large dense fp32", "width": large_width, "density": 1.0, "budget_density": None,
             "bytes": mlp_bytes(large, "fp32"), "budget_bytes": None,
             "accuracy": train_masked(large, masks, data, large_setup, seed)}]
    fine_tune = steps // 2
    test = [(data["x_test"], data["y_test"])]
    for density in densities:
        pruned = copy.deepcopy(large)
        keep = magnitude_masks(pruned, masks, 1 - density)
        train_masked(pruned, keep, data, large_setup, seed, steps=fine_tune)
        compressed = quantize_weights_int8(pruned)
        budget = mlp_bytes(compressed, "sparse_int8")
        rows.append({"seed": seed, "model": "large pruned + int8", "width": large_width, "density": float(density),
                     "budget_density": float(density), "bytes": budget, "budget_bytes": budget,
                     "accuracy": evaluate(compressed, test, progress=False).accuracy})
        width = width_for_bytes(budget, n_in, n_out, hidden_layers)
        small_setup = LotterySetup(sizes=tuple(mlp_sizes(n_in, width, n_out, hidden_layers)), steps=steps + fine_tune)
        small = make_model(small_setup, seed)
        train_masked(small, full_masks(small), data, small_setup, seed)
        small_q = quantize_weights_int8(small)
        rows.append({"seed": seed, "model": "small int8", "width": width, "density": 1.0,
                     "budget_density": float(density), "bytes": mlp_bytes(small_q, "int8"), "budget_bytes": budget,
                     "accuracy": evaluate(small_q, test, progress=False).accuracy})
    return rows
