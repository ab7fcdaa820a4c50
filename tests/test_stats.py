"""lu.stats against scipy's binomial test and against what a paired bootstrap must do."""

import doctest

import pytest
import torch
from scipy.stats import binomtest

from lecture_utils import stats


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 0), (10, 0), (3, 7), (25, 40), (60, 61), (5, 30)])
def test_mcnemar_equals_scipys_exact_binomial_test(only_a, only_b):
    n = only_a + only_b
    want = 1.0 if n == 0 else binomtest(min(only_a, only_b), n, 0.5).pvalue
    assert stats.mcnemar_p(only_a, only_b) == pytest.approx(want, rel=1e-9)


def _exact_big_integer_p(only_a: int, only_b: int) -> float:
    """The previous implementation: exact big-integer sums (fine for small n, minutes at 20,000 pairs)."""
    import math
    from fractions import Fraction

    n, k = only_a + only_b, min(only_a, only_b)
    return 1.0 if n == 0 else float(min(Fraction(1), 2 * Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 31, 200, 1001])
def test_mcnemar_equals_the_exact_big_integer_sums_on_every_split(n):
    for only_a in range(n + 1) if n <= 200 else range(0, n + 1, 7):
        want = _exact_big_integer_p(only_a, n - only_a)
        assert stats.mcnemar_p(only_a, n - only_a) == pytest.approx(want, rel=1e-10, abs=1e-300), (only_a, n)


@pytest.mark.parametrize(("only_a", "only_b"), [(9_800, 10_200), (9_000, 11_000), (10_000, 10_000), (0, 20_000),
                                                (450_000, 550_000)])
def test_mcnemar_scales_to_large_test_sets(only_a, only_b):
    """20,000 discordant pairs used to take minutes; scipy's exact test is the reference."""
    want = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert stats.mcnemar_p(only_a, only_b) == pytest.approx(want, rel=1e-8, abs=1e-300)


def _pair(n_both: int, only_a: int, only_b: int, n_neither: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.tensor([True] * n_both + [True] * only_a + [False] * only_b + [False] * n_neither)
    b = torch.tensor([True] * n_both + [False] * only_a + [True] * only_b + [False] * n_neither)
    return a, b


def test_identical_models_have_zero_difference_and_a_zero_width_interval():
    a, _ = _pair(800, 0, 0, 200)
    c = stats.compare(a, a.clone())
    assert (c.difference, c.low, c.high, c.p_value, c.only_a, c.only_b) == (0.0, 0.0, 0.0, 1.0, 0, 0)
    assert not c.real


def test_a_large_paired_difference_is_real_and_a_small_one_is_noise():
    big = stats.compare(*_pair(1000, 80, 10, 175))
    assert big.real and big.low > 0 and big.p_value < 1e-10
    assert big.difference == pytest.approx(70 / 1265)
    assert big.low < big.difference < big.high
    small = stats.compare(*_pair(1000, 14, 10, 241))
    assert not small.real and small.low < 0 < small.high and small.p_value > 0.05
    assert "within the noise" in small.verdict("KD", "hard") and "real difference" in big.verdict()


def test_bootstrap_interval_matches_the_normal_approximation():
    """For many examples the paired bootstrap interval ≈ difference ± 1.96 × standard error of the paired mean."""
    a, b = _pair(900, 60, 30, 110)
    diff = a.float() - b.float()
    se = diff.std(unbiased=True).item() / len(diff) ** 0.5
    low, high = stats.bootstrap_interval(a, b, resamples=4000)
    assert low == pytest.approx(diff.mean().item() - 1.96 * se, abs=0.004)
    assert high == pytest.approx(diff.mean().item() + 1.96 * se, abs=0.004)
    assert stats.bootstrap_interval(a, b, resamples=4000) == (low, high)  # seeded: the same interval again


@pytest.mark.parametrize(("call", "match"), [
    (lambda: stats.compare(torch.ones(5, dtype=torch.bool), torch.ones(6, dtype=torch.bool)), "same"),
    (lambda: stats.compare(torch.ones(5), torch.ones(5)), "bool"),
    (lambda: stats.compare(torch.ones(0, dtype=torch.bool), torch.ones(0, dtype=torch.bool)), "non-empty"),
    (lambda: stats.bootstrap_interval(*_pair(5, 1, 1, 1), level=1.0), "level"),
    (lambda: stats.bootstrap_interval(*_pair(5, 1, 1, 1), resamples=10), "resamples"),
    (lambda: stats.mcnemar_p(-1, 3), "only_a"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_docstring_examples_run():
    assert doctest.testmod(stats).failed == 0


# --------------------------------------------------------------------------------------------------------------
# Few seeds: Student's t
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("df", "want"), [(1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (4, 2.7764451),
                                          (9, 2.2621572), (29, 2.0452296), (1000, 1.9623391)])
def test_t_critical_matches_the_printed_tables(df, want):
    """Two-sided 95% critical values of Student's t (every statistics table; scipy.stats.t.ppf(0.975, df))."""
    assert stats.t_critical(df) == pytest.approx(want, abs=1e-6)


def test_t_cdf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom():
    import math
    for t in (-3.0, -0.4, 0.0, 0.7, 2.5, 30.0):
        assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert stats.t_critical(2, level=0.9) == pytest.approx(2.9199856, abs=1e-6)


def test_paired_t_on_three_seeds_needs_4_30_standard_errors():
    a = torch.tensor([0.60, 0.62, 0.61])
    b = a - torch.tensor([0.03, 0.01, 0.02])  # differences 3, 1, 2 points: mean 2, standard error 0.577
    r = stats.paired_t(a, b)
    assert r.n == 3 and r.mean == pytest.approx(0.02) and r.stderr == pytest.approx(0.01 / 3**0.5)
    assert r.critical == pytest.approx(4.3026527, abs=1e-6)
    assert r.low == pytest.approx(0.02 - 4.3026527 * 0.01 / 3**0.5, abs=1e-7) and r.winner == "tie"  # 3.46 SE
    assert r.p_value == pytest.approx(0.07417990, abs=1e-6)  # t = 3.464 on 2 df (scipy.stats.ttest_rel)
    big = stats.paired_t(a, a - torch.tensor([0.10, 0.11, 0.09]))
    assert big.winner == "a" and "a wins" in big.verdict() and "2 degrees of freedom" in big.verdict()
    assert stats.paired_t(a - 0.1, a).winner == "b"
    one = stats.paired_t([0.7], [0.5])
    assert one.winner == "tie" and "cannot be estimated" in one.verdict()
    with pytest.raises(ValueError, match="one entry per seed"):
        stats.paired_t([0.5, 0.6], [0.5])
    with pytest.raises(ValueError, match="df"):
        stats.t_critical(0)


def test_rate_is_the_share_of_true_and_refuses_what_is_not_one_bool_per_example():
    flags = torch.tensor([True, False, True, True])
    assert stats.rate(flags) == 0.75 == flags.float().mean().item()
    assert stats.rate(torch.zeros(3, dtype=torch.bool)) == 0.0
    for bad, err in [(torch.tensor([1.0, 0.0]), ValueError), (torch.ones(2, 2, dtype=torch.bool), ValueError),
                     (torch.zeros(0, dtype=torch.bool), ValueError), ([True, False], TypeError)]:
        with pytest.raises(err, match="flags"):
            stats.rate(bad)
