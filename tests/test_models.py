import copy
import json

import pytest
import torch
from torch import nn

import lecture_utils as lu
from lecture_utils import models


def test_pretrained_minilm_loads_offline_with_the_documented_shape():
    model = models.load_classifier("smoke")
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 384, 12)
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith("bert."))
    assert encoder == pytest.approx(22.7e6, rel=0.01)
    assert model.classifier.out_features == 2


def test_eager_and_sdpa_attention_agree_and_eager_gives_scores():
    tok = models.load_tokenizer("smoke")
    batch = tok(["a fine film", "a dull, dull film"], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    sdpa = models.load_classifier("smoke", attn_implementation="sdpa").eval()
    torch.manual_seed(0)
    eager = models.load_classifier("smoke", attn_implementation="eager").eval()
    with torch.no_grad():
        a = sdpa(**batch).logits
        out = eager(**batch, output_attentions=True)
    assert torch.allclose(a, out.logits, atol=1e-5)
    assert len(out.attentions) == 6 and out.attentions[0].shape[1] == 12


def test_bad_attention_implementation_is_explained():
    with pytest.raises(ValueError, match="eager"):
        models.load_classifier("smoke", attn_implementation="flash")


def test_teacher_is_trained_once_cached_and_rebuilt_when_corrupt(tmp_cache, prepared, monkeypatch):
    # the data cache moved with tmp_cache: point the data loader back at the real prepared splits
    monkeypatch.setattr(lu.data, "sentiment_dir", lambda: prepared)
    first = models.finetuned_teacher("smoke", progress=False)
    meta = models.teacher_meta("smoke")
    folder = models.teacher_dir("smoke")
    assert meta is not None and meta.train_steps == 2 and folder.is_dir()
    # no temporary folder left behind (the lock file of config.cache_lock stays: it holds nothing)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    again = models.finetuned_teacher("smoke", progress=False)
    assert models.teacher_meta("smoke").train_seconds == meta.train_seconds  # loaded, not retrained
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a damaged weights file is detected by its checksum and rebuilt
    (folder / "model.safetensors").write_bytes(b"garbage")
    assert models.teacher_meta("smoke") is None
    models.finetuned_teacher("smoke", progress=False)
    assert models.teacher_meta("smoke") is not None
    # settings that no longer match are not loaded either
    meta_path = folder / "meta.json"
    stale = json.loads(meta_path.read_text())
    stale["settings"]["lr"] = 1.0
    meta_path.write_text(json.dumps(stale))
    assert models.teacher_meta("smoke") is None


def test_teacher_settings_differ_by_scale():
    assert models.teacher_dir("smoke") != models.teacher_dir("laptop")


def test_mlp_shapes():
    net = models.mlp([40, 300, 100, 10])
    assert net(torch.randn(7, 40)).shape == (7, 10)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3


def test_full_scale_loading_code_with_a_local_folder_standing_in_for_the_hub(tmp_path, tiny_bert):
    from transformers import BertTokenizerFast

    assert models.pretrained_path("full") == "bert-base-uncased"
    tiny_bert.save_pretrained(tmp_path)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(tmp_path)
    model = models.load_classifier("full", path=str(tmp_path), num_labels=2)
    tok = models.load_tokenizer("full", path=str(tmp_path))
    with torch.no_grad():
        logits = model(**tok(["w1 w2"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)


def test_mlp_accepts_numpy_sizes_and_refuses_bad_ones():
    np = pytest.importorskip("numpy")
    net = models.mlp(np.array([3, 5, 2]))
    assert [m.out_features for m in net if isinstance(m, torch.nn.Linear)] == [5, 2]
    with pytest.raises(TypeError, match="sizes must be a list of ints"):
        models.mlp("3,5,2")
    with pytest.raises(ValueError, match=r"sizes\[1\] must be a positive int, got 0"):
        models.mlp([3, 0, 2])
    with pytest.raises(TypeError, match="not an instance"):
        models.mlp([3, 2], activation=torch.nn.ReLU())


def test_loading_arguments_are_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="num_labels must be a positive int, got 0"):
        models.load_classifier("smoke", num_labels=0)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        models.load_tokenizer("smoke", path=str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="scale must be one of"):
        models.teacher_meta(3)
    with pytest.raises(ValueError, match="device name"):
        models.finetuned_teacher("smoke", device="gpu")  # refused at entry, before any training
    with pytest.raises(TypeError, match="rebuild must be True or False"):
        models.finetuned_teacher("smoke", rebuild="yes")


def test_replace_linears_swaps_the_layers_make_returns_and_counts_them():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)))
    seen = []

    def make(name, linear):
        seen.append(name)
        return nn.Identity() if linear.out_features == 3 else None  # None keeps the layer

    assert lu.models.replace_linears_(model, make) == 2
    assert seen == ["0", "2.0", "2.1"]  # dotted names, each layer once, in order
    assert isinstance(model[0], nn.Identity) and isinstance(model[2][0], nn.Identity)
    assert isinstance(model[2][1], nn.Linear)
    with pytest.raises(TypeError, match="make must be a function"):
        lu.models.replace_linears_(model, "identity")


def test_teacher_setup_bundles_what_the_lessons_computed_by_hand(prepared):
    """lessons 03–08 start from teacher_setup: the same teacher, loaders and numbers they used to build themselves."""
    start = models.teacher_setup("smoke", device="cpu")
    assert set(start.loaders) == {"train", "validation", "test"}
    want = lu.training.evaluate(start.teacher, start.loaders["test"], progress=False).accuracy
    assert start.test_accuracy == want
    labels = torch.cat([b["labels"] for b in start.loaders["test"]])
    positive = labels.float().mean().item()
    assert start.majority["test"] == pytest.approx(max(positive, 1 - positive), abs=1e-12)
    assert set(start.majority) == {"validation", "test"}
    # the scoring loaders run shortest first, and the teacher's answers are the ones it gives in the dataset's order
    lengths = [len(ids) for ids in start.loaders["test"].dataset["input_ids"]]
    order = list(start.loaders["test"].sampler)
    assert [lengths[i] for i in order] == sorted(lengths)
    plain = lu.data.sentiment_loaders(start.tokenizer, "smoke")["test"]
    assert torch.equal(start.test_correct, lu.stats.correct(start.teacher, plain)[order])
    assert torch.equal(start.test_correct, start.test_logits.argmax(-1) == labels)
    assert start.test_correct.dtype == torch.bool and start.test_correct.float().mean().item() == start.test_accuracy


def test_mean_pooling_reads_the_mean_of_the_real_tokens_and_survives_surgery_and_reload(bert4, tmp_path):
    from transformers import BertForSequenceClassification

    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 8, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    cls_logits = bert4(input_ids=ids, attention_mask=mask).logits
    models.set_pooling_(bert4, "mean")
    assert models.pooling_of(bert4) == "mean" and bert4.config.pooling == "mean"
    with torch.no_grad():
        padded = bert4(input_ids=ids, attention_mask=mask).logits
        alone = bert4(input_ids=ids[:1, :3], attention_mask=mask[:1, :3]).logits
        states = bert4.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        pool = bert4.bert.pooler
        by_hand = bert4.classifier(pool.activation(pool.dense(states[0, :3].mean(0))))
    assert torch.allclose(padded[0], alone[0], atol=1e-5)  # padding does not enter the mean
    assert torch.allclose(padded[0], by_hand, atol=1e-5)
    assert not torch.allclose(padded, cls_logits)
    dropped = lu.surgery.drop_layers(bert4, [3])  # a deep copy: its hook feeds its own pooler
    assert models.pooling_of(dropped) == "mean"
    with torch.no_grad():
        dropped(input_ids=ids, attention_mask=mask)
    assert dropped.bert.pooler.mask is None and bert4.bert.pooler.mask is None  # used once, then let go
    bert4.save_pretrained(tmp_path)
    reloaded = models.set_pooling_(BertForSequenceClassification.from_pretrained(tmp_path).eval(), "mean")
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids, attention_mask=mask).logits, padded, atol=1e-5)
    models.set_pooling_(bert4, "cls")  # and back: the [CLS] head again, no hook left
    assert models.pooling_of(bert4) == "cls" and not bert4.bert._forward_pre_hooks
    with torch.no_grad():
        assert torch.allclose(bert4(input_ids=ids, attention_mask=mask).logits, cls_logits, atol=1e-5)


def test_pooling_is_checked_and_keeps_the_cls_teacher_folder(tiny_distilbert):
    with pytest.raises(ValueError, match="pooling"):
        models.load_classifier("smoke", pooling="max")
    with pytest.raises(ValueError, match="pooling"):
        models.teacher_dir("smoke", pooling="CLS")
    with pytest.raises(ValueError, match="pooler"):
        models.set_pooling_(tiny_distilbert, "mean")
    assert models.teacher_dir("smoke", "cls") == models.teacher_dir("smoke")
    assert "pooling" not in models.teacher_settings("smoke")  # the course's cached teacher keeps its name
    mean_dir = models.teacher_dir("smoke", "mean")
    assert mean_dir != models.teacher_dir("smoke") and mean_dir.name.startswith("meanpool-smoke-")
    assert models.teacher_settings("smoke", "mean")["pooling"] == "mean"


def _id_batches(seed: int = 0, n: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 100, (4, 6), generator=g),
             "attention_mask": torch.ones(4, 6, dtype=torch.long),
             "labels": torch.randint(0, 2, (4,), generator=g)} for _ in range(n)]


def test_cached_predictions_equal_predict_are_reused_and_follow_the_batches(tiny_bert, tmp_path, monkeypatch):
    batches = _id_batches()
    want_logits, want_labels = lu.training.predict(tiny_bert, batches)
    logits, labels = models.cached_predictions(tiny_bert, batches, tmp_path)
    assert torch.equal(logits, want_logits) and torch.equal(labels, want_labels)
    (saved,) = tmp_path.glob("predictions-*.pt")
    # the second call reads the file: predict is not called again
    monkeypatch.setattr(lu.training, "predict", lambda *a, **k: pytest.fail("recomputed a cached prediction"))
    again, _ = models.cached_predictions(tiny_bert, batches, tmp_path)
    assert torch.equal(again, want_logits)
    monkeypatch.undo()
    # other batches (one token changed) are another file, never the old answer
    other = _id_batches()
    other[1]["input_ids"][0, 0] = (other[1]["input_ids"][0, 0] % 99) + 1
    assert models.batches_sha256(other) != models.batches_sha256(batches)
    moved, _ = models.cached_predictions(tiny_bert, other, tmp_path)
    assert torch.equal(moved, lu.training.predict(tiny_bert, other)[0]) and len(list(tmp_path.glob("*.pt"))) == 2
    # a model changed in one weight is another file too, never the teacher's answer
    changed = copy.deepcopy(tiny_bert)
    with torch.no_grad():
        changed.classifier.weight[0, 0] += 1.0
    assert models.weights_sha256(changed) != models.weights_sha256(tiny_bert)
    theirs, _ = models.cached_predictions(changed, batches, tmp_path)
    assert torch.equal(theirs, lu.training.predict(changed, batches)[0]) and len(list(tmp_path.glob("*.pt"))) == 3
    # a damaged file is recomputed and rewritten whole
    saved.write_bytes(b"not a tensor file")
    fixed, _ = models.cached_predictions(tiny_bert, batches, tmp_path)
    assert torch.equal(fixed, want_logits) and torch.load(saved, weights_only=True)["labels"].shape == (12,)
    assert not list(tmp_path.glob(".*tmp"))


def test_cached_predictions_refuse_what_is_not_a_model_or_a_loader(tiny_bert, tmp_path):
    with pytest.raises(TypeError, match="model"):
        models.cached_predictions("teacher", _id_batches(), tmp_path)
    with pytest.raises(TypeError, match="loader"):
        models.cached_predictions(tiny_bert, 3, tmp_path)
    with pytest.raises(TypeError, match="loader"):
        models.batches_sha256(None)
