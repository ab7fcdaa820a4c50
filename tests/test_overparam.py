"""Lesson 02 helpers: parallel XOR networks equal separate ones, success criterion, intervals, rank, similarity."""

import pytest
import torch

import lecture_utils as lu
from lecture_utils import overparam as op


def test_parallel_networks_start_and_compute_like_separate_ones():
    model = op.ParallelMLP(3, [5, 7])
    x, _ = op.xor_data()
    for i, seed in enumerate([5, 7]):
        lu.seed_everything(seed)
        first, second = torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)
        want = second(torch.tanh(first(x))).squeeze(-1)
        assert torch.allclose(model(x)[i], want, atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        op.ParallelMLP(0, [0])


def test_parallel_training_gives_each_network_its_own_gradient():
    model = op.ParallelMLP(4, [0, 1, 2])
    batch = op.xor_data()
    op.parallel_bce_loss(model, batch).backward()
    g_all = model.w1.grad[1].clone()
    single = op.ParallelMLP(4, [1])
    op.parallel_bce_loss(single, batch).backward()
    assert torch.allclose(single.w1.grad[0], g_all, atol=1e-6)


def test_success_means_every_point_on_the_right_side():
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    logits = torch.tensor([[-1.0, 2.0, 0.5, -3.0], [-1.0, 2.0, -0.5, -3.0], [1.0, 1.0, 1.0, 1.0]])
    assert op.xor_success(logits, y).tolist() == [True, False, False]
    assert bool(op.xor_success(logits[0], y))
    with pytest.raises(ValueError, match="number of points"):
        op.xor_success(torch.zeros(2, 3), y)


def test_wide_networks_learn_xor_and_width_one_cannot():
    assert op.train_xor(16, range(4), steps=300, lr=0.03).all()
    assert not op.train_xor(1, range(4), steps=300, lr=0.03).any()  # one tanh unit is monotone in each direction
    table = op.xor_sweep([1, 16], seeds=4, steps=300, lr=0.03)
    assert table["rate"].tolist() == [0.0, 1.0]
    assert (table["low"] <= table["rate"]).all() and (table["rate"] <= table["high"]).all()


def test_wilson_interval():
    low, high = op.wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert op.wilson_interval(0, 50)[0] == 0.0 and op.wilson_interval(50, 50)[1] == 1.0
    with pytest.raises(ValueError):
        op.wilson_interval(3, 2)


def test_effective_rank():
    assert op.effective_rank(torch.tensor([3.0, 0.0, 0.0]), 0.9) == 1
    s = torch.tensor([1.0, 1.0, 1.0, 1.0])  # each direction holds 25% of the energy
    assert op.effective_rank(s, 0.5) == 2 and op.effective_rank(s, 0.51) == 3 and op.effective_rank(s, 1.0) == 4
    assert op.effective_rank(torch.tensor([1.0, 2.0]), 0.8) == 1  # order does not matter
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="energy"):
            op.effective_rank(s, bad)
    with pytest.raises(ValueError, match="1-D"):
        op.effective_rank(torch.ones(2, 2))


def test_singular_values_match_a_known_matrix():
    w = torch.diag(torch.tensor([1.0, 3.0, 2.0]))
    assert torch.allclose(op.singular_values(w), torch.tensor([3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="2-D"):
        op.singular_values(torch.ones(3))


def test_layer_similarity_ignores_padding():
    a = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])
    b = torch.tensor([[[2.0, 0.0], [-5.0, 5.0]]])
    c = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    sims = op.layer_similarity([a, b, c], torch.tensor([[1, 0]]))
    assert sims == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError):
        op.layer_similarity([a], torch.tensor([[1, 1]]))


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=8).filter(lambda v: max(v) > 0),
       st.sampled_from([float("nan"), float("inf"), -1.0]))
def test_effective_rank_refuses_non_finite_or_negative_values(values, bad):
    with pytest.raises(ValueError, match="singular_values"):
        op.effective_rank(torch.tensor([*values, bad]), 0.9)


def test_effective_rank_refuses_all_zeros_bad_energy_and_text():
    with pytest.raises(ValueError, match="all zero"):
        op.effective_rank(torch.zeros(4), 0.9)  # used to answer 1
    for energy in (0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="energy must be"):
            op.effective_rank(torch.ones(3), energy)
    with pytest.raises(TypeError, match="1-D tensor of numbers"):
        op.effective_rank("1 2 3", 0.9)
    assert op.effective_rank([3.0, 4.0], 0.5) == op.effective_rank(torch.tensor([3.0, 4.0]), 0.5)


def test_layer_similarity_refuses_an_empty_mask_and_mismatched_shapes():
    h = [torch.randn(2, 5, 4) for _ in range(3)]
    with pytest.raises(ValueError, match="marks no real token"):
        op.layer_similarity(h, torch.zeros(2, 5))  # used to return NaN
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, T\) = \(2, 5\)"):
        op.layer_similarity(h, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"hidden_states\[1\] has shape"):
        op.layer_similarity([h[0], torch.randn(2, 5, 3)], torch.ones(2, 5))


def test_xor_and_wilson_arguments():
    np = pytest.importorskip("numpy")
    assert op.ParallelMLP(np.int64(3), np.arange(2)).w1.shape == (2, 2, 3)
    with pytest.raises(TypeError, match="seeds must be a list of ints"):
        op.ParallelMLP(3, 5)
    with pytest.raises(ValueError, match="width must be a positive int"):
        op.train_xor(0, [0], 5)
    with pytest.raises(ValueError, match="lr must be"):
        op.train_xor(2, [0], 5, lr=float("nan"))
    with pytest.raises(ValueError, match="successes must be"):
        op.wilson_interval(2.5, 10)
    with pytest.raises(ValueError, match="z must be"):
        op.wilson_interval(2, 10, z=float("nan"))
    assert op.wilson_interval(np.int64(3), np.int64(10)) == op.wilson_interval(3, 10)
    with pytest.raises(ValueError, match="widths must not be empty"):
        op.xor_sweep([], 2, 5)
    with pytest.raises(ValueError, match="logits contain NaN"):
        op.xor_success(torch.tensor([float("nan"), 1.0, 1.0, -1.0]), torch.tensor([0.0, 1, 1, 0]))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        op.singular_values(torch.ones(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        op.singular_values(torch.full((2, 2), float("nan")))


def test_the_kurtosis_of_a_pool_of_gaussians_matches_a_sampled_pool():
    torch.manual_seed(0)
    assert abs(op.kurtosis(torch.randn(200_000) * 5) - 3) < 0.05  # one Gaussian: 3, whatever its spread
    stds, counts = [0.5, 1.0, 4.0], [50_000, 30_000, 20_000]
    pool = torch.cat([torch.randn(c) * s for s, c in zip(stds, counts, strict=True)])
    want = op.gaussian_mixture_kurtosis(stds, counts)
    assert want > 3 and abs(op.kurtosis(pool) / want - 1) < 0.05
    assert op.gaussian_mixture_kurtosis([2.0, 2.0], [1, 9]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="must"):
        op.gaussian_mixture_kurtosis([1.0], [1, 2])
    with pytest.raises(ValueError, match="must"):
        op.kurtosis(torch.ones(5))


def test_the_shuffled_baseline_pairs_each_token_with_another_one():
    h = torch.randn(2, 5, 8)
    same = op.layer_similarity([h, h], torch.ones(2, 5))
    assert same[0] == pytest.approx(1.0)
    shuffled = op.layer_similarity([h, h], torch.ones(2, 5), shuffle_seed=0)
    assert shuffled[0] < 0.9  # no token compared with itself
    assert op.layer_similarity([h, h], torch.ones(2, 5), shuffle_seed=0) == shuffled  # seeded
