"""Checks of lesson 02, why compression works: XOR success, effective rank, the kurtosis of a pool of Gaussians."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import overparam
from .harness import CheckResult, Wrong, call, declare, number, run_cases

__all__ = ["xor_solved", "effective_rank", "mixture_kurtosis"]


def _bool_vector(value, n: int, what: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value)
        except Exception:  # noqa: BLE001 - anything that is not tensor-like is feedback
            raise Wrong(f"{what} should be a tensor of {n} booleans, got {type(value).__name__}.") from None
    if value.shape != (n,):
        raise Wrong(f"{what} should have shape ({n},) — one entry per network — got {tuple(value.shape)}.")
    return value.bool()


def xor_solved(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``fn(logits (S, N), targets (N,) of 0/1) -> bool (S,)``: True for the networks whose logit is > 0
    exactly at the points whose target is 1 (every point classified correctly)."""
    gen = torch.Generator().manual_seed(2)
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0])

    def case(logits: torch.Tensor, y: torch.Tensor = targets):
        def run():
            want = overparam.xor_success(logits, y)
            got = _bool_vector(call(fn, logits.clone(), y.clone()), len(logits), "the result")
            if not torch.equal(got, want):
                i = int((got != want).nonzero()[0])
                raise Wrong(f"network {i} with logits {[round(v, 2) for v in logits[i].tolist()]} and targets "
                             f"{y.tolist()}: you said {bool(got[i])}, expected {bool(want[i])}.")
        return run

    solved = torch.tensor([[-2.0, 3.0, 1.5, -0.5]])
    three_of_four = torch.tensor([[-2.0, 3.0, 1.5, 0.5], [-2.0, -3.0, 1.5, -0.5], [2.0, 3.0, 1.5, -0.5]])
    tiny_margins = torch.tensor([[-1e-3, 1e-3, 2e-3, -4e-3], [1e-3, 1e-3, 2e-3, 4e-3]])
    random = torch.randn(64, 4, generator=gen) * 3
    random[::3] = torch.tensor([-1.0, 1.0, 1.0, -1.0]) * (torch.rand(22, 4, generator=gen) + 0.1)  # solved rows
    other_task = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    return run_cases("xor_solved", [case(solved), case(three_of_four), case(tiny_margins), case(random),
                               case(torch.randn(10, 5, generator=gen), other_task)],
                "a network has solved the task only if *every* point is on the right side: logit > 0 where the "
                "target is 1 and logit <= 0 where it is 0. Compare per point, then combine over the last dimension "
                "so you get one boolean per network (row).")


def effective_rank(fn: Callable[[torch.Tensor, float], int]) -> CheckResult:
    """Check ``fn(singular_values (K,), energy) -> the smallest k whose k largest squared singular values hold at
    least ``energy`` of the sum of all squared singular values``."""
    gen = torch.Generator().manual_seed(3)

    def case(s: torch.Tensor, energy: float):
        def run():
            got = number(call(fn, s.clone(), energy), "effective rank")
            want = overparam.effective_rank(s, energy)
            if got != want:
                plain = int(((s.sort(descending=True).values.cumsum(0) / s.sum()) < energy).sum()) + 1
                extra = " (that is the count for the singular values themselves, not their squares)" \
                    if got == plain and plain != want else ""
                raise Wrong(f"{s.numel()} singular values, energy {energy}: got {got:g}, expected {want}{extra}.")
        return run

    decaying = torch.logspace(0, -3, 50)
    return run_cases("effective_rank", [case(torch.tensor([4.0, 0.0, 0.0]), 0.9), case(torch.ones(10), 0.5),
                                   case(decaying, 0.9), case(decaying.flip(0), 0.99),
                                   case(torch.rand(30, generator=gen), 0.8), case(torch.tensor([3.0, 4.0]), 1.0)],
                "the energy of a direction is its singular value squared. Sort from largest to smallest, take the "
                "running sum of the squares as a share of the total, and count how many you need to reach the "
                "target share. The singular values may arrive in any order.")


def mixture_kurtosis(fn: Callable[[list, list], float]) -> CheckResult:
    """Check ``fn(stds, counts) -> kurtosis``: the kurtosis of one pool that holds ``counts[i]`` draws from a
    zero-mean Gaussian of standard deviation ``stds[i]`` (many draws), against the exact 3·E[σ⁴]/E[σ²]² from
    :func:`lecture_utils.overparam.gaussian_mixture_kurtosis`, and against a pool the check samples."""
    def case(stds: list[float], counts: list[int], sample: bool = False):
        def run():
            want = overparam.gaussian_mixture_kurtosis(stds, counts)
            got = number(call(fn, list(stds), list(counts)), "kurtosis")
            where = f"{len(stds)} groups, stds {[round(s, 3) for s in stds]}, counts {counts}"
            if len(set(stds)) > 1 and math.isclose(got, 3, rel_tol=1e-6):
                raise Wrong(f"{where}: 3 is the kurtosis of *one* Gaussian; the pool mixes several spreads.")
            if not math.isclose(got, want, rel_tol=1e-4):
                raise Wrong(f"{where}: got {got:.4g}.")
            if sample:
                gen = torch.Generator().manual_seed(21)
                pool = torch.cat([torch.randn(c, generator=gen) * s for s, c in zip(stds, counts, strict=True)])
                seen = overparam.kurtosis(pool)
                if not math.isclose(got, seen, rel_tol=0.05):
                    raise Wrong(f"{where}: you predicted {got:.4g}, a pool sampled by the check has {seen:.4g}.")
        return run

    return run_cases("mixture_kurtosis", [case([1.0, 1.0], [100, 300]), case([1.0, 3.0], [1000, 1000]),
                                          case([0.02, 0.05, 0.1], [409_600, 102_400, 51_200], sample=True),
                                          case([0.5, 2.0], [90_000, 10_000], sample=True)],
                     "a pool's moments are the count-weighted averages of its groups' moments. A zero-mean Gaussian "
                     "of spread σ has E[x²] = σ² and E[x⁴] = 3σ⁴; kurtosis = E[x⁴] / E[x²]².")


def _moment(stds, counts, k):
    """The count-weighted mean of σᵏ."""
    return sum(c * s**k for s, c in zip(stds, counts, strict=True)) / sum(counts)


# --- the exercises of lesson 02, declared once ---------------------------------------------------------------------
declare("02", xor_solved, overparam.xor_success, wrong=(
    lambda logits, y: ((logits > 0) == (y > 0.5)).any(dim=-1),  # one right point is not enough
    lambda logits, y: ((logits > 0) == (y > 0.5)).float().mean() > 0.5,  # one answer for all
    lambda logits, y: ((logits > 0) == (y > 0.5)).float().mean(dim=-1) >= 0.75),
    graded_wrong="return (logits > 0).any(dim=-1)")
declare("02", effective_rank, overparam.effective_rank, wrong=(
    lambda s, e: int((s.sort(descending=True).values.cumsum(0) / s.sum() < e).sum()) + 1,  # not squared
    lambda s, e: int((s > 0.1 * s.max()).sum()),
    lambda s, e: int(((s ** 2).cumsum(0) / (s ** 2).sum() < e).sum()) + 1),  # unsorted
    graded_wrong="return len(singular_values)")
declare("02", mixture_kurtosis, overparam.gaussian_mixture_kurtosis, wrong=(
    lambda stds, counts: 3.0,  # one Gaussian's
    lambda stds, counts: 3 * sum(s**4 for s in stds) / len(stds) / (sum(s**2 for s in stds) / len(stds)) ** 2,
    lambda stds, counts: 3 * _moment(stds, counts, 4) / _moment(stds, counts, 1) ** 4),  # E[σ]⁴
    graded_wrong="return 3.0  # as if the pool were one Gaussian")
