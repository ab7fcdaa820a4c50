"""Dropping whole decoder layers of a language model, ranked by Block Influence (ShortGPT, Men et al. 2024, arXiv
2403.03853): BI = 1 − mean over tokens of cos(layer input, layer output). A layer that barely turns the hidden state
changes little when removed — Poor Man's BERT's contribution-based layer dropping (Sajjad et al.) for LLMs.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from .. import validate
from .calibration import _check_windows, run_hooked
from .model import decoder_layers

__all__ = ["DROP_STRATEGIES", "block_influence", "layers_to_drop", "drop_layers_"]

DROP_STRATEGIES = ("bi", "top", "bottom", "random")


@torch.no_grad()
def block_influence(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Block Influence of every decoder layer on the calibration ``windows`` (int64, (n, seq_len)): 1 − the mean
    over all tokens of the cosine similarity between the hidden state entering the layer and the one leaving it.
    Returns float64 (layers,); 0 = the layer leaves the direction of every hidden state unchanged."""
    _check_windows(windows)
    validate.integer(batch_size, "batch_size", 1)
    layers = decoder_layers(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    counts = torch.zeros(len(layers), dtype=torch.float64)
    seen: dict[int, torch.Tensor] = {}

    def before(i):
        def fn(_module, args, kwargs):
            seen[i] = args[0] if args else kwargs["hidden_states"]
        return fn

    def after(i):
        def fn(_module, _args, _kwargs, output):
            out = output[0] if isinstance(output, tuple) else output
            cos = nn.functional.cosine_similarity(seen.pop(i).double(), out.double(), dim=-1)
            sums[i] += cos.sum()
            counts[i] += cos.numel()
        return fn

    run_hooked(model, windows, batch_size, [h for i, layer in enumerate(layers)
                                            for h in (layer.register_forward_pre_hook(before(i), with_kwargs=True),
                                                      layer.register_forward_hook(after(i), with_kwargs=True))])
    return 1 - sums / counts


def layers_to_drop(num_layers: int, k: int, strategy: str, scores: torch.Tensor | None = None, seed: int = 0
                   ) -> list[int]:
    """Which ``k`` of ``num_layers`` decoder layers to remove (sorted indices): ``"bi"`` the k lowest Block
    Influence ``scores``; ``"top"`` the last k (Poor Man's BERT's top-dropping); ``"bottom"`` the first k;
    ``"random"`` k drawn with ``seed``."""
    validate.integer(num_layers, "num_layers", 1)
    validate.integer(k, "k", 0, num_layers - 1)
    validate.choice(strategy, "strategy", DROP_STRATEGIES)
    if strategy == "bi":
        if not torch.is_tensor(scores) or scores.shape != (num_layers,):
            raise ValueError(f"strategy 'bi' needs scores of shape ({num_layers},), got "
                             f"{tuple(getattr(scores, 'shape', ())) or type(scores).__name__}")
        return sorted(torch.argsort(scores.double(), stable=True)[:k].tolist())
    if strategy == "top":
        return list(range(num_layers - k, num_layers))
    if strategy == "bottom":
        return list(range(k))
    return sorted(random.Random(seed).sample(range(num_layers), k))


def drop_layers_(model: nn.Module, drop: list[int]) -> nn.Module:
    """Remove the decoder layers at indices ``drop`` from ``model`` in place and return it: the rest keep their
    order, ``config.num_hidden_layers`` (and ``config.layer_types`` when present) follow, and every attention
    layer's ``layer_idx`` is renumbered so the KV cache still works."""
    layers = decoder_layers(model)
    n = len(layers)
    drop_set = set(validate.integers(drop, "drop", 0, n - 1)) if drop else set()
    if len(drop_set) >= n:
        raise ValueError(f"cannot drop all {n} layers")
    keep = [i for i in range(n) if i not in drop_set]
    model.model.layers = nn.ModuleList(layers[i] for i in keep)
    for new, layer in enumerate(model.model.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new
    model.config.num_hidden_layers = len(keep)
    types = getattr(model.config, "layer_types", None)
    if types is not None and len(types) == n:
        model.config.layer_types = [types[i] for i in keep]
    return model
