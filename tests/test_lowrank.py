"""Low-rank factorisation reproduces a Linear at full rank and is optimal below it; weight sharing really shares."""

import copy
import doctest

import pytest
import torch
from torch import nn

import lecture_utils as lu
from lecture_utils import lowrank


def _inputs(vocab=100, batch=3, length=7):
    gen = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, vocab, (batch, length), generator=gen),
            "attention_mask": torch.ones(batch, length, dtype=torch.long),
            "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}


def test_full_rank_reproduces_the_linear():
    torch.manual_seed(0)
    linear = nn.Linear(12, 8)
    low = lowrank.LowRankLinear.from_linear(linear, 8)
    x = torch.randn(5, 3, 12)
    assert torch.allclose(low(x), linear(x), atol=1e-5)
    assert low.first.weight.shape == (8, 12) and low.second.weight.shape == (8, 8) and low.first.bias is None
    assert (low.in_features, low.out_features, low.rank) == (12, 8, 8)


def test_factors_are_the_best_rank_r_approximation():
    torch.manual_seed(0)
    w = torch.randn(20, 30)
    a, b = lowrank.low_rank_factors(w, 5)
    assert a.shape == (20, 5) and b.shape == (5, 30)
    s = torch.linalg.svdvals(w)
    # Eckart–Young: the error is the energy of the dropped singular values
    assert torch.isclose((w - a @ b).norm(), s[5:].pow(2).sum().sqrt(), rtol=1e-4)
    assert lowrank.retained_energy(w, 5) == pytest.approx((s[:5].pow(2).sum() / s.pow(2).sum()).item(), rel=1e-5)
    assert lowrank.retained_energy(w, 20) == pytest.approx(1.0)


@pytest.mark.parametrize("rank", [0, 9, -1, 2.0, True])
def test_rank_out_of_range_raises(rank):
    with pytest.raises(ValueError, match="rank must be an int from 1 to min"):
        lowrank.low_rank_factors(torch.randn(8, 12), rank)
    with pytest.raises(ValueError, match="rank"):
        lowrank.LowRankLinear(12, 8, rank)


def test_parameter_arithmetic():
    assert lowrank.break_even_rank(384, 384) == 192
    assert lu.measure.count_parameters(lowrank.LowRankLinear(384, 1536, 64)) == 64 * (384 + 1536) + 1536
    assert lu.measure.count_parameters(lowrank.LowRankLinear(384, 1536, 64, bias=False)) == 64 * 1920


def test_factorize_linears_replaces_only_where_it_saves(tiny_bert):
    # tiny_bert: hidden 16, intermediate 32; break-even ranks 8 (16×16) and 10.7 (32×16)
    x = _inputs()
    full = lowrank.factorize_linears(tiny_bert, 16, only_if_smaller=False)
    assert torch.allclose(full(**x).logits, tiny_bert(**x).logits, atol=1e-5)
    low = lowrank.factorize_linears(tiny_bert, 9)
    names = set(lowrank.low_rank_layers(low))
    assert names and all(".encoder." in f".{n}" for n in names)
    assert all(n.endswith(("intermediate.dense", "output.dense")) and "attention" not in n for n in names)
    assert lu.measure.count_parameters(low) < lu.measure.count_parameters(tiny_bert)
    assert type(tiny_bert.bert.encoder.layer[0].intermediate.dense) is nn.Linear  # the input is untouched
    with pytest.raises(ValueError, match="no nn.Linear was factorised"):
        lowrank.factorize_linears(tiny_bert, 16)
    with pytest.raises(ValueError, match="rank must be an int from 1"):
        lowrank.factorize_linears(tiny_bert, 20, only_if_smaller=False)


def test_low_rank_model_trains_and_quantizes(tiny_bert):
    low = lowrank.factorize_linears(tiny_bert, 4)
    x = {**_inputs(), "labels": torch.tensor([0, 1, 0])}
    lu.training.train(low, [x], max_steps=2, progress=False)
    q = lu.quantize.dynamic_int8(low)
    assert q(**_inputs()).logits.shape == (3, 2)


def test_share_layers_really_shares(tiny_bert):
    shared = lowrank.share_layers(tiny_bert, [0, 0, 0])
    layers = lu.surgery.encoder_layers(shared)
    assert len(layers) == 3 and layers[0] is layers[1] is layers[2]
    assert layers[0].attention.self.query.weight is layers[2].attention.self.query.weight
    assert shared.config.num_hidden_layers == 3 and tiny_bert.config.num_hidden_layers == 2
    assert lowrank.shared_layer_map(shared) == [0, 0, 0] and lowrank.unique_layers(shared) == 1
    assert lowrank.shared_layer_map(tiny_bert) == [0, 1]
    per_layer = lu.measure.count_parameters(lu.surgery.encoder_layers(tiny_bert)[0])
    assert lu.measure.count_parameters(shared) == lu.measure.count_parameters(tiny_bert) - per_layer
    assert lu.measure.size_mb(shared) < lu.measure.size_mb(tiny_bert)  # torch.save stores a shared tensor once


def test_shared_model_equals_an_unshared_model_with_copied_weights(tiny_bert):
    x = _inputs()
    assert torch.allclose(lowrank.share_layers(tiny_bert, [0, 1])(**x).logits, tiny_bert(**x).logits, atol=1e-6)
    copied = copy.deepcopy(tiny_bert)
    layers = lu.surgery.encoder_layers(copied)
    layers[1].load_state_dict(layers[0].state_dict())
    assert layers[1] is not layers[0]
    shared = lowrank.share_layers(tiny_bert, [0, 0])
    assert torch.allclose(shared(**x).logits, copied(**x).logits, atol=1e-6)
    assert not torch.allclose(shared(**x).logits, tiny_bert(**x).logits, atol=1e-6)


def test_shared_weights_get_one_gradient_from_every_position(tiny_bert):
    shared = lowrank.share_layers(tiny_bert, [1, 1]).train()
    shared(**_inputs(), labels=torch.tensor([0, 1, 1])).loss.backward()
    w = lu.surgery.encoder_layers(shared)[0].output.dense.weight
    assert w.grad is not None and w.grad.abs().sum() > 0
    names = [n for n, p in shared.named_parameters() if p is w]
    assert len(names) == 1  # listed once, so an optimiser updates it once per step


@pytest.mark.parametrize("sources", [[], [2], [0, -1], [True]])
def test_share_layers_validates_sources(tiny_bert, sources):
    with pytest.raises(ValueError, match="sources"):
        lowrank.share_layers(tiny_bert, sources)


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(2, 6), st.integers(0, 2**16), st.sampled_from([torch.int64, torch.int32]))
def test_an_integer_matrix_gets_float_factors_not_rounded_ones(rows, cols, seed, dtype):
    weight = torch.randint(-5, 6, (rows, cols), generator=torch.Generator().manual_seed(seed), dtype=dtype)
    rank = min(rows, cols)
    a, b = lowrank.low_rank_factors(weight, rank)
    assert a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a @ b, weight.float(), atol=1e-4, rtol=1e-4)  # full rank: exact


def test_non_finite_or_empty_weights_are_refused():
    for bad in (float("nan"), float("inf")):
        w = torch.randn(4, 3)
        w[0, 0] = bad
        with pytest.raises(ValueError, match="weight must be finite"):
            lowrank.low_rank_factors(w, 2)
        with pytest.raises(ValueError, match="weight must be finite"):
            lowrank.retained_energy(w, 2)
    with pytest.raises(ValueError, match="weight must not be empty"):
        lowrank.low_rank_factors(torch.zeros(0, 3), 1)
    with pytest.raises(ValueError, match="all zeros"):
        lowrank.retained_energy(torch.zeros(3, 3), 1)  # used to report 0% kept
    with pytest.raises(TypeError, match="weight must be a torch tensor"):
        lowrank.low_rank_factors([[1.0, 2.0]], 1)


def test_counts_and_layers_check_their_sizes():
    np = pytest.importorskip("numpy")
    assert lowrank.break_even_rank(np.int64(3), np.int64(6)) == 2
    with pytest.raises(ValueError, match="out_features must be a positive int, got -3"):
        lowrank.break_even_rank(-3, 4)
    with pytest.raises(ValueError, match="in_features must be"):
        lowrank.break_even_rank(4, 0)
    assert lowrank.LowRankLinear.from_linear(nn.Linear(6, 4), np.int64(2)).rank == 2
    with pytest.raises(TypeError, match="include must be a list of strings, got the single string"):
        lowrank.factorize_linears(nn.Sequential(nn.Linear(8, 8)), 2, include="encoder")


def test_docstring_examples_run():
    result = doctest.testmod(lowrank)
    assert result.attempted >= 5 and result.failed == 0


def test_encoder_linear_weights_counts_what_factorisation_changes(bert4):
    from torch import nn

    from lecture_utils import lowrank

    by_hand = sum(m.weight.numel() for m in bert4.bert.encoder.modules() if isinstance(m, nn.Linear))
    assert lowrank.encoder_linear_weights(bert4) == by_hand  # the classifier and pooler are not counted
    factorised = lowrank.factorize_linears(bert4, 2)
    assert 0 < lowrank.encoder_linear_weights(factorised) < by_hand
