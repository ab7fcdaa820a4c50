"""Lesson 08: low-rank factorisation of Linear layers (truncated SVD) and cross-layer weight sharing (ALBERT).

Low rank. A weight ``W`` of shape ``(out, in)`` has the singular value decomposition ``W = U diag(S) Vᵀ``. Keeping
the ``r`` largest singular values gives the best rank-``r`` approximation in the Frobenius norm (Eckart–Young):
``W ≈ A @ B`` with ``A = U[:, :r] · √S[:r]`` of shape ``(out, r)`` and ``B = √S[:r] · Vᵀ[:r]`` of shape ``(r, in)``.
One ``nn.Linear(in, out)`` (``out·in`` weights) becomes two, ``in → r`` (no bias) then ``r → out`` (with the
bias): ``r·(in + out)`` weights, fewer only when ``r < out·in / (in + out)`` — for a square 384 × 384 matrix,
below rank 192. Fewer weights also means fewer multiply-adds, so a low-rank layer is smaller *and* faster.

Weight sharing. ALBERT (Lan et al. 2020) uses one set of transformer-layer weights at every depth. Here
:func:`share_layers` builds a model whose layer list holds the *same module object* at several positions: the
parameters are stored (and trained) once, the computation still runs once per position. Counting parameters with
``lu.measure.count_parameters`` and saving with ``torch.save`` (``lu.measure.size_mb``) both see the shared tensors
once, so both report the unique size.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from . import validate as check
from .env import torch_threads
from .models import replace_linears_
from .surgery import check_layer_indices, encoder_layers, set_encoder_layers

__all__ = ["break_even_rank", "low_rank_factors", "retained_energy", "LowRankLinear", "factorize_linears",
           "encoder_linear_weights", "low_rank_layers", "share_layers", "shared_layer_map", "unique_layers"]


def _check_rank(rank: int, out_features: int, in_features: int) -> int:
    out_features, in_features = _check_features(out_features, in_features)
    full = min(out_features, in_features)
    return check.integer(rank, "rank", 1, full, maximum_text=f"min(out, in) = {full}",
                         hint=f"for a {out_features} × {in_features} weight")


def _check_features(out_features: int, in_features: int) -> tuple[int, int]:
    return check.integer(out_features, "out_features", 1), check.integer(in_features, "in_features", 1)


def _check_weight(weight: torch.Tensor, what: str) -> torch.Tensor:
    check.tensor(weight, "weight", non_empty=True)
    if weight.dim() != 2:
        raise ValueError(f"{what} needs a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    if weight.dtype == torch.bool or weight.is_complex():
        raise check.BadType(f"{what} needs a real-valued weight, got dtype {weight.dtype}")
    return weight


def break_even_rank(out_features: int, in_features: int) -> float:
    """The rank at which a factorised layer has as many weights as the dense one, ``out·in / (in + out)``; a
    factorisation saves parameters only below it (192 for 384 × 384, about 307 for 1536 × 384).

    Examples:
        >>> break_even_rank(384, 384), break_even_rank(1536, 384)
        (192.0, 307.2)
    """
    out_features, in_features = _check_features(out_features, in_features)
    return out_features * in_features / (out_features + in_features)


@torch.no_grad()
def low_rank_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-``rank`` factors of a 2-D ``weight`` (out, in) by truncated SVD: ``(A (out, rank),
    B (rank, in))`` with ``A @ B`` the closest rank-``rank`` matrix to ``weight``; the singular values are split
    evenly (√S on each side). Computed in float32 on one CPU thread (LAPACK's SVD of a matrix this small is
    several times faster on one thread than on two busy ones), returned in ``weight``'s dtype — or float32 for an
    integer weight (its factors are not whole numbers).

    Examples:
        >>> w = torch.outer(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, -1.0]))  # a 3 × 2 matrix of rank 1
        >>> a, b = low_rank_factors(w, 1)
        >>> tuple(a.shape), tuple(b.shape)
        ((3, 1), (1, 2))
        >>> torch.allclose(a @ b, w, atol=1e-6)  # rank 1 is enough to rebuild it
        True
    """
    _check_weight(weight, "low_rank_factors")
    rank = _check_rank(rank, *weight.shape)
    with torch_threads(1):
        u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    root = s[:rank].sqrt()
    dtype = weight.dtype if weight.is_floating_point() else torch.float32
    return (u[:, :rank] * root).to(dtype), (root[:, None] * vh[:rank]).to(dtype)


@torch.no_grad()
def retained_energy(weight: torch.Tensor, rank: int) -> float:
    """Share of the squared Frobenius norm ("energy") of ``weight`` that its rank-``rank`` approximation keeps:
    ``sum(S[:rank]²) / sum(S²)``, in [0, 1]. An all-zero weight has no energy to keep: a ValueError.

    Examples:
        >>> round(retained_energy(torch.diag(torch.tensor([3.0, 1.0])), 1), 4)  # 3² of 3² + 1²
        0.9
    """
    _check_weight(weight, "retained_energy")
    rank = _check_rank(rank, *weight.shape)
    if not weight.detach().any():
        raise ValueError("weight is all zeros: it has no energy, so no share of it can be kept")
    with torch_threads(1):
        s2 = torch.linalg.svdvals(weight.detach().float()).pow(2)
    return (s2[:rank].sum() / s2.sum().clamp(min=torch.finfo(torch.float32).tiny)).item()


class LowRankLinear(nn.Module):
    """``nn.Linear(in, out)`` as two layers of rank ``r``: ``first`` (in → r, no bias), then ``second``
    (r → out, with the original bias). Input ``(..., in)``, output ``(..., out)``. ``in_features``,
    ``out_features`` and ``rank`` are kept as attributes."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        rank = _check_rank(rank, out_features, in_features)
        out_features, in_features = _check_features(out_features, in_features)
        check.flag(bias, "bias")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """The rank-``rank`` SVD approximation of ``linear`` (same device and dtype; the bias is copied)."""
        if not isinstance(linear, nn.Linear):
            raise check.BadType(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        a, b = low_rank_factors(linear.weight, rank)
        with torch.no_grad():
            layer.first.weight.copy_(b)
            layer.second.weight.copy_(a)
            if linear.bias is not None:
                layer.second.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def factorize_linears(model: nn.Module, rank: int, include: Sequence[str] = ("encoder",),
                      only_if_smaller: bool = True) -> nn.Module:
    """A copy of ``model`` in which every ``nn.Linear`` whose dotted name has a part in ``include`` (default: the
    transformer layers, ``encoder``; the embeddings, pooler and classifier stay as they are) is replaced by its
    rank-``rank`` :class:`LowRankLinear`. With ``only_if_smaller`` (default) a layer is replaced only where the
    factorisation has fewer weights (``rank`` below :func:`break_even_rank`); otherwise every included layer is
    replaced and ``rank`` must not exceed any of their ``min(out, in)``. Raises if no layer is replaced."""
    rank = check.integer(rank, "rank", 1)
    check.module(model)
    include = check.strings(include, "include")
    check.flag(only_if_smaller, "only_if_smaller")
    model = copy.deepcopy(model)

    def factorised(name: str, child: nn.Linear) -> nn.Module | None:
        if type(child) is not nn.Linear or not set(include) & set(name.split(".")):
            return None
        if only_if_smaller and rank >= break_even_rank(child.out_features, child.in_features):
            return None
        return LowRankLinear.from_linear(child, rank)

    if replace_linears_(model, factorised) == 0:
        why = f" with rank {rank} below its break-even rank out·in/(in + out)" if only_if_smaller else ""
        raise ValueError(f"no nn.Linear was factorised: none matches include={tuple(include)}{why}")
    return model


def encoder_linear_weights(model: nn.Module) -> int:
    """Weights (no biases) of the ``nn.Linear`` layers inside the encoder — a factorised layer counts its two thin
    ones — i.e. what :func:`factorize_linears` changes."""
    return sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and ".encoder." in f".{n}.")


def low_rank_layers(model: nn.Module) -> dict[str, LowRankLinear]:
    """The model's :class:`LowRankLinear` layers by module name."""
    check.module(model)
    return {name: m for name, m in model.named_modules() if isinstance(m, LowRankLinear)}


# --------------------------------------------------------------------------------------------------------------
# Cross-layer weight sharing
# --------------------------------------------------------------------------------------------------------------

def share_layers(model: nn.Module, sources: Sequence[int]) -> nn.Module:
    """A copy of a BERT-style ``model`` whose transformer layer at position ``i`` is the original layer
    ``sources[i]`` — the same module object wherever an index repeats, so those positions share every parameter.
    ``[0] * 6`` is ALBERT's all-shared model with 6 layers computed from layer 0's weights; ``[0, 0, 2, 2, 4, 4]``
    shares within pairs. The depth is ``len(sources)``; each index must name a layer of ``model``."""
    sources = check_layer_indices(sources, len(encoder_layers(model)), "sources", repeats=True)
    out = copy.deepcopy(model)
    old = encoder_layers(out)
    new = nn.ModuleList([old[s] for s in sources])
    for position, layer in enumerate(new):
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx") and sources.index(sources[position]) == position:
            attention.layer_idx = position  # a shared layer keeps the index of its first position
    set_encoder_layers(out, new)
    return out


def shared_layer_map(model: nn.Module) -> list[int]:
    """For each transformer-layer position, the first position that holds the same module object:
    ``[0, 1, 2, ...]`` for an ordinary model, ``[0, 0, 0, ...]`` for an all-shared one."""
    layers = list(encoder_layers(model))
    return [next(j for j, other in enumerate(layers) if other is layer) for layer in layers]


def unique_layers(model: nn.Module) -> int:
    """Number of distinct transformer-layer modules (the depth of an unshared model)."""
    return len(set(shared_layer_map(model)))
