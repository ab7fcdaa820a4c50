"""One-shot pruning of a language model: magnitude and Wanda masks, unstructured or N:M (2:4)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import validate
from .calibration import InputStats
from .model import decoder_linears

__all__ = ["score_mask", "wanda_score", "wanda_mask", "magnitude_mask", "prune_model"]


def score_mask(score: torch.Tensor, sparsity: float = 0.5, per_row: bool = True,
               n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean keep-mask removing the lowest ``score`` entries of a matrix ``(out, in)``.

    ``per_row``: remove ``round(sparsity × in)`` in every row (Wanda's comparison group) instead of
    ``round(sparsity × numel)`` over the whole matrix. ``n_m = (n, m)``: keep the ``n`` best of every ``m``
    consecutive inputs of a row instead (2:4 = ``(2, 4)``); ``sparsity`` is then ignored.
    """
    if not torch.is_tensor(score) or score.dim() != 2:
        raise ValueError(f"score must be a 2-D tensor, got {tuple(getattr(score, 'shape', ()))}")
    if n_m is not None:
        n, m = n_m
        if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
            raise ValueError(f"n_m must be (n, m) with 0 < n <= m, got {n_m!r}")
        if score.shape[1] % m:
            raise ValueError(f"the row length {score.shape[1]} is not a multiple of m={m}")
        groups = score.reshape(-1, m)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter(1, groups.topk(n, dim=1).indices, True)
        return keep.reshape(score.shape)
    sparsity = validate.fraction(sparsity, "sparsity")
    rows = score if per_row else score.reshape(1, -1)
    return _drop_lowest(rows, round(sparsity * rows.shape[1])).view_as(score)


def _drop_lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of a 2-D ``score``: False for the ``k`` lowest entries of every row, ties at the threshold broken
    by position (the earlier go). A k-th-value threshold, several times faster than ``topk`` for large k."""
    if k == 0:
        return torch.ones_like(score, dtype=torch.bool)
    threshold = score.kthvalue(k, dim=1, keepdim=True).values
    below, tie = score < threshold, score == threshold
    need = k - below.sum(dim=1, keepdim=True)
    return ~(below | (tie & (tie.cumsum(dim=1) <= need)))


def wanda_score(w: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
    """Wanda's importance |W_ij| × ‖X_j‖₂ (``x_norm``: the L2 norm of each input feature over calibration tokens)."""
    if x_norm.shape != (w.shape[1],):
        raise ValueError(f"x_norm must have one entry per input ({w.shape[1]}), got {tuple(x_norm.shape)}")
    return w.abs() * x_norm.to(w.dtype).unsqueeze(0)


def wanda_mask(w: torch.Tensor, x_norm: torch.Tensor, sparsity: float = 0.5,
               n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Wanda (Sun et al. 2024): keep-mask from |W| × ‖X‖, compared within each output row (or N:M groups)."""
    return score_mask(wanda_score(w, x_norm), sparsity, per_row=True, n_m=n_m)


def magnitude_mask(w: torch.Tensor, sparsity: float = 0.5, n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Magnitude pruning's keep-mask: the smallest |W| of the whole matrix go (or the smallest in N:M groups)."""
    return score_mask(w.abs(), sparsity, per_row=False, n_m=n_m)


def prune_model(model: nn.Module, method: str, sparsity: float = 0.5, n_m: tuple[int, int] | None = None,
                stats: dict[str, InputStats] | None = None, mask_fn: Callable | None = None) -> nn.Module:
    """Zero weights of every decoder linear in place: ``method`` "magnitude" or "wanda" (needs ``stats`` from
    :func:`calibrate`). ``mask_fn(w, x_norm, sparsity)`` replaces :func:`wanda_mask` for unstructured Wanda.
    Returns ``model``."""
    if method not in ("magnitude", "wanda"):
        raise ValueError(f"method must be 'magnitude' or 'wanda', got {method!r}")
    if method == "wanda" and not stats:
        raise ValueError("Wanda needs calibration statistics: pass stats=calibrate(model, windows)")
    with torch.no_grad():
        for name, m in decoder_linears(model).items():
            if method == "wanda" and mask_fn is not None and n_m is None:
                mask = mask_fn(m.weight, stats[name].sq_norm.sqrt(), sparsity).bool()
            elif method == "wanda":
                mask = wanda_mask(m.weight, stats[name].sq_norm.sqrt(), sparsity, n_m)
            else:
                mask = magnitude_mask(m.weight, sparsity, n_m)
            m.weight.mul_(mask)
    return model
