"""Attention heads: gates, importance (Michel et al. 2019) and physical removal.

transformers 5 has neither ``prune_heads`` nor ``head_mask``, so the course does it itself, without touching
transformers' source:

- :class:`HeadGates` multiplies each head's output by a gate ξ (a forward pre-hook on the attention's output
  projection, whose input is the heads' outputs side by side: ``(batch, tokens, heads × head_size)``).
- :func:`head_importance` is Michel et al.'s score: the mean over batches of ``|∂L/∂ξ_h|`` at ξ = 1, normalised
  per layer (ℓ2), as in their code and Hugging Face's ``bertology`` example.
- :func:`remove_heads` slices the query/key/value rows and the output projection's columns of the chosen heads,
  so the model is truly smaller and faster. A gated-off head (ξ = 0) and a removed head give the same outputs.
- The config records the removed heads (``config.pruned_heads``: original layer-local head indices), and
  :func:`load_pruned` rebuilds the smaller shapes before loading weights, so save → reload round-trips.

Head indices are 0-based. In a model that already lost heads, :func:`remove_heads` takes positions among the
heads that are *left* in each layer (0 to ``heads_per_layer(model)[layer] - 1``); the config keeps the original
indices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from . import validate as check
from .surgery import drop_layers, encoder_layers
from .training import cross_entropy_loss, model_device, to_device

__all__ = ["self_attention", "heads_per_layer", "HeadGates", "gate_mask", "head_importance", "heads_to_remove",
           "removed_heads", "remove_heads", "head_parameters", "head_flop_share", "predicted_heads_speedup",
           "load_pruned"]

HeadDict = Mapping[int, Iterable[int]]


# --------------------------------------------------------------------------------------------------------------
# Where the heads are
# --------------------------------------------------------------------------------------------------------------

def self_attention(layer: nn.Module) -> nn.Module:
    """The self-attention module of one BERT-style layer (``layer.attention.self``), with ``query``, ``key``,
    ``value``, ``num_attention_heads`` and ``attention_head_size``."""
    attn = getattr(getattr(layer, "attention", None), "self", None)
    if attn is None or not all(hasattr(attn, a) for a in ("query", "key", "value", "attention_head_size")):
        raise ValueError(f"{type(layer).__name__} has no BERT-style self-attention (layer.attention.self with "
                         "query/key/value projections).")
    return attn


def heads_per_layer(model: nn.Module) -> list[int]:
    """How many attention heads each transformer layer has now (12 per layer for MiniLM-L6 before pruning)."""
    return [int(self_attention(layer).num_attention_heads) for layer in encoder_layers(model)]


def _uniform_heads(model: nn.Module) -> tuple[int, int]:
    counts = heads_per_layer(model)
    if len(set(counts)) != 1:
        raise ValueError(f"the layers have different numbers of heads {counts}: gates and importance need the "
                         "same count in every layer — compute them before removing heads.")
    return len(counts), counts[0]


# --------------------------------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------------------------------

class HeadGates:
    """Multiply the output of head h of layer l by ``gates[l, h]`` while the ``with`` block runs.

    ``gates`` is a float tensor of shape ``(layers, heads)`` — the same gates for every example — or
    ``(batch, layers, heads)``, one set per example of the batch (for per-example gradients); default all ones
    of shape ``(layers, heads)`` with ``requires_grad=True``, so ``torch.autograd.grad(loss, gates.gates)`` gives
    ∂L/∂ξ. A 0 switches a head off. The gate sits on the input
    of the attention's output projection (``attention.output.dense``), where the heads' outputs lie side by side,
    so it scales exactly that head's contribution to the layer; the hooks are removed on exit.
    """

    def __init__(self, model: nn.Module, gates: torch.Tensor | None = None):
        n_layers, n_heads = _uniform_heads(model)
        if gates is None:
            gates = torch.ones(n_layers, n_heads, device=model_device(model), requires_grad=True)
        check.tensor(gates, "gates", floating=True)
        if tuple(gates.shape[-2:]) != (n_layers, n_heads) or gates.dim() not in (2, 3):
            raise ValueError(f"gates must have shape (layers, heads) = ({n_layers}, {n_heads}) or (batch, "
                             f"{n_layers}, {n_heads}), got {tuple(gates.shape)}.")
        self.model, self.gates = model, gates
        self._handles: list = []

    def _hook(self, index: int, head_size: int) -> Callable:
        def scale(_module: nn.Module, args: tuple) -> tuple:
            x = args[0]  # (batch, tokens, heads × head_size): the heads' outputs side by side
            g = self.gates[..., index, :].to(dtype=x.dtype, device=x.device)  # (heads,) or (batch, heads)
            if g.dim() == 2 and g.shape[0] != x.shape[0]:
                raise ValueError(f"per-example gates were made for a batch of {g.shape[0]}, the model got "
                                 f"{x.shape[0]} examples")
            g = g.reshape(-1, 1, g.shape[-1], 1) if g.dim() == 2 else g.view(-1, 1)
            shaped = x.reshape(*x.shape[:-1], -1, head_size) * g
            return (shaped.reshape(x.shape), *args[1:])
        return scale

    def __enter__(self) -> HeadGates:
        for i, layer in enumerate(encoder_layers(self.model)):
            size = int(self_attention(layer).attention_head_size)
            self._handles.append(layer.attention.output.dense.register_forward_pre_hook(self._hook(i, size)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def gate_mask(model: nn.Module, heads: HeadDict) -> torch.Tensor:
    """A ``(layers, heads)`` gate tensor of ones with zeros at ``heads`` (``{layer: [head, ...]}``): use it with
    :class:`HeadGates` to switch heads off without removing them."""
    n_layers, n_heads = _uniform_heads(model)
    heads = _check_heads(heads, [n_heads] * n_layers)
    mask = torch.ones(n_layers, n_heads, device=model_device(model))
    for layer, hs in heads.items():
        mask[layer, hs] = 0.0
    return mask


# --------------------------------------------------------------------------------------------------------------
# Importance (Michel et al. 2019)
# --------------------------------------------------------------------------------------------------------------

def _examples(batch) -> int:
    """How many examples a batch dict holds (the first dimension of its ``input_ids``)."""
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    if not torch.is_tensor(ids) or ids.dim() != 2:
        raise ValueError("head_importance needs batches as dicts with input_ids of shape (batch, tokens), got "
                         f"{type(batch).__name__}")
    return int(ids.shape[0])


def head_importance(model: nn.Module, loader: Iterable, loss_fn: Callable | None = None,
                    normalize: bool = True) -> torch.Tensor:
    """Michel et al.'s head importance: ``I[l, h] = mean over examples x of |∂L(x)/∂ξ[l, h]|`` at ξ = 1.

    The absolute value is taken *per example*, before averaging (Michel et al. 2019, eq. 2): a head whose
    gradient is large but changes sign from example to example is important, although its batch-mean gradient
    may be near zero. One backward pass per batch gives every example's gradient: each example gets its own copy
    of the gates, and the batch-mean loss × batch size is the sum of the examples' losses.

    Args:
        model: a BERT-style model with the same number of heads in every layer; it is left unchanged (no
            parameter gradients are stored; its train/eval mode is restored).
        loader: batches as for :func:`lu.training.train` (a loader or a list, e.g. a few training batches), each a
            dict with ``input_ids`` of shape (batch, tokens).
        loss_fn: ``loss_fn(model, batch) -> scalar``, the *mean* over the batch's examples of a per-example loss;
            default cross-entropy on the labels.
        normalize: divide each layer's scores by their ℓ2 norm over the layer's heads, as Michel et al. do
            (so every layer's vector has length 1 and layers compare on one scale).

    Returns:
        A float tensor of shape ``(layers, heads)`` on the CPU; larger means the loss is more sensitive to
        that head. Without normalisation the unit is loss per unit of gate.
    """
    if loss_fn is not None:
        check.callable_(loss_fn, "loss_fn")
    loss_fn = loss_fn or cross_entropy_loss
    check.loader(loader, "loader")
    check.flag(normalize, "normalize")
    n_layers, n_heads = _uniform_heads(model)
    device = model_device(model)
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    total, count = torch.zeros(n_layers, n_heads), 0
    model.eval()  # no dropout: the score should measure the head, not the noise
    try:
        for p, _ in flags:
            p.requires_grad_(False)  # only ∂L/∂ξ is needed: skip every weight gradient
        for batch in loader:
            batch = to_device(batch, device)
            n = _examples(batch)
            gates = torch.ones(n, n_layers, n_heads, device=device, requires_grad=True)  # one set per example
            with HeadGates(model, gates):
                loss = loss_fn(model, batch)
            (grad,) = torch.autograd.grad(loss * n, gates)  # row i: ∂L(x_i)/∂ξ
            total += grad.detach().abs().sum(dim=0).cpu()
            count += n
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    if count == 0:
        raise ValueError("head_importance needs at least one batch.")
    scores = total / count
    if not torch.isfinite(scores).all():
        raise ValueError("head importance came out NaN or infinite: the loss or its gradient was not finite on some "
                         "batch (check the model's outputs and the batches)")
    if normalize:
        scores = scores / (scores.norm(dim=1, keepdim=True) + 1e-20)
    return scores


def heads_to_remove(scores: torch.Tensor, fraction: float, min_per_layer: int = 1) -> dict[int, list[int]]:
    """The ``round(fraction × all heads)`` heads with the lowest ``scores`` (shape ``(layers, heads)``), ranked
    over all layers together, as ``{layer: [head, ...]}`` (sorted; layers that lose nothing are left out).

    Every layer keeps at least ``min_per_layer`` heads (its best ones): a head that would empty a layer is
    skipped and the next lowest is taken. Pass random scores (e.g. ``torch.rand``) for a random-order control.
    """
    if isinstance(scores, (list, tuple)) or hasattr(scores, "__array__") and not torch.is_tensor(scores):
        try:
            scores = torch.as_tensor(scores, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise check.BadType(f"scores must be a (layers, heads) tensor of numbers, got "
                                f"{check.show(scores)}") from exc
    check.tensor(scores, "scores", non_empty=True)
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (layers, heads), got {tuple(scores.shape)}.")
    if scores.dtype == torch.bool or scores.is_complex():
        raise check.BadType(f"scores must be real numbers, got dtype {scores.dtype}")
    fraction = check.fraction(fraction, "fraction", high_open=False, hint="the share of all heads to remove")
    n_layers, n_heads = scores.shape
    min_per_layer = check.integer(min_per_layer, "min_per_layer", 0, n_heads)
    target = round(fraction * scores.numel())
    most = n_layers * (n_heads - min_per_layer)
    if target > most:
        raise ValueError(f"removing {target} of {scores.numel()} heads would leave fewer than {min_per_layer} "
                         f"per layer; at most {most} can go (fraction {most / scores.numel():.3f}).")
    left = [n_heads] * n_layers
    chosen: dict[int, list[int]] = {}
    for flat in torch.argsort(scores.flatten(), stable=True).tolist():
        if sum(len(v) for v in chosen.values()) == target:
            break
        layer, head = divmod(flat, n_heads)
        if left[layer] > min_per_layer:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
    return {layer: sorted(hs) for layer, hs in sorted(chosen.items())}


# --------------------------------------------------------------------------------------------------------------
# Removal
# --------------------------------------------------------------------------------------------------------------

def _check_heads(heads: HeadDict, counts: list[int]) -> dict[int, list[int]]:
    """Validate ``{layer: [head, ...]}`` against the current head counts; returns it with sorted lists."""
    if not isinstance(heads, Mapping):
        raise check.BadType(f"heads must be a dict {{layer: [head, ...]}}, got {check.show(heads)}.")
    out: dict[int, list[int]] = {}
    for layer, hs in heads.items():
        try:
            layer = check.integer(layer, "layer", 0, len(counts) - 1)
        except ValueError:
            raise ValueError(f"layer {layer!r} out of range: this model has layers 0 to {len(counts) - 1} (ints; "
                             "NumPy and tensor integers are fine).") from None
        hs = check.items(hs, f"heads[{layer}]", non_empty=False, what="a list of head indices")
        bad = []
        for i, h in enumerate(hs):
            try:
                hs[i] = check.integer(h, "head", 0, counts[layer] - 1)
            except ValueError:
                bad.append(h)
        if bad:
            raise ValueError(f"heads {bad} of layer {layer} out of range: that layer has heads 0 to "
                             f"{counts[layer] - 1}.")
        if len(set(hs)) != len(hs):
            raise ValueError(f"heads {hs} of layer {layer} repeat an index; each head can be removed once.")
        if hs:
            out[layer] = sorted(hs)
    return out


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    """A new Linear holding ``weight`` and ``bias`` (copies), trainable where ``like`` was."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                      dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.weight.requires_grad_(like.weight.requires_grad)
    if bias is not None:
        layer.bias.requires_grad_(like.bias.requires_grad)
    layer.train(like.training)
    return layer


def _slice_layer(layer: nn.Module, remove: list[int]) -> None:
    """Remove heads (positions among the layer's current heads) in place."""
    attn = self_attention(layer)
    n, d = int(attn.num_attention_heads), int(attn.attention_head_size)
    keep = [h for h in range(n) if h not in set(remove)]
    if not keep:
        raise ValueError("a layer needs at least one head (drop the whole layer instead).")
    rows = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep]).to(attn.query.weight.device)
    with torch.no_grad():
        for name in ("query", "key", "value"):
            old = getattr(attn, name)
            setattr(attn, name, _linear(old.weight[rows], None if old.bias is None else old.bias[rows], old))
        out = layer.attention.output.dense
        layer.attention.output.dense = _linear(out.weight[:, rows], out.bias, out)
    attn.num_attention_heads = len(keep)
    attn.all_head_size = len(keep) * d


def removed_heads(model_or_config) -> dict[int, list[int]]:
    """The heads removed so far, as recorded in the config: ``{layer: [original head index, ...]}`` (int keys,
    also after a JSON round trip, which turns them into strings)."""
    config = getattr(model_or_config, "config", model_or_config)
    raw = getattr(config, "pruned_heads", None) or {}
    try:
        return {check.integer(int(k) if isinstance(k, str) else k, "layer"):
                sorted(check.integer(h, "head") for h in v) for k, v in raw.items() if v}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"config.pruned_heads must be {{layer: [head, ...]}} of ints, got {raw!r}") from exc


def remove_heads(model: nn.Module, heads: HeadDict, drop_empty_layers: bool = False) -> nn.Module:
    """A copy of ``model`` without the attention heads ``heads`` = ``{layer: [head, ...]}``, physically removed.

    For each removed head of size d, the query, key and value projections lose d output rows (weights and bias)
    and the attention's output projection loses d input columns: :func:`head_parameters` fewer parameters per
    head. The layer's ``num_attention_heads`` and ``all_head_size`` follow; ``config.pruned_heads`` records
    the original indices of every removed head, so :func:`load_pruned` can rebuild the shapes after saving.

    Removing every head of a layer is refused (the layer would have an attention without heads), unless
    ``drop_empty_layers=True``: then such layers are dropped whole (:func:`lu.surgery.drop_layers`). The input
    model is left untouched.
    """
    counts = heads_per_layer(model)
    heads = _check_heads(heads, counts)
    check.flag(drop_empty_layers, "drop_empty_layers")
    empty = [layer for layer, hs in heads.items() if len(hs) == counts[layer]]
    if empty and not drop_empty_layers:
        raise ValueError(f"this would remove every head of layer(s) {empty}. A layer needs at least one head; to "
                         "remove the whole layer, pass drop_empty_layers=True (or use lu.surgery.drop_layers).")
    if len(empty) == len(counts):
        raise ValueError("this would remove every head of every layer: keep at least one layer.")
    n_heads = int(model.config.num_attention_heads)
    original = removed_heads(model)
    if empty:
        out = drop_layers(model, empty)  # a copy, with config.pruned_heads remapped to the new layer numbers
        new_index = {old: new for new, old in enumerate(i for i in range(len(counts)) if i not in empty)}
        heads = {new_index[layer]: hs for layer, hs in heads.items() if layer not in empty}
        original = removed_heads(out)
    else:
        out = copy.deepcopy(model)
    for layer_idx, hs in heads.items():
        layer = encoder_layers(out)[layer_idx]
        alive = [h for h in range(n_heads) if h not in set(original.get(layer_idx, []))]
        original[layer_idx] = sorted(original.get(layer_idx, []) + [alive[h] for h in hs])
        _slice_layer(layer, hs)
    out.config.pruned_heads = {layer: hs for layer, hs in sorted(original.items()) if hs}
    return out


def head_parameters(hidden_size: int, head_size: int) -> int:
    """Parameters one attention head holds: d rows of W_q, W_k, W_v with their biases, and d columns of the
    output projection (whose bias stays): ``3 d (hidden + 1) + d × hidden``."""
    hidden_size = check.integer(hidden_size, "hidden_size", 1)
    head_size = check.integer(head_size, "head_size", 1, hidden_size)
    return 3 * head_size * (hidden_size + 1) + head_size * hidden_size


def head_flop_share(hidden: int, intermediate: int, tokens: int) -> float:
    """Share (a fraction in (0, 1)) of one encoder layer's multiply-adds per token that belongs to its attention
    heads, for hidden size H, feed-forward width I and T tokens: the Q, K, V and O projections (4·H²) and the
    attention itself (QKᵀ and the weighted sum of V, 2·T·H), against those plus the feed-forward block (2·H·I).
    Softmax, LayerNorms, embeddings and the classifier are left out."""
    hidden = check.integer(hidden, "hidden", 1)
    intermediate = check.integer(intermediate, "intermediate", 1)
    tokens = check.integer(tokens, "tokens", 1)
    heads = 4 * hidden * hidden + 2 * tokens * hidden
    return heads / (heads + 2 * hidden * intermediate)


def predicted_heads_speedup(hidden: int, intermediate: int, tokens: int, removed: float) -> float:
    """Speed-up (old time / new time) predicted by counting multiply-adds when a fraction ``removed`` in [0, 1] of
    every layer's heads goes: ``1 / (1 − removed × head_flop_share(hidden, intermediate, tokens))``."""
    removed = check.fraction(removed, "removed", high_open=False)
    return 1 / (1 - removed * head_flop_share(hidden, intermediate, tokens))


def load_pruned(path: str | Path, attn_implementation: str = "sdpa", model_class=None) -> nn.Module:
    """Load a model saved with ``save_pretrained`` after :func:`remove_heads` (or any other course surgery).

    ``from_pretrained`` alone cannot: it builds every layer with ``config.num_attention_heads`` heads and the
    saved, smaller weights do not fit. This builds the full model from the config, removes the heads listed in
    ``config.pruned_heads`` (``{layer: [original head, ...]}``), then loads the saved weights strictly (every
    tensor must match in name and shape). Returns the model in eval mode. ``model_class`` defaults to
    ``AutoModelForSequenceClassification``; only single-file ``model.safetensors`` checkpoints are supported.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .models import _check_attn, quiet_transformers

    _check_attn(attn_implementation)
    if not isinstance(path, (str, Path)):
        raise check.BadType(f"path must be a folder (str or Path) written by save_pretrained, got {check.show(path)}")
    if model_class is not None and not callable(getattr(model_class, "from_config", None)):
        raise check.BadType(f"model_class must be a transformers model class (with from_config), got "
                            f"{check.show(model_class)}")
    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found: save the model with save_pretrained(folder) first "
                                "(sharded checkpoints are not supported here).")
    config = AutoConfig.from_pretrained(path)
    removed = removed_heads(config)
    config.pruned_heads = {}
    model_class = model_class or AutoModelForSequenceClassification
    with quiet_transformers():
        model = model_class.from_config(config, attn_implementation=attn_implementation)
    layers = encoder_layers(model)
    if any(not 0 <= layer < len(layers) for layer in removed):
        raise ValueError(f"config.pruned_heads names layers {sorted(removed)} but the model has layers 0 to "
                         f"{len(layers) - 1}.")
    counts = heads_per_layer(model)
    for layer_idx, hs in removed.items():
        bad = [h for h in hs if not 0 <= h < counts[layer_idx]]
        if bad or len(set(hs)) != len(hs) or len(hs) >= counts[layer_idx]:
            raise ValueError(f"config.pruned_heads of {path} lists heads {hs} for layer {layer_idx}, which has heads "
                             f"0 to {counts[layer_idx] - 1}: each must be one of them, once, and at least one head "
                             "must remain.")
    for layer_idx, hs in removed.items():
        _slice_layer(layers[layer_idx], hs)
    model.config.pruned_heads = removed
    state = load_file(str(weights))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise ValueError(f"{weights} does not match the architecture its config describes (after removing "
                         f"{removed or 'no'} heads): {str(exc)[:300]}") from None
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"{weights} does not match the pruned architecture: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}.")
    return model.eval()
