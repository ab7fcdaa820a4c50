import pytest
import torch

from lecture_utils import surgery


@pytest.fixture
def bert4():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    return BertForSequenceClassification(cfg).eval()


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
