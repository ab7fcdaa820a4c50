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
    assert isinstance(lat, measure.Latency)
    assert lat.min_ms <= lat.median_ms <= lat.max_ms and lat.median_ms > 0
    assert lat.batch_size == 3 and lat.threads == torch.get_num_threads() and lat.device == "cpu"
    with pytest.raises(ValueError):
        measure.latency_ms(tiny_bert, batch, repeats=0)
    assert measure.latency_ms(nn.Linear(4, 2), torch.randn(5, 4), repeats=2).batch_size == 5


def test_benchmark_gathers_everything(tiny_bert):
    batch = {"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long),
             "labels": torch.tensor([0, 1])}
    res = measure.benchmark(tiny_bert, {k: v for k, v in batch.items() if k != "labels"}, loader=[batch], repeats=2)
    assert isinstance(res, measure.Benchmark) and isinstance(res.latency, measure.Latency)
    assert res.latency.batch_size == 2 and res.latency.repeats == 2 and res.size_mb == measure.size_mb(tiny_bert)
    assert res.params == lu.measure.count_parameters(tiny_bert) and 0 <= res.accuracy <= 1
    assert res.sparsity == measure.sparsity(tiny_bert)
    bare = measure.benchmark(tiny_bert)  # nothing to time or score: said by None, not by a number
    assert bare.latency is None and bare.accuracy is None


# --------------------------------------------------------------------------------------------------------------
# Other model families and bad input
# --------------------------------------------------------------------------------------------------------------

def _sum(model, words):
    return sum(p.numel() for n, p in model.named_parameters() if any(w in n.split(".") for w in words))


def test_parameters_by_component_on_distilbert(tiny_distilbert):
    parts = measure.parameters_by_component(tiny_distilbert)
    assert parts["encoder"] == _sum(tiny_distilbert, ["transformer"]) > 0  # was 0: DistilBERT has no `encoder`
    assert parts["embeddings"] == _sum(tiny_distilbert, ["embeddings"])
    assert parts["head"] == _sum(tiny_distilbert, ["pre_classifier", "classifier"])
    assert parts["total"] == measure.count_parameters(tiny_distilbert)


def test_parameters_by_component_puts_electras_embedding_projection_with_the_embeddings(tiny_electra):
    parts = measure.parameters_by_component(tiny_electra)
    projection = tiny_electra.electra.embeddings_project
    assert parts["embeddings"] == _sum(tiny_electra, ["embeddings"]) + sum(p.numel() for p in projection.parameters())
    assert parts["head"] == sum(p.numel() for p in tiny_electra.classifier.parameters())
    assert parts["total"] == measure.count_parameters(tiny_electra)


def test_parameters_by_component_names_what_it_cannot_place():
    with pytest.raises(ValueError, match=r"cannot place 4 parameters of Sequential.*'0.weight'"):
        measure.parameters_by_component(lu.models.mlp([3, 4, 2]))
    with pytest.raises(TypeError, match="model must be a torch nn.Module"):
        measure.parameters_by_component({"a": 1})


def test_benchmark_reports_an_unknown_sparsity_as_none_not_zero():
    no_matrices = nn.Sequential(nn.LayerNorm(4))
    assert measure.benchmark(no_matrices).sparsity is None
    int8 = lu.quantize.dynamic_int8(lu.models.mlp([8, 8, 2]))  # packed weights that weight_matrices cannot read
    assert measure.benchmark(int8).sparsity is None
    with pytest.raises(ValueError, match="packed weights cannot be read"):
        measure.sparsity(int8)  # used to answer with the other matrices only
    dense = lu.models.mlp([8, 8, 2])
    assert measure.benchmark(dense).sparsity == measure.sparsity(dense)


@pytest.mark.parametrize(("inputs", "kwargs", "match"), [
    ({}, {}, "non-empty dict of batched tensors"), ([1, 2], {}, "inputs must be a batch dict"),
    (torch.zeros(2, 4), {"repeats": 0}, "repeats must be a positive int, got 0"),
    (torch.zeros(2, 4), {"warmup": -1}, "warmup must be a non-negative int"),
    (torch.zeros(2, 4), {"repeats": 2.5}, "repeats must be"),
])
def test_latency_arguments_are_checked(inputs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure.latency_ms(nn.Linear(4, 2), inputs, **kwargs)


def test_latency_accepts_numpy_repeats_and_compare_needs_a_dict_of_models():
    np = pytest.importorskip("numpy")
    assert measure.latency_ms(nn.Linear(4, 2), torch.zeros(2, 4), repeats=np.int64(2), warmup=0).batch_size == 2
    with pytest.raises(TypeError, match=r"models must be a dict \{name: model\}"):
        measure.compare_latency([nn.Linear(4, 2)], torch.zeros(2, 4))
    with pytest.raises(TypeError, match=r"models\['b'\] must be a torch nn.Module"):
        measure.compare_latency({"a": nn.Linear(4, 2), "b": "model"}, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="models must not be empty"):
        measure.compare_latency({}, torch.zeros(2, 4))


def test_measures_refuse_what_is_not_a_model():
    for fn in (measure.count_parameters, measure.size_mb, measure.sparsity, measure.weight_matrices):
        with pytest.raises(TypeError, match="nn.Module"):
            fn("bert")


class _Slow(nn.Module):
    """A model whose forward pass sleeps: a stand-in for a slow int8 kernel."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls = seconds, 0
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return self.linear(x)


def test_latency_budget_stops_a_slow_model_after_a_few_calls():
    slow = _Slow(0.1)
    lat = measure.latency_ms(slow, torch.randn(3, 4), repeats=100, warmup=2, budget_s=0.25)
    assert lat.stopped_by_budget and 1 <= lat.repeats < 100 and lat.requested_repeats == 100
    assert slow.calls == lat.repeats + 2 and lat.median_ms >= 100  # 2 warm-ups use 0.2 s, then 1-2 timed
    unbounded = measure.latency_ms(nn.Linear(4, 2), torch.randn(3, 4), repeats=5)
    assert unbounded.repeats == 5 and not unbounded.stopped_by_budget and unbounded.budget_s is None
    for bad in (0, -1.0, "10", True):
        with pytest.raises(ValueError, match="budget_s"):
            measure.latency_ms(nn.Linear(4, 2), torch.randn(3, 4), budget_s=bad)


def test_compare_latency_budget_is_per_model():
    slow, fast = _Slow(0.1), nn.Linear(4, 2)
    lat = measure.compare_latency({"slow": slow, "fast": fast}, torch.randn(3, 4), repeats=30, warmup=1,
                                  budget_s=0.35)
    assert lat["slow"].stopped_by_budget and lat["slow"].repeats < 30
    assert slow.calls == lat["slow"].repeats + 1  # one warm-up pass, then only the rounds it was given
    assert lat["fast"].repeats == 30 and not lat["fast"].stopped_by_budget  # microseconds: never cut
    assert measure.benchmark(slow, torch.randn(3, 4), repeats=50, budget_s=0.2).latency.median_ms >= 100


def test_evaluate_within_matches_evaluate_or_stops_early(tiny_bert):
    torch.manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long),
                "labels": torch.tensor([0, 1])} for _ in range(4)]
    full = measure.evaluate_within(tiny_bert, batches, budget_s=600)
    ref = lu.training.evaluate(tiny_bert, batches, progress=False)
    assert full.complete and full.batches == 4 and full.accuracy == ref.accuracy
    assert full.loss == pytest.approx(ref.loss, rel=1e-5) and full.examples == 8
    slow = _Slow(0.1)
    loader = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(50)]
    part = measure.evaluate_within(slow, loader, budget_s=0.25)
    assert not part.complete and 1 <= part.batches < 50 and part.examples == 2 * part.batches
    with pytest.raises(ValueError, match="empty"):
        measure.evaluate_within(tiny_bert, [], budget_s=1)
