"""Measuring models: parameters by component, size on disk, sparsity, latency (a :class:`Latency`), and all of
them together (a :class:`Benchmark`).

Units, everywhere in the course: sizes in MB = 10^6 bytes (not MiB), latencies in milliseconds, accuracies as
fractions in [0, 1].
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from . import validate as check
from .training import Metrics, evaluate, logits_and_labels, model_device, scores, to_device

__all__ = ["BYTES_PER_MB", "count_parameters", "COMPONENT_WORDS", "component_of", "parameters_by_component",
           "state_dict_bytes", "size_mb", "weight_matrices", "sparsity", "sparsity_by_layer", "Latency", "latency_ms",
           "compare_latency", "PartialMetrics", "evaluate_within", "Benchmark", "benchmark", "accuracy", "speedup",
           "embedding_share"]

BYTES_PER_MB = 1_000_000


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements, not bytes). Shared tensors are counted once. A model that is not run by
    torch (``lu.runtime.OrtModel``) reports its own count through a ``count_parameters()`` method."""
    check.module(model)
    check.flag(trainable_only, "trainable_only")
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


COMPONENT_WORDS: dict[str, tuple[str, ...]] = {
    # a parameter belongs to the first component one of whose words is a part of its dotted name
    "embeddings": ("embeddings", "embeddings_project"),  # ELECTRA projects its small embeddings to the hidden size
    "encoder": ("encoder", "transformer"),  # DistilBERT calls its layer stack `transformer`
    "head": ("pooler", "classifier", "pre_classifier", "score", "distill_projections"),
}


def component_of(name: str) -> str | None:
    """``"embeddings"``, ``"encoder"`` or ``"head"`` for a parameter name of a BERT-style model (see
    :data:`COMPONENT_WORDS`), or None when the name says none of them."""
    words = name.split(".")
    for component, known in COMPONENT_WORDS.items():
        if any(w in words for w in known):
            return component
    return None


def parameters_by_component(model: nn.Module) -> dict[str, int]:
    """Parameters of a BERT-style classifier split into ``embeddings`` (word, position, token-type and their
    LayerNorm; ELECTRA's embedding projection), ``encoder`` (the transformer layers: BERT's ``encoder``,
    DistilBERT's ``transformer``) and ``head`` (pooler and classifier), plus ``total``.

    A parameter is placed by the words of its name (:data:`COMPONENT_WORDS`). If any parameter fits none of them
    (an MLP, or an unfamiliar architecture), this raises a ValueError naming them instead of guessing a split.
    """
    check.module(model)
    parts = {"embeddings": 0, "encoder": 0, "head": 0}
    unknown: list[str] = []
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        key = component_of(name)
        if key is None:
            unknown.append(name)
        else:
            parts[key] += p.numel()
    if unknown:
        raise ValueError(f"parameters_by_component cannot place {len(unknown)} parameters of "
                         f"{type(model).__name__} in embeddings, encoder or head: {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}. It knows BERT-style models (BERT, MiniLM, "
                         "DistilBERT, ELECTRA); use count_parameters for the total.")
    parts["total"] = sum(parts.values())
    return parts


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's serialised state dict (``torch.save`` format, the same for float and quantized models)."""
    check.module(model)
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
    check.module(model)
    out = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            out[name] = w
    return out


def sparsity(model: nn.Module) -> float:
    """Fraction of zeros over all weight matrices of ``model`` (see :func:`weight_matrices`), in [0, 1]. Raises a
    ValueError for a model with quantized layers, whose packed weights cannot be read here (counting only the
    other matrices would give a wrong answer)."""
    check.module(model)
    if _packed_weights(model):
        raise ValueError(f"{type(model).__name__} has quantized layers whose packed weights cannot be read, so its "
                         "sparsity is unknown here (measure it on the float model before quantizing).")
    mats = weight_matrices(model).values()
    total = sum(w.numel() for w in mats)
    if total == 0:
        raise ValueError("The model has no weight matrices (no module with a 2-D or larger `weight`).")
    return sum((w == 0).sum().item() for w in mats) / total


def sparsity_by_layer(model: nn.Module) -> dict[str, float]:
    """Fraction of zeros of each weight matrix, by module name."""
    return {name: (w == 0).float().mean().item() for name, w in weight_matrices(model).items()}


def _budget(budget_s: float | None) -> float:
    """``budget_s`` in seconds (positive, finite), or infinity for None (no limit)."""
    if budget_s is None:
        return float("inf")
    return check.positive(budget_s, "budget_s", hint="seconds, or None for no limit")


@dataclass(frozen=True)
class Latency:
    """One model's forward-pass time on one batch, in milliseconds, from :func:`latency_ms` or
    :func:`compare_latency`.

    ``median_ms`` is the headline (it resists the odd slow pass caused by the rest of the machine); ``min_ms`` and
    ``max_ms`` bound the timed passes. ``repeats`` timed passes ran of the ``requested_repeats`` asked for:
    ``stopped_by_budget`` says a time limit of ``budget_s`` seconds (None: no limit) cut them short. ``batch_size``
    rows per pass, ``threads`` torch CPU threads, ``device`` "cpu", "cuda" or "mps".

    Examples:
        >>> lat = latency_ms(torch.nn.Linear(4, 2), torch.zeros(8, 4), repeats=3)
        >>> lat.batch_size, lat.repeats, lat.min_ms <= lat.median_ms <= lat.max_ms
        (8, 3, True)
    """

    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    requested_repeats: int
    stopped_by_budget: bool
    budget_s: float | None
    batch_size: int
    threads: int
    device: str


def _summary(times: list[float], requested: int, budget_s: float) -> dict:
    """The timing fields of a :class:`Latency` from the timed passes ``times`` (ms)."""
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": len(times), "requested_repeats": requested, "stopped_by_budget": len(times) < requested,
            "budget_s": None if budget_s == float("inf") else budget_s}


@torch.inference_mode()
def latency_ms(model: nn.Module, inputs: dict[str, torch.Tensor] | torch.Tensor, repeats: int = 10,
               warmup: int = 2, budget_s: float | None = None) -> Latency:
    """Time the forward pass of ``model`` on ``inputs`` (a batch dict or a tensor), in milliseconds.

    Runs ``warmup`` untimed passes, then ``repeats`` timed ones, and returns a :class:`Latency` (``median_ms`` is
    the headline number).

    ``budget_s`` bounds the time spent (warm-up included): once the passes have used that many seconds no new
    pass starts, so a slow kernel is reported as slow after a few calls instead of taking minutes. At least one
    timed pass always runs.
    """
    repeats, warmup = _check_timing(model, inputs, repeats, warmup)
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
    return Latency(**_summary(times, repeats, budget), batch_size=int(batch_size), threads=torch.get_num_threads(),
                   device=device.type)


def _check_timing(model: nn.Module, inputs, repeats: int, warmup: int) -> tuple[int, int]:
    """Validate :func:`latency_ms`'s arguments; returns ``(repeats, warmup)`` as ints."""
    check.module(model)
    if isinstance(inputs, Mapping):
        if not inputs or not all(torch.is_tensor(v) and v.dim() >= 1 for v in inputs.values()):
            raise ValueError(f"inputs must be a non-empty dict of batched tensors (e.g. lu.data.fixed_batch), got "
                             f"{ {k: check.show(v) for k, v in inputs.items()} }")
    elif not torch.is_tensor(inputs) or inputs.dim() < 1:
        raise check.BadType(f"inputs must be a batch dict or a batched tensor, got {check.show(inputs)}")
    return check.integer(repeats, "repeats", 1), check.integer(warmup, "warmup", 0)


def compare_latency(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor] | torch.Tensor,
                    repeats: int = 10, warmup: int = 2, budget_s: float | None = None) -> dict[str, Latency]:
    """Time several models on the same inputs fairly: round-robin, one timed pass of each model per round, so a
    slow moment of the machine hits every model alike. Returns ``{name: Latency}`` (``median_ms`` is the
    headline; see :func:`latency_ms`).

    ``budget_s`` is each model's own time limit (warm-up included): a model that has used it sits out the
    remaining rounds, the others go on. Its ``repeats`` says how many timed passes it got and
    ``stopped_by_budget`` that it was cut short — a slow kernel costs a few passes, not the lesson's time."""
    check.mapping(models, "models", non_empty=True, what="a dict {name: model}")
    for name, model in models.items():
        check.module(model, f"models[{name!r}]")
    repeats = _check_timing(next(iter(models.values())), inputs, repeats, warmup)[0]
    budget = _budget(budget_s)
    rounds: dict[str, list[Latency]] = {name: [] for name in models}
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
        out[name] = replace(runs[0], **_summary([r.median_ms for r in runs], repeats, budget))
    return out


def _packed_weights(model: nn.Module) -> bool:
    """True if some module keeps its weight in a form :func:`weight_matrices` cannot read (a quantized layer's
    ``weight()`` method, or a tensor subclass such as torchao's)."""
    for module in model.modules():
        w = getattr(module, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):
            return True
        if isinstance(w, torch.Tensor) and type(w) not in (torch.Tensor, nn.Parameter):
            return True
    return False


@dataclass(frozen=True)
class PartialMetrics(Metrics):
    """:class:`lu.training.Metrics` over the first ``batches`` batches of a loader; ``complete``: whether that was
    all of it."""

    batches: int
    complete: bool


@torch.inference_mode()
def evaluate_within(model: nn.Module, loader: Iterable, budget_s: float) -> PartialMetrics:
    """Accuracy and loss as :func:`lu.training.evaluate` computes them, over as many batches of ``loader`` as fit
    in ``budget_s`` seconds (always at least one): for a model whose kernels are too slow to evaluate on the whole
    split. Returns :class:`PartialMetrics` (the metrics, ``batches`` evaluated and ``complete``)."""
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
    metrics = scores(torch.cat(logits), torch.cat(labels))
    return PartialMetrics(metrics.accuracy, metrics.loss, metrics.examples, batches=len(logits), complete=complete)


@dataclass(frozen=True)
class Benchmark:
    """What the course compares about one model, from :func:`benchmark`: ``params`` (elements), ``size_mb``
    (MB = 10^6 bytes of its saved state), ``sparsity`` (fraction of zero weights; None when it cannot be measured),
    ``latency`` (a :class:`Latency`, None when no inputs were given) and ``accuracy`` (fraction in [0, 1], None when
    no loader was given)."""

    params: int
    size_mb: float
    sparsity: float | None
    latency: Latency | None
    accuracy: float | None


def benchmark(model: nn.Module, inputs: dict[str, torch.Tensor] | torch.Tensor | None = None,
              loader: Iterable | None = None, repeats: int = 10, budget_s: float | None = None) -> Benchmark:
    """Everything the course compares, in one :class:`Benchmark`: parameters, size and sparsity, and, when given,
    the latency on ``inputs`` (``repeats`` timed passes within ``budget_s`` seconds: see :func:`latency_ms`) and
    the accuracy on ``loader``. ``sparsity`` is None when it cannot be measured: no plain weight matrix, or
    quantized layers whose packed weights :func:`weight_matrices` cannot read (counting only the rest would
    mislead).

    Examples:
        >>> b = benchmark(torch.nn.Linear(4, 2), torch.zeros(8, 4), repeats=2)
        >>> b.params, b.latency.batch_size, b.accuracy is None
        (10, 8, True)
    """
    check.module(model)
    repeats = check.integer(repeats, "repeats", 1)
    if loader is not None:
        check.loader(loader)
    measured_sparsity = None
    try:
        measured_sparsity = sparsity(model)
    except ValueError:  # no weight matrix, or packed quantized weights: unknown, not 0
        pass
    latency = None if inputs is None else latency_ms(model, inputs, repeats=repeats, budget_s=budget_s)
    acc = None if loader is None else evaluate(model, loader, progress=False).accuracy
    return Benchmark(params=count_parameters(model), size_mb=size_mb(model), sparsity=measured_sparsity,
                     latency=latency, accuracy=acc)


# Reference answers of lesson 00's and 01's exercises (used by the student copy until the learner's pass their check).

def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction in [0, 1] of the rows of ``logits`` (N, C) whose largest entry is at the index in ``labels`` (N,)."""
    if not torch.is_tensor(logits) or logits.dim() != 2:
        raise ValueError(f"logits must be a 2-D tensor (N, C), got {getattr(logits, 'shape', type(logits).__name__)}")
    if not torch.is_tensor(labels) or labels.shape != logits.shape[:1] or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty tensor of shape ({logits.shape[0]},), got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def speedup(baseline_ms: float, variant_ms: float) -> float:
    """How many times faster the variant is: ``baseline_ms / variant_ms`` (> 1 means faster)."""
    for name, value in (("baseline_ms", baseline_ms), ("variant_ms", variant_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive time in milliseconds, got {value!r}")
    return baseline_ms / variant_ms


def embedding_share(model: nn.Module) -> float:
    """Fraction of the model's parameters in modules named ``embeddings`` (word, position, token type, LayerNorm)."""
    total = sum(p.numel() for p in model.parameters())
    if total == 0:
        raise ValueError("model must have parameters, got one with none")
    emb = sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name.split("."))
    return emb / total
