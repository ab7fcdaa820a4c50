import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import lecture_utils as lu
from lecture_utils import measure


def test_count_parameters_matches_a_hand_count():
    model = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    assert measure.count_parameters(model) == 10 * 5 + 5 + 5 * 2 + 2
    model[0].weight.requires_grad_(False)
    assert measure.count_parameters(model, trainable_only=True) == 5 + 5 * 2 + 2


def test_parameters_by_component_on_bert(tiny_bert):
    parts = measure.parameters_by_component(tiny_bert)
    emb = tiny_bert.bert.embeddings
    want_emb = sum(p.numel() for p in emb.parameters())
    assert parts["embeddings"] == want_emb
    assert parts["encoder"] == sum(p.numel() for p in tiny_bert.bert.encoder.parameters())
    assert parts["total"] == sum(p.numel() for p in tiny_bert.parameters())
    assert parts["head"] == parts["total"] - parts["embeddings"] - parts["encoder"]


def test_size_mb_is_four_bytes_per_fp32_parameter_plus_a_little():
    model = nn.Linear(1000, 1000)
    n = measure.count_parameters(model)
    assert 4 * n / 1e6 <= measure.size_mb(model) < 4 * n / 1e6 * 1.01
    assert measure.size_mb(model.half()) == pytest.approx(measure.size_mb(nn.Linear(1000, 1000)) / 2, rel=0.01)


def test_sparsity_agrees_with_torch_pruning_and_ignores_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10), nn.Linear(10, 4))
    assert measure.sparsity(model) == 0.0
    prune.l1_unstructured(model[0], "weight", amount=0.5)  # torch's own pruning is the reference
    zeros = (model[0].weight == 0).sum().item()
    assert zeros == 100
    assert measure.sparsity(model) == pytest.approx(100 / (200 + 40))
    assert measure.sparsity_by_layer(model) == {"0": pytest.approx(0.5), "1": 0.0}
    with torch.no_grad():
        model[0].bias.zero_()  # biases are not weight matrices
    assert measure.sparsity(model) == pytest.approx(100 / 240)


def test_sparsity_needs_weight_matrices():
    with pytest.raises(ValueError, match="no weight matrices"):
        measure.sparsity(nn.LayerNorm(4))


def test_latency_reports_median_batch_threads(tiny_bert):
    batch = {"input_ids": torch.randint(0, 100, (3, 8)), "attention_mask": torch.ones(3, 8, dtype=torch.long)}
    lat = measure.latency_ms(tiny_bert, batch, repeats=3, warmup=1)
    assert lat["min_ms"] <= lat["median_ms"] <= lat["max_ms"] and lat["median_ms"] > 0
    assert lat["batch_size"] == 3 and lat["threads"] == torch.get_num_threads() and lat["device"] == "cpu"
    with pytest.raises(ValueError):
        measure.latency_ms(tiny_bert, batch, repeats=0)
    assert measure.latency_ms(nn.Linear(4, 2), torch.randn(5, 4), repeats=2)["batch_size"] == 5


def test_benchmark_gathers_everything(tiny_bert):
    batch = {"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long),
             "labels": torch.tensor([0, 1])}
    res = measure.benchmark(tiny_bert, {k: v for k, v in batch.items() if k != "labels"}, loader=[batch], repeats=2)
    assert set(res) >= {"params", "size_mb", "sparsity", "latency_ms", "batch_size", "threads", "accuracy"}
    assert res["params"] == lu.measure.count_parameters(tiny_bert) and 0 <= res["accuracy"] <= 1
