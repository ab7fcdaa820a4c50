"""A quantized KV cache, as KIVI does it (Liu et al. 2024, arXiv 2402.02750): keys per channel, values per token, the
most recent tokens kept in full precision.

Keys have a few channels with large values in every token, so each channel gets its own scale over a group of
tokens; values have no such channels and are quantized one token at a time. Here the quantization is *simulated*:
the cache holds dequantized floats, and :func:`kivi_cache_bytes` counts what a real implementation stores. Units:
bytes; perplexity as in :func:`lecture_utils.llm.perplexity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import validate

__all__ = ["kivi_quantize", "quantize_keys", "quantize_values", "kv_perplexity", "kivi_cache_bytes"]


def kivi_quantize(x: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Asymmetric round-to-nearest of ``x`` with one scale and one (float) minimum per slice along ``dim``: over
    ``dim`` take min and max, scale = (max − min) / (2^bits − 1), q = clamp(round((x − min) / scale), 0,
    2^bits − 1), and return q × scale + min (floats in ``x``'s shape). ``dim=-2`` on keys (batch, heads, tokens,
    channels) gives one scale per *channel* (over the tokens); ``dim=-1`` one per *token* (over the channels)."""
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 1:
        raise ValueError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    validate.integer(bits, "bits", 1, 8)
    validate.integer(dim, "dim", -x.dim(), x.dim() - 1)
    lo = x.amin(dim=dim, keepdim=True)
    hi = x.amax(dim=dim, keepdim=True)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=1e-8)
    return torch.clamp(torch.round((x - lo) / scale), 0, 2**bits - 1) * scale + lo


def quantize_keys(keys: torch.Tensor, bits: int, group: int,
                  quantizer: Callable[[torch.Tensor, int, int], torch.Tensor] = kivi_quantize) -> torch.Tensor:
    """Keys (batch, heads, tokens, channels) quantized per channel over each group of ``group`` consecutive tokens
    (the token count must be a multiple of ``group``)."""
    b, h, t, d = keys.shape
    validate.integer(group, "group", 1)
    if t % group:
        raise ValueError(f"the {t} tokens must be a multiple of group={group}")
    grouped = keys.reshape(b, h, t // group, group, d)
    return quantizer(grouped, bits, -2).reshape(b, h, t, d)


def quantize_values(values: torch.Tensor, bits: int,
                    quantizer: Callable[[torch.Tensor, int, int], torch.Tensor] = kivi_quantize) -> torch.Tensor:
    """Values (batch, heads, tokens, channels) quantized per token (over each head's channels)."""
    return quantizer(values, bits, -1)


@torch.no_grad()
def kv_perplexity(model: nn.Module, windows: torch.Tensor, bits: int | None, chunk: int = 32, residual: int = 32,
                  group: int = 32, quantizer: Callable[[torch.Tensor, int, int], torch.Tensor] = kivi_quantize
                  ) -> float:
    """Perplexity of ``windows`` (int64 (n, tokens)) read in chunks of ``chunk`` tokens through the model's KV
    cache, which is quantized between chunks as KIVI does: every token older than the ``residual`` most recent ones
    is rounded to ``bits`` (keys per channel over groups of ``group`` tokens, values per token), and stays so; the
    recent ones stay in float32. ``bits=None`` reads the same chunks with a float cache: the fair baseline. Each
    chunk's queries therefore see the rounded past and the full-precision recent tokens."""
    from transformers import DynamicCache

    if not torch.is_tensor(windows) or windows.dim() != 2 or windows.dtype != torch.int64 or windows.shape[1] < 2:
        raise ValueError(f"windows must be an int64 tensor (n_windows, tokens >= 2), got "
                         f"{getattr(windows, 'dtype', type(windows))} {tuple(getattr(windows, 'shape', ()))}")
    if bits is not None:
        validate.integer(bits, "bits", 1, 8)
    validate.integer(chunk, "chunk", 1)
    validate.integer(residual, "residual", 0)
    validate.integer(group, "group", 1)
    model.eval()
    total, count = 0.0, 0
    for window in windows:
        ids = window.unsqueeze(0)
        cache = DynamicCache()
        done = 0  # tokens of the cache already quantized
        prev_logit = None
        for start in range(0, ids.shape[1], chunk):
            part = ids[:, start:start + chunk]
            logits = model(input_ids=part, past_key_values=cache, use_cache=True).logits.float()
            if prev_logit is not None:
                logits_all = torch.cat([prev_logit, logits[:, :-1]], dim=1)
                targets = part
            else:
                logits_all, targets = logits[:, :-1], part[:, 1:]
            if targets.numel():
                total += nn.functional.cross_entropy(logits_all.reshape(-1, logits_all.shape[-1]),
                                                     targets.reshape(-1), reduction="sum").item()
                count += targets.numel()
            prev_logit = logits[:, -1:]
            if bits is None:
                continue
            length = start + part.shape[1]
            upto = done + ((length - residual - done) // group) * group if length - residual > done else done
            if upto > done:
                for layer in cache.layers:
                    layer.keys[:, :, done:upto] = quantize_keys(layer.keys[:, :, done:upto], bits, group, quantizer)
                    layer.values[:, :, done:upto] = quantize_values(layer.values[:, :, done:upto], bits, quantizer)
                done = upto
    return math.exp(total / count)


def kivi_cache_bytes(config, tokens: int, bits: int | None, group: int = 32, residual: int = 32,
                     float_bytes: float = 2, const_bytes: float = 2, batch: int = 1) -> float:
    """Bytes of a KIVI cache of ``tokens`` tokens for a transformers ``config``: the ``residual`` most recent tokens
    at ``float_bytes`` per number, the rest at ``bits`` with a scale and a minimum (``const_bytes`` each) per
    channel and group of ``group`` tokens for the keys and per token and head for the values. ``bits=None``: the
    whole cache at ``float_bytes``."""
    validate.integer(tokens, "tokens", 0)
    validate.integer(batch, "batch", 1)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_layer_head = config.num_hidden_layers * kv_heads * batch
    if bits is None:
        return 2 * per_layer_head * head_dim * tokens * float_bytes
    validate.integer(bits, "bits", 1, 16)
    validate.integer(group, "group", 1)
    validate.integer(residual, "residual", 0)
    quantized = max(0, tokens - residual) // group * group
    recent = tokens - quantized
    ints = 2 * per_layer_head * head_dim * quantized * bits / 8
    key_consts = per_layer_head * head_dim * (quantized // group) * 2 * const_bytes
    value_consts = per_layer_head * quantized * 2 * const_bytes
    return ints + key_consts + value_consts + 2 * per_layer_head * head_dim * recent * float_bytes
