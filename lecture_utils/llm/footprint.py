"""Bytes of a language model: its weights at a storage format (group constants included) and its KV cache."""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from .model import decoder_linears
from .rtn import _check_group

__all__ = ["kv_cache_bytes", "model_kv_bytes", "sliding_window_layers", "model_kv_bytes_per_token",
           "measured_cache_bytes", "bytes_per_weight", "model_bytes"]


def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, tokens: int, bytes_per_number: float) -> float:
    """Bytes of a KV cache: a key and a value vector per layer, key/value head and token:
    ``2 × layers × kv_heads × head_dim × tokens × bytes_per_number``."""
    for name, v in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
        validate.integer(v, name, 1)
    validate.integer(tokens, "tokens", 0)
    validate.positive(bytes_per_number, "bytes_per_number", hint="e.g. 4 for float32, 2 for float16")
    return 2 * num_layers * num_kv_heads * head_dim * tokens * bytes_per_number


def _kv_shape(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of a transformers config."""
    for key in ("num_hidden_layers", "num_attention_heads", "hidden_size"):
        if not isinstance(getattr(config, key, None), int):
            raise validate.BadType(f"config must be a transformers model config with {key}, got "
                                   f"{validate.show(config)}")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return config.num_hidden_layers, kv_heads, head_dim


def sliding_window_layers(config) -> dict[int, int]:
    """``{layer index: window}`` of the layers with sliding-window attention (each token attends to the last
    ``window`` tokens only, so the cache keeps ``window − 1`` earlier tokens per layer): every layer when the config
    sets ``sliding_window`` without ``layer_types`` (Mistral), the ``"sliding_attention"`` layers of ``layer_types``
    (Gemma2, Qwen2 with ``use_sliding_window``); empty for full attention everywhere (Llama, SmolLM2)."""
    layers, _, _ = _kv_shape(config)
    window = getattr(config, "sliding_window", None)
    if not window:
        return {}
    types = getattr(config, "layer_types", None)
    if types is None:
        if getattr(config, "use_sliding_window", True) is False:
            return {}
        return dict.fromkeys(range(layers), int(window))
    return {i: int(window) for i, t in enumerate(types) if t == "sliding_attention"}


def model_kv_bytes(config, tokens: int, bytes_per_number: float = 4) -> float:
    """Bytes of the KV cache of one sequence of ``tokens`` tokens for a transformers config: :func:`kv_cache_bytes`
    layer by layer, where a sliding-window layer (:func:`sliding_window_layers`) holds at most ``window − 1``
    tokens."""
    layers, kv_heads, head_dim = _kv_shape(config)
    tokens = validate.integer(tokens, "tokens", 0)
    windows = sliding_window_layers(config)
    held = sum(min(tokens, windows[i] - 1) if i in windows else tokens for i in range(layers))
    return kv_cache_bytes(1, kv_heads, head_dim, held, bytes_per_number)


def model_kv_bytes_per_token(config, bytes_per_number: float = 4) -> float:
    """:func:`kv_cache_bytes` of one token for a transformers config (uses its key/value heads and head size).
    Refused for a config with sliding-window layers, whose cache stops growing: use :func:`model_kv_bytes`."""
    layers, kv_heads, head_dim = _kv_shape(config)
    windows = sliding_window_layers(config)
    if windows:
        raise ValueError(f"config ({type(config).__name__}) has sliding-window attention in {len(windows)} of its "
                         f"{layers} layers (window {max(windows.values())}): their cache stops growing at window − 1 "
                         "tokens, so there is no constant per-token figure. Use "
                         "lu.llm.model_kv_bytes(config, tokens) for a given length.")
    return kv_cache_bytes(layers, kv_heads, head_dim, 1, bytes_per_number)


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
    bits = validate.integer(bits, "bits", 1, 32)
    group_size = validate.integer(group_size, "group_size", 1)
    scale_bytes = validate.real(scale_bytes, "scale_bytes", 0)
    zero_bytes = validate.real(zero_bytes, "zero_bytes", 0)
    return bits / 8 + (scale_bytes + zero_bytes) / group_size


def model_bytes(model: nn.Module, bits: int | None = None, group_size: int | None = None,
                other_bytes: float = 2) -> float:
    """Bytes of a model whose decoder linears are stored at ``bits`` with groups of ``group_size`` (None = one group
    per row), and every other parameter (embedding, norms) at ``other_bytes`` per number. ``bits=None`` stores
    everything at ``other_bytes``. Tied parameters count once."""
    linears = decoder_linears(model)
    if bits is not None:
        bits = validate.integer(bits, "bits", 1, 32)
    elif group_size is not None:
        raise ValueError(f"group_size={group_size!r} needs bits: with bits=None every number is stored at other_bytes")
    other_bytes = validate.positive(other_bytes, "other_bytes", hint="e.g. 2 for float16, 4 for float32")
    for m in linears.values():
        _check_group(m.weight.shape[1], group_size)
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
