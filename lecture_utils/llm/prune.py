"""One-shot pruning of a language model: magnitude and Wanda masks, unstructured or N:M (2:4)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import validate
from .calibration import InputStats
from .model import decoder_linears

__all__ = ["score_mask", "wanda_score", "wanda_mask", "magnitude_mask", "prune_model_"]


def _n_m_and_sparsity(n_m: tuple[int, int] | None, sparsity: float | None) -> tuple[tuple[int, int] | None, float]:
    """``n_m`` checked, and the sparsity it implies (1 − n/m) or ``sparsity`` (default 0.5); a sparsity given with
    ``n_m`` must agree with it."""
    if n_m is None:
        return None, validate.fraction(0.5 if sparsity is None else sparsity, "sparsity")
    if isinstance(n_m, (str, bytes)) or not isinstance(n_m, (tuple, list)) or len(n_m) != 2:
        raise validate.BadType(f"n_m must be a pair (n, m) such as (2, 4), got {validate.show(n_m)}")
    m = validate.integer(n_m[1], "n_m's m", 1)
    n = validate.integer(n_m[0], "n_m's n", 1, m, hint="keep n of every m, 0 < n <= m")
    implied = 1 - n / m
    if sparsity is not None:
        given = validate.fraction(sparsity, "sparsity")
        if abs(given - implied) > 1e-9:
            raise ValueError(f"sparsity={given:g} disagrees with n_m=({n}, {m}), which removes {implied:.0%} of the "
                             f"weights: pass sparsity={implied:g} or leave sparsity out (None) with n_m")
    return (n, m), implied


def score_mask(score: torch.Tensor, sparsity: float | None = None, per_row: bool = True,
               n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean keep-mask removing the lowest ``score`` entries of a matrix ``(out, in)``.

    ``per_row``: remove ``round(sparsity × in)`` in every row (Wanda's comparison group) instead of
    ``round(sparsity × numel)`` over the whole matrix; ``sparsity`` defaults to 0.5. ``n_m = (n, m)``: keep the ``n``
    best of every ``m`` consecutive inputs of a row instead (2:4 = ``(2, 4)``); a ``sparsity`` given with it must
    equal 1 − n/m. Scores must be finite (a NaN cannot be ranked).
    """
    validate.tensor(score, "score", dims=(2,), non_empty=True)
    per_row = validate.flag(per_row, "per_row")
    n_m, sparsity = _n_m_and_sparsity(n_m, sparsity)
    if n_m is not None:
        n, m = n_m
        if score.shape[1] % m:
            raise ValueError(f"the row length {score.shape[1]} is not a multiple of m={m}")
        groups = score.reshape(-1, m)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter(1, groups.topk(n, dim=1).indices, True)
        return keep.reshape(score.shape)
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
    validate.tensor(w, "w", floating=True, dims=(2,), non_empty=True)
    validate.tensor(x_norm, "x_norm", floating=True, dims=(1,))
    if x_norm.shape != (w.shape[1],):
        raise ValueError(f"x_norm must have one entry per input ({w.shape[1]}), got {tuple(x_norm.shape)}")
    if bool((x_norm < 0).any()):
        raise ValueError(f"x_norm holds L2 norms, which are >= 0, but its smallest entry is {x_norm.min().item():g}: "
                         "pass the square root of stats.sq_norm")
    return w.abs() * x_norm.to(w.dtype).unsqueeze(0)


def wanda_mask(w: torch.Tensor, x_norm: torch.Tensor, sparsity: float | None = None,
               n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Wanda (Sun et al. 2024): keep-mask from |W| × ‖X‖, compared within each output row (or N:M groups)."""
    return score_mask(wanda_score(w, x_norm), sparsity, per_row=True, n_m=n_m)


def magnitude_mask(w: torch.Tensor, sparsity: float | None = None, n_m: tuple[int, int] | None = None
                   ) -> torch.Tensor:
    """Magnitude pruning's keep-mask: the smallest |W| of the whole matrix go (or the smallest in N:M groups)."""
    validate.tensor(w, "w", floating=True, dims=(2,), non_empty=True)
    return score_mask(w.abs(), sparsity, per_row=False, n_m=n_m)


def prune_model_(model: nn.Module, sparsity: float | None = None, method: str = "magnitude",
                 n_m: tuple[int, int] | None = None, stats: dict[str, InputStats] | None = None,
                 mask_fn: Callable | None = None) -> nn.Module:
    """Zero weights of every decoder linear in place, at ``sparsity`` (default 0.5) or N:M, by ``method``
    "magnitude" or "wanda" (needs ``stats`` from :func:`calibrate`) — the amount first, then the method, as
    :func:`lecture_utils.prune.prune_model_` takes them. ``mask_fn(w, x_norm, sparsity)`` replaces
    :func:`wanda_mask` for unstructured Wanda (given with magnitude or N:M, it is refused); it must return a
    keep-mask of ``w``'s shape. Returns ``model``."""
    validate.choice(method, "method", ("magnitude", "wanda"))
    n_m, sparsity = _n_m_and_sparsity(n_m, sparsity)
    if mask_fn is not None:
        validate.callable_(mask_fn, "mask_fn")
        if method != "wanda" or n_m is not None:  # a function that would not be called is a misread, not a no-op
            raise ValueError(f"mask_fn replaces unstructured Wanda's mask only; got method={method!r}, n_m={n_m!r}: "
                             "pass mask_fn=None there (magnitude and N:M use the built-in masks)")
    linears = decoder_linears(model)
    if method == "wanda":
        if not stats:
            raise ValueError("Wanda needs calibration statistics: pass stats=calibrate(model, windows)")
        validate.mapping(stats, "stats", what="a dict from calibrate(model, windows)")
        missing = [n for n in linears if n not in stats]
        if missing:
            raise ValueError(f"stats has no entry for {missing[0]!r} ({len(missing)} of the model's "
                             f"{len(linears)} decoder linears missing): run calibrate() on this model")
    masks = {}
    for name, m in linears.items():  # every mask first: a bad one leaves the model as it was
        if method == "wanda":
            x_norm = stats[name].sq_norm.sqrt()
            validate.tensor(x_norm, f"stats[{name!r}].sq_norm", floating=True)
            if mask_fn is not None:
                masks[name] = validate.result(mask_fn(m.weight.detach().clone(), x_norm.clone(), sparsity), mask_fn,
                                              m.weight.shape, what=f"a keep-mask for {name}", mask=True)
            else:
                masks[name] = wanda_mask(m.weight, x_norm, sparsity, n_m)
        else:
            masks[name] = magnitude_mask(m.weight, sparsity, n_m)
    with torch.no_grad():
        for name, m in linears.items():
            m.weight.mul_(masks[name])
    return model
