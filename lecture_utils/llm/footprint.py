"""Bytes of a language model: its weights at a storage format (group constants included) and its KV cache."""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from .model import decoder_linears

__all__ = ["kv_cache_bytes", "model_kv_bytes_per_token", "measured_cache_bytes", "bytes_per_weight", "weight_bytes"]


def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, tokens: int, bytes_per_number: float) -> float:
    """Bytes of a KV cache: a key and a value vector per layer, key/value head and token:
    ``2 × layers × kv_heads × head_dim × tokens × bytes_per_number``."""
    for name, v in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
        validate.integer(v, name, 1)
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
    validate.integer(group_size, "group_size", 1)
    return bits / 8 + (scale_bytes + zero_bytes) / group_size


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
