"""Calibration: statistics of every decoder linear's inputs, and the first decoder layer's inputs, caught."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import validate
from .model import check_ids, decoder_layers, decoder_linears

__all__ = ["SHARED_INPUT", "InputStats", "calibrate", "decoder_inputs", "layer_kwargs", "mixed_attention", "run_hooked"]

# Linear layers of a Llama decoder block that read the same input tensor: statistics are shared.
SHARED_INPUT = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}


@dataclass
class InputStats:
    """Statistics of one linear layer's input features over calibration tokens.

    ``xtx``: (in, in) sum of x xᵀ over tokens (float32; the GPTQ Hessian is 2·xtx/tokens); ``sq_norm``: (in,)
    sum of x_j² (‖X_j‖² of Wanda); ``absmax``: (in,) max |x_j| (SmoothQuant); ``tokens``: how many tokens;
    ``abs_sum``: (in,) sum of |x_j| (AWQ's mean |x_j| is ``abs_sum / tokens``).
    """

    xtx: torch.Tensor
    sq_norm: torch.Tensor
    absmax: torch.Tensor
    tokens: int
    abs_sum: torch.Tensor | None = None


def _check_windows(windows: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
    """Calibration data must be token windows of the model: a non-empty int64 tensor (n_windows, seq_len)."""
    return check_ids(windows, model, "calibration windows")


def _check_stats(stats: dict[str, InputStats]) -> dict[str, InputStats]:
    """Statistics with NaN or infinite entries (a NaN weight or activation upstream) are refused by layer name."""
    for name, s in stats.items():
        for field in ("sq_norm", "absmax"):
            t = getattr(s, field)
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"the inputs of {name} hold NaN or infinite values during calibration ({field} is "
                                 "not finite): the model computes NaN or inf there (a NaN weight?)")
    return stats


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
                                             torch.zeros(d), 0, torch.zeros(d))
            if hessian:
                s.xtx += x.T @ x
            s.sq_norm += (x * x).sum(0)
            s.absmax = torch.maximum(s.absmax, x.abs().amax(0))
            s.abs_sum += x.abs().sum(0)
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
    linears = decoder_linears(model)
    _check_windows(windows, model)
    validate.integer(batch_size, "batch_size", 1)
    hessian = validate.flag(hessian, "hessian")
    groups = _input_groups(linears)
    model.eval()
    stats, _ = _collect({names[0]: linears[names[0]] for names in groups},
                        lambda: [model(input_ids=batch, use_cache=False) for batch in windows.split(batch_size)],
                        hessian)
    _check_stats(stats)
    return {name: stats[names[0]] for names in groups for name in names}


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
    _check_windows(windows, model)
    validate.integer(batch_size, "batch_size", 1)
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


def mixed_attention(model: nn.Module) -> bool:
    """True if the model's layers do not all attend alike (sliding-window and full layers mixed, as in Gemma2), so
    each layer receives its own attention mask and the first layer's keyword arguments do not fit the others."""
    types = getattr(getattr(model, "config", None), "layer_types", None)
    return isinstance(types, (list, tuple)) and len(set(types)) > 1


@torch.no_grad()
def layer_kwargs(model: nn.Module, windows: torch.Tensor, batch_size: int = 8) -> list[list[dict]]:
    """The keyword arguments (attention mask, position embeddings …) the model passes to each decoder layer, per
    layer and batch of ``windows``: one full forward pass with every layer's inputs caught."""
    layers = decoder_layers(model)
    caught: list[list[dict]] = [[] for _ in layers]

    def catch(index: int):
        def fn(_module, _args, kwargs):
            caught[index].append({k: v for k, v in kwargs.items() if k != "hidden_states"})
        return fn

    run_hooked(model, windows, batch_size,
               [layer.register_forward_pre_hook(catch(i), with_kwargs=True) for i, layer in enumerate(layers)])
    return caught


@torch.no_grad()
def run_hooked(model: nn.Module, windows: torch.Tensor, batch_size: int, handles: list) -> None:
    """Run ``windows`` (int64, (n, seq_len)) through ``model`` in batches of ``batch_size``, without a KV cache,
    for the hooks whose ``handles`` are given; the hooks are removed afterwards, also when a pass fails."""
    try:
        model.eval()
        for batch in windows.split(batch_size):
            model(input_ids=batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
