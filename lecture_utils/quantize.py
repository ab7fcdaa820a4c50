"""Quantization, from the formulas to real int8 kernels.

The arithmetic (what lesson 06 writes by hand, and what the tests check against ``torch.quantize_per_tensor`` and
``torch.quantize_per_channel``)::

    affine:     s = (x_max - x_min) / (q_max - q_min)        z = q_min - round(x_min / s)
    symmetric:  s = 2 * max(|x_min|, |x_max|) / (q_max - q_min)   z = 0 (signed integers)
    quantize:   q = clamp(round(x / s) + z, q_min, q_max)
    dequantize: x_hat = (q - z) * s

As in PyTorch's ``MinMaxObserver``, the range is widened to include 0 (so zero is exact) and the scale is at least
the float32 machine epsilon, so a constant tensor gets a tiny scale instead of a division by zero. Rounding is
round-half-to-even of ``x * (1 / s)``, exactly as PyTorch's kernels compute it (``x / s`` can differ in the last
bit, which matters for values that land on a .5 boundary — the extremes of a symmetric range do). Per-channel
quantization computes one (s, z) per row (output channel).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import validate as check
from .models import replace_linears_

__all__ = ["SCHEMES", "TORCH_AO_DEPRECATIONS", "EPS", "qrange", "qparams", "tensor_qparams", "quantize", "dequantize",
           "fake_quantize", "RoundTrip", "roundtrip_error", "FakeQuantLinear", "fake_quantize_linears",
           "freeze_fake_quant", "dynamic_int8", "DYNAMIC_INT8_ACTIVATION_BITS", "dynamic_int8_weights_",
           "round_linear_inputs_", "torchao_int8", "affine_qparams", "quantize_dequantize"]

SCHEMES = ("affine", "symmetric")
# What torch 2.13 says on every use of torch.ao.quantization (deprecated in favour of torchao) and of the quantized
# tensors it makes: (message regex, category) pairs, silenced around quantize_dynamic and in the tests' settings.
TORCH_AO_DEPRECATIONS = (
    (r"torch\.ao\.quantization is deprecated", DeprecationWarning),
    (r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation functions",
     UserWarning),
)
MIN_BITS, MAX_BITS = 2, 16
EPS = torch.finfo(torch.float32).eps


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """The integer range of a ``bits``-bit integer: signed [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1].

    Examples:
        >>> qrange(8, signed=False), qrange(4, signed=True)
        ((0, 255), (-8, 7))
    """
    bits = check.integer(bits, "bits", MIN_BITS, MAX_BITS)
    check.flag(signed, "signed")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _check_scheme(scheme: str) -> None:
    check.choice(scheme, "scheme", SCHEMES)


def _as_float_tensor(value, name: str) -> torch.Tensor:
    """A number or a tensor of numbers as a float32 tensor, refusing NaN and infinity."""
    if isinstance(value, torch.Tensor):
        check.tensor(value, name, non_empty=True)
        if value.dtype == torch.bool or value.is_complex():
            raise check.BadType(f"{name} must hold real numbers, got dtype {value.dtype}")
        return value.detach().to(torch.float32)
    return torch.tensor(check.real(value, name), dtype=torch.float32)


def qparams(x_min: torch.Tensor | float, x_max: torch.Tensor | float, bits: int = 8, scheme: str = "affine",
            signed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point from a range (scalars, or one entry per channel).

    Args:
        x_min, x_max: the observed minimum and maximum (tensors of the same shape for per-channel).
        bits: integer width, 2 to 16. scheme: "affine" or "symmetric".
        signed: signed integers (default: unsigned for affine, like quint8; signed for symmetric, like qint8).

    Returns:
        ``(scale, zero_point)``: float32 and int64 tensors shaped like ``x_min``.

    Examples:
        >>> scale, zero_point = qparams(-1.28, 1.27, bits=8)  # 2.55 spread over 255 steps; 0 lands on level 128
        >>> round(scale.item(), 6), zero_point.item()
        (0.01, 128)
        >>> scale, zero_point = qparams(-0.5, 2.0, bits=4, scheme="symmetric")  # [-2, 2] over 15 steps, z = 0
        >>> round(scale.item(), 6), zero_point.item()
        (0.266667, 0)
    """
    _check_scheme(scheme)
    signed = (scheme == "symmetric") if signed is None else signed
    qmin, qmax = qrange(bits, signed)
    x_min, x_max = _as_float_tensor(x_min, "x_min"), _as_float_tensor(x_max, "x_max")
    if x_min.shape != x_max.shape:
        raise ValueError(f"x_min and x_max must have one shape (one entry per channel), got {tuple(x_min.shape)} "
                         f"and {tuple(x_max.shape)}")
    if (x_min > x_max).any():
        bad = int((x_min > x_max).sum())
        raise ValueError(f"x_min must not exceed x_max, but it does in {bad} of {x_min.numel()} entries "
                         f"(first: {x_min[x_min > x_max].flatten()[0].item():g} > "
                         f"{x_max[x_min > x_max].flatten()[0].item():g})")
    lo = torch.clamp(x_min, max=0.0)
    hi = torch.clamp(x_max, min=0.0)
    if scheme == "affine":
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=EPS)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int64)
    else:
        scale = torch.clamp(2 * torch.maximum(-lo, hi) / (qmax - qmin), min=EPS)
        zero_point = torch.full_like(scale, 0 if signed else (qmin + qmax + 1) // 2, dtype=torch.int64)
    return scale, zero_point


def tensor_qparams(x: torch.Tensor, bits: int = 8, scheme: str = "affine", per_channel: bool = False,
                   signed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`qparams` from a tensor's own range: one pair for the whole tensor, or one per row (dim 0) when
    ``per_channel``. Per-channel results are shaped ``(rows, 1, ...)`` so they broadcast against ``x``."""
    check.tensor(x, "x", non_empty=True)
    check.flag(per_channel, "per_channel")
    if signed is not None:
        check.flag(signed, "signed")
    if per_channel:
        if x.dim() < 2:
            raise ValueError(f"per-channel quantization needs a tensor with rows (2+ dims), got shape {tuple(x.shape)}")
        flat = x.detach().reshape(x.shape[0], -1)
        scale, zp = qparams(flat.min(dim=1).values, flat.max(dim=1).values, bits, scheme, signed)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return scale.reshape(shape), zp.reshape(shape)
    return qparams(x.detach().min(), x.detach().max(), bits, scheme, signed)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8,
             signed: bool = False) -> torch.Tensor:
    """Integers ``clamp(round(x / scale) + zero_point, q_min, q_max)`` as an int64 tensor shaped like ``x``.

    ``scale`` must be positive and finite, ``zero_point`` whole numbers inside the integer range, both shaped to
    broadcast against ``x`` (one value, or one per channel as :func:`tensor_qparams` returns them).

    Examples:
        >>> scale, zero_point = qparams(-1.28, 1.27, bits=8)
        >>> quantize(torch.tensor([-1.28, 0.0, 0.3, 1.27, 5.0]), scale, zero_point)  # 5.0 is clamped to 255
        tensor([  0, 128, 158, 255, 255])
    """
    qmin, qmax = qrange(bits, signed)
    check.tensor(x, "x")
    scale, zero_point = _check_qparams(x, scale, zero_point, qmin, qmax)
    return torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, qmin, qmax).to(torch.int64)


def _check_qparams(x: torch.Tensor, scale, zero_point, qmin: int | None, qmax: int | None) -> tuple:
    """Scale > 0 and finite; zero point whole and (when the range is known) in [qmin, qmax]; tensors must
    broadcast to ``x``'s shape without changing it. Returns them unchanged (NumPy scalars as Python numbers)."""
    scale_t = _as_float_tensor(scale, "scale")
    if (scale_t <= 0).any():
        raise ValueError(f"scale must be positive (the step between two integer levels), got "
                         f"{scale_t.min().item():g} as its smallest value")
    if not isinstance(scale, torch.Tensor):
        scale = check.real(scale, "scale")
    if isinstance(zero_point, torch.Tensor):
        zero_t = check.tensor(zero_point, "zero_point", non_empty=True)
    else:
        zero_t = torch.tensor(check.real(zero_point, "zero_point"), dtype=torch.float64)
    if zero_t.dtype == torch.bool or zero_t.is_complex() or \
            (zero_t.is_floating_point() and (zero_t != zero_t.round()).any()):
        raise ValueError(f"zero_point must hold whole numbers (an integer level), got {check.show(zero_point)}")
    if not isinstance(zero_point, torch.Tensor):
        zero_point = int(zero_t)
    if qmin is not None and ((zero_t < qmin) | (zero_t > qmax)).any():
        raise ValueError(f"zero_point must lie in the integer range [{qmin}, {qmax}], got values from "
                         f"{zero_t.min().item():g} to {zero_t.max().item():g}")
    for name, t in (("scale", scale_t), ("zero_point", zero_t)):
        try:
            shape = torch.broadcast_shapes(t.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to the tensor's shape "
                             f"{tuple(x.shape)}: use one value, or one per row shaped (rows, 1, ...)")
    return scale, zero_point


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Floats ``(q - zero_point) * scale`` (float32). ``q`` holds integer levels (an integer tensor, or floats
    that are whole numbers).

    Examples:
        >>> scale, zero_point = qparams(-1.28, 1.27, bits=8)
        >>> dequantize(torch.tensor([0, 128, 158, 255]), scale, zero_point)
        tensor([-1.2800,  0.0000,  0.3000,  1.2700])
    """
    check.tensor(q, "q")
    if q.dtype == torch.bool or q.is_complex() or (q.is_floating_point() and (q != q.round()).any()):
        raise ValueError(f"q must hold integer levels (e.g. from lu.quantize.quantize), got {check.show(q)} with "
                         "fractional values")
    scale, zero_point = _check_qparams(q, scale, zero_point, None, None)
    return (q - zero_point).to(torch.float32) * scale


class _FakeQuantSTE(torch.autograd.Function):
    """Quantize-dequantize in the forward pass; straight-through gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):
        q = torch.round(x * (1.0 / scale)) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad_out):
        (inside,) = ctx.saved_tensors
        return grad_out * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, bits: int = 8, scheme: str = "symmetric", per_channel: bool = True,
                  signed: bool | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))`` with the straight-through estimator: the forward pass sees the rounding error,
    the backward pass lets the gradient through unchanged where ``x`` is inside the representable range and
    blocks it (0) where it was clamped. Scales come from ``x``'s own range (not differentiated)."""
    _check_scheme(scheme)
    check.tensor(x, "x", floating=True, non_empty=True)
    signed = (scheme == "symmetric") if signed is None else signed
    scale, zp = tensor_qparams(x, bits, scheme, per_channel, signed)
    qmin, qmax = qrange(bits, signed)
    return _FakeQuantSTE.apply(x, scale, zp, qmin, qmax)


@dataclass(frozen=True)
class RoundTrip:
    """How much a quantize → dequantize round trip at ``bits``, ``scheme`` and ``per_channel`` changed a tensor:
    ``mse`` (mean squared error), ``max_abs`` (largest |error|) and ``mean_scale`` (the mean step), all in the
    units of the tensor (``mse`` in their square)."""

    bits: int
    scheme: str
    per_channel: bool
    mse: float
    max_abs: float
    mean_scale: float


def roundtrip_error(x: torch.Tensor, bits: int, scheme: str = "affine", per_channel: bool = False) -> RoundTrip:
    """How much a quantize → dequantize round trip changes ``x``, as a :class:`RoundTrip`.

    Example: ``lu.quantize.roundtrip_error(w, 4).mse``; ``pd.DataFrame([...])`` of several makes a table."""
    _check_scheme(scheme)
    scale, zp = tensor_qparams(x, bits, scheme, per_channel)
    signed = scheme == "symmetric"
    err = dequantize(quantize(x, scale, zp, bits, signed), scale, zp) - x
    return RoundTrip(bits=bits, scheme=scheme, per_channel=per_channel, mse=err.pow(2).mean().item(),
                     max_abs=err.abs().max().item(), mean_scale=scale.float().mean().item())


# --------------------------------------------------------------------------------------------------------------
# Simulated low-bit weights and quantization-aware training
# --------------------------------------------------------------------------------------------------------------

class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` whose weight is fake-quantized (per output channel) in every forward pass.

    The float weight stays the trainable parameter; the straight-through estimator lets training adjust it so that
    its *quantized* version works well — that is quantization-aware training.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 4,
                 scheme: str = "symmetric"):
        in_features = check.integer(in_features, "in_features", 1)
        out_features = check.integer(out_features, "out_features", 1)
        check.flag(bias, "bias")
        qrange(bits, True)
        bits = check.integer(bits, "bits")
        _check_scheme(scheme)
        super().__init__(in_features, out_features, bias)
        self.bits, self.scheme = bits, scheme

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quantize(self.weight, self.bits, self.scheme, per_channel=True), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, scheme={self.scheme}"


def fake_quantize_linears(model: nn.Module, bits: int, scheme: str = "symmetric",
                          skip: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` (except those whose name contains a ``skip`` entry) replaced by
    a :class:`FakeQuantLinear` with the same weights. Embeddings and LayerNorms stay in float."""
    qrange(bits, True)
    bits = check.integer(bits, "bits")
    _check_scheme(scheme)
    check.linear_model(model, "fake_quantize_linears")
    skip = tuple(check.strings(skip, "skip", non_empty=False))
    model = copy.deepcopy(model)

    def fake_quantized(name: str, child: nn.Linear) -> nn.Module | None:
        if type(child) is not nn.Linear or any(s in name for s in skip):
            return None
        fq = FakeQuantLinear(child.in_features, child.out_features, child.bias is not None, bits, scheme)
        fq.load_state_dict(child.state_dict())
        return fq.to(child.weight.device)

    if replace_linears_(model, fake_quantized) == 0:
        raise ValueError("The model has no nn.Linear layers to fake-quantize.")
    return model


def freeze_fake_quant(model: nn.Module) -> nn.Module:
    """A copy where every :class:`FakeQuantLinear` becomes a plain ``nn.Linear`` holding its quantized-dequantized
    weight: the numbers an integer kernel would use, with no fake quantization left at run time. Raises if the
    model has no FakeQuantLinear (nothing to freeze: see :func:`fake_quantize_linears`)."""
    check.module(model)
    if not any(isinstance(m, FakeQuantLinear) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no FakeQuantLinear layers to freeze: make one with "
                         "lu.quantize.fake_quantize_linears(model, bits) first")
    model = copy.deepcopy(model)

    def frozen(_name: str, child: nn.Linear) -> nn.Module | None:
        if not isinstance(child, FakeQuantLinear):
            return None
        plain = torch.nn.utils.skip_init(nn.Linear, child.in_features, child.out_features,
                                         bias=child.bias is not None)  # no random init: overwritten below
        with torch.no_grad():
            plain.weight.copy_(fake_quantize(child.weight, child.bits, child.scheme, per_channel=True))
            if child.bias is not None:
                plain.bias.copy_(child.bias)
        return plain.to(child.weight.device)

    replace_linears_(model, frozen)
    return model


# --------------------------------------------------------------------------------------------------------------
# Real int8: torch.ao dynamic quantization (fbgemm / x86 kernels) and torchao
# --------------------------------------------------------------------------------------------------------------

def dynamic_int8(model: nn.Module, embeddings: bool = False) -> nn.Module:
    """A copy of ``model`` with post-training dynamic int8 quantization (``torch.ao.quantization.quantize_dynamic``):
    ``nn.Linear`` weights stored in int8 with one scale per tensor, activations quantized on the fly at run time.
    With ``embeddings=True`` the ``nn.Embedding`` tables are stored in 8 bits too (one scale and zero point per
    row). CPU only: these kernels (fbgemm on x86, qnnpack on ARM) have no CUDA version. The model must be on the CPU.
    A BERT with 8-bit embeddings needs ``token_type_ids`` in its inputs (the tokenizer adds them): the 8-bit lookup
    refuses the non-contiguous default that BERT would otherwise build.
    """
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

    check.linear_model(model, "dynamic_int8")
    check.flag(embeddings, "embeddings")
    if not any(isinstance(m, (nn.Linear, nn.Embedding) if embeddings else nn.Linear) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to quantize (already quantized?)")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("dynamic int8 quantization runs on the CPU only: move the model with .to('cpu') first.")
    spec: dict = {nn.Linear: default_dynamic_qconfig}
    if embeddings:
        spec[nn.Embedding] = float_qparams_weight_only_qconfig
    with warnings.catch_warnings():  # torch 2.13's deprecation notices only; any other warning still shows
        for message, category in TORCH_AO_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=category)
        return quantize_dynamic(copy.deepcopy(model).eval(), spec, dtype=torch.qint8)


# torch.ao's dynamic Linear asks its x86 kernel for ``reduce_range=True``: activations get 7 bits, not 8
# (torch/ao/nn/quantized/dynamic/modules/linear.py, PyTorch 2.13)
DYNAMIC_INT8_ACTIVATION_BITS = 7


def dynamic_int8_weights_(model: nn.Module, quantized: nn.Module) -> nn.Module:
    """Put the int8 weights of ``quantized`` (``dynamic_int8(model)``), dequantized, into ``model``'s float
    ``nn.Linear`` layers of the same names, in place: the weights :func:`dynamic_int8` stores, with float
    arithmetic — half of what it changes, to test alone. Each layer gets its own tensor, so an output layer tied
    to the embedding no longer shares it. Returns ``model``."""
    check.module(model)
    check.module(quantized, "quantized")
    layers = dict(quantized.named_modules())
    done = 0
    for name, lin in model.named_modules():
        if type(lin) is not nn.Linear:
            continue
        q = layers.get(name)
        if q is None or not callable(getattr(q, "weight", None)):
            raise ValueError(f"quantized has no dynamic int8 layer {name!r}: pass dynamic_int8(model) of this model")
        lin.weight = nn.Parameter(q.weight().dequantize().to(lin.weight.device))
        done += 1
    if done == 0:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to take int8 weights")
    return model


def round_linear_inputs_(model: nn.Module, bits: int = DYNAMIC_INT8_ACTIVATION_BITS) -> nn.Module:
    """Round the input of every ``nn.Linear`` of ``model`` to ``bits`` bits as dynamic quantization does, in
    place: affine, one scale and zero point per input tensor, computed afresh at every call — the other half of
    what :func:`dynamic_int8` changes, with float weights. Adds forward pre-hooks; returns ``model``."""
    check.module(model)
    bits = check.integer(bits, "bits", MIN_BITS, MAX_BITS)
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers whose inputs could be rounded")

    def rounded(_module, args):
        return (fake_quantize(args[0], bits, "affine", per_channel=False), *args[1:])

    for lin in linears:
        lin.register_forward_pre_hook(rounded)
    return model


def torchao_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` quantized with torchao's ``quantize_`` and ``Int8DynamicActivationInt8WeightConfig``
    (the API PyTorch recommends instead of ``torch.ao``), run in eager mode."""
    import logging

    logging.getLogger("torchao").setLevel(logging.ERROR)  # it reports GPU-only extensions it cannot load here
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    check.linear_model(model, "torchao_int8")
    if not any(type(m) is nn.Linear for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no plain nn.Linear layers to quantize (already quantized?)")
    model = copy.deepcopy(model).eval()
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


# Reference answers of lesson 06's exercises (used by the student copy until the learner's pass their check).

def affine_qparams(x_min: float, x_max: float, bits: int) -> tuple[float, int]:
    """``(scale, zero_point)`` of unsigned affine quantization for values in [x_min, x_max], as Python numbers."""
    scale, zero_point = qparams(x_min, x_max, bits, "affine")
    return scale.item(), int(zero_point.item())


def quantize_dequantize(x: torch.Tensor, scale: float, zero_point: int, bits: int) -> torch.Tensor:
    """The unsigned affine round trip: ``(clamp(round(x / s) + z, 0, 2^bits − 1) − z) × s``, in float units."""
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    try:
        scale, zp = float(scale), float(zero_point)
    except (TypeError, ValueError):
        raise TypeError(f"scale and zero_point must be numbers, got {scale!r} and {zero_point!r}") from None
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    qmin, qmax = qrange(bits, signed=False)
    if not zp.is_integer() or not qmin <= zp <= qmax:
        raise ValueError(f"zero_point must be a whole number in [{qmin}, {qmax}], got {zero_point!r}")
    zero_point = int(zp)
    s, z = torch.tensor(float(scale)), torch.tensor(zero_point)
    return dequantize(quantize(x, s, z, bits, signed=False), s, z)
