"""Activations: simulated int8 (W8A8) and SmoothQuant's migration of their outliers into the weights."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .. import validate
from .calibration import InputStats
from .model import check_float, decoder_layers, decoder_linears
from .rtn import _check_bits, rtn_model_

__all__ = ["GRANULARITIES", "SMOOTHQUANT_FAMILIES", "fake_quantize_activation", "fake_quantize_activations",
           "smooth_scales", "smoothquant_model_", "w8a8_weights_"]

GRANULARITIES = ("tensor", "token")


def fake_quantize_activation(x: torch.Tensor, bits: int = 8, granularity: str = "tensor") -> torch.Tensor:
    """Symmetric dynamic quantization of activations and back: one scale max|x| / (2^(bits−1) − 1) for the whole
    tensor, or one per token (per row of the last dimension)."""
    validate.choice(granularity, "granularity", GRANULARITIES)
    _check_bits(bits)
    validate.tensor(x, "x (the activations)", floating=True, non_empty=True)
    qmax = 2 ** (bits - 1) - 1
    amax = x.abs().amax() if granularity == "tensor" else x.abs().amax(dim=-1, keepdim=True)
    scale = torch.clamp(amax / qmax, min=1e-8)
    return torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale


@contextlib.contextmanager
def fake_quantize_activations(model: nn.Module, bits: int = 8, granularity: str = "tensor") -> Iterator[None]:
    """Inside the ``with`` block every decoder linear sees its input quantized by :func:`fake_quantize_activation`."""
    fake_quantize_activation(torch.zeros(1), bits, granularity)  # validate the arguments now
    linears = decoder_linears(model)

    def hook(_module, args):
        return (fake_quantize_activation(args[0], bits, granularity), *args[1:])

    handles = [m.register_forward_pre_hook(hook) for m in linears.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def smooth_scales(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors s_j = max|X_j|^α / max|W_j|^(1−α) (Xiao et al. 2023); dividing the
    activations by s and multiplying the weights' columns by s leaves X Wᵀ unchanged."""
    alpha = validate.fraction(alpha, "alpha", high_open=False)
    validate.tensor(act_absmax, "act_absmax", floating=True, dims=(1,), non_empty=True)
    validate.tensor(weight_absmax, "weight_absmax", floating=True, dims=(1,), non_empty=True)
    for name, t in (("act_absmax", act_absmax), ("weight_absmax", weight_absmax)):
        if bool((t < 0).any()):
            raise ValueError(f"{name} holds maxima of |values|, which are >= 0, but its smallest entry is "
                             f"{t.min().item():g}")
    if act_absmax.shape != weight_absmax.shape or act_absmax.dim() != 1:
        raise ValueError(f"act_absmax and weight_absmax must be 1-D of the same length, got "
                         f"{tuple(act_absmax.shape)} and {tuple(weight_absmax.shape)}")
    a = act_absmax.double().clamp(min=1e-5)
    w = weight_absmax.double().clamp(min=1e-5)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


SMOOTHQUANT_FAMILIES = ("SmoothQuant here supports Llama-style blocks (Llama, SmolLM2, Mistral, Qwen2): separate "
                        "q/k/v_proj read the input norm, gate/up_proj the post-attention norm, and each norm "
                        "multiplies by its weight, so dividing the weight by s divides its output by s")
_SMOOTH_CHILDREN = {"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"}


def _scales_with_weight(norm: nn.Module, hidden: int) -> bool:
    """True if doubling ``norm.weight`` doubles ``norm``'s output (y = weight ⊙ f(x), as Llama's RMSNorm; not
    Gemma's (1 + weight) ⊙ f(x), nor a LayerNorm with a bias)."""
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape != (hidden,):
        return False
    x = torch.randn(3, hidden, generator=torch.Generator().manual_seed(0)).to(weight)
    before = weight.detach().clone()
    try:
        y = norm(x)
        weight.mul_(2)
        y2 = norm(x)
    finally:
        weight.copy_(before)
    return bool(torch.allclose(y2, 2 * y, rtol=1e-4, atol=1e-6 * float(y.abs().max()) + 1e-12))


def _check_smoothable(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks, each checked to have exactly the layout SmoothQuant's folding is correct for."""
    layers = decoder_layers(model)
    decoder_linears(model)  # refuses an already quantized model
    check_float(model, "smoothquant_model_")  # smoothing after rounding would move the weights off their grid
    for i, layer in enumerate(layers):
        where = f"{type(model).__name__}'s block {i} ({type(layer).__name__})"
        extra = sorted(n for n, m in layer.named_children()
                       if n not in _SMOOTH_CHILDREN and any(p.numel() for p in m.parameters()))
        missing = sorted(n for n in _SMOOTH_CHILDREN if not hasattr(layer, n))
        if missing or extra:
            what = f"has no {', '.join(missing)}" if missing else \
                f"has more weighted parts ({', '.join(extra)}), e.g. a norm after attention whose scale must not move"
            raise TypeError(f"smoothquant_model_ cannot fold scales into {where}: it {what}. {SMOOTHQUANT_FAMILIES}.")
        attn, mlp = layer.self_attn, layer.mlp
        need = {"self_attn": (attn, ("q_proj", "k_proj", "v_proj")), "mlp": (mlp, ("gate_proj", "up_proj",
                                                                                    "down_proj"))}
        for part, (owner, names) in need.items():
            absent = [n for n in names if not isinstance(getattr(owner, n, None), nn.Linear)]
            if absent:
                fused = [n for n, m in owner.named_children() if isinstance(m, nn.Linear) and n not in names]
                raise TypeError(f"smoothquant_model_ cannot fold scales into {where}: its {part} has no separate "
                                f"{', '.join(absent)} nn.Linear" + (f" (it has {', '.join(fused)}: fused projections)"
                                                                     if fused else "") + f". {SMOOTHQUANT_FAMILIES}.")
        hidden = attn.q_proj.in_features
        for norm_name in ("input_layernorm", "post_attention_layernorm"):
            if not _scales_with_weight(getattr(layer, norm_name), hidden):
                raise TypeError(f"smoothquant_model_ cannot fold scales into {where}: its {norm_name} "
                                f"({type(getattr(layer, norm_name)).__name__}) does not scale its output with its "
                                "weight (e.g. Gemma's norm multiplies by 1 + weight), so dividing the weight by s "
                                f"would change the model. {SMOOTHQUANT_FAMILIES}.")
    return layers


@torch.no_grad()
def smoothquant_model_(model: nn.Module, stats: dict[str, InputStats], alpha: float = 0.5,
                      scale_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None) -> nn.Module:
    """Apply SmoothQuant in place to every Llama decoder block: the inputs of down_proj (scaled through ``up_proj``'s
    rows), of gate/up (through ``post_attention_layernorm``) and of q/k/v (through ``input_layernorm``). The model
    computes the same function afterwards; only the spread of activations and weights moves, so that with factors
    s_j every smoothed input channel has max|X_j| / s_j = s_j · max|W_j| at α = 0.5 (down_proj is smoothed before
    gate/up, whose factors are then computed from the rescaled up_proj, so all three stay balanced).
    ``scale_fn(act_absmax, weight_absmax, alpha)`` computes the factors (default :func:`smooth_scales`); it must
    return one finite factor > 0 per input channel. Other layouts (Gemma's (1 + weight) norms, Gemma2's extra
    norms, Phi-3's fused q/k/v, GPT-2, OPT) are refused before anything changes."""
    alpha = validate.fraction(alpha, "alpha", high_open=False)
    layers = _check_smoothable(model)
    validate.mapping(stats, "stats", non_empty=True, what="a dict from calibrate(model, windows)")
    if scale_fn is not None:
        validate.callable_(scale_fn, "scale_fn")
    plan = []
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        for norm_w, prev, linears, key in [(None, mlp.up_proj, [mlp.down_proj], "mlp.down_proj"),
                                           (layer.post_attention_layernorm.weight, None, [mlp.gate_proj, mlp.up_proj],
                                            "mlp.gate_proj"),
                                           (layer.input_layernorm.weight, None, [attn.q_proj, attn.k_proj,
                                                                                 attn.v_proj], "self_attn.q_proj")]:
            name = f"model.layers.{i}.{key}"
            if name not in stats:
                raise ValueError(f"stats has no entry {name!r}: run calibrate() on this model first")
            absmax = getattr(stats[name], "absmax", None)
            validate.tensor(absmax, f"stats[{name!r}].absmax", floating=True, dims=(1,))
            if absmax.shape != (linears[0].in_features,) or bool((absmax < 0).any()):
                raise ValueError(f"stats[{name!r}].absmax must hold {linears[0].in_features} maxima >= 0, got "
                                 f"{validate.show(absmax)}: calibrate this model again")
            plan.append((norm_w, prev, linears, name, absmax))
    for norm_w, prev, linears, _name, absmax in plan:
        w_absmax = torch.stack([lin.weight.abs().amax(0) for lin in linears]).amax(0)
        if scale_fn is None:
            s = smooth_scales(absmax, w_absmax, alpha).double()
        else:
            s = validate.result(scale_fn(absmax.clone(), w_absmax.clone(), alpha), scale_fn, absmax.shape,
                                what="one smoothing factor per input channel", positive=True).double()
        if norm_w is not None:
            norm_w.copy_((norm_w.double() / s).to(norm_w.dtype))
        else:
            prev.weight.copy_((prev.weight.double() / s.unsqueeze(1)).to(prev.weight.dtype))
        for lin in linears:
            lin.weight.copy_((lin.weight.double() * s.unsqueeze(0)).to(lin.weight.dtype))
    return model


def w8a8_weights_(model: nn.Module) -> nn.Module:
    """Symmetric per-channel int8 weights (simulated) for every decoder linear, in place: the "W8" of W8A8."""
    return rtn_model_(model, 8, None, symmetric=True)
