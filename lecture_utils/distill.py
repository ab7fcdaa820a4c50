"""Knowledge distillation: soft targets, Hinton's loss, DistilBERT- and TinyBERT-style students and losses.

Shapes: logits ``(B, C)``; hidden states ``(B, L, H)``; attention scores ``(B, heads, L, L)``; attention masks
``(B, L)`` with 1 for real tokens. Every loss returns a scalar tensor averaged over the batch (and over real tokens
where a mask is given). Training reuses :func:`lecture_utils.training.train` through :func:`distillation_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from . import validate as check
from .surgery import check_layer_indices, encoder_layers, keep_layers
from .training import TEACHER_LOGITS, model_device, model_inputs, to_device

__all__ = ["soft_targets", "kd_loss", "hidden_cosine_loss", "hidden_mse_loss", "attention_score_loss",
           "attention_scores", "uniform_layer_map", "student_from_teacher", "random_student", "add_projections",
           "with_teacher_logits", "distillation_loss"]


def soft_targets(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)``: T = 1 gives the usual probabilities, larger T flattens them and shows how the
    model ranks the wrong classes ("dark knowledge")."""
    temperature = check.positive(temperature, "temperature")
    check.tensor(logits, "logits", floating=True, non_empty=True)
    if logits.isnan().any():
        raise ValueError("logits contain NaN")
    return F.softmax(logits / temperature, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None,
            temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """Hinton, Vinyals and Dean (2015)'s distillation loss:
    ``alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 - alpha) · CE(student, labels)``.

    The KL term is averaged over the batch ("batchmean", the mathematically correct mean of KL per example) and
    multiplied by T² so that its gradients keep their size as T changes. ``alpha=1`` (or ``labels=None``) is pure
    distillation; ``alpha=0`` is ordinary fine-tuning on hard labels.
    """
    alpha = check.fraction(alpha, "alpha", high_open=False, hint="the weight of the soft loss")
    temperature = check.positive(temperature, "temperature")
    check.tensor(student_logits, "student_logits", floating=True, dims=(2,), non_empty=True)
    check.tensor(teacher_logits, "teacher_logits", floating=True, dims=(2,), non_empty=True)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    if labels is not None and alpha < 1:
        from .training import check_classification

        check_classification(student_logits, labels)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits.detach() / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature**2
    if labels is None or alpha == 1:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def _check_mask(attention_mask: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    """An attention mask must be (B, L) like the tokens it marks, and mark at least one real token."""
    if attention_mask is None:
        return
    check.tensor(attention_mask, "attention_mask", dims=(2,))
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(f"attention_mask must have shape (B, L) = {tuple(shape)}, got {tuple(attention_mask.shape)}")
    if not attention_mask.bool().any():
        raise ValueError("attention_mask marks no real token (all zeros): there is nothing to average over")


def _pair(student: torch.Tensor, teacher: torch.Tensor, what: str, dims: int) -> None:
    check.tensor(student, f"student_{what}", floating=True, dims=(dims,), non_empty=True)
    check.tensor(teacher, f"teacher_{what}", floating=True, dims=(dims,), non_empty=True)


def _token_mean(per_token: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return per_token.mean()
    _check_mask(attention_mask, tuple(per_token.shape))
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def hidden_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """DistilBERT's cosine loss: mean over real tokens of ``1 - cos(student vector, teacher vector)``.
    Needs equal widths (a DistilBERT student keeps the teacher's hidden size)."""
    _pair(student_hidden, teacher_hidden, "hidden", 3)
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden states differ in shape {tuple(student_hidden.shape)} vs "
                         f"{tuple(teacher_hidden.shape)}: the cosine loss needs the same width")
    return _token_mean(1 - F.cosine_similarity(student_hidden, teacher_hidden.detach(), dim=-1), attention_mask)


def hidden_mse_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                    projection: nn.Module | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """TinyBERT's hidden-state loss: MSE between ``projection(student)`` and the teacher, averaged over real tokens
    and features. ``projection`` (a learned ``nn.Linear(student width, teacher width)``) is needed when the widths
    differ."""
    _pair(student_hidden, teacher_hidden, "hidden", 3)
    if projection is not None and not callable(projection):
        raise check.BadType(f"projection must be an nn.Linear (or None), got {check.show(projection)}")
    s = projection(student_hidden) if projection is not None else student_hidden
    if s.shape != teacher_hidden.shape:
        raise ValueError(f"after projection the student's hidden states are {tuple(s.shape)}, the teacher's "
                         f"{tuple(teacher_hidden.shape)}: pass a projection to the teacher's width")
    return _token_mean((s - teacher_hidden.detach()).pow(2).mean(dim=-1), attention_mask)


def attention_score_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                         attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """TinyBERT's attention loss: MSE between the *unnormalised* attention scores ``QKᵀ/√d`` of mapped layers,
    ``(B, heads, L, L)``, counted only between real tokens (padding columns hold huge negative values otherwise)."""
    _pair(student_scores, teacher_scores, "scores", 4)
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"attention scores differ in shape {tuple(student_scores.shape)} vs "
                         f"{tuple(teacher_scores.shape)} (same number of heads and tokens needed)")
    err = (student_scores - teacher_scores.detach()).pow(2)
    if attention_mask is None:
        return err.mean()
    _check_mask(attention_mask, (err.shape[0], err.shape[-1]))
    pair = (attention_mask[:, None, :, None] * attention_mask[:, None, None, :]).to(err.dtype).expand_as(err)
    return (err * pair).sum() / pair.sum().clamp(min=1)


def attention_scores(model: nn.Module, inputs: Mapping[str, torch.Tensor],
                     layers: list[int] | None = None) -> tuple[object, dict[int, torch.Tensor]]:
    """Run ``model`` on ``inputs`` and capture the unnormalised attention scores ``QKᵀ/√d`` of ``layers``
    (default all), as ``{layer: (B, heads, L, L)}``, along with the model's output (with hidden states).

    The scores are computed from the query and key projections captured by forward hooks, so they are the same on
    every attention implementation. (``output_attentions=True`` returns the *softmax-normalised* weights, and only
    on the "eager" path: fused kernels such as SDPA never materialise the L × L matrix.)
    """
    all_layers = encoder_layers(model)
    check.mapping(inputs, "inputs", non_empty=True, what="a batch dict with input_ids and attention_mask")
    layers = list(range(len(all_layers))) if layers is None else check_layer_indices(layers, len(all_layers))
    captured: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for i in layers:
        attn = all_layers[i].attention.self
        for part in ("query", "key"):
            hooks.append(getattr(attn, part).register_forward_hook(
                lambda _m, _inp, out, i=i, part=part: captured.__setitem__((i, part), out)))
    try:
        output = model(**model_inputs(inputs), output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    scores = {}
    for i in layers:
        attn = all_layers[i].attention.self
        heads, size = attn.num_attention_heads, attn.attention_head_size
        q, k = (captured[(i, p)].view(*captured[(i, p)].shape[:2], heads, size).transpose(1, 2)
                for p in ("query", "key"))
        scores[i] = q @ k.transpose(-1, -2) / math.sqrt(size)
    return output, scores


def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """TinyBERT's uniform mapping: student layer m (0-based) learns from teacher layer ``(m + 1) · n_teacher /
    n_student - 1``, i.e. every k-th teacher layer ending with the last (3 of 6 → teacher layers 1, 3, 5)."""
    n_student = check.integer(n_student, "n_student", 1)
    n_teacher = check.integer(n_teacher, "n_teacher", 1)
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"need 1 <= student layers <= teacher layers, got {n_student} and {n_teacher}")
    if n_teacher % n_student:
        raise ValueError(f"uniform mapping needs teacher layers ({n_teacher}) divisible by student layers "
                         f"({n_student})")
    step = n_teacher // n_student
    return [(m + 1) * step - 1 for m in range(n_student)]


def student_from_teacher(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A student that copies the teacher's embeddings, head and the transformer ``layers`` (DistilBERT's
    initialisation: ``[0, 2, 4]`` of 6). Validated: indices in range, no repeats, at least one layer."""
    return keep_layers(teacher, layers).train()


def random_student(teacher: nn.Module, n_layers: int, seed: int = 0) -> nn.Module:
    """A student with the teacher's architecture but ``n_layers`` layers and *random* weights (the control)."""
    n = len(encoder_layers(teacher))
    n_layers = check.integer(n_layers, "n_layers", 1, n)
    seed = check.integer(seed, "seed", 0)
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = n_layers
    torch.manual_seed(seed)
    return type(teacher)(config).to(next(teacher.parameters()).device).train()


def add_projections(student: nn.Module, teacher_width: int) -> nn.ModuleList:
    """Give a narrower student one learned ``nn.Linear(student width, teacher width)`` per layer, registered on the
    student as ``distill_projections`` so that ``train()``'s optimiser updates them with the student (TinyBERT's
    W_h). :func:`distillation_loss` uses them automatically."""
    encoder_layers(student)
    teacher_width = check.integer(teacher_width, "teacher_width", 1)
    width = getattr(getattr(student, "config", None), "hidden_size", None)
    if not isinstance(width, int):
        raise check.BadType(f"student must be a Hugging Face model with config.hidden_size, got {check.show(student)}")
    projections = nn.ModuleList(nn.Linear(width, teacher_width) for _ in encoder_layers(student))
    student.add_module("distill_projections", projections.to(next(student.parameters()).device))
    return projections


@torch.no_grad()
def with_teacher_logits(teacher: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]]) -> list[dict]:
    """Copies of the batches of ``loader`` (dicts with the model's inputs, e.g. a fixed stream from a sentiment
    loader), each with the teacher's logits (batch, classes) under ``"teacher_logits"``, computed once with the
    teacher in eval mode. :func:`distillation_loss` then reads them instead of running the teacher at every step —
    the same numbers (an eval-mode teacher is deterministic), for the teacher's cost paid once however many students
    train on the stream. The model never sees that entry (:data:`lecture_utils.training.TARGET_KEYS`).

    Example:
        >>> stream = lu.distill.with_teacher_logits(teacher, stream)  # doctest: +SKIP
        >>> lu.training.train(student, stream, loss_fn=lu.distill.distillation_loss(teacher))  # doctest: +SKIP
    """
    check.module(teacher, "teacher")
    teacher.eval()
    device = model_device(teacher)
    out = []
    for i, batch in enumerate(loader):
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise check.BadType(f"batch {i} of loader must be a dict batch with 'input_ids' (from a sentiment "
                                f"loader), got {check.show(batch)}")
        logits = teacher(**model_inputs(to_device(batch, device))).logits.float().cpu()
        out.append({**batch, TEACHER_LOGITS: logits})
    if not out:
        raise ValueError("loader is empty: with_teacher_logits needs at least one batch")
    return out


def distillation_loss(teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5,
                      layer_map: list[int] | None = None, cosine_weight: float = 0.0, hidden_weight: float = 0.0,
                      attention_weight: float = 0.0):
    """A ``loss_fn(student, batch)`` for :func:`lecture_utils.training.train` that combines Hinton's loss with
    optional intermediate losses on mapped layers: student layer m ↔ teacher layer ``layer_map[m]`` (default
    :func:`uniform_layer_map`). Weights of 0 switch a term off. The teacher runs without gradients. A student
    narrower than the teacher needs :func:`add_projections` for the hidden-state loss. A batch that carries the
    teacher's logits already (:func:`with_teacher_logits`) is not run through the teacher again, unless an
    intermediate loss needs the teacher's hidden states or attention.
    """
    n_teacher = len(encoder_layers(teacher))
    temperature = check.positive(temperature, "temperature")
    alpha = check.fraction(alpha, "alpha", high_open=False, hint="the weight of the soft loss")
    cosine_weight, hidden_weight, attention_weight = (check.real(w, name, 0) for w, name in (
        (cosine_weight, "cosine_weight"), (hidden_weight, "hidden_weight"), (attention_weight, "attention_weight")))
    if layer_map is not None:
        layer_map = check_layer_indices(layer_map, n_teacher, "layer_map", repeats=True)
    teacher.eval()
    intermediate = cosine_weight > 0 or hidden_weight > 0 or attention_weight > 0

    def loss_fn(student: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        mask = batch.get("attention_mask")
        if not intermediate and TEACHER_LOGITS in batch:
            s_out = student(**model_inputs(batch))
            return kd_loss(s_out.logits, batch[TEACHER_LOGITS], batch.get("labels"), temperature, alpha)
        with torch.no_grad():
            if attention_weight > 0:
                t_out, t_scores = attention_scores(teacher, batch)
            else:
                t_out = teacher(**model_inputs(batch), output_hidden_states=intermediate)
        if attention_weight > 0:
            s_out, s_scores = attention_scores(student, batch)
        else:
            s_out = student(**model_inputs(batch), output_hidden_states=intermediate)
        loss = kd_loss(s_out.logits, t_out.logits, batch.get("labels"), temperature, alpha)
        if not intermediate:
            return loss
        n_student = len(encoder_layers(student))
        mapping = layer_map or uniform_layer_map(n_student, n_teacher)
        if len(mapping) != n_student:
            raise ValueError(f"layer_map has {len(mapping)} entries but the student has {n_student} layers: give "
                             "one teacher layer per student layer")
        for m, t in enumerate(mapping):
            s_h, t_h = s_out.hidden_states[m + 1], t_out.hidden_states[t + 1]  # [0] is the embeddings' output
            if cosine_weight > 0:
                loss = loss + cosine_weight * hidden_cosine_loss(s_h, t_h, mask)
            if hidden_weight > 0:
                projections = getattr(student, "distill_projections", None)
                proj = projections[m] if projections is not None else None
                loss = loss + hidden_weight * hidden_mse_loss(s_h, t_h, proj, mask)
            if attention_weight > 0:
                loss = loss + attention_weight * attention_score_loss(s_scores[m], t_scores[t], mask)
        return loss

    return loss_fn
