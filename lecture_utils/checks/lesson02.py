"""Checks of lesson 02, why compression works: XOR success, effective rank."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .harness import CheckResult, Wrong, call, number, run_cases

__all__ = ["xor_success", "effective_rank"]


def _bool_vector(value, n: int, what: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value)
        except Exception:  # noqa: BLE001 - anything that is not tensor-like is feedback
            raise Wrong(f"{what} should be a tensor of {n} booleans, got {type(value).__name__}.") from None
    if value.shape != (n,):
        raise Wrong(f"{what} should have shape ({n},) — one entry per network — got {tuple(value.shape)}.")
    return value.bool()


def xor_success(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``fn(logits (S, N), targets (N,) of 0/1) -> bool (S,)``: True for the networks whose logit is > 0
    exactly at the points whose target is 1 (every point classified correctly)."""
    gen = torch.Generator().manual_seed(2)
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0])

    def case(logits: torch.Tensor, y: torch.Tensor = targets):
        def run():
            want = ((logits > 0) == (y > 0.5)).all(dim=-1)
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
    return run_cases("xor_success", [case(solved), case(three_of_four), case(tiny_margins), case(random),
                                case(torch.randn(10, 5, generator=gen), other_task)],
                "a network has solved the task only if *every* point is on the right side: logit > 0 where the "
                "target is 1 and logit <= 0 where it is 0. Compare per point, then combine over the last dimension "
                "so you get one boolean per network (row).")


def effective_rank(fn: Callable[[torch.Tensor, float], int]) -> CheckResult:
    """Check ``fn(singular_values (K,), energy) -> the smallest k whose k largest squared singular values hold at
    least ``energy`` of the sum of all squared singular values``."""
    from ..overparam import effective_rank as reference

    gen = torch.Generator().manual_seed(3)

    def case(s: torch.Tensor, energy: float):
        def run():
            got = number(call(fn, s.clone(), energy), "effective rank")
            want = reference(s, energy)
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
