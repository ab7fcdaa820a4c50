import math

import pytest
import torch
from torch.nn import functional as F

from lecture_utils import distill, training


def _batch(mask_last=0):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(3, 7, dtype=torch.long)
    if mask_last:
        mask[:, -mask_last:] = 0
    return {"input_ids": torch.randint(0, 100, (3, 7), generator=g), "attention_mask": mask,
            "labels": torch.tensor([0, 1, 1])}


def test_kd_loss_equals_a_hand_computation():
    s = torch.tensor([[1.0, 2.0], [0.5, -0.5]])
    t = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([1, 0])
    T, alpha = 2.0, 0.3
    kl = 0.0
    for i in range(2):
        p = [math.exp(v / T) / sum(math.exp(u / T) for u in t[i].tolist()) for v in t[i].tolist()]
        q = [math.exp(v / T) / sum(math.exp(u / T) for u in s[i].tolist()) for v in s[i].tolist()]
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    kl /= 2
    ce = F.cross_entropy(s, y).item()
    want = alpha * T * T * kl + (1 - alpha) * ce
    assert distill.kd_loss(s, t, y, temperature=T, alpha=alpha).item() == pytest.approx(want, rel=1e-6)


def test_t_squared_scaling_and_the_extremes():
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 0, 1])
    for T in (1.0, 2.0, 4.0):
        plain = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
        assert distill.kd_loss(s, t, y, T, alpha=1.0).item() == pytest.approx(T * T * plain.item(), rel=1e-5)
    assert distill.kd_loss(s, t, y, 3.0, alpha=0.0).item() == pytest.approx(F.cross_entropy(s, y).item())
    assert distill.kd_loss(t, t, None, 2.0).item() == pytest.approx(0.0, abs=1e-7)  # same logits: no KL
    with pytest.raises(ValueError, match="alpha"):
        distill.kd_loss(s, t, y, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_loss(s, t, y, temperature=0)


def test_soft_targets_flatten_with_temperature():
    logits = torch.tensor([[3.0, 0.0]])
    assert distill.soft_targets(logits, 1)[0, 0] > distill.soft_targets(logits, 4)[0, 0] > 0.5


def test_hidden_losses_ignore_padding_and_check_widths():
    a, b = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    b2 = b.clone()
    b2[0, 2:] = 100.0  # changes only padded positions
    assert distill.hidden_cosine_loss(a, b, mask) == pytest.approx(distill.hidden_cosine_loss(a, b2, mask).item())
    assert distill.hidden_cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert distill.hidden_mse_loss(a, b, attention_mask=mask) == pytest.approx(
        distill.hidden_mse_loss(a, b2, attention_mask=mask).item())
    with pytest.raises(ValueError, match="projection"):
        distill.hidden_mse_loss(torch.randn(2, 4, 6), b)
    proj = torch.nn.Linear(6, 8)
    assert distill.hidden_mse_loss(torch.randn(2, 4, 6), b, proj).item() > 0


def test_attention_scores_give_the_eager_attention_after_softmax(bert4):
    batch = _batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        out, scores = distill.attention_scores(bert4, inputs)
        weights = bert4(**inputs, output_attentions=True).attentions
    assert set(scores) == {0, 1, 2, 3} and scores[0].shape == (3, 4, 7, 7)
    for i in range(4):
        assert torch.allclose(F.softmax(scores[i], dim=-1), weights[i], atol=1e-5)
    assert len(out.hidden_states) == 5


def test_uniform_layer_map():
    assert distill.uniform_layer_map(3, 6) == [1, 3, 5]
    assert distill.uniform_layer_map(4, 12) == [2, 5, 8, 11]
    assert distill.uniform_layer_map(1, 6) == [5]
    with pytest.raises(ValueError):
        distill.uniform_layer_map(4, 6)
    with pytest.raises(ValueError):
        distill.uniform_layer_map(0, 6)


def test_students_from_the_teacher_and_at_random(bert4):
    student = distill.student_from_teacher(bert4, [0, 2])
    rand = distill.random_student(bert4, 2)
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in rand.parameters())
    assert not torch.equal(student.bert.embeddings.word_embeddings.weight, rand.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, bert4.bert.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="out of range"):
        distill.student_from_teacher(bert4, [0, 9])
    with pytest.raises(ValueError, match="n_layers"):
        distill.random_student(bert4, 0)


def test_distillation_trains_through_the_course_loop(bert4):
    student = distill.student_from_teacher(bert4, [0, 2])
    batch = _batch(mask_last=2)
    loss_fn = distill.distillation_loss(bert4, temperature=2.0, alpha=0.5, cosine_weight=1.0, hidden_weight=1.0,
                                        attention_weight=1.0)
    before = loss_fn(student, batch).item()
    hist = training.train(student, [batch], max_steps=15, lr=1e-3, warmup=0.0, loss_fn=loss_fn, progress=False)
    assert hist.steps == 15 and hist.losses[-1] < before
    teacher_params = [p.clone() for p in bert4.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(teacher_params, bert4.parameters(), strict=True))


def test_narrow_student_learns_a_projection(bert4):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=64)
    student = BertForSequenceClassification(cfg)
    projections = distill.add_projections(student, teacher_width=16)
    loss_fn = distill.distillation_loss(bert4, hidden_weight=1.0)
    before = projections[0].weight.clone()
    training.train(student, [_batch()], max_steps=3, lr=1e-2, warmup=0.0, loss_fn=loss_fn, progress=False)
    assert not torch.equal(before, projections[0].weight)  # the optimiser trained the projection too


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.sampled_from([float("nan"), float("inf"), 0.0, -2.0, True, "2"]))
def test_bad_temperatures_are_refused_everywhere(t):
    s, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match="temperature must be"):  # NaN used to pass `t <= 0` silently
        distill.soft_targets(s, t)
    with pytest.raises(ValueError, match="temperature must be"):
        distill.kd_loss(s, s, y, temperature=t)


def test_kd_loss_checks_logits_and_labels():
    s, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match="floating-point"):
        distill.kd_loss(torch.ones(4, 3, dtype=torch.long), s, y)
    with pytest.raises(ValueError, match="student_logits must be 2-D"):
        distill.kd_loss(s[0], s[0], None)  # 1-D: "batchmean" would divide by the number of classes
    with pytest.raises(ValueError, match="class indices from 0 to 2"):
        distill.kd_loss(s, s, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        distill.kd_loss(s, torch.full((4, 3), float("nan")), y)
    with pytest.raises(ValueError, match="alpha must be"):
        distill.kd_loss(s, s, y, alpha=float("nan"))


def test_masked_losses_check_the_mask():
    h = torch.randn(3, 7, 16)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, L\) = \(3, 7\)"):
        distill.hidden_cosine_loss(h, h, torch.ones(3, 6))
    with pytest.raises(ValueError, match="marks no real token"):
        distill.hidden_mse_loss(h, h, attention_mask=torch.zeros(3, 7))
    scores = torch.randn(3, 4, 7, 7)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        distill.attention_score_loss(scores, scores, torch.ones(3, 6))
    with pytest.raises(ValueError, match="student_scores must be 4-D"):
        distill.attention_score_loss(h, h)


def test_layer_maps_and_students_check_their_numbers(bert4):
    np = pytest.importorskip("numpy")
    assert distill.uniform_layer_map(np.int64(2), np.int64(4)) == [1, 3]
    with pytest.raises(ValueError, match="n_student must be a positive int"):
        distill.uniform_layer_map(1.5, 6)
    assert distill.random_student(bert4, np.int64(2)).config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="n_layers must be an int from 1 to 4"):
        distill.random_student(bert4, 2.0)
    student = distill.student_from_teacher(bert4, np.array([0, 2]))
    assert student.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="teacher_width must be a positive int"):
        distill.add_projections(student, 0)


def test_distillation_loss_checks_its_settings_and_the_layer_map(bert4):
    with pytest.raises(ValueError, match="layer_map"):
        distill.distillation_loss(bert4, layer_map=[0, 9], cosine_weight=1.0)
    with pytest.raises(ValueError, match="cosine_weight must be"):
        distill.distillation_loss(bert4, cosine_weight=float("nan"))
    with pytest.raises(ValueError, match="temperature must be"):
        distill.distillation_loss(bert4, temperature=0)
    student = distill.student_from_teacher(bert4, [0, 2])
    loss_fn = distill.distillation_loss(bert4, layer_map=[1, 2, 3], cosine_weight=1.0)
    with pytest.raises(ValueError, match="layer_map has 3 entries but the student has 2 layers"):
        loss_fn(student, _batch())


def test_stored_teacher_logits_give_the_same_loss_without_running_the_teacher(bert4):
    student = distill.student_from_teacher(bert4, [0, 2]).eval()  # no dropout: two calls give the same loss
    batches = [_batch(mask_last=2), _batch()]
    stream = distill.with_teacher_logits(bert4, batches)
    assert all(set(s) == set(b) | {"teacher_logits"} for s, b in zip(stream, batches, strict=True))
    assert "teacher_logits" not in batches[0]  # copies: the caller's batches are unchanged
    loss_fn = distill.distillation_loss(bert4, temperature=2.0, alpha=0.5)
    calls = []
    hook = bert4.register_forward_hook(lambda *_: calls.append(1))
    try:
        for s, b in zip(stream, batches, strict=True):
            stored, live = loss_fn(student, s), None
            assert not calls  # the stored logits were read, the teacher did not run
            live = loss_fn(student, b)
            assert calls and torch.equal(stored, live)
            calls.clear()
        # an intermediate loss needs the teacher's hidden states: the teacher runs even with stored logits
        distill.distillation_loss(bert4, cosine_weight=1.0)(student, stream[0])
        assert calls
    finally:
        hook.remove()
    logits, labels = training.logits_and_labels(student, stream[0])  # the model never sees the stored logits
    assert logits.shape == stream[0]["teacher_logits"].shape and torch.equal(labels, stream[0]["labels"])
    hist = training.train(student, stream, max_steps=2, lr=1e-3, loss_fn=loss_fn, progress=False)
    assert hist.steps == 2
    with pytest.raises(TypeError, match="batch 0 of loader must be a dict batch"):
        distill.with_teacher_logits(bert4, [(torch.zeros(2, 3), torch.zeros(2))])
    with pytest.raises(ValueError, match="loader is empty"):
        distill.with_teacher_logits(bert4, [])
