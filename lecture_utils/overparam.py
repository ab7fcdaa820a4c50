"""Lesson 02: over-parameterisation. XOR trained from many seeds at many widths, and measures of redundancy in a
trained network (effective rank of a weight matrix, similarity of neighbouring layers' representations).

The XOR sweep trains every seed of one width *at once*: :class:`ParallelMLP` holds ``S`` independent 2-h-1
networks as stacked tensors, and the loss is the sum of their mean losses, so each network gets exactly the
gradient it would get alone and Adam (an element-wise optimiser) treats each one independently. It is the same
:func:`lecture_utils.training.train` loop every lesson uses, just with ``S`` networks inside one module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import validate as check
from .env import seed_everything, torch_threads
from .training import train

__all__ = ["XOR_X", "XOR_Y", "xor_data", "ParallelMLP", "parallel_bce_loss", "xor_success", "train_xor",
           "wilson_interval", "xor_sweep", "singular_values", "effective_rank", "layer_similarity", "kurtosis",
           "gaussian_mixture_kurtosis"]

XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([0.0, 1.0, 1.0, 0.0])


def xor_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The four XOR points: inputs (4, 2) in {0, 1} and targets (4,) as floats 0/1 (copies, safe to modify)."""
    return XOR_X.clone(), XOR_Y.clone()


class ParallelMLP(nn.Module):
    """``S`` independent networks ``in -> width (tanh) -> 1``, one per seed, evaluated together.

    Network ``i`` starts exactly as ``nn.Linear(in, width), nn.Linear(width, 1)`` would after
    ``lu.seed_everything(seeds[i])`` (PyTorch's default initialisation). ``forward(x)`` maps inputs (N, in) to
    logits (S, N).
    """

    def __init__(self, width: int, seeds: Sequence[int], in_features: int = 2):
        super().__init__()
        width = check.integer(width, "width", 1)
        in_features = check.integer(in_features, "in_features", 1)
        seeds = check.integers(seeds, "seeds", 0, 2**32 - 1)
        w1, b1, w2, b2 = [], [], [], []
        for seed in seeds:
            seed_everything(int(seed))
            first, second = nn.Linear(in_features, width), nn.Linear(width, 1)
            w1.append(first.weight.detach().T)
            b1.append(first.bias.detach())
            w2.append(second.weight.detach().T)
            b2.append(second.bias.detach())
        self.w1 = nn.Parameter(torch.stack(w1))  # (S, in, width)
        self.b1 = nn.Parameter(torch.stack(b1))  # (S, width)
        self.w2 = nn.Parameter(torch.stack(w2))  # (S, width, 1)
        self.b2 = nn.Parameter(torch.stack(b2))  # (S, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(torch.einsum("ni,siw->snw", x, self.w1) + self.b1[:, None, :])
        return (hidden @ self.w2).squeeze(-1) + self.b2  # (S, N)


def parallel_bce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Sum over the ``S`` networks of each one's mean binary cross-entropy on the batch (x (N, in), y (N,))."""
    x, y = batch
    logits = model(x)
    return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(dim=1).sum()


def xor_success(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Which networks solved the task: logits (S, N) or (N,), targets (N,) of 0/1. A network succeeds when every
    point is on the right side of the decision boundary (logit > 0 exactly for the targets that are 1).
    Returns a bool tensor (S,) (or a 0-d bool for a single network)."""
    check.tensor(logits, "logits", dims=(1, 2), non_empty=True, finite=False)  # ±inf is on one side: fine
    check.tensor(targets, "targets", dims=(1,), non_empty=True)
    if logits.is_floating_point() and logits.isnan().any():
        raise ValueError("logits contain NaN: a NaN logit is on neither side of the boundary")
    if logits.shape[-1] != targets.shape[-1]:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree on the number "
                         "of points (their last dimension)")
    return ((logits > 0) == (targets > 0.5)).all(dim=-1)


Success = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_xor(width: int, seeds: Sequence[int], steps: int, lr: float = 0.01,
              success: Success = xor_success) -> torch.Tensor:
    """Train one XOR network per seed at ``width`` hidden units for ``steps`` full-batch Adam steps (no weight
    decay, no warm-up, the course loop's linear decay). Returns ``success(logits (S, 4), targets (4,))``: by
    default :func:`xor_success`, a bool tensor (S,)."""
    steps = check.integer(steps, "steps", 1)
    check.positive(lr, "lr", "Adam's learning rate")
    check.callable_(success, "success")
    model = ParallelMLP(width, seeds)
    batch = xor_data()
    with torch_threads(1):  # tiny tensors: a second thread only adds synchronisation
        train(model, [batch], max_steps=steps, lr=lr, weight_decay=0.0, warmup=0.0, loss_fn=parallel_bce_loss,
              max_grad_norm=None, progress=False)
    with torch.no_grad():
        return torch.as_tensor(success(model(batch[0]), batch[1])).bool()


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a success rate (fractions in [0, 1]; z = 1.96 gives 95%). Unlike the normal
    approximation it stays inside [0, 1] and is sensible at 0 or ``trials`` successes."""
    trials = check.integer(trials, "trials", 1)
    successes = check.integer(successes, "successes", 0, trials)
    z = check.positive(z, "z", "the normal quantile, 1.96 for 95%")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def xor_sweep(widths: Sequence[int], seeds: int, steps: int, lr: float = 0.01,
              success: Success = xor_success) -> pd.DataFrame:
    """Success rate of XOR training at each width over seeds ``0 .. seeds - 1``. One row per width: ``width``,
    ``seeds``, ``successes``, ``rate`` (fraction) and its 95% Wilson interval ``low``, ``high``. ``success``
    decides which trained networks count (see :func:`train_xor`)."""
    seeds = check.integer(seeds, "seeds", 1)
    widths = check.integers(widths, "widths", 1)
    steps = check.integer(steps, "steps", 1)
    rows = []
    for width in widths:
        ok = int(train_xor(width, range(seeds), steps, lr, success).sum())
        low, high = wilson_interval(ok, seeds)
        rows.append({"width": width, "seeds": seeds, "successes": ok, "rate": ok / seeds, "low": low, "high": high})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------------
# Redundancy in a trained network
# --------------------------------------------------------------------------------------------------------------

def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D weight (m, n), largest first, shape (min(m, n),), as float32 on the CPU. Computed
    on one thread: for matrices of this size LAPACK's threading costs far more than it saves on a busy CPU."""
    check.tensor(weight, "weight", dims=(2,), non_empty=True)
    with torch_threads(1):
        return torch.linalg.svdvals(weight.detach().float().cpu())


def effective_rank(singular_values: torch.Tensor, energy: float = 0.9) -> int:
    """The smallest number of singular values whose squares hold at least ``energy`` (a fraction in (0, 1]) of
    the sum of all squares: how many directions a rank-k approximation needs to keep that share of the matrix's
    squared Frobenius norm. ``singular_values`` is 1-D, any order, non-negative."""
    if isinstance(singular_values, (str, bytes)):
        raise check.BadType(f"singular_values must be a 1-D tensor of numbers, got {check.show(singular_values)}")
    try:
        s = torch.as_tensor(singular_values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise check.BadType(f"singular_values must be a 1-D tensor of numbers, got {check.show(singular_values)}") \
            from exc
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    check.tensor(s, "singular_values")
    if (s < 0).any():
        raise ValueError(f"singular_values must be non-negative, got {int((s < 0).sum())} negative values")
    if not (s > 0).any():
        raise ValueError("singular_values are all zero: a zero matrix has no direction that holds any energy")
    energy = check.fraction(energy, "energy", low_open=True, high_open=False)
    sq = s.sort(descending=True).values ** 2
    share = sq.cumsum(0) / sq.sum()
    return int((share < energy - 1e-12).sum().item()) + 1


def layer_similarity(hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor,
                     shuffle_seed: int | None = None) -> list[float]:
    """Mean cosine similarity between each layer's token representations and the next layer's.

    ``hidden_states``: L + 1 tensors (B, T, H) as returned with ``output_hidden_states=True`` (embeddings first);
    ``attention_mask`` (B, T) marks real tokens with 1; padding is left out. Returns L numbers in [-1, 1]: entry i
    compares layer i with layer i + 1.

    With ``shuffle_seed`` (an int) each real token of layer i is compared with a *different* real token of layer
    i + 1 (a random derangement of the real tokens, seeded): the baseline of how similar unrelated hidden states of
    the same two layers already are (in many transformers well above 0: their representations are anisotropic)."""
    hidden_states = check.items(hidden_states, "hidden_states", what="a list of (B, T, H) tensors")
    if len(hidden_states) < 2:
        raise ValueError("need at least two layers' hidden states to compare neighbours")
    for i, h in enumerate(hidden_states):
        check.tensor(h, f"hidden_states[{i}]", dims=(3,))
        if h.shape != hidden_states[0].shape:
            raise ValueError(f"hidden_states[{i}] has shape {tuple(h.shape)}, hidden_states[0] "
                             f"{tuple(hidden_states[0].shape)}: every layer must have one shape")
    check.tensor(attention_mask, "attention_mask", dims=(2,))
    if attention_mask.shape != hidden_states[0].shape[:2]:
        raise ValueError(f"attention_mask must have shape (B, T) = {tuple(hidden_states[0].shape[:2])}, got "
                         f"{tuple(attention_mask.shape)}")
    keep = attention_mask.bool()
    if not keep.any():
        raise ValueError("attention_mask marks no real token (all zeros): there is nothing to compare")
    n = int(keep.sum())
    if shuffle_seed is not None:
        shuffle_seed = check.integer(shuffle_seed, "shuffle_seed", 0)
        if n < 2:
            raise ValueError("shuffle_seed needs at least two real tokens, to pair each with a different one")
        gen = torch.Generator().manual_seed(shuffle_seed)
        order = torch.randperm(n, generator=gen)
        partner = torch.empty(n, dtype=torch.long)
        partner[order] = order.roll(1)  # a cycle through a random order: no token is paired with itself
    out = []
    for a, b in zip(hidden_states[:-1], hidden_states[1:], strict=True):
        a_real, b_real = a[keep].float(), b[keep].float()  # (n, H)
        if shuffle_seed is not None:
            b_real = b_real[partner]
        out.append(F.cosine_similarity(a_real, b_real, dim=-1).mean().item())
    return out


def kurtosis(x: torch.Tensor) -> float:
    """Kurtosis E[(x − mean)⁴] / Var(x)² of all entries of ``x`` (3 for a Gaussian, whatever its spread)."""
    x = check.tensor(x, "x").detach().double().flatten()
    if x.numel() < 2:
        raise ValueError(f"x must have at least 2 entries to have a kurtosis, got {x.numel()}")
    centred = x - x.mean()
    var = (centred**2).mean()
    if var == 0:
        raise ValueError("x must not be constant: its kurtosis is undefined")
    return float((centred**4).mean() / var**2)


def gaussian_mixture_kurtosis(stds: Sequence[float], counts: Sequence[int]) -> float:
    """Kurtosis of a pool that holds ``counts[i]`` draws from a zero-mean Gaussian of standard deviation
    ``stds[i]``, in the limit of many draws: 3 · E[σ⁴] / E[σ²]², the expectations weighted by the counts. It is 3
    only when every σ is equal, and larger for any spread of σ (a scale mixture is heavy-tailed by itself)."""
    stds = [check.real(s, f"stds[{i}]", 0) for i, s in enumerate(check.items(stds, "stds", what="a list of stds"))]
    counts = [check.integer(c, f"counts[{i}]", 1) for i, c in enumerate(check.items(counts, "counts",
                                                                                  what="a list of counts"))]
    if len(stds) != len(counts):
        raise ValueError(f"stds and counts must have one entry per group, got {len(stds)} and {len(counts)}")
    total = sum(counts)
    m2 = sum(c * s**2 for s, c in zip(stds, counts, strict=True)) / total
    m4 = sum(c * s**4 for s, c in zip(stds, counts, strict=True)) / total
    if m2 == 0:
        raise ValueError("stds must not all be 0: the pool's kurtosis is undefined")
    return 3 * m4 / m2**2
