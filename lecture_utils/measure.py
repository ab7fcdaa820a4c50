"""Measuring models: parameters by component, size on disk, sparsity, latency, and a benchmark dict.

Units, everywhere in the course: sizes in MB = 10^6 bytes (not MiB), latencies in milliseconds, accuracies as
fractions in [0, 1].
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .training import evaluate, logits_and_labels, model_device, to_device

BYTES_PER_MB = 1_000_000


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements, not bytes). Shared tensors are counted once. A model that is not run by
    torch (``lu.runtime.OrtModel``) reports its own count through a ``count_parameters()`` method."""
    own = getattr(model, "count_parameters", None)
    if callable(own):
        return own()
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def parameters_by_component(model: nn.Module) -> dict[str, int]:
    """Parameters of a BERT-style classifier split into ``embeddings`` (word, position, token-type and their
    LayerNorm), ``encoder`` (the transformer layers) and ``head`` (pooler and classifier), plus ``total``.

    Works on any ``nn.Module``: parameters whose name has no ``embeddings``/``encoder`` part count as head.
    """
    parts = {"embeddings": 0, "encoder": 0, "head": 0}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        words = name.split(".")
        key = "embeddings" if "embeddings" in words else "encoder" if "encoder" in words else "head"
        parts[key] += p.numel()
    parts["total"] = sum(parts.values())
    return parts


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's serialised state dict (``torch.save`` format, the same for float and quantized models)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def size_mb(model: nn.Module) -> float:
    """Size on disk of the model's state dict in MB (10^6 bytes). Tensors are stored densely: zeros cost as much
    as any other value, which is why pruning alone does not shrink this number. A model that is not run by torch
    (``lu.runtime.OrtModel``) reports its files on disk through a ``size_on_disk_bytes()`` method."""
    own = getattr(model, "size_on_disk_bytes", None)
    if callable(own):
        return own() / BYTES_PER_MB
    return state_dict_bytes(model) / BYTES_PER_MB


def weight_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every module's ``weight`` with 2 or more dimensions (Linear, Embedding, Conv), by module name.

    Reads ``module.weight`` rather than the parameters, so a layer pruned with ``torch.nn.utils.prune`` is seen
    with its mask applied. Biases and LayerNorm scales (1-D) are left out: they are a tiny share of the
    parameters and are never pruned.
    """
    out = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            out[name] = w
    return out


def sparsity(model: nn.Module) -> float:
    """Fraction of zeros over all weight matrices of ``model`` (see :func:`weight_matrices`), in [0, 1]."""
    mats = weight_matrices(model).values()
    total = sum(w.numel() for w in mats)
    if total == 0:
        raise ValueError("The model has no weight matrices (no module with a 2-D or larger `weight`).")
    return sum((w == 0).sum().item() for w in mats) / total


def sparsity_by_layer(model: nn.Module) -> dict[str, float]:
    """Fraction of zeros of each weight matrix, by module name."""
    return {name: (w == 0).float().mean().item() for name, w in weight_matrices(model).items()}


def _budget(budget_s: float | None) -> float:
    if budget_s is None:
        return float("inf")
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not budget_s > 0:
        raise ValueError(f"budget_s must be a positive number of seconds (or None for no limit), got {budget_s!r}")
    return float(budget_s)


def _summary(times: list[float], requested: int, budget_s: float) -> dict:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": len(times), "requested_repeats": requested, "stopped_by_budget": len(times) < requested,
            "budget_s": None if budget_s == float("inf") else budget_s}


@torch.inference_mode()
def latency_ms(model: nn.Module, inputs: dict[str, torch.Tensor] | torch.Tensor, repeats: int = 10,
               warmup: int = 2, budget_s: float | None = None) -> dict:
    """Time the forward pass of ``model`` on ``inputs`` (a batch dict or a tensor).

    Runs ``warmup`` untimed passes, then ``repeats`` timed ones, and returns a dict with ``median_ms`` (the
    headline number), ``min_ms``, ``max_ms``, ``batch_size``, ``threads`` (torch CPU threads), ``device``,
    ``repeats`` (timed passes that ran) and ``stopped_by_budget``. The median resists the odd slow run caused by
    the rest of the machine.

    ``budget_s`` bounds the time spent (warm-up included): once the passes have used that many seconds no new
    pass starts, so a slow kernel is reported as slow after a few calls instead of taking minutes. At least one
    timed pass always runs.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    budget = _budget(budget_s)
    model.eval()
    device = model_device(model)
    inputs = to_device(inputs, device) if isinstance(inputs, Mapping) else inputs.to(device)
    batch_size = next(iter(inputs.values())).shape[0] if isinstance(inputs, Mapping) else inputs.shape[0]

    def run():
        return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()

    began = time.perf_counter()
    for _ in range(warmup):
        run()
        if time.perf_counter() - began >= budget:
            break
    sync()
    times: list[float] = []
    for _ in range(repeats):
        if times and time.perf_counter() - began >= budget:
            break
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return {**_summary(times, repeats, budget), "batch_size": int(batch_size), "threads": torch.get_num_threads(),
            "device": device.type}


def compare_latency(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor] | torch.Tensor,
                    repeats: int = 10, warmup: int = 2, budget_s: float | None = None) -> dict[str, dict]:
    """Time several models on the same inputs fairly: round-robin, one timed pass of each model per round, so a
    slow moment of the machine hits every model alike. Returns ``{name: latency dict}`` as :func:`latency_ms`
    (``median_ms`` is the headline).

    ``budget_s`` is each model's own time limit (warm-up included): a model that has used it sits out the
    remaining rounds, the others go on. Its ``repeats`` says how many timed passes it got and
    ``stopped_by_budget`` that it was cut short — a slow kernel costs a few passes, not the lesson's time."""
    if not models:
        raise ValueError("compare_latency needs at least one model")
    budget = _budget(budget_s)
    rounds: dict[str, list[dict]] = {name: [] for name in models}
    used: dict[str, float] = {}
    for name, model in models.items():
        start = time.perf_counter()
        if budget == float("inf"):
            latency_ms(model, inputs, repeats=1, warmup=warmup)
        elif warmup > 0:  # within a budget: the warm-up passes alone, and no more once the budget is used
            latency_ms(model, inputs, repeats=1, warmup=warmup - 1, budget_s=budget_s)
        used[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, model in models.items():
            if rounds[name] and used[name] >= budget:
                continue
            start = time.perf_counter()
            rounds[name].append(latency_ms(model, inputs, repeats=1, warmup=0))
            used[name] += time.perf_counter() - start
    out = {}
    for name, runs in rounds.items():
        out[name] = {**runs[0], **_summary([r["median_ms"] for r in runs], repeats, budget)}
    return out


@torch.inference_mode()
def evaluate_within(model: nn.Module, loader: Iterable, budget_s: float) -> dict:
    """Accuracy and loss as :func:`lu.training.evaluate` computes them, over as many batches of ``loader`` as fit
    in ``budget_s`` seconds (always at least one): for a model whose kernels are too slow to evaluate on the whole
    split. Adds ``batches`` (evaluated) and ``complete`` (whether that was the whole loader)."""
    budget = _budget(budget_s)
    model.eval()
    device = model_device(model)
    began, logits, labels, complete = time.perf_counter(), [], [], True
    for batch in loader:
        if logits and time.perf_counter() - began >= budget:
            complete = False
            break
        out, y = logits_and_labels(model, to_device(batch, device))
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    if not logits:
        raise ValueError("evaluate_within() got an empty loader")
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    return {"accuracy": (all_logits.argmax(-1) == all_labels).float().mean().item(),
            "loss": F.cross_entropy(all_logits, all_labels).item(), "examples": len(all_labels),
            "batches": len(logits), "complete": complete}


def benchmark(model: nn.Module, inputs: dict[str, torch.Tensor] | torch.Tensor | None = None,
              loader: Iterable | None = None, repeats: int = 10, budget_s: float | None = None) -> dict:
    """Everything the course compares, in one dict: ``params``, ``size_mb``, ``sparsity``, and, when given,
    ``latency_ms`` (median over ``repeats`` on ``inputs``, within ``budget_s`` seconds: see :func:`latency_ms`),
    ``batch_size``, ``threads`` and ``accuracy`` (on ``loader``)."""
    out: dict = {"params": count_parameters(model), "size_mb": size_mb(model)}
    try:
        out["sparsity"] = sparsity(model)
    except ValueError:
        out["sparsity"] = 0.0
    if inputs is not None:
        lat = latency_ms(model, inputs, repeats=repeats, budget_s=budget_s)
        out.update(latency_ms=lat["median_ms"], batch_size=lat["batch_size"], threads=lat["threads"])
    if loader is not None:
        out["accuracy"] = evaluate(model, loader, progress=False)["accuracy"]
    return out
