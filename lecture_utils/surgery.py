"""Structural surgery on BERT-style encoders: keep or drop whole transformer layers.

transformers 5 has no ``prune_heads``/``head_mask`` any more, so the course owns its (small, tested) surgery.
Every function returns a *new* model and leaves its input untouched; the config stays consistent with the
weights (``num_hidden_layers``, each attention's ``layer_idx``), so ``save_pretrained`` → ``from_pretrained``
round-trips.
"""

from __future__ import annotations

import copy

from torch import nn


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer layers of a BERT-style model (``model.bert.encoder.layer`` or
    ``model.encoder.layer``). Raises a clear error for a model without one."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no encoder layers (expected model.<base>.encoder.layer, "
                         "as in BERT-style models).")
    return layers


def check_layer_indices(indices: list[int], n_layers: int, what: str = "layers") -> list[int]:
    """Validate a list of layer indices: ints in [0, n_layers), no repeats, at least one. Returns it as a list."""
    indices = list(indices)
    if not indices:
        raise ValueError(f"{what} must name at least one layer (the model has {n_layers}: 0 to {n_layers - 1}).")
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"{what} {bad} out of range: this model has layers 0 to {n_layers - 1}.")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{what} {indices} repeat an index; each layer can be used once.")
    return indices


def keep_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of ``model`` with only the transformer layers ``keep`` (in the given order), everything else
    (embeddings, pooler, classifier) shared in value, not in memory. ``keep=[0, 2, 4]`` of a 6-layer teacher is
    DistilBERT's "every other layer" initialisation."""
    n = len(encoder_layers(model))
    keep = check_layer_indices(keep, n, "keep")
    out = copy.deepcopy(model)
    old = encoder_layers(out)
    new = nn.ModuleList([old[i] for i in keep])
    for new_idx, layer in enumerate(new):
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_idx
    base = getattr(out, getattr(out, "base_model_prefix", ""), out)
    base.encoder.layer = new
    out.config.num_hidden_layers = len(keep)
    return out


def drop_layers(model: nn.Module, drop: list[int]) -> nn.Module:
    """A copy of ``model`` without the transformer layers ``drop``; at least one layer must remain."""
    n = len(encoder_layers(model))
    drop = check_layer_indices(drop, n, "drop")
    if len(drop) >= n:
        raise ValueError(f"cannot drop all {n} layers: keep at least one.")
    return keep_layers(model, [i for i in range(n) if i not in drop])
