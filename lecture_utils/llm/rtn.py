"""Round-to-nearest weight quantization of a language model, per channel or per group of inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import validate
from .model import GGUF_BLOCK, check_float, decoder_linears, mark_quantized_

__all__ = ["group_qparams", "fake_quantize_rows", "quantize_groupwise", "rtn_model_", "block_levels"]


def _check_group(cols: int, group_size: int | None) -> int:
    if group_size is None:
        return cols
    group_size = validate.integer(group_size, "group_size", 1, hint="None for one group per row")
    if cols % group_size:
        raise ValueError(f"group_size {group_size} does not divide the row length {cols}; use a divisor of {cols} "
                         "or None (one group per row)")
    return group_size


def _check_bits(bits: int) -> int:
    return validate.integer(bits, "bits", 2, 8)


def _check_weight(w: torch.Tensor, name: str = "w") -> torch.Tensor:
    validate.tensor(w, name, floating=True, dims=(2,), non_empty=True)
    return w


def group_qparams(w: torch.Tensor, bits: int, symmetric: bool = False, float_zero: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of ``w`` (rows = groups), shapes ``(rows, 1)``.

    Default: affine with unsigned integers 0 … 2^bits − 1 and an integer zero point from the row's range widened
    to include 0 (exactly torch's ``fake_quantize_per_channel_affine`` convention). ``symmetric``: signed integers,
    scale = max|w| / (2^(bits−1) − 1), zero point 0. ``float_zero``: GGUF Q4_1 style, the level grid starts at the
    row's minimum (a float offset returned as the "zero point"; see :func:`fake_quantize_rows`).
    """
    from .. import quantize as q

    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = torch.clamp(w.abs().amax(dim=1, keepdim=True) / qmax, min=q.EPS)
        return scale, torch.zeros_like(scale, dtype=torch.int64)
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    if float_zero:
        return torch.clamp((hi - lo) / (2**bits - 1), min=q.EPS), lo
    return q.qparams(lo, hi, bits, "affine")


def fake_quantize_rows(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                       symmetric: bool = False) -> torch.Tensor:
    """Round ``w`` (rows = groups) to the grid of :func:`group_qparams` and back to floats."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
    if zero.dtype.is_floating_point:  # float offset: w ≈ q × scale + minimum
        return torch.clamp(torch.round((w - zero) / scale), 0, 2**bits - 1) * scale + zero
    return (torch.clamp(torch.round(w * (1.0 / scale)) + zero, 0, 2**bits - 1) - zero) * scale


def quantize_groupwise(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = False,
                       float_zero: bool = False) -> torch.Tensor:
    """Round-to-nearest ("RTN") of a weight matrix ``(out, in)``: each row is cut into groups of ``group_size``
    consecutive inputs (None = the whole row, i.e. per channel), each group gets its own scale and zero point
    (:func:`group_qparams`), and the dequantized floats are returned in ``w``'s shape and dtype."""
    _check_weight(w)
    bits = _check_bits(bits)
    symmetric = validate.flag(symmetric, "symmetric")
    float_zero = validate.flag(float_zero, "float_zero")
    g = _check_group(w.shape[1], group_size)
    rows = w.detach().float().reshape(-1, g)
    scale, zero = group_qparams(rows, bits, symmetric, float_zero)
    return fake_quantize_rows(rows, scale, zero, bits, symmetric).reshape(w.shape).to(w.dtype)


def rtn_model_(model: nn.Module, bits: int, group_size: int | None = None, symmetric: bool = False,
              float_zero: bool = False, quantize: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None
              ) -> nn.Module:
    """Quantize every decoder linear of ``model`` in place with :func:`quantize_groupwise`; returns ``model``.

    ``quantize(w, bits, group_size)`` replaces it (e.g. a learner's own function), called with the row width when
    ``group_size`` is None; ``symmetric`` and ``float_zero`` then do not apply. A model one of the course's
    quantizers has already rounded is refused (:func:`lecture_utils.llm.check_float`); the result is marked."""
    if quantize is not None and not callable(quantize):
        raise TypeError(f"quantize must be a function (w, bits, group_size) -> tensor, got {type(quantize).__name__}")
    bits = _check_bits(bits)
    symmetric = validate.flag(symmetric, "symmetric")
    float_zero = validate.flag(float_zero, "float_zero")
    linears = decoder_linears(model)
    check_float(model, "rtn_model_")
    for name, m in linears.items():  # every layer is checked before any weight changes
        _check_group(m.weight.shape[1], group_size)
        validate.tensor(m.weight, f"the weight of {name}", floating=True)
    with torch.no_grad():
        for name, m in linears.items():
            if quantize is None:
                m.weight.copy_(quantize_groupwise(m.weight, bits, group_size, symmetric, float_zero))
            else:
                out = quantize(m.weight.detach().clone(), bits, group_size or m.weight.shape[1])
                m.weight.copy_(validate.result(out, quantize, m.weight.shape,
                                               what=f"the quantized weight of {name}"))
    return mark_quantized_(model, "rtn_model_", bits, group_size)


def block_levels(w: torch.Tensor, block: int = GGUF_BLOCK) -> torch.Tensor:
    """How many distinct values each block of ``block`` consecutive weights in a row holds (int64, one per block).
    A Q4_1 file's weights hold at most 16 per block of 32."""
    g = _check_group(w.shape[-1], block)
    groups = w.detach().reshape(-1, g)
    return torch.tensor([int(torch.unique(r).numel()) for r in groups], dtype=torch.int64)
