"""lecture_utils.prune against torch.nn.utils.prune, on the tiny random BERT."""

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

import lecture_utils as lu
from lecture_utils import prune as P


def _masks(model):
    return {n: b.clone() for n, b in model.named_buffers() if n.endswith("weight_mask")}


def test_targets_are_the_linear_layers_outside_the_embeddings(tiny_bert):
    targets = P.linear_targets(tiny_bert)
    assert all(isinstance(m, nn.Linear) for m in targets.values())
    assert not any("embeddings" in n for n in targets)
    assert len(targets) == 2 * 6 + 2  # 6 Linear per layer, pooler, classifier
    with pytest.raises(ValueError, match="no nn.Linear"):
        P.linear_targets(nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4)))
    with pytest.raises(ValueError, match="no parameter"):
        P.linear_targets(nn.Linear(3, 2), parameter="scale")


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9])
def test_layerwise_masks_equal_torch_l1_unstructured(tiny_bert, s):
    ref = copy.deepcopy(tiny_bert)
    for m in P.linear_targets(ref).values():
        tprune.l1_unstructured(m, "weight", amount=s)
    P.prune_layerwise_(tiny_bert, s)
    ours, theirs = _masks(tiny_bert), _masks(ref)
    assert ours.keys() == theirs.keys() and len(ours) == 14
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    report = P.sparsity_report(tiny_bert)
    for name, value in report.layers.items():
        n = P.linear_targets(tiny_bert)[name].weight.numel()
        assert value == pytest.approx(round(s * n) / n)


@pytest.mark.parametrize("s", [0.2, 0.5, 0.9])
def test_global_masks_equal_torch_global_unstructured(tiny_bert, s):
    ref = copy.deepcopy(tiny_bert)
    tprune.global_unstructured([(m, "weight") for m in P.linear_targets(ref).values()],
                               pruning_method=tprune.L1Unstructured, amount=s)
    P.prune_global_(tiny_bert, s)
    ours, theirs = _masks(tiny_bert), _masks(ref)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert P.sparsity_report(tiny_bert).linear == pytest.approx(s, abs=1e-3)
    # global ranking: no kept weight is smaller than a pruned one, across all layers
    targets = P.linear_targets(tiny_bert)
    kept = torch.cat([m.weight_orig[m.weight_mask == 1].abs() for m in targets.values()])
    gone = torch.cat([m.weight_orig[m.weight_mask == 0].abs() for m in targets.values()])
    assert kept.min() >= gone.max()


@pytest.mark.parametrize("method", P.METHODS)
def test_repruning_grows_the_masks_to_the_requested_sparsity(tiny_bert, method):
    P.prune_model_(tiny_bert, 0.5, method)
    first = _masks(tiny_bert)
    P.prune_model_(tiny_bert, 0.8, method)
    assert P.sparsity_report(tiny_bert).linear == pytest.approx(0.8, abs=2e-3)
    assert all(((first[k] == 0) <= (m == 0)).all() for k, m in _masks(tiny_bert).items())  # pruned stay pruned
    with pytest.raises(ValueError, match="only grow"):
        P.prune_model_(tiny_bert, 0.5, method)


@pytest.mark.parametrize("bad", [-0.1, 1, 1.0, 1.5, "0.5", True])
def test_sparsity_outside_0_1_raises(tiny_bert, bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        P.prune_global_(tiny_bert, bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        P.prune_layerwise_(tiny_bert, bad)
    with pytest.raises(ValueError, match="method"):
        P.prune_model_(tiny_bert, 0.5, "random")


def test_make_permanent_removes_masks_and_keeps_zeros(tiny_bert):
    P.prune_global_(tiny_bert, 0.7)
    assert P.is_pruned(tiny_bert) and P.keeps_mask_zeros(tiny_bert)
    before = P.sparsity_report(tiny_bert)
    x = torch.randint(0, 100, (2, 8))
    logits = tiny_bert(input_ids=x).logits
    assert P.make_permanent_(tiny_bert) == 14
    assert not P.is_pruned(tiny_bert)
    names = [n for n, _ in tiny_bert.named_parameters()] + [n for n, _ in tiny_bert.named_buffers()]
    assert not any(n.endswith(("_orig", "_mask")) for n in names)
    assert P.sparsity_report(tiny_bert) == before
    assert torch.allclose(tiny_bert(input_ids=x).logits, logits)


def test_save_and_reload_keeps_the_zeros(tiny_bert):
    fresh = copy.deepcopy(tiny_bert)  # before pruning: a masked model cannot be deep-copied
    P.prune_layerwise_(tiny_bert, 0.6)
    P.make_permanent_(tiny_bert)
    buf = io.BytesIO()
    torch.save(tiny_bert.state_dict(), buf)
    buf.seek(0)
    with torch.no_grad():
        for p in fresh.parameters():
            p.fill_(1.0)
    fresh.load_state_dict(torch.load(buf))
    assert P.sparsity_report(fresh).linear == pytest.approx(P.sparsity_report(tiny_bert).linear)
    assert P.sparsity_report(fresh).linear == pytest.approx(0.6, abs=1e-3)


def test_mask_adds_memory_until_made_permanent(tiny_bert):
    dense_state, dense_held = lu.measure.state_dict_bytes(tiny_bert), lu.memory.held_bytes(tiny_bert)
    P.prune_global_(tiny_bert, 0.5)
    linear = P.weight_storage(tiny_bert)["dense"]
    assert lu.measure.state_dict_bytes(tiny_bert) > dense_state + 0.9 * linear  # weight_orig + weight_mask saved
    assert lu.memory.held_bytes(tiny_bert) >= dense_held + 2 * linear  # mask + recomputed weight
    P.make_permanent_(tiny_bert)
    assert lu.memory.held_bytes(tiny_bert) == dense_held
    assert lu.measure.state_dict_bytes(tiny_bert) == pytest.approx(dense_state, rel=0.01)


def test_weight_storage_at_90_percent(tiny_bert):
    dense = P.weight_storage(tiny_bert)
    P.prune_global_(tiny_bert, 0.9)
    sparse = P.weight_storage(tiny_bert)
    assert sparse["dense"] == dense["dense"]
    assert sparse["csr"] < sparse["dense"] / 3 and sparse["zlib"] < sparse["dense"] / 2
    assert sparse["csr_int64"] > sparse["csr"]


def test_report_whole_model_numbers_include_untouched_embeddings(tiny_bert):
    P.prune_global_(tiny_bert, 0.9)
    r = P.sparsity_report(tiny_bert)
    assert r.linear == pytest.approx(0.9, abs=1e-3)
    assert r.whole_model < r.all_matrices < r.linear
    assert r.all_matrices == pytest.approx(lu.measure.sparsity(tiny_bert))


def test_weights_stay_zero_through_train_with_masks_attached(tiny_bert):
    P.prune_global_(tiny_bert, 0.8)
    masks = _masks(tiny_bert)
    gen = torch.Generator().manual_seed(0)
    loader = [{"input_ids": torch.randint(0, 100, (4, 8), generator=gen), "labels": torch.tensor([0, 1, 0, 1])}
              for _ in range(3)]
    orig = {n: p.clone() for n, p in tiny_bert.named_parameters() if n.endswith("weight_orig")}
    lu.training.train(tiny_bert, loader, max_steps=3, lr=1e-2, progress=False)
    tiny_bert(input_ids=loader[0]["input_ids"])  # the hook recomputes weight before each forward
    assert P.keeps_mask_zeros(tiny_bert)
    assert _masks(tiny_bert).keys() == masks.keys()
    assert all(torch.equal(masks[k], m) for k, m in _masks(tiny_bert).items())
    assert any(not torch.equal(orig[n], p) for n, p in tiny_bert.named_parameters() if n in orig)  # it trained
    assert P.sparsity_report(tiny_bert).linear == pytest.approx(0.8, abs=1e-3)


def test_iterative_prune_rounds(tiny_bert):
    gen = torch.Generator().manual_seed(1)
    loader = [{"input_ids": torch.randint(0, 100, (4, 8), generator=gen), "labels": torch.tensor([0, 1, 1, 0])}
              for _ in range(2)]
    rows = P.iterative_prune_(tiny_bert, [0.5, 0.75, 0.9], loader, steps_per_round=2, eval_loader=loader)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert [r["sparsity"] for r in rows] == pytest.approx([0.5, 0.75, 0.9], abs=2e-3)
    assert all(r["steps"] == 2 and 0 <= r["accuracy"] <= 1 for r in rows)
    with pytest.raises(ValueError, match="increasing"):
        P.iterative_prune_(tiny_bert, [0.9, 0.5], loader, steps_per_round=1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        P.iterative_prune_(tiny_bert, [0.5, 1.0], loader, steps_per_round=1)


def test_pruned_copy_leaves_the_original_alone(tiny_bert):
    clone = P.pruned_copy(tiny_bert, 0.5, "layerwise")
    assert P.is_pruned(clone) and not P.is_pruned(tiny_bert)
    assert lu.measure.sparsity(tiny_bert) < 0.01


def test_head_can_be_left_dense(tiny_bert):
    targets = P.linear_targets(tiny_bert, exclude=P.HEAD)
    assert len(targets) == 12 and not any(n in ("classifier", "bert.pooler.dense") for n in targets)
    clone = P.pruned_copy(tiny_bert, 0.9, "global", exclude=P.HEAD)
    assert (clone.classifier.weight != 0).all() and (clone.bert.pooler.dense.weight != 0).all()
    assert P.sparsity_report(clone, exclude=P.HEAD).linear == pytest.approx(0.9, abs=1e-3)
    gen = torch.Generator().manual_seed(2)
    loader = [{"input_ids": torch.randint(0, 100, (4, 8), generator=gen), "labels": torch.tensor([0, 1, 1, 0])}]
    rows = P.iterative_prune_(tiny_bert, [0.5], loader, steps_per_round=1, exclude=P.HEAD)
    assert rows[0]["sparsity"] == pytest.approx(0.5, abs=1e-3) and not P.is_pruned(tiny_bert.classifier)


# --------------------------------------------------------------------------------------------------------------
# Other model families and bad input
# --------------------------------------------------------------------------------------------------------------

def test_electras_embedding_projection_is_not_an_encoder_target(tiny_electra):
    targets = P.linear_targets(tiny_electra)
    assert "electra.embeddings_project" not in targets
    assert any(name.startswith("electra.encoder.layer.0") for name in targets)
    P.prune_global_(tiny_electra, 0.5)
    assert not P.is_pruned(tiny_electra.electra.embeddings_project)


def test_head_exclusion_also_leaves_distilberts_pre_classifier_dense(tiny_distilbert):
    targets = P.linear_targets(tiny_distilbert, exclude=P.HEAD)
    assert targets and all(name.startswith("distilbert.transformer.layer") for name in targets)


def test_nan_weights_cannot_be_ranked_by_magnitude():
    model = lu.models.mlp([4, 8, 2])
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    for method in P.METHODS:
        with pytest.raises(ValueError, match=r"weight of '0' must be finite"):
            P.prune_model_(copy.deepcopy(model), 0.5, method)


def test_pruning_arguments_are_explained():
    np = pytest.importorskip("numpy")
    model = lu.models.mlp([4, 8, 2])
    P.prune_global_(model, np.float32(0.5))  # NumPy fractions are fine
    with pytest.raises(ValueError, match="model already carries pruning masks"):
        P.pruned_copy(model, 0.6)  # used to fail inside copy.deepcopy
    dense = lu.models.mlp([4, 8, 2])
    with pytest.raises(TypeError, match="exclude must be a list of strings, got the single string"):
        P.linear_targets(dense, exclude="embeddings")
    with pytest.raises(ValueError, match="method must be one of"):
        P.prune_model_(dense, 0.5, "random")
    with pytest.raises(ValueError, match=r"targets\['x'\] must be a module of this model"):
        P.prune_global_(dense, 0.5, targets={"x": nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="sparsities must not be empty"):
        P.iterative_prune_(dense, [], [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))], 1)
    with pytest.raises(ValueError, match="steps_per_round must be a positive int"):
        P.iterative_prune_(dense, [0.5], [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))], 0)
    with pytest.raises(ValueError, match="loader is empty"):
        P.iterative_prune_(dense, [0.5], [], 1)


# --------------------------------------------------------------------------------------------------------------
# Gradual schedules, recovery with another loss, and where the zeros went by kind of layer
# --------------------------------------------------------------------------------------------------------------

def test_cubic_schedule_follows_zhu_and_gupta():
    s = P.cubic_schedule(0.9, 3)
    assert s == pytest.approx([0.9 - 0.9 * (2 / 3) ** 3, 0.9 - 0.9 * (1 / 3) ** 3, 0.9])
    assert s[-1] == 0.9 and all(b > a for a, b in zip(s, s[1:], strict=False))
    assert P.cubic_schedule(0.8, 1) == [0.8]
    steps = [b - a for a, b in zip([0.0, *P.cubic_schedule(0.9, 6)], P.cubic_schedule(0.9, 6), strict=False)]
    assert steps == sorted(steps, reverse=True)  # big cuts first, small ones last
    assert P.cubic_schedule(0.9, 2, initial=0.5)[0] == pytest.approx(0.9 - 0.4 / 8)
    with pytest.raises(ValueError, match="rounds must be"):
        P.cubic_schedule(0.9, 0)
    with pytest.raises(ValueError, match=r"sparsity must be"):
        P.cubic_schedule(1.0, 3)
    with pytest.raises(ValueError, match="initial must be lower than final"):
        P.cubic_schedule(0.5, 3, initial=0.6)


def test_layer_kind_and_sparsity_by_kind(tiny_bert):
    assert P.layer_kind("bert.encoder.layer.3.attention.self.query") == "attention.self.query"
    assert P.layer_kind("bert.encoder.layer.10.output.dense") == "output.dense"
    assert P.layer_kind("classifier") == "classifier"
    P.prune_global_(tiny_bert, 0.5, P.linear_targets(tiny_bert, exclude=P.HEAD))
    kinds = P.sparsity_by_kind(P.sparsity_report(tiny_bert, exclude=P.HEAD).layers)
    assert list(kinds) == ["attention.self.query", "attention.self.key", "attention.self.value",
                           "attention.output.dense", "intermediate.dense", "output.dense"]
    assert all(0 <= v <= 1 for v in kinds.values())
    assert P.sparsity_by_kind({"l.0.a": 0.2, "l.1.a": 0.4, "l.0.b": 1.0}) == pytest.approx({"a": 0.3, "b": 1.0})
    with pytest.raises(ValueError, match="layers must not be empty"):
        P.sparsity_by_kind({})
    with pytest.raises(ValueError, match=r"layers\['l.0.a'\]"):
        P.sparsity_by_kind({"l.0.a": 1.5})
    with pytest.raises(TypeError, match="name"):
        P.layer_kind(3)


def test_iterative_prune_takes_a_loss_and_can_evaluate_once(tiny_bert):
    gen = torch.Generator().manual_seed(3)
    loader = [{"input_ids": torch.randint(0, 100, (4, 8), generator=gen), "labels": torch.tensor([0, 1, 1, 0])}
              for _ in range(2)]
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        return lu.training.cross_entropy_loss(model, batch)

    rows = P.iterative_prune_(tiny_bert, P.cubic_schedule(0.8, 3), loader, steps_per_round=2, method="layerwise",
                             eval_loader=loader, loss_fn=loss_fn, eval_every_round=False, exclude=P.HEAD)
    assert len(calls) == 6 and [("accuracy" in r) for r in rows] == [False, False, True]
    assert rows[-1]["sparsity"] == pytest.approx(0.8, abs=2e-3)
    with pytest.raises(TypeError, match="loss_fn"):
        P.iterative_prune_(tiny_bert, [0.9], loader, steps_per_round=1, loss_fn="ce")
    with pytest.raises(TypeError, match="eval_every_round"):
        P.iterative_prune_(tiny_bert, [0.9], loader, steps_per_round=1, eval_every_round=1)


def test_gradual_prune_grows_the_masks_along_the_cubic_schedule_within_one_run(tiny_bert):
    gen = torch.Generator().manual_seed(3)
    loader = [{"input_ids": torch.randint(0, 100, (4, 8), generator=gen), "labels": torch.tensor([0, 1, 1, 0])}
              for _ in range(3)]
    hist = P.gradual_prune_(tiny_bert, 0.8, loader, steps=12, events=4, ramp=0.5, lr=1e-2, method="layerwise",
                           exclude=P.HEAD)
    assert hist.steps == 12 and len(hist.losses) == 12  # one run: one optimiser, nothing restarts
    assert [step for step, _ in hist.schedule] == [0, 2, 4, 6]  # 6 = half of 12, in 3 equal gaps
    assert [s for _, s in hist.schedule] == pytest.approx(P.cubic_schedule(0.8, 4), abs=2e-3)
    assert P.sparsity_report(tiny_bert, exclude=P.HEAD).linear == pytest.approx(0.8, abs=2e-3)
    assert P.keeps_mask_zeros(tiny_bert) and not P.is_pruned(tiny_bert.classifier)


@pytest.mark.parametrize("steps,events,ramp", [(10, 3, 0.5), (9, 4, 0.7), (20, 6, 0.29), (7, 2, 0.3)])
def test_gradual_prune_places_every_cut_inside_its_ramp(tiny_bert, steps, events, ramp):
    """Zhu and Gupta's schedule: event t (0-based) at step t·Δt with Δt = floor(ramp·steps) // (events - 1), sparsity
    cubic_schedule(final, events)[t]; so no cut lies past ramp·steps and the run ends with at least one step at
    ``final``."""
    loader = [{"input_ids": torch.randint(0, 100, (4, 8)), "labels": torch.tensor([0, 1, 1, 0])}]
    hist = P.gradual_prune_(tiny_bert, 0.6, loader, steps=steps, events=events, ramp=ramp, lr=1e-3,
                           method="layerwise", exclude=P.HEAD)
    gap = int(ramp * steps + 1e-9) // (events - 1)
    cut_steps = [step for step, _ in hist.schedule]
    assert cut_steps == [t * gap for t in range(events)]
    assert max(cut_steps) <= ramp * steps + 1e-9 and max(cut_steps) < steps
    assert [s for _, s in hist.schedule] == pytest.approx(P.cubic_schedule(0.6, events), abs=5e-3)


def test_gradual_prune_refuses_cuts_past_its_ramp(tiny_bert):
    """steps=10, ramp=0.1 leaves a 1-step ramp: 6 events used to be placed at steps 0..5, far past it."""
    loader = [{"input_ids": torch.randint(0, 100, (4, 8)), "labels": torch.tensor([0, 1, 1, 0])}]
    with pytest.raises(ValueError, match=r"events=6 .*ramp=0.1.*at most 2 events fit"):
        P.gradual_prune_(tiny_bert, 0.5, loader, steps=10, events=6, ramp=0.1)
    with pytest.raises(ValueError, match="at most 3 events fit"):  # ramp 1: the last cut would follow the last step
        P.gradual_prune_(tiny_bert, 0.5, loader, steps=3, events=4, ramp=1.0)
    assert not P.is_pruned(tiny_bert)
    hist = P.gradual_prune_(tiny_bert, 0.5, loader, steps=3, events=1, ramp=0.1, lr=1e-3)  # one cut needs no ramp
    assert [step for step, _ in hist.schedule] == [0] and hist.steps == 3


def test_gradual_prune_rejects_what_does_not_fit(tiny_bert):
    loader = [{"input_ids": torch.randint(0, 100, (4, 8)), "labels": torch.tensor([0, 1, 1, 0])}]
    with pytest.raises(ValueError, match="do not fit in steps=4"):
        P.gradual_prune_(tiny_bert, 0.5, loader, steps=4, events=6, ramp=1.0)
    with pytest.raises(ValueError, match="final must be"):
        P.gradual_prune_(tiny_bert, 1.0, loader, steps=10)
    with pytest.raises(ValueError, match="ramp must be"):
        P.gradual_prune_(tiny_bert, 0.5, loader, steps=10, ramp=0)
    with pytest.raises(ValueError, match="events must be"):
        P.gradual_prune_(tiny_bert, 0.5, loader, steps=10, events=0)
    assert not P.is_pruned(tiny_bert)  # every check runs before the first cut
