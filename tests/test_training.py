import pytest
import torch

import lecture_utils as lu
from lecture_utils.training import evaluate, predict, train


def _blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) + 3 * (y[:, None].float() * 2 - 1)
    return torch.utils.data.TensorDataset(x, y)


def _loader(ds, seed=0):
    return torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))


def test_train_learns_a_separable_problem():
    torch.manual_seed(0)
    model = lu.models.mlp([2, 8, 2])
    hist = train(model, _loader(_blobs()), epochs=5, lr=1e-2, progress=False)
    assert hist["steps"] == 40 and len(hist["losses"]) == 40
    assert hist["losses"][-1] < hist["losses"][0]
    assert evaluate(model, _loader(_blobs(seed=1)), progress=False)["accuracy"] > 0.95


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = lu.models.mlp([2, 8, 2])
        runs.append(train(model, _loader(_blobs()), max_steps=10, lr=1e-2, progress=False)["losses"])
    assert runs[0] == runs[1]


def test_max_steps_cycles_the_loader_and_custom_loss_is_used():
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        return lu.training.cross_entropy_loss(model, batch)

    model = lu.models.mlp([2, 2])
    hist = train(model, _loader(_blobs(64)), max_steps=5, loss_fn=loss_fn, progress=False)
    assert hist["steps"] == 5 and len(calls) == 5


def test_early_stopping_restores_best_weights():
    torch.manual_seed(0)
    model = lu.models.mlp([2, 8, 2])
    val = _loader(_blobs(seed=2))
    hist = train(model, _loader(_blobs()), max_steps=60, lr=1e-2, eval_loader=val, eval_every=5, patience=2,
                 progress=False)
    assert hist["evals"] and hist["best_accuracy"] == max(e["accuracy"] for e in hist["evals"])
    assert evaluate(model, val, progress=False)["accuracy"] == pytest.approx(hist["best_accuracy"])


def test_evaluate_matches_a_hand_count():
    model = lu.models.mlp([2, 2])
    loader = _loader(_blobs(100))
    logits, labels = predict(model, loader)
    assert logits.shape == (100, 2)
    acc = (logits.argmax(-1) == labels).float().mean().item()
    assert evaluate(model, loader, progress=False)["accuracy"] == pytest.approx(acc)


def test_train_works_on_a_hugging_face_model_with_dict_batches(tiny_bert):
    batch = {"input_ids": torch.randint(0, 100, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 1])}
    hist = train(tiny_bert, [batch], max_steps=3, lr=1e-3, progress=False)
    assert hist["steps"] == 3 and not tiny_bert.training


def test_bad_arguments():
    model = lu.models.mlp([2, 2])
    with pytest.raises(ValueError, match="warmup"):
        train(model, _loader(_blobs(32)), max_steps=1, warmup=1.5, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train(model, _loader(_blobs(32)), epochs=0, progress=False)
    with pytest.raises(ValueError, match="sizes"):
        lu.models.mlp([3])
