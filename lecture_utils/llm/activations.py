"""Activations: simulated int8 (W8A8) and SmoothQuant's migration of their outliers into the weights."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .. import validate
from .calibration import InputStats
from .model import decoder_linears
from .rtn import _check_bits, rtn_model

__all__ = ["GRANULARITIES", "fake_quantize_activation", "fake_quantize_activations", "smooth_scales",
           "smoothquant_model", "w8a8_weights"]

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
