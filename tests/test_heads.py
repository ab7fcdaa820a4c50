"""Head gates, importance and removal on a tiny random BERT, against references: a gated-off head and a removed
head give the same outputs, parameter counts follow the arithmetic, save → reload round-trips."""

import json

import pytest
import torch

from lecture_utils import heads, surgery, training
from lecture_utils.measure import count_parameters

HIDDEN, N_HEADS, N_LAYERS = 16, 4, 3
HEAD = HIDDEN // N_HEADS


def _bert(attn: str = "eager", seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2, attn_implementation=attn,
                     initializer_range=0.2)  # larger than BERT's 0.02, so every head visibly matters
    model = BertForSequenceClassification(cfg).eval()
    assert model.config._attn_implementation == attn
    return model


@pytest.fixture
def bert():
    return _bert()


def _batch(n: int = 4, t: int = 9):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 5:] = 0  # one padded example: the attention mask must still be honoured after surgery
    return {"input_ids": torch.randint(0, 100, (n, t), generator=g), "attention_mask": mask,
            "labels": torch.randint(0, 2, (n,), generator=g)}


def _logits(model, batch=None):
    batch = batch or _batch()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


REMOVE = {0: [1, 3], 2: [0]}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_gated_off_head_and_a_removed_head_give_the_same_outputs(attn):
    model = _bert(attn)
    with heads.HeadGates(model, heads.gate_mask(model, REMOVE)):
        gated = _logits(model)
    removed = heads.remove_heads(model, REMOVE)
    assert torch.allclose(_logits(removed), gated, atol=1e-5)
    assert not torch.allclose(_logits(model), gated, atol=1e-3)  # the heads did matter
    with heads.HeadGates(model):  # all gates 1: nothing changes
        assert torch.allclose(_logits(model), _logits(heads.remove_heads(model, {})), atol=1e-6)
    with torch.no_grad():
        hidden_gated = None
        with heads.HeadGates(model, heads.gate_mask(model, REMOVE)):
            hidden_gated = model(**{k: v for k, v in _batch().items() if k != "labels"},
                                 output_hidden_states=True).hidden_states
        hidden_removed = removed(**{k: v for k, v in _batch().items() if k != "labels"},
                                 output_hidden_states=True).hidden_states
    for a, b in zip(hidden_gated, hidden_removed, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_removal_shrinks_the_projections_and_the_parameter_count_by_the_arithmetic(bert):
    before = count_parameters(bert)
    pruned = heads.remove_heads(bert, REMOVE)
    n_removed = sum(len(v) for v in REMOVE.values())
    per_head = 3 * HEAD * (HIDDEN + 1) + HEAD * HIDDEN
    assert heads.head_parameters(HIDDEN, HEAD) == per_head
    assert count_parameters(pruned) == before - n_removed * per_head
    assert count_parameters(bert) == before  # the input model is untouched
    assert heads.heads_per_layer(pruned) == [2, 4, 3]
    attn = surgery.encoder_layers(pruned)[0].attention
    assert attn.self.query.weight.shape == (2 * HEAD, HIDDEN) and attn.self.key.bias.shape == (2 * HEAD,)
    assert attn.output.dense.weight.shape == (HIDDEN, 2 * HEAD)
    assert attn.self.num_attention_heads == 2 and attn.self.all_head_size == 2 * HEAD
    assert pruned.config.pruned_heads == {0: [1, 3], 2: [0]}
    # the kept rows are the kept heads' rows, in order
    q_old = surgery.encoder_layers(bert)[0].attention.self.query.weight
    assert torch.equal(attn.self.query.weight, torch.cat([q_old[0:HEAD], q_old[2 * HEAD:3 * HEAD]]))


def test_removing_in_two_steps_equals_removing_at_once_and_records_original_indices(bert):
    once = heads.remove_heads(bert, {0: [0, 2, 3]})
    twice = heads.remove_heads(heads.remove_heads(bert, {0: [2]}), {0: [0, 2]})  # positions among those left
    assert twice.config.pruned_heads == once.config.pruned_heads == {0: [0, 2, 3]}
    assert torch.allclose(_logits(once), _logits(twice), atol=1e-6)


def test_save_and_load_pruned_round_trips(bert, tmp_path):
    pruned = heads.remove_heads(bert, REMOVE)
    pruned.save_pretrained(tmp_path)
    again = heads.load_pruned(tmp_path, attn_implementation="eager")
    assert torch.allclose(_logits(again), _logits(pruned), atol=1e-6)
    assert heads.heads_per_layer(again) == [2, 4, 3]
    assert heads.removed_heads(again) == {0: [1, 3], 2: [0]}
    assert count_parameters(again) == count_parameters(pruned)


def test_heads_and_layers_removed_together_survive_save_and_reload(bert, tmp_path):
    pruned = surgery.drop_layers(heads.remove_heads(bert, REMOVE), [1])  # layer 2 (one head gone) becomes layer 1
    assert pruned.config.pruned_heads == {0: [1, 3], 1: [0]}
    pruned.save_pretrained(tmp_path)
    again = heads.load_pruned(tmp_path)
    assert again.config.num_hidden_layers == 2 and heads.heads_per_layer(again) == [2, 3]
    assert torch.allclose(_logits(again), _logits(pruned), atol=1e-5)


def test_emptying_a_layer_is_refused_unless_the_layer_is_dropped(bert):
    with pytest.raises(ValueError, match="every head of layer"):
        heads.remove_heads(bert, {1: [0, 1, 2, 3]})
    dropped = heads.remove_heads(bert, {1: [0, 1, 2, 3], 2: [0]}, drop_empty_layers=True)
    reference = heads.remove_heads(surgery.drop_layers(bert, [1]), {1: [0]})
    assert dropped.config.num_hidden_layers == 2 and dropped.config.pruned_heads == {1: [0]}
    assert torch.allclose(_logits(dropped), _logits(reference), atol=1e-6)
    with pytest.raises(ValueError, match="every layer"):
        heads.remove_heads(bert, {i: list(range(N_HEADS)) for i in range(N_LAYERS)}, drop_empty_layers=True)


@pytest.mark.parametrize("bad, match", [({3: [0]}, "layer 3 out of range"), ({0: [4]}, "out of range"),
                                        ({0: [-1]}, "out of range"), ({0: [1, 1]}, "repeat"),
                                        ({"0": [1]}, "out of range"), ([0, 1], "must be a dict")])
def test_bad_head_lists_are_explained(bert, bad, match):
    with pytest.raises(ValueError, match=match):
        heads.remove_heads(bert, bad)


def test_head_importance_is_the_mean_of_per_example_absolute_gradients(bert):
    """Michel et al.: I = mean over examples of |∂L(x)/∂ξ|, the absolute value taken per example. Reference: each
    example alone, its gradient by central finite differences, by hand."""
    model = bert.double()
    batch = _batch()
    raw = heads.head_importance(model, [batch], normalize=False)
    assert raw.shape == (N_LAYERS, N_HEADS)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not model.training
    eps = 1e-6

    def loss_at(example, layer, head, value):
        gates = torch.ones(N_LAYERS, N_HEADS, dtype=torch.float64)
        gates[layer, head] = value
        one = {k: v[example:example + 1] for k, v in batch.items()}
        with heads.HeadGates(model, gates), torch.no_grad():
            return model(**one).loss.item()

    for layer, head in [(0, 0), (1, 2), (2, 3)]:
        per_example = [(loss_at(i, layer, head, 1 + eps) - loss_at(i, layer, head, 1 - eps)) / (2 * eps)
                       for i in range(len(batch["labels"]))]
        want = sum(abs(g) for g in per_example) / len(per_example)
        assert raw[layer, head].item() == pytest.approx(want, rel=1e-4, abs=1e-9)
        # not the absolute value of the batch-mean gradient (what a single gate per batch would give) …
        if min(per_example) < 0 < max(per_example):
            assert raw[layer, head].item() > abs(sum(per_example) / len(per_example)) + 1e-9
    normed = heads.head_importance(model, [batch, batch])
    assert torch.allclose(normed.norm(dim=1), torch.ones(N_LAYERS), atol=1e-6)
    assert torch.allclose(normed, raw / raw.norm(dim=1, keepdim=True), atol=1e-6)  # same batch twice: same mean


def test_per_example_gates_scale_each_example_alone(bert):
    """Gates of shape (batch, layers, heads): example i sees only its own gates."""
    batch = _batch()
    gates = torch.ones(4, N_LAYERS, N_HEADS)
    gates[2, 1, :] = 0  # every head of layer 1 off, for example 2 only
    with heads.HeadGates(bert, gates), torch.no_grad():
        got = bert(**batch).logits
    off = torch.ones(N_LAYERS, N_HEADS)
    off[1, :] = 0
    with heads.HeadGates(bert, off), torch.no_grad():
        want_2 = bert(**batch).logits[2]
    assert torch.allclose(got[2], want_2, atol=1e-6)
    assert torch.allclose(got[[0, 1, 3]], _logits(bert, batch)[[0, 1, 3]], atol=1e-6)
    with pytest.raises(ValueError, match="batch of 3"), heads.HeadGates(bert, torch.ones(3, N_LAYERS, N_HEADS)), \
            torch.no_grad():
        bert(**batch)


def test_importance_refuses_uneven_layers_and_gates_check_their_shape(bert):
    pruned = heads.remove_heads(bert, {0: [0]})
    with pytest.raises(ValueError, match="different numbers of heads"):
        heads.head_importance(pruned, [_batch()])
    with pytest.raises(ValueError, match="shape"):
        heads.HeadGates(bert, torch.ones(2, 2))
    with pytest.raises(ValueError, match="at least one batch"):
        heads.head_importance(bert, [])


def test_heads_to_remove_takes_the_lowest_scores_globally_and_keeps_one_per_layer():
    scores = torch.tensor([[0.1, 0.9, 0.8], [0.2, 0.3, 0.05], [0.01, 0.02, 0.03]])
    assert heads.heads_to_remove(scores, 3 / 9) == {1: [2], 2: [0, 1]}
    # 5 heads: the last head of layer 2 (0.03) would empty it, so it stays and 0.1 and 0.2 go instead
    assert heads.heads_to_remove(scores, 5 / 9) == {0: [0], 1: [0, 2], 2: [0, 1]}
    assert heads.heads_to_remove(scores, 0.0) == {}
    with pytest.raises(ValueError, match="at most 6"):
        heads.heads_to_remove(scores, 7 / 9)
    with pytest.raises(ValueError, match="fraction"):
        heads.heads_to_remove(scores, 1.5)
    assert sum(map(len, heads.heads_to_remove(scores, 1.0, min_per_layer=0).values())) == 9


# --------------------------------------------------------------------------------------------------------------
# Bad input and other model families
# --------------------------------------------------------------------------------------------------------------

def test_numpy_and_tensor_head_indices_are_accepted(bert):
    np = pytest.importorskip("numpy")
    want = heads.remove_heads(bert, {0: [1, 2]})
    for spec in ({np.int64(0): [np.int64(1), np.int64(2)]}, {torch.tensor(0): torch.tensor([1, 2])},
                 {0: np.array([1, 2])}):
        got = heads.remove_heads(bert, spec)
        assert heads.heads_per_layer(got) == heads.heads_per_layer(want)
        assert torch.equal(_logits(got), _logits(want))


def test_heads_to_remove_refuses_nan_scores_and_bad_settings():
    scores = torch.rand(2, 4)
    scores[0, 1] = float("nan")
    with pytest.raises(ValueError, match="scores must be finite"):  # used to rank the NaN anyway
        heads.heads_to_remove(scores, 0.25)
    with pytest.raises(ValueError, match="fraction must be"):
        heads.heads_to_remove(torch.rand(2, 4), float("nan"))
    with pytest.raises(ValueError, match="min_per_layer must be an int from 0 to 4"):
        heads.heads_to_remove(torch.rand(2, 4), 0.25, min_per_layer=1.5)
    np = pytest.importorskip("numpy")
    assert heads.heads_to_remove(np.array([[0.1, 0.9], [0.8, 0.2]]), 0.5) == {0: [0], 1: [1]}


def test_head_importance_refuses_a_single_batch_and_nan_losses(bert):
    with pytest.raises(TypeError, match=r"wrap it as \[batch\]"):
        heads.head_importance(bert, _batch())

    def nan_loss(model, batch):
        return training.cross_entropy_loss(model, batch) * float("nan")

    with pytest.raises(ValueError, match="NaN or infinite"):
        heads.head_importance(bert, [_batch()], loss_fn=nan_loss)


def test_load_pruned_refuses_a_config_naming_heads_the_model_lacks(bert, tmp_path):
    pruned = heads.remove_heads(bert, {0: [3]})
    pruned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for bad in ({"0": [3, 20]}, {"-1": [3]}, {"0": [3, 3]}, {"0": [0, 1, 2, 3]}):
        config["pruned_heads"] = bad
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match="pruned_heads"):
            heads.load_pruned(tmp_path)


def test_load_pruned_wraps_shape_mismatches_and_checks_its_arguments(bert, tmp_path):
    heads.remove_heads(bert, {0: [3]}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["pruned_heads"] = {"1": [0]}  # the weights say layer 0 lost a head, the config says layer 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the architecture"):
        heads.load_pruned(tmp_path)
    with pytest.raises(TypeError, match="path must be a folder"):
        heads.load_pruned(3)
    with pytest.raises(TypeError, match="model_class"):
        heads.load_pruned(tmp_path, model_class=dict)


def test_heads_on_other_families(tiny_distilbert, tiny_electra):
    with pytest.raises(ValueError, match="has no encoder layers"):
        heads.heads_per_layer(tiny_distilbert)
    smaller = heads.remove_heads(tiny_electra, {0: [1]})
    assert heads.heads_per_layer(smaller) == [3, 4]
    assert smaller(input_ids=torch.randint(0, 100, (2, 5))).logits.shape == (2, 2)
    with pytest.raises(ValueError, match="gates must be finite"):
        heads.HeadGates(tiny_electra, torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int"):
        heads.head_parameters(0, 4)
