"""One training loop and one evaluation loop for every model in the course.

A batch is either a dict of tensors for a Hugging Face model (with ``labels``) or a tuple ``(x, y)`` for a plain
``nn.Module`` that returns logits. Distillation, pruning and quantization-aware training reuse :func:`train` by
passing their own ``loss_fn(model, batch) -> loss``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import validate as check
from .progress import bar as progress_bar

__all__ = ["OPTIMIZER", "adamw", "TEACHER_LOGITS", "TARGET_KEYS", "model_inputs", "to_device", "logits_and_labels",
           "cross_entropy_loss", "check_classification", "model_device", "TrainingDiverged", "train", "predict",
           "evaluate", "scores", "Metrics", "Evaluation", "History"]

Batch = Mapping | tuple | list
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
TEACHER_LOGITS = "teacher_logits"  # a teacher's logits stored in a batch (lecture_utils.distill.with_teacher_logits)
TARGET_KEYS = ("labels", TEACHER_LOGITS)  # entries of a dict batch that are targets, never the model's inputs
# The optimiser `train` builds (the teacher's cache key holds it). Fused: one kernel updates every parameter. On the
# course's 2-core CPU PyTorch's default AdamW (a Python loop over the tensors) took 112 ms per step of the 3-layer
# encoder, the fused one 14 ms: a quarter of each fine-tuning step. Same algorithm, same hyperparameters.
OPTIMIZER = "AdamW, fused"


@dataclass(frozen=True)
class Metrics:
    """A classifier's scores on a set of examples: ``accuracy`` (fraction in [0, 1]), ``loss`` (mean cross-entropy,
    nats) and ``examples`` (how many)."""

    accuracy: float
    loss: float
    examples: int


@dataclass(frozen=True)
class Evaluation(Metrics):
    """:class:`Metrics` measured during training, after optimiser step ``step``."""

    step: int


@dataclass
class History:
    """What :func:`train` did: ``steps`` (optimiser steps taken), ``seconds`` (wall clock of the whole call),
    ``losses`` (training loss per step), ``evals`` (an :class:`Evaluation` per evaluation on ``eval_loader``) and
    ``best_accuracy`` (the best of them; None without an ``eval_loader``)."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    evals: list[Evaluation] = field(default_factory=list)
    best_accuracy: float | None = None


def model_inputs(batch: Mapping) -> dict:
    """The entries of a dict batch that the model takes: all but the targets (:data:`TARGET_KEYS`)."""
    return {k: v for k, v in batch.items() if k not in TARGET_KEYS}


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Move every tensor of a batch (dict, tuple or list) to ``device``."""
    device = check.device(device)
    if isinstance(batch, Mapping):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if not isinstance(batch, (tuple, list)):
        raise check.BadType(f"batch must be a dict of tensors or a tuple/list (x, y), got {check.show(batch)}")
    return type(batch)(v.to(device) if torch.is_tensor(v) else v for v in batch)


def logits_and_labels(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on a batch; return ``(logits of shape (B, C), labels of shape (B,))``."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise ValueError(f"a dict batch must hold 'labels' next to the model's inputs, got keys {sorted(batch)}")
        out = model(**model_inputs(batch))
        return (out.logits if hasattr(out, "logits") else out), batch["labels"]
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise check.BadType(f"a batch must be a dict with 'labels' or a pair (x, y), got {check.show(batch)}")
    x, y = batch
    out = model(x)
    return (out.logits if hasattr(out, "logits") else out), y


def cross_entropy_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The default loss: mean cross-entropy between the model's logits and the batch's labels."""
    logits, labels = logits_and_labels(model, batch)
    check_classification(logits, labels)
    return F.cross_entropy(logits, labels)


def check_classification(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise a clear error unless ``logits`` are float (B, C) and ``labels`` are B class indices in [0, C)."""
    if not torch.is_tensor(logits) or not logits.is_floating_point() or logits.dim() != 2:
        raise check.BadType(f"the model must return float logits of shape (batch, classes), got {check.show(logits)}")
    if not torch.is_tensor(labels) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.shape != logits.shape[:1]:
        raise check.BadType(f"labels must be an integer tensor of shape ({logits.shape[0]},) holding class indices, "
                            f"got {check.show(labels)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must be class indices from 0 to {logits.shape[1] - 1}, got values from "
                         f"{int(labels.min())} to {int(labels.max())}")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    check.module(model)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _bar(iterable: Iterable, progress: bool, **kwargs) -> tqdm:
    """A progress bar (:func:`.progress.bar`), off when ``progress`` is False or ``$TQDM_DISABLE`` is 1 (the runner
    sets it: a bar saved in an executed notebook would show 0% forever)."""
    return progress_bar(iterable, enabled=progress, leave=False, **kwargs)


def _cycle(loader: Iterable, steps: int):
    """Batches of ``loader``, passed over again and again, until ``steps`` batches were given. A pass that yields
    no batch (an empty loader, or an iterator already used up) raises instead of looping forever."""
    n = 0
    while True:
        got = 0
        for batch in loader:
            if n >= steps:
                return
            yield batch
            n += 1
            got += 1
        if got == 0:
            where = "it yielded no batch at all" if n == 0 else f"it ran out after {n} batches"
            raise ValueError(f"the loader cannot supply {steps} steps: {where} (an empty loader, or an iterator or "
                             "generator that was already used up — those can be read only once; pass a list or a "
                             "DataLoader)")


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite during training (the message says at which step)."""


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """:data:`OPTIMIZER`: AdamW with its fused kernel where PyTorch has one for every parameter (floating point, on
    a CPU or a CUDA device), else the default implementation."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def train(model: torch.nn.Module, loader: Iterable, *, epochs: float = 1.0, max_steps: int | None = None,
          lr: float = 5e-5, weight_decay: float = 0.01, warmup: float = 0.1, loss_fn: LossFn | None = None,
          optimizer: torch.optim.Optimizer | None = None, eval_loader: Iterable | None = None,
          eval_every: int | None = None, patience: int | None = None, max_grad_norm: float | None = 1.0,
          after_step: Callable[[torch.nn.Module], None] | None = None, progress: bool = True,
          desc: str = "train") -> History:
    """Train ``model`` in place with AdamW and a linear warm-up/decay schedule.

    Args:
        loader: batches (see module docstring). Its order is the loader's (seed its generator for repeatability).
        epochs: passes over ``loader`` (fractions allowed); ignored if ``max_steps`` is given.
        max_steps: exact number of optimiser steps (the loader is cycled if needed).
        lr: peak learning rate. warmup: fraction of the steps spent warming up linearly from 0.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``; default cross-entropy on the labels.
        optimizer: use this instead of a fresh AdamW (the schedule still applies).
        eval_loader, eval_every: evaluate accuracy every ``eval_every`` steps (default: once at the end).
        patience: stop early after this many evaluations without a better accuracy, and restore the best weights.
        max_grad_norm: clip the global gradient norm (None = no clipping).
        after_step: called after every optimiser step (e.g. to re-apply a pruning mask).

    Returns:
        a :class:`History`: steps, seconds (wall clock of the whole call), losses per step, evaluations and the
        best accuracy.
    """
    check.module(model)
    check.loader(loader)
    epochs = check.positive(epochs, "epochs", "passes over the loader")
    if max_steps is None:
        if not hasattr(loader, "__len__"):
            raise check.BadType(f"epochs needs a loader with a length; {check.show(loader)} has none: pass max_steps "
                                "(the number of optimiser steps) instead")
        max_steps = max(1, math.ceil(epochs * len(loader)))  # type: ignore[arg-type]
    max_steps = check.integer(max_steps, "max_steps", 1)
    if optimizer is None:
        check.real(lr, "lr", 0, None, low_open=True, hint="the peak learning rate, e.g. 5e-5")
        check.real(weight_decay, "weight_decay", 0)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise check.BadType(f"optimizer must be a torch.optim.Optimizer, got {check.show(optimizer)}")
    warmup = check.fraction(warmup, "warmup", hint="the share of the steps spent warming up")
    if loss_fn is not None:
        check.callable_(loss_fn, "loss_fn")
    if after_step is not None:
        check.callable_(after_step, "after_step")
    if eval_loader is not None:
        check.loader(eval_loader, "eval_loader")
    elif patience is not None:
        raise ValueError(f"patience={patience!r} needs an eval_loader to measure the accuracy it waits on")
    eval_every = check.optional_integer(eval_every, "eval_every", 1)
    patience = check.optional_integer(patience, "patience", 1)
    max_grad_norm = check.optional_real(max_grad_norm, "max_grad_norm", 0, None, low_open=True)
    loss_fn = loss_fn or cross_entropy_loss
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer or adamw(params, lr, weight_decay)
    warm = int(warmup * max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (max_steps - s) / max(1, max_steps - warm)))
    eval_every = eval_every or max_steps
    history = History()
    best_state, bad_evals = None, 0
    start = time.perf_counter()
    model.train()
    bar = _bar(_cycle(loader, max_steps), progress, total=max_steps, desc=desc)
    for step, batch in enumerate(bar, start=1):
        loss = loss_fn(model, to_device(batch, device))
        if not torch.is_tensor(loss) or loss.numel() != 1 or not loss.requires_grad:
            raise check.BadType(f"loss_fn must return a one-element tensor that requires grad, got {check.show(loss)}"
                                + ("" if not torch.is_tensor(loss) or loss.requires_grad else " without a gradient"))
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            raise TrainingDiverged(f"the loss is {value} at step {step} of {max_steps}: training diverged (try a "
                                   f"smaller lr than {lr:g}, or check the data for NaN/inf); the model holds the "
                                   f"weights after step {step - 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step(model)
        history.losses.append(value)
        history.steps = step
        bar.set_postfix(loss=f"{value:.3f}")
        if eval_loader is not None and (step % eval_every == 0 or step == max_steps):
            metrics = evaluate(model, eval_loader, progress=False)
            history.evals.append(Evaluation(metrics.accuracy, metrics.loss, metrics.examples, step))
            model.train()
            best = history.best_accuracy
            if best is None or metrics.accuracy > best:
                history.best_accuracy = metrics.accuracy
                bad_evals = 0
                if patience is not None:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                bad_evals += 1
                if patience is not None and bad_evals >= patience:
                    break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Iterable, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits (N, C) and labels (N,) of a loader, on the CPU, with the model in eval mode."""
    check.module(model)
    check.loader(loader)
    model.eval()
    device = model_device(model)
    all_logits, all_labels = [], []
    for batch in _bar(loader, progress, desc="eval"):
        logits, labels = logits_and_labels(model, to_device(batch, device))
        if not torch.is_tensor(logits):
            raise check.BadType(f"the model must return logits (a tensor, or an output with .logits), got "
                                f"{check.show(logits)}")
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu())
    if not all_logits:
        raise ValueError("the loader yielded no batch (empty, or an iterator that was already used up)")
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate(model: torch.nn.Module, loader: Iterable, progress: bool = True) -> Metrics:
    """The :class:`Metrics` of ``model`` on ``loader``: accuracy (fraction in [0, 1]), mean cross-entropy loss and
    example count.

    Example: ``lu.training.evaluate(model, loaders["test"]).accuracy``."""
    logits, labels = predict(model, loader, progress=progress)
    if len(labels) == 0:
        raise ValueError("evaluate() got an empty loader")
    return scores(logits, labels)


def scores(logits: torch.Tensor, labels: torch.Tensor) -> Metrics:
    """The :class:`Metrics` of ``logits`` (N, C) against ``labels`` (N,)."""
    check_classification(logits, labels)
    return Metrics(accuracy=(logits.argmax(-1) == labels).float().mean().item(),
                   loss=F.cross_entropy(logits, labels).item(), examples=len(labels))
