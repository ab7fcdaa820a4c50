"""Is a difference in accuracy real? Two classifiers compared on the *same* test examples.

Two models scored on the same 1,265 reviews are not independent samples: most reviews are right (or wrong) for
both, and only the reviews on which they *disagree* carry information about which is better. Both tools here use
that pairing:

- :func:`mcnemar_p` — McNemar's exact test: among the reviews exactly one model gets right, is the split further
  from 50/50 than chance would make it? (a two-sided binomial test on the discordant pairs);
- :func:`paired_t` — the same question over a handful of *seeds* (one accuracy per seed and method, the seed shared
  by both): a paired t test on the per-seed differences, with Student's t critical value for n − 1 degrees of
  freedom (:func:`t_critical`: 4.30 standard errors for 3 seeds at 95%, not 2);
- :func:`bootstrap_interval` — a paired bootstrap: resample the test reviews with replacement, recompute the
  difference in accuracy each time, and read a confidence interval off the spread.

:func:`compare` returns both, with a one-line verdict. Accuracies and differences are fractions in [0, 1] (the
verdict prints them in points, 1 point = 0.01).

Example:
    >>> import torch
    >>> a = torch.tensor([True] * 90 + [False] * 10)
    >>> b = torch.tensor([True] * 80 + [False] * 20)
    >>> round(mcnemar_p(10, 0), 4)  # a right and b wrong on 10 reviews, the reverse on none
    0.002
    >>> compare(a, b).only_a
    10
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import validate as check

__all__ = ["correct", "rate", "mcnemar_p", "bootstrap_interval", "Comparison", "compare", "t_cdf", "t_critical",
           "PairedT", "paired_t"]


def correct(model: torch.nn.Module, loader) -> torch.Tensor:
    """One bool per example of ``loader``: did ``model`` predict its label? (in the loader's order)."""
    from .training import predict

    logits, labels = predict(model, loader)
    return logits.argmax(-1) == labels


def rate(flags: torch.Tensor) -> float:
    """The fraction in [0, 1] of the bools in ``flags`` that are True: an accuracy, from :func:`correct`'s one bool
    per example.

    Examples:
        >>> rate(torch.tensor([True, False, True, True]))
        0.75
    """
    flags = check.tensor(flags, "flags", dims=(1,))
    if flags.dtype != torch.bool or flags.numel() == 0:
        raise ValueError(f"flags must be a non-empty 1-D bool tensor (e.g. stats.correct(model, loader)), got "
                         f"{flags.dtype} with {flags.numel()} values")
    return flags.float().mean().item()


def _pair(correct_a: torch.Tensor, correct_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = check.tensor(correct_a, "correct_a", dims=(1,))
    b = check.tensor(correct_b, "correct_b", dims=(1,))
    if a.dtype != torch.bool or b.dtype != torch.bool:
        raise TypeError(f"correct_a and correct_b must be bool tensors (one per example), got {a.dtype} and "
                        f"{b.dtype}; use stats.correct(model, loader)")
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"correct_a and correct_b must score the same, non-empty set of examples, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts: ``only_a`` examples that only model a gets right,
    ``only_b`` that only model b gets right. Under "equally good" each discordant example is a fair coin."""
    only_a = check.integer(only_a, "only_a", 0)
    only_b = check.integer(only_b, "only_b", 0)
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0 or 2 * k >= n - 1:  # an even split (or off by one): the two tails cover everything
        return 1.0
    return min(1.0, 2 * math.exp(_log_binomial_lower_tail(n, k)))


def _log_binomial_lower_tail(n: int, k: int) -> float:
    """log P(X <= k) for X ~ Binomial(n, 1/2) with k < n/2, in floating point to ~1e-12 relative: the largest term
    C(n, k)/2^n from ``lgamma``, then the smaller ones by the ratio C(n, i-1)/C(n, i) = i/(n-i+1), summed until they
    no longer change the sum. Scales to millions of pairs (the exact big-integer sum took minutes at 20,000)."""
    log_top = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    total, term = 1.0, 1.0  # relative to the top term
    for i in range(k, 0, -1):
        term *= i / (n - i + 1)
        total += term
        if term < 1e-17 * total:
            break
    return log_top + math.log(total)


def bootstrap_interval(correct_a: torch.Tensor, correct_b: torch.Tensor, level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap ``level`` interval (percentile method) of accuracy(a) − accuracy(b), as fractions: the
    same resampled examples score both models in every one of ``resamples`` draws."""
    a, b = _pair(correct_a, correct_b)
    level = check.real(level, "level", 0, 1)
    if not 0 < level < 1:
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    resamples = check.integer(resamples, "resamples", 100)
    diff = a.float() - b.float()
    gen = torch.Generator().manual_seed(check.integer(seed, "seed", 0))
    draws = torch.randint(0, len(diff), (resamples, len(diff)), generator=gen)
    means = diff[draws].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype))
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """Model a against model b on the same ``n`` examples. ``difference``, ``low`` and ``high`` are fractions
    (accuracy of a − accuracy of b, and its paired bootstrap interval at ``level``)."""

    difference: float
    low: float
    high: float
    level: float
    p_value: float
    only_a: int
    only_b: int
    n: int

    @property
    def real(self) -> bool:
        """True when the interval excludes 0 (the difference is unlikely to be test-set noise)."""
        return self.low > 0 or self.high < 0

    def verdict(self, a: str = "a", b: str = "b") -> str:
        """One line: the difference in points, its interval, McNemar's p, and whether it is more than noise."""
        words = "a real difference" if self.real else "within the noise of this test set"
        return (f"{a} − {b}: {100 * self.difference:+.1f} points ({self.level:.0%} interval "
                f"{100 * self.low:+.1f} to {100 * self.high:+.1f}; McNemar p = {self.p_value:.3f}; "
                f"{self.only_a} reviews only {a} gets right, {self.only_b} only {b}) → {words}")


def compare(correct_a: torch.Tensor, correct_b: torch.Tensor, level: float = 0.95, resamples: int = 2000,
            seed: int = 0) -> Comparison:
    """:class:`Comparison` of two models from their per-example correctness (bool tensors from :func:`correct`)."""
    a, b = _pair(correct_a, correct_b)
    low, high = bootstrap_interval(a, b, level, resamples, seed)
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    return Comparison(float(a.float().mean() - b.float().mean()), low, high, level, mcnemar_p(only_a, only_b),
                      only_a, only_b, len(a))


# --------------------------------------------------------------------------------------------------------------
# Few seeds: a paired t test on per-seed differences
# --------------------------------------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz), to ~1e-15 relative."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t distribution with ``df`` > 0 degrees of freedom."""
    t = check.real(t, "t")
    df = check.real(df, "df", 0, None, low_open=True, hint="degrees of freedom, n − 1 for n paired differences")
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_critical(df: float, level: float = 0.95) -> float:
    """The two-sided critical value of Student's t: the c with P(|T| ≤ c) = ``level`` for ``df`` degrees of
    freedom (12.71 for 1, 4.30 for 2, 2.78 for 4, 1.96 as df grows, at 95%). Found by bisection on :func:`t_cdf`."""
    df = check.real(df, "df", 0, None, low_open=True, hint="degrees of freedom, n − 1 for n paired differences")
    level = check.real(level, "level", 0, 1, low_open=True, high_open=True, hint="e.g. 0.95")
    target = 0.5 + level / 2
    low, high = 0.0, 1.0
    while t_cdf(high, df) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class PairedT:
    """A paired t test of method a against method b over ``n`` seeds: the mean of the per-seed differences
    a − b (``mean``, in the accuracies' unit: fractions), its standard error (sample standard deviation with
    n − 1, over √n), the critical value for n − 1 degrees of freedom at ``level``, the interval mean ± critical ×
    stderr, and the two-sided p-value (``nan`` with fewer than two seeds, or when every difference is equal)."""

    mean: float
    stderr: float
    critical: float
    low: float
    high: float
    p_value: float
    level: float
    n: int

    @property
    def winner(self) -> str:
        """``"a"`` if the interval lies above 0, ``"b"`` if below, ``"tie"`` otherwise (also with n < 2)."""
        if self.n < 2 or math.isnan(self.low):
            return "tie"
        return "a" if self.low > 0 else "b" if self.high < 0 else "tie"

    def verdict(self, a: str = "a", b: str = "b") -> str:
        """One line: the mean difference in points, its interval, p, and who wins (or that the seeds cannot tell)."""
        if self.n < 2:
            return f"{a} − {b}: {100 * self.mean:+.1f} points from one seed → the noise cannot be estimated"
        words = {"a": f"{a} wins", "b": f"{b} wins", "tie": "the seeds cannot tell them apart"}[self.winner]
        return (f"{a} − {b}: {100 * self.mean:+.1f} points over {self.n} seeds ({self.level:.0%} interval "
                f"{100 * self.low:+.1f} to {100 * self.high:+.1f}, t critical {self.critical:.2f} for "
                f"{self.n - 1} degrees of freedom, p = {self.p_value:.3f}) → {words}")


def paired_t(a, b, level: float = 0.95) -> PairedT:
    """:class:`PairedT` of per-seed results ``a`` and ``b`` (1-d, one entry per seed, in the same seed order)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.dim() != 1 or a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"a and b must be 1-d, non-empty, with one entry per seed in the same order; got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    check.tensor(a, "a")
    check.tensor(b, "b")
    level = check.real(level, "level", 0, 1, low_open=True, high_open=True, hint="e.g. 0.95")
    diff = a - b
    n, mean = len(diff), diff.mean().item()
    if n < 2:
        nan = float("nan")
        return PairedT(mean, nan, nan, nan, nan, nan, level, n)
    stderr = diff.std().item() / math.sqrt(n)
    critical = t_critical(n - 1, level)
    if stderr == 0:
        p = float("nan") if mean == 0 else 0.0
    else:
        p = 2 * (1 - t_cdf(abs(mean) / stderr, n - 1))
    return PairedT(mean, stderr, critical, mean - critical * stderr, mean + critical * stderr, p, level, n)
