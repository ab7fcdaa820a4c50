"""Lesson 04: magnitude pruning with ``torch.nn.utils.prune``, and what it does (not) save.

The wrappers name their targets: by default every ``nn.Linear`` of the model outside the embeddings (the encoder's
projections, the pooler and the classifier) and its ``weight`` parameter. Pruning attaches torch's forward
pre-hook: the module keeps the full tensor as the parameter ``weight_orig``, a 0/1 buffer ``weight_mask``, and
recomputes ``weight = weight_orig * weight_mask`` before every forward pass, so the pruned weights stay exactly
zero through training. :func:`make_permanent_` (``prune.remove``) folds the mask into a plain ``weight``.

Sparsities are fractions in [0, 1) of the target weights that are zero *because of the mask*; sizes are in bytes
(MB = 10^6 bytes where a notebook converts).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from torch.nn.utils import prune

from . import validate as check
from .measure import count_parameters, sparsity_by_layer, weight_matrices
from .memory import compressed_bytes, csr_bytes, dense_bytes
from .training import History, LossFn, evaluate, train

__all__ = ["METHODS", "HEAD", "check_sparsity", "linear_targets", "prune_layerwise_", "prune_global_", "prune_model_",
           "pruned_copy", "is_pruned", "make_permanent_", "SparsityReport", "sparsity_report",
           "weight_storage", "keeps_mask_zeros", "iterative_prune_", "GradualHistory", "gradual_prune_",
           "cubic_schedule", "layer_kind", "magnitude_mask", "sparsity_by_kind"]

Targets = dict[str, nn.Module]
METHODS = ("global", "layerwise")
HEAD = ("embeddings", "pooler", "classifier", "pre_classifier")  # exclude these to prune the encoder layers only


def check_sparsity(value: float) -> float:
    """``value`` as a float if it is a sparsity in [0, 1); otherwise a ValueError that says what is allowed."""
    return check.fraction(value, "sparsity", hint="0.9 makes 90% of the target weights zero; 1 would remove every "
                                                "weight")


def _excluded(name: str, exclude: Sequence[str]) -> bool:
    """True if a part of the dotted ``name`` is an ``exclude`` word or starts with one and an underscore
    (``embeddings`` also excludes ELECTRA's ``embeddings_project``)."""
    return any(part == word or part.startswith(word + "_") for part in name.split(".") for word in exclude)


def linear_targets(model: nn.Module, parameter: str = "weight", exclude: Sequence[str] = ("embeddings",)) -> Targets:
    """The modules to prune: every ``nn.Linear`` whose dotted name has no part in ``exclude``, by module name
    (``bert.encoder.layer.0.attention.self.query``, ..., ``classifier``). Each must have ``parameter``.
    ``exclude=HEAD`` also leaves the pooler and classifier dense (encoder layers only). A part that starts with an
    excluded word and an underscore counts too: ELECTRA's ``embeddings_project`` belongs to the embeddings."""
    check.linear_model(model, "Pruning (lu.prune)")
    check.text(parameter, "parameter")
    exclude = check.strings(exclude, "exclude", non_empty=False)
    out = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and not _excluded(name, exclude)}
    if not out:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers outside {exclude} to prune")
    for name, m in out.items():
        if not hasattr(m, parameter):
            raise ValueError(f"module {name!r} has no parameter {parameter!r}")
    return out


def _check_targets(model: nn.Module, targets: Targets | None, parameter: str) -> Targets:
    """``targets`` (default :func:`linear_targets`) checked: a non-empty dict of modules of ``model`` that have
    ``parameter``, with finite values (NaN magnitudes cannot be ranked)."""
    check.module(model)
    check.text(parameter, "parameter")
    if targets is None:
        targets = linear_targets(model, parameter)
    check.mapping(targets, "targets", non_empty=True, what="a dict {module name: module}")
    own = {id(m) for m in model.modules()}
    for name, m in targets.items():
        if not isinstance(m, nn.Module) or id(m) not in own:
            raise ValueError(f"targets[{name!r}] must be a module of this model, got {check.show(m)}")
        w = getattr(m, parameter, None)
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"module {name!r} has no parameter {parameter!r}")
        check.tensor(w, f"the {parameter} of {name!r}", floating=True)
    return targets


def _masked_zeros(module: nn.Module, parameter: str) -> int:
    """Entries already removed by an attached mask (0 if the module is not pruned)."""
    mask = getattr(module, parameter + "_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


def _additional(target: int, already: int, where: str) -> int:
    if target < already:
        raise ValueError(f"{where} already has {already} pruned weights; a mask can only grow, so the sparsity "
                         "must not be lower than the current one")
    return target - already


def prune_layerwise_(model: nn.Module, sparsity: float, targets: Targets | None = None,
                    parameter: str = "weight") -> Targets:
    """Layer-wise magnitude pruning: every target loses the ``round(sparsity × numel)`` entries of ``parameter``
    with the smallest |value| (``prune.l1_unstructured``), so each layer ends at the same sparsity. On an
    already pruned model the masks grow to ``sparsity`` (torch ranks only the surviving entries). Returns the
    targets."""
    sparsity = check_sparsity(sparsity)
    targets = _check_targets(model, targets, parameter)
    for name, m in targets.items():
        n = getattr(m, parameter).numel()
        extra = _additional(round(sparsity * n), _masked_zeros(m, parameter), name)
        prune.l1_unstructured(m, parameter, amount=extra)
    return targets


def prune_global_(model: nn.Module, sparsity: float, targets: Targets | None = None,
                 parameter: str = "weight") -> Targets:
    """Global magnitude pruning: the ``round(sparsity × total)`` entries with the smallest |value| over all
    targets together are removed (``prune.global_unstructured``), so layers with small weights lose more. On an
    already pruned model the masks grow to ``sparsity`` overall. Returns the targets."""
    sparsity = check_sparsity(sparsity)
    targets = _check_targets(model, targets, parameter)
    total = sum(getattr(m, parameter).numel() for m in targets.values())
    already = sum(_masked_zeros(m, parameter) for m in targets.values())
    extra = _additional(round(sparsity * total), already, "the model")
    prune.global_unstructured([(m, parameter) for m in targets.values()], pruning_method=prune.L1Unstructured,
                              amount=extra)
    return targets


def prune_model_(model: nn.Module, sparsity: float, method: str = "global", targets: Targets | None = None,
                parameter: str = "weight") -> Targets:
    """:func:`prune_global_` or :func:`prune_layerwise_`, chosen by ``method`` (``"global"`` or ``"layerwise"``)."""
    check.choice(method, "method", METHODS)
    fn = prune_global_ if method == "global" else prune_layerwise_
    return fn(model, sparsity, targets, parameter)


def pruned_copy(model: nn.Module, sparsity: float, method: str = "global",
                exclude: Sequence[str] = ("embeddings",)) -> nn.Module:
    """A deep copy of ``model`` with its Linear weights pruned to ``sparsity`` (masks attached); ``model`` is
    left as it was. ``model`` must carry no masks: torch cannot deep-copy a masked model (its ``weight`` is
    computed, not a leaf tensor); prune copies of the dense model instead."""
    check.module(model)
    if is_pruned(model):
        raise ValueError("model already carries pruning masks and cannot be copied: prune a copy of the dense model, "
                         "or call lu.prune.make_permanent_(model) first")
    check.choice(method, "method", METHODS)
    check_sparsity(sparsity)
    clone = copy.deepcopy(model)
    prune_model_(clone, sparsity, method, linear_targets(clone, exclude=exclude))
    return clone


def is_pruned(model: nn.Module) -> bool:
    """True if any module of ``model`` carries a pruning mask."""
    check.module(model)
    return prune.is_pruned(model)


def make_permanent_(model: nn.Module) -> int:
    """Fold every pruning mask into its parameter (``prune.remove``): afterwards there are no ``*_orig``
    parameters, ``*_mask`` buffers or hooks, and the zeros stay. Returns the number of parameters made
    permanent."""
    check.module(model)
    done = 0
    for module in model.modules():
        names = [n[: -len("_orig")] for n, _ in module.named_parameters(recurse=False) if n.endswith("_orig")]
        for name in names:
            prune.remove(module, name)
            done += 1
    return done


@dataclass(frozen=True)
class SparsityReport:
    """Where the zeros are, every value a fraction in [0, 1]: ``layers`` ({module name: sparsity of its weight},
    targets only), ``linear`` (zeros / entries over the targets' weights), ``all_matrices`` (the same over every
    weight matrix, embedding tables included) and ``whole_model`` (zeros in weight matrices / all parameters)."""

    layers: dict[str, float]
    linear: float
    all_matrices: float
    whole_model: float


def sparsity_report(model: nn.Module, targets: Targets | None = None,
                    exclude: Sequence[str] = ("embeddings",)) -> SparsityReport:
    """Where the zeros are, as a :class:`SparsityReport`. Targets default to :func:`linear_targets` with
    ``exclude``.

    Example: ``lu.prune.sparsity_report(model).linear`` is the sparsity of the pruned linears."""
    targets = linear_targets(model, exclude=exclude) if targets is None else check.mapping(
        targets, "targets", non_empty=True, what="a dict {module name: module}")
    mats = weight_matrices(model)
    unknown = [name for name in targets if name not in mats]
    if unknown:
        raise ValueError(f"targets {unknown[:5]} are not weight matrices of this model")
    by_layer = sparsity_by_layer(model)
    sizes = {name: mats[name].numel() for name in targets}
    zeros = {name: by_layer[name] * sizes[name] for name in targets}
    all_zeros = sum(by_layer[n] * w.numel() for n, w in mats.items())
    return SparsityReport(layers={name: by_layer[name] for name in targets},
                          linear=sum(zeros.values()) / sum(sizes.values()),
                          all_matrices=all_zeros / sum(w.numel() for w in mats.values()),
                          whole_model=all_zeros / count_parameters(model))


def _weights(model: nn.Module, targets: Targets | None, parameter: str) -> list[torch.Tensor]:
    check.module(model)
    targets = linear_targets(model, parameter) if targets is None else check.mapping(
        targets, "targets", non_empty=True, what="a dict {module name: module}")
    return [getattr(m, parameter).detach() for m in targets.values()]


def weight_storage(model: nn.Module, targets: Targets | None = None, parameter: str = "weight") -> dict[str, int]:
    """Bytes of the targets' weights in three formats: ``dense``, ``csr`` (int32 indices), ``csr_int64``
    (torch's own index type) and ``zlib`` (compressed dense bytes)."""
    ws = _weights(model, targets, parameter)
    return {"dense": sum(dense_bytes(w) for w in ws), "csr": sum(csr_bytes(w) for w in ws),
            "csr_int64": sum(csr_bytes(w, torch.int64) for w in ws), "zlib": compressed_bytes(ws)}


def keeps_mask_zeros(model: nn.Module) -> bool:
    """True if every pruned entry (mask 0) of every masked parameter is exactly 0 in the module's weight."""
    check.module(model)
    for module in model.modules():
        for name, mask in module.named_buffers(recurse=False):
            if name.endswith("_mask") and (getattr(module, name[: -len("_mask")])[mask == 0] != 0).any():
                return False
    return True


def iterative_prune_(model: nn.Module, sparsities: Sequence[float], loader: Iterable, steps_per_round: int,
                    lr: float = 5e-5, method: str = "global", eval_loader: Iterable | None = None,
                    exclude: Sequence[str] = ("embeddings",), loss_fn: LossFn | None = None,
                    eval_every_round: bool = True) -> list[dict]:
    """Prune → fine-tune rounds, in place: for each sparsity of the increasing sequence ``sparsities``, grow the
    masks to it (:func:`prune_model_`) and fine-tune for ``steps_per_round`` optimiser steps with
    :func:`lecture_utils.training.train` (the pruning hooks keep pruned weights at 0). Returns one dict per round:
    ``round``, ``sparsity`` (measured over the targets), ``steps``, ``seconds`` (wall-clock training time of the
    round), and ``accuracy`` on ``eval_loader`` when given — after every round, or only after the last one with
    ``eval_every_round=False`` (a test-set pass costs about as much as a dozen training steps). ``exclude`` picks
    the targets as in :func:`linear_targets`; ``loss_fn`` (default cross-entropy) is passed to ``train``, e.g.
    :func:`lecture_utils.distill.distillation_loss` to recover with the dense teacher's soft targets."""
    values = [check_sparsity(s) for s in check.items(sparsities, "sparsities", what="a list of fractions")]
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"sparsities must be a non-empty, strictly increasing sequence, got {list(sparsities)}")
    steps_per_round = check.integer(steps_per_round, "steps_per_round", 1)
    check.choice(method, "method", METHODS)
    check.positive(lr, "lr", "the fine-tuning learning rate")
    check.loader(loader)
    if eval_loader is not None:
        check.loader(eval_loader, "eval_loader")
    if loss_fn is not None:
        check.callable_(loss_fn, "loss_fn")
    eval_every_round = check.flag(eval_every_round, "eval_every_round")
    targets = linear_targets(model, exclude=exclude)
    rows = []
    for i, s in enumerate(values, start=1):
        prune_model_(model, s, method, targets)
        hist = train(model, loader, max_steps=steps_per_round, lr=lr, loss_fn=loss_fn, progress=False,
                     desc=f"round {i}")
        row = {"round": i, "sparsity": sparsity_report(model, targets).linear, "steps": hist.steps,
               "seconds": hist.seconds}
        if eval_loader is not None and (eval_every_round or i == len(values)):
            row["accuracy"] = evaluate(model, eval_loader, progress=False).accuracy
        rows.append(row)
    return rows


@dataclass
class GradualHistory(History):
    """:class:`lu.training.History` of :func:`gradual_prune_`'s one run, plus ``schedule``: the ``(step,
    sparsity)`` of each pruning event, sparsity measured over the targets."""

    schedule: list[tuple[int, float]] = field(default_factory=list)


def gradual_prune_(model: nn.Module, final: float, loader: Iterable, steps: int, events: int = 6, ramp: float = 0.5,
                  lr: float = 5e-5, method: str = "global", exclude: Sequence[str] = ("embeddings",),
                  loss_fn: LossFn | None = None) -> GradualHistory:
    """Zhu and Gupta's gradual pruning, in place: **one** run of ``steps`` optimiser steps of
    :func:`lecture_utils.training.train` (one AdamW, one warm-up/decay schedule) during which the masks grow to the
    sparsity ``final`` in ``events`` pruning steps along :func:`cubic_schedule`, spaced evenly over the first
    ``ramp`` of the run (the first before step 1, then one every ``floor(ramp × steps) // (events - 1)`` steps, so no
    cut falls past the ramp); the rest of the run trains at ``final``. Settings whose cuts would not fit in the ramp
    (fewer ramp steps than gaps between events) or would leave no step after the last cut are refused. The hooks keep
    pruned weights at 0. Unlike :func:`iterative_prune_`, nothing restarts between cuts. Returns a
    :class:`GradualHistory`: ``train``'s history plus the schedule of pruning events.

    Example:
        >>> hist = lu.prune.gradual_prune_(model, 0.9, stream, steps=60, method="layerwise")  # doctest: +SKIP
        >>> hist.schedule[-1]  # doctest: +SKIP
        (30, 0.9)
    """
    final = check.fraction(final, "final", low_open=True, hint="the sparsity at the end, e.g. 0.9 for 90% zeros")
    steps = check.integer(steps, "steps", 1, hint="the optimiser steps of the whole run")
    events = check.integer(events, "events", 1, hint="how many times the masks grow")
    ramp = check.fraction(ramp, "ramp", low_open=True, high_open=False,
                          hint="the share of the run over which the masks grow")
    check.choice(method, "method", METHODS)
    check.loader(loader)
    ramp_steps = math.floor(ramp * steps + 1e-9)  # the last cut comes at most this many steps into the run
    every = ramp_steps // (events - 1) if events > 1 else steps
    if events > 1 and (every < 1 or (events - 1) * every >= steps):
        raise ValueError(
            f"events={events} pruning steps do not fit in steps={steps} with ramp={ramp:g}: the cuts come one before "
            f"step 1 and then every k >= 1 optimiser steps, the last one within the ramp's {ramp_steps} steps and "
            f"before the last step, so at most {max(1, min(ramp_steps, steps - 1) + 1)} events fit; use fewer events, "
            "a longer ramp or more steps")
    targets = linear_targets(model, exclude=exclude)
    sparsities = cubic_schedule(final, events)
    schedule = []

    def cut(m: nn.Module, step: int, s: float) -> None:
        prune_model_(m, s, method, targets)
        schedule.append((step, sparsity_report(m, targets).linear))

    cut(model, 0, sparsities[0])
    done = {"step": 0}

    def after_step(m: nn.Module) -> None:
        done["step"] += 1
        k = len(schedule)
        if k < events and done["step"] == k * every:
            cut(m, done["step"], sparsities[k])

    hist = train(model, loader, max_steps=steps, lr=lr, loss_fn=loss_fn, after_step=after_step, progress=False,
                 desc="gradual pruning")
    return GradualHistory(**{f.name: getattr(hist, f.name) for f in fields(hist)}, schedule=schedule)


def cubic_schedule(final: float, rounds: int, initial: float = 0.0) -> list[float]:
    """Zhu and Gupta (2017, *To prune, or not to prune*, arXiv 1710.01878)'s gradual schedule, sampled at
    ``rounds`` equally spaced pruning steps: round t of n has sparsity ``final + (initial - final)(1 - t/n)³``,
    so the early rounds remove many weights (there are many redundant ones) and the last rounds few. Sparsities
    are fractions in [0, 1); the list is increasing and ends exactly at ``final``; ``initial`` (the sparsity
    before round 1) must be lower than ``final``."""
    final = check_sparsity(final)
    initial = check.fraction(initial, "initial", hint="the sparsity before the first round, usually 0")
    rounds = check.integer(rounds, "rounds", 1, hint="the number of prune → fine-tune rounds")
    if initial >= final:
        raise ValueError(f"initial must be lower than final, got initial={initial} and final={final}")
    return [final + (initial - final) * (1 - t / rounds) ** 3 for t in range(1, rounds + 1)]


def layer_kind(name: str) -> str:
    """The role of an encoder Linear layer, from its dotted name: the part after the layer index
    (``bert.encoder.layer.3.attention.self.query`` → ``attention.self.query``); a name without a numeric part
    is its own kind (``classifier``)."""
    check.text(name, "name")
    parts = name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[i + 1:]) or name
    return name


# Reference answers of lesson 04's exercises (used by the student copy until the learner's pass their check).

def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask of ``weight``'s shape: False at the ``round(sparsity × numel)`` entries with the smallest ``|w|``
    (the mask of ``torch.nn.utils.prune.l1_unstructured``), True elsewhere."""
    if not torch.is_tensor(weight):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    layer = nn.Linear(1, 1, bias=False)
    layer.weight = nn.Parameter(weight.detach().clone())
    return prune.l1_unstructured(layer, "weight", amount=check_sparsity(sparsity)).weight_mask.bool()


def sparsity_by_kind(layers: dict[str, float]) -> dict[str, float]:
    """Mean sparsity of each kind of layer (:func:`layer_kind`: ``attention.self.query``, ...,
    ``output.dense``) from ``{module name: sparsity}`` — the ``"layers"`` of :func:`sparsity_report`. Fractions
    in [0, 1]; kinds in the order they first appear."""
    check.mapping(layers, "layers", non_empty=True, what="a dict {module name: sparsity}")
    groups: dict[str, list[float]] = {}
    for name, value in layers.items():
        groups.setdefault(layer_kind(name), []).append(check.fraction(value, f"layers[{name!r}]", high_open=False))
    return {kind: sum(v) / len(v) for kind, v in groups.items()}
