"""Structural surgery on BERT-style encoders: keep or drop whole transformer layers, and choose which.

transformers 5 has no ``prune_heads``/``head_mask`` any more, so the course owns its (small, tested) surgery
(heads live in :mod:`lecture_utils.heads`). Every function returns a *new* model and leaves its input untouched;
the config stays consistent with the weights (``num_hidden_layers``, each attention's ``layer_idx``, and the
record of removed heads ``pruned_heads``), so ``save_pretrained`` → ``from_pretrained`` round-trips (after head
removal: → ``lu.heads.load_pruned``).

:func:`layers_to_drop` implements the five layer-dropping strategies of Sajjad et al., "On the Effect of Dropping
Layers of Pre-trained Transformer Models" (Computer Speech & Language 2023; arXiv 2004.03844, first titled "Poor
Man's BERT"); :func:`layer_contributions` measures what the contribution-based strategy needs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from . import validate as check

__all__ = ["encoder_layers", "check_layer_indices", "set_encoder_layers", "keep_layers", "drop_layers",
           "LAYER_STRATEGIES", "layers_to_drop", "layer_contributions", "predicted_speedup"]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer layers of a BERT-style model (``model.bert.encoder.layer`` or
    ``model.encoder.layer``). Raises a clear error for a model without one."""
    check.module(model)
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no encoder layers (expected model.<base>.encoder.layer, "
                         "as in BERT-style models).")
    return layers


def check_layer_indices(indices: list[int], n_layers: int, what: str = "layers", repeats: bool = False) -> list[int]:
    """Validate a list of layer indices: ints in [0, n_layers), at least one, no repeats unless ``repeats``.
    NumPy and tensor integers are accepted. Returns it as a list of Python ints."""
    indices = check.items(indices, what, non_empty=False, what="a list of layer indices")
    if not indices:
        raise ValueError(f"{what} must name at least one layer (the model has {n_layers}: 0 to {n_layers - 1}).")
    ints, bad = [], []
    for i in indices:
        try:
            ints.append(check.integer(i, what, 0, n_layers - 1))
        except ValueError:  # BadType is a ValueError too
            bad.append(i)
    if bad:
        raise ValueError(f"{what} {bad} out of range: this model has layers 0 to {n_layers - 1} (ints; NumPy and "
                         "tensor integers are fine).")
    indices = ints
    if not repeats and len(set(indices)) != len(indices):
        raise ValueError(f"{what} {indices} repeat an index; each layer can be used once.")
    return indices


def set_encoder_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Put ``layers`` in place of ``model``'s transformer layers, in place, and set ``config.num_hidden_layers``."""
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise check.BadType(f"layers must be a non-empty nn.ModuleList, got {check.show(layers)}")
    encoder_layers(model)
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    base.encoder.layer = layers
    model.config.num_hidden_layers = len(layers)


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
    set_encoder_layers(out, new)
    pruned = getattr(out.config, "pruned_heads", None)
    if pruned:  # removed heads (lu.heads) follow their layer to its new number
        pruned = {int(k): v for k, v in pruned.items()}
        out.config.pruned_heads = {new: list(pruned[old]) for new, old in enumerate(keep) if pruned.get(old)}
    return out


def drop_layers(model: nn.Module, drop: list[int]) -> nn.Module:
    """A copy of ``model`` without the transformer layers ``drop``; at least one layer must remain."""
    n = len(encoder_layers(model))
    drop = check_layer_indices(drop, n, "drop")
    if len(drop) >= n:
        raise ValueError(f"cannot drop all {n} layers: keep at least one.")
    return keep_layers(model, [i for i in range(n) if i not in drop])


# --------------------------------------------------------------------------------------------------------------
# Which layers to drop: Sajjad et al.'s five strategies
# --------------------------------------------------------------------------------------------------------------

LAYER_STRATEGIES = ("top", "bottom", "alternate", "symmetric", "contribution")


def layers_to_drop(strategy: str, n_layers: int, k: int, similarities: Sequence[float] | torch.Tensor | None = None
                   ) -> list[int]:
    """The 0-based indices (sorted) of the ``k`` layers that ``strategy`` drops from an ``n_layers`` encoder.

    Layer 0 is the bottom (next to the embeddings), layer ``n_layers - 1`` the top. The strategies of Sajjad et al.
    (arXiv 2004.03844, section 3):

    - ``"top"``: drop the last k layers (the ones closest to the pre-training objective).
      12 layers, k = 4 → [8, 9, 10, 11].
    - ``"bottom"``: drop the first k layers. 12 layers, k = 4 → [0, 1, 2, 3].
    - ``"alternate"``: drop every other layer, starting from the top one and going down: n-1, n-3, ...
      12 layers, k = 4 → [5, 7, 9, 11] (the paper's layers 12, 10, 8, 6 counting from 1; the paper also tries the
      variant that starts one layer lower). At most ``ceil(n_layers / 2)`` layers can go this way.
    - ``"symmetric"``: keep the bottom and the top, drop k consecutive layers from the middle. 12 layers, k = 4 →
      [4, 5, 6, 7]. When the kept layers cannot split evenly, the bottom keeps the extra one (the paper finds the
      lower layers the most important): 6 layers, k = 3 → [2, 3, 4] (keeps 0, 1 and 5).
    - ``"contribution"``: drop the k layers whose output is most similar to their input — the largest
      ``similarities[i]``, the average cosine similarity between layer i's input and output (see
      :func:`layer_contributions`); a layer that barely changes its input contributes little. Ties go to the
      lower index.

    Raises ValueError for an unknown strategy, ``k`` outside [1, n_layers - 1] (at least one layer must stay), too
    many layers for ``"alternate"``, or missing/mis-sized ``similarities`` for ``"contribution"``.
    """
    if not isinstance(strategy, str) or strategy not in LAYER_STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(LAYER_STRATEGIES)}.")
    n_layers = check.integer(n_layers, "n_layers", 2, hint="one layer must stay after dropping")
    k = check.integer(k, "k", 1, n_layers - 1, hint=f"keep at least one of the {n_layers} layers")
    if strategy == "top":
        drop = range(n_layers - k, n_layers)
    elif strategy == "bottom":
        drop = range(k)
    elif strategy == "alternate":
        candidates = list(range(n_layers - 1, -1, -2))
        if k > len(candidates):
            raise ValueError(f"alternate dropping takes every other layer, so at most {len(candidates)} of "
                             f"{n_layers}; got k = {k}.")
        drop = candidates[:k]
    elif strategy == "symmetric":
        bottom = (n_layers - k + 1) // 2  # kept below the dropped block; the bottom gets the odd one
        drop = range(bottom, bottom + k)
    else:
        if similarities is None:
            raise ValueError("contribution-based dropping needs similarities: one number per layer, e.g. from "
                             "lu.surgery.layer_contributions(model, batches).")
        if isinstance(similarities, (str, bytes, Mapping)):
            raise check.BadType(f"similarities must be one number per layer, got {check.show(similarities)}")
        try:
            sims = torch.as_tensor(similarities, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise check.BadType(f"similarities must be one number per layer, got {check.show(similarities)}") from exc
        if sims.numel() != n_layers:
            raise ValueError(f"similarities must have one value per layer ({n_layers}), got {sims.numel()}.")
        check.tensor(sims, "similarities")
        drop = sorted(range(n_layers), key=lambda i: (-sims[i].item(), i))[:k]
    return sorted(drop)


@torch.no_grad()
def layer_contributions(model: nn.Module, loader: Iterable) -> torch.Tensor:
    """The average cosine similarity between each transformer layer's input and output hidden states.

    For every layer i, over every non-padding token of every batch: cos(h_i, h_{i+1}) where h_0 is the embeddings'
    output and h_{i+1} layer i's output (``output_hidden_states=True``). Returns a float tensor of shape
    ``(n_layers,)`` with values in [-1, 1]; close to 1 means the layer leaves its input almost unchanged, the
    criterion of contribution-based dropping (Sajjad et al.). Batches are dicts with ``input_ids`` and
    ``attention_mask`` (labels are ignored).
    """
    from .training import model_device, model_inputs, to_device

    encoder_layers(model)
    check.loader(loader, "loader")
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, tokens = None, 0
    try:
        for batch in loader:
            if not isinstance(batch, Mapping) or "attention_mask" not in batch:
                raise check.BadType(f"each batch must be a dict with input_ids and attention_mask, got "
                                    f"{check.show(batch)}")
            batch = to_device(model_inputs(batch), device)
            hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].bool()
            sims = torch.stack([torch.nn.functional.cosine_similarity(a, b, dim=-1)[mask]
                                for a, b in zip(hidden[:-1], hidden[1:], strict=True)])  # (layers, tokens)
            total = sims.sum(dim=1) if total is None else total + sims.sum(dim=1)
            tokens += int(mask.sum())
    finally:
        model.train(was_training)
    if total is None or tokens == 0:
        raise ValueError("layer_contributions needs at least one batch with a non-padding token.")
    out = (total / tokens).float().cpu()
    check.tensor(out, "the layer contributions (the model's hidden states held NaN/inf)")
    return out


# Reference answer of lesson 05's exercise (used by the student copy until the learner's passes its check).

def predicted_speedup(layer_share: float, kept_fraction: float) -> float:
    """Amdahl's law: old time / new time when only ``layer_share`` of the run time scales with the fraction of
    layers kept, ``1 / ((1 - layer_share) + layer_share × kept_fraction)``. Both fractions in [0, 1]."""
    layer_share = check.fraction(layer_share, "layer_share", high_open=False)
    kept_fraction = check.fraction(kept_fraction, "kept_fraction", high_open=False)
    if layer_share == 1 and kept_fraction == 0:
        raise ValueError("kept_fraction must be above 0 when layer_share is 1 (no run time would be left)")
    return 1 / ((1 - layer_share) + layer_share * kept_fraction)
