import pytest
import torch

from lecture_utils import surgery


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, 100, (3, 7), generator=g),
            "attention_mask": torch.ones(3, 7, dtype=torch.long)}


def test_keep_layers_copies_the_chosen_layers_and_fixes_the_config(bert4):
    student = surgery.keep_layers(bert4, [0, 2])
    assert student.config.num_hidden_layers == 2 and bert4.config.num_hidden_layers == 4
    layers = surgery.encoder_layers(student)
    assert [layer.attention.self.layer_idx for layer in layers] == [0, 1]
    for name, p in layers[1].named_parameters():
        assert torch.equal(p, dict(surgery.encoder_layers(bert4)[2].named_parameters())[name])
    with torch.no_grad():
        t = bert4(**_batch(), output_hidden_states=True).hidden_states
        s = student(**_batch(), output_hidden_states=True).hidden_states
    assert torch.allclose(s[1], t[1], atol=1e-6)  # the first kept layer reproduces the teacher's layer 0
    prefix = surgery.keep_layers(bert4, [0, 1])
    with torch.no_grad():
        p = prefix(**_batch(), output_hidden_states=True).hidden_states
    assert torch.allclose(p[2], t[2], atol=1e-6)


def test_surgery_survives_save_and_reload(bert4, tmp_path):
    from transformers import AutoModelForSequenceClassification

    student = surgery.drop_layers(bert4, [1, 3])
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(student(**_batch()).logits, again(**_batch()).logits, atol=1e-6)
    assert again.config.num_hidden_layers == 2


@pytest.mark.parametrize("bad, match", [([], "at least one"), ([4], "out of range"), ([-1], "out of range"),
                                        ([1, 1], "repeat"), ([True], "out of range")])
def test_bad_layer_lists_are_explained(bert4, bad, match):
    with pytest.raises(ValueError, match=match):
        surgery.keep_layers(bert4, bad)


def test_cannot_drop_every_layer_or_use_a_model_without_layers(bert4):
    with pytest.raises(ValueError, match="keep at least one"):
        surgery.drop_layers(bert4, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="no encoder layers"):
        surgery.encoder_layers(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------------------------
# Sajjad et al.'s layer-dropping strategies (0-based: layer 0 is next to the embeddings)
# ------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy, n, k, want", [
    ("top", 12, 4, [8, 9, 10, 11]), ("top", 12, 6, [6, 7, 8, 9, 10, 11]), ("top", 6, 2, [4, 5]),
    ("top", 6, 3, [3, 4, 5]),
    ("bottom", 12, 4, [0, 1, 2, 3]), ("bottom", 6, 3, [0, 1, 2]),
    # every other layer from the top down: the paper's layers 12, 10, 8, 6 when counting from 1
    ("alternate", 12, 4, [5, 7, 9, 11]), ("alternate", 12, 6, [1, 3, 5, 7, 9, 11]), ("alternate", 6, 2, [3, 5]),
    ("alternate", 6, 3, [1, 3, 5]), ("alternate", 5, 3, [0, 2, 4]),
    # the middle block; the bottom keeps the extra layer when the kept ones cannot split evenly
    ("symmetric", 12, 4, [4, 5, 6, 7]), ("symmetric", 12, 6, [3, 4, 5, 6, 7, 8]), ("symmetric", 12, 3, [5, 6, 7]),
    ("symmetric", 6, 2, [2, 3]), ("symmetric", 6, 3, [2, 3, 4]), ("symmetric", 6, 1, [3]),
])
def test_layer_dropping_strategies_follow_the_papers_definitions(strategy, n, k, want):
    assert surgery.layers_to_drop(strategy, n, k) == want
    kept = [i for i in range(n) if i not in want]
    assert len(kept) == n - k


def test_contribution_based_dropping_removes_the_layers_that_change_their_input_least():
    sims = [0.2, 0.9, 0.5, 0.95, 0.1, 0.7]
    assert surgery.layers_to_drop("contribution", 6, 2, sims) == [1, 3]
    assert surgery.layers_to_drop("contribution", 6, 3, torch.tensor(sims)) == [1, 3, 5]
    assert surgery.layers_to_drop("contribution", 4, 2, [0.5, 0.5, 0.5, 0.1]) == [0, 1]  # ties: lower index
    twelve = torch.linspace(0, 1, 12).flip(0)
    assert surgery.layers_to_drop("contribution", 12, 4, twelve) == [0, 1, 2, 3]


@pytest.mark.parametrize("args, match", [
    (("middle", 6, 2), "unknown strategy 'middle'; allowed: top, bottom, alternate, symmetric, contribution"),
    (("top", 6, 6), "k must be an int from 1 to 5"), (("top", 6, 7), "k must be"), (("bottom", 6, 0), "k must be"),
    (("top", 6, 2.0), "k must be"), (("top", 1, 1), "n_layers must be"),
    (("alternate", 6, 4), "at most 3 of 6"),
    (("contribution", 6, 2), "needs similarities"), (("contribution", 6, 2, [0.1] * 5), "one value per layer"),
])
def test_bad_strategy_arguments_are_explained(args, match):
    with pytest.raises(ValueError, match=match):
        surgery.layers_to_drop(*args)


def test_layer_contributions_is_the_mean_cosine_between_each_layers_input_and_output(bert4):
    batch = _batch()
    batch["attention_mask"][0, 4:] = 0
    sims = surgery.layer_contributions(bert4, [batch, batch])
    assert sims.shape == (4,) and ((-1 <= sims) & (sims <= 1)).all()
    with torch.no_grad():
        h = bert4(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    for i in range(4):
        want = torch.nn.functional.cosine_similarity(h[i], h[i + 1], dim=-1)[mask].mean()
        assert sims[i].item() == pytest.approx(want.item(), abs=1e-6)
    assert not bert4.training


def test_keep_layers_carries_the_record_of_removed_heads(bert4):
    bert4.config.pruned_heads = {"1": [0], "3": [1, 2]}  # as it reads back from config.json
    student = surgery.keep_layers(bert4, [3, 0, 1])
    assert student.config.pruned_heads == {0: [1, 2], 2: [0]}


# --------------------------------------------------------------------------------------------------------------
# Bad input and other model families
# --------------------------------------------------------------------------------------------------------------

def test_numpy_and_tensor_layer_indices_are_accepted(bert4):
    np = pytest.importorskip("numpy")
    for keep in ([np.int64(0), np.int64(2)], np.array([0, 2]), torch.tensor([0, 2]), [torch.tensor(0), 2]):
        student = surgery.keep_layers(bert4, keep)
        assert student.config.num_hidden_layers == 2
    assert surgery.drop_layers(bert4, [np.int32(3)]).config.num_hidden_layers == 3
    assert surgery.layers_to_drop("top", np.int64(6), np.int64(2)) == [4, 5]


@pytest.mark.parametrize("bad", ["02", 1, {0: 1}, [0.0, 1.0], [None]])
def test_layer_lists_of_the_wrong_kind_are_explained(bert4, bad):
    with pytest.raises(ValueError, match="keep"):  # BadType is a ValueError too
        surgery.keep_layers(bert4, bad)


@pytest.mark.parametrize("sims", [[0.1, float("nan"), 0.3, 0.2], [0.1, float("inf"), 0.3, 0.2], "0.1 0.2"])
def test_contribution_dropping_refuses_non_finite_similarities(sims):
    with pytest.raises(ValueError, match="similarities"):
        surgery.layers_to_drop("contribution", 4, 1, sims)


def test_layer_contributions_wants_a_list_of_batch_dicts(bert4):
    with pytest.raises(TypeError, match=r"wrap it as \[batch\]"):
        surgery.layer_contributions(bert4, _batch())
    with pytest.raises(TypeError, match="input_ids and attention_mask"):
        surgery.layer_contributions(bert4, [{"input_ids": _batch()["input_ids"]}])
    with pytest.raises(ValueError, match="loader is empty"):
        surgery.layer_contributions(bert4, [])


def test_other_families(tiny_distilbert, tiny_electra):
    with pytest.raises(ValueError, match="DistilBertForSequenceClassification has no encoder layers"):
        surgery.keep_layers(tiny_distilbert, [0])
    student = surgery.keep_layers(tiny_electra, [1])
    assert student.config.num_hidden_layers == 1
    ids = torch.randint(0, 100, (2, 5))
    assert student(input_ids=ids).logits.shape == (2, 2)
