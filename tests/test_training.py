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
    assert hist.steps == 40 and len(hist.losses) == 40
    assert hist.losses[-1] < hist.losses[0]
    assert evaluate(model, _loader(_blobs(seed=1)), progress=False).accuracy > 0.95


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = lu.models.mlp([2, 8, 2])
        runs.append(train(model, _loader(_blobs()), max_steps=10, lr=1e-2, progress=False).losses)
    assert runs[0] == runs[1]


def test_max_steps_cycles_the_loader_and_custom_loss_is_used():
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        return lu.training.cross_entropy_loss(model, batch)

    model = lu.models.mlp([2, 2])
    hist = train(model, _loader(_blobs(64)), max_steps=5, loss_fn=loss_fn, progress=False)
    assert hist.steps == 5 and len(calls) == 5


def test_early_stopping_restores_best_weights():
    torch.manual_seed(0)
    model = lu.models.mlp([2, 8, 2])
    val = _loader(_blobs(seed=2))
    hist = train(model, _loader(_blobs()), max_steps=60, lr=1e-2, eval_loader=val, eval_every=5, patience=2,
                 progress=False)
    assert hist.evals and hist.best_accuracy == max(e.accuracy for e in hist.evals)
    assert evaluate(model, val, progress=False).accuracy == pytest.approx(hist.best_accuracy)


def test_evaluate_matches_a_hand_count():
    model = lu.models.mlp([2, 2])
    loader = _loader(_blobs(100))
    logits, labels = predict(model, loader)
    assert logits.shape == (100, 2)
    acc = (logits.argmax(-1) == labels).float().mean().item()
    assert evaluate(model, loader, progress=False).accuracy == pytest.approx(acc)


def test_train_works_on_a_hugging_face_model_with_dict_batches(tiny_bert):
    batch = {"input_ids": torch.randint(0, 100, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 1])}
    hist = train(tiny_bert, [batch], max_steps=3, lr=1e-3, progress=False)
    assert hist.steps == 3 and not tiny_bert.training


def test_bad_arguments():
    model = lu.models.mlp([2, 2])
    with pytest.raises(ValueError, match="warmup"):
        train(model, _loader(_blobs(32)), max_steps=1, warmup=1.5, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train(model, _loader(_blobs(32)), epochs=0, progress=False)
    with pytest.raises(ValueError, match="sizes"):
        lu.models.mlp([3])


# --------------------------------------------------------------------------------------------------------------
# Bad input: clear errors, no hangs, no silent NaN
# --------------------------------------------------------------------------------------------------------------

def _tiny():
    torch.manual_seed(0)
    return lu.models.mlp([2, 4, 2])


def _batch(n=8):
    return torch.randn(n, 2), torch.randint(0, 2, (n,))


@pytest.mark.parametrize("kwargs", [{"max_steps": 5}, {"epochs": 1}])
def test_train_over_an_empty_list_raises_instead_of_hanging(kwargs, hang_guard):
    with hang_guard(30), pytest.raises(ValueError, match="empty"):
        train(_tiny(), [], progress=False, **kwargs)


def test_train_over_an_exhausted_iterator_raises_instead_of_hanging(hang_guard):
    batches = iter([_batch(), _batch()])
    list(batches)
    with hang_guard(30), pytest.raises(ValueError, match="no batch at all.*used up"):
        train(_tiny(), batches, max_steps=3, progress=False)
    short = (b for b in [_batch(), _batch()])
    with hang_guard(30), pytest.raises(ValueError, match="ran out after 2 batches"):
        train(_tiny(), short, max_steps=5, progress=False)


def test_train_with_epochs_needs_a_loader_with_a_length():
    with pytest.raises(TypeError, match="pass max_steps"):
        train(_tiny(), (b for b in [_batch()]), epochs=1, progress=False)


def test_nan_loss_stops_training_and_names_the_step():
    model = _tiny()
    x, y = _batch()
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(lu.training.TrainingDiverged, match=r"loss is nan at step 3 of 5") as info:
        train(model, [(x, y), (x, y), (bad, y)], max_steps=5, progress=False)
    assert isinstance(info.value, ValueError)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # stopped before the NaN reached the weights


def test_huge_learning_rate_diverges_with_a_message():
    def loss_fn(model, batch):
        return model(batch[0]).pow(2).sum() * 1e30

    with pytest.raises(ValueError, match="training diverged"):
        train(_tiny(), [_batch()], max_steps=20, lr=1e30, loss_fn=loss_fn, progress=False, max_grad_norm=None)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lr": -1e-3}, "lr must be a finite number > 0"), ({"lr": float("nan")}, "lr must be"),
    ({"lr": 0.0}, "lr must be"), ({"epochs": 0}, "epochs must be"), ({"epochs": float("inf")}, "epochs must be"),
    ({"epochs": float("nan")}, "epochs must be"), ({"max_steps": 0}, "max_steps must be a positive int"),
    ({"max_steps": 2.5}, "max_steps must be"), ({"max_steps": True}, "max_steps must be"),
    ({"warmup": 1.0}, "warmup must be"), ({"weight_decay": -1}, "weight_decay must be"),
    ({"loss_fn": "mse"}, "loss_fn must be a function"), ({"patience": 2}, "patience=2 needs an eval_loader"),
    ({"eval_every": 0, "eval_loader": [(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))]}, "eval_every"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be"), ({"optimizer": "adam"}, "torch.optim.Optimizer"),
    ({"after_step": 3}, "after_step must be a function"),
])
def test_train_rejects_bad_settings_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):  # BadType is a ValueError too
        train(_tiny(), [_batch()], **{"max_steps": 1, **kwargs}, progress=False)


@pytest.mark.parametrize("loader", ["batches", {"x": 1}, 5, torch.zeros(3, 2)])
def test_train_rejects_what_is_not_a_loader(loader):
    with pytest.raises(TypeError, match="loader must be a DataLoader or a list of batches"):
        train(_tiny(), loader, max_steps=1, progress=False)


def test_numpy_and_tensor_step_counts_are_accepted():
    np = pytest.importorskip("numpy")
    hist = train(_tiny(), [_batch()], max_steps=np.int64(3), progress=False)
    assert hist.steps == 3
    assert train(_tiny(), [_batch()], max_steps=torch.tensor(2), progress=False).steps == 2


def test_loss_fn_must_return_a_tensor_with_a_gradient():
    with pytest.raises(TypeError, match="one-element tensor that requires grad"):
        train(_tiny(), [_batch()], max_steps=1, loss_fn=lambda m, b: 0.5, progress=False)
    with pytest.raises(TypeError, match="without a gradient"):
        train(_tiny(), [_batch()], max_steps=1, loss_fn=lambda m, b: torch.tensor(0.5), progress=False)


def test_evaluate_and_predict_on_empty_or_used_up_loaders():
    with pytest.raises(ValueError, match="empty"):
        evaluate(_tiny(), [], progress=False)
    used = iter([_batch()])
    list(used)
    with pytest.raises(ValueError, match="no batch"):
        predict(_tiny(), used)


def test_labels_must_be_class_indices():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="class indices from 0 to 1, got values from 0 to 5"):
        evaluate(_tiny(), [(x, torch.tensor([0, 1, 5, 0]))], progress=False)
    with pytest.raises(TypeError, match="integer tensor"):
        evaluate(_tiny(), [(x, torch.tensor([0.0, 1.0, 1.0, 0.0]))], progress=False)
    with pytest.raises(TypeError, match="pair"):
        evaluate(_tiny(), [(x,)], progress=False)
    with pytest.raises(ValueError, match="'labels'"):
        lu.training.logits_and_labels(_tiny(), {"x": x})


def test_to_device_rejects_bad_batches_and_devices():
    with pytest.raises(TypeError, match="batch must be"):
        lu.training.to_device(torch.zeros(2), "cpu")
    with pytest.raises(ValueError, match="device name"):
        lu.training.to_device((torch.zeros(2),), "gpu")
    with pytest.raises(TypeError, match="nn.Module"):
        lu.training.model_device("model")
