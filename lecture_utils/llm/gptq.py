"""GPTQ (Frantar et al. 2023): round one column at a time and push its error onto the columns not yet rounded."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from .. import validate
from .calibration import (
    _check_stats,
    _check_windows,
    _collect,
    _input_groups,
    _layer_outputs,
    decoder_inputs,
    layer_kwargs,
    mixed_attention,
)
from .model import check_float, decoder_layers, decoder_linears, mark_quantized_
from .rtn import _check_bits, _check_group, _check_weight, group_qparams

__all__ = ["single_thread", "inverse_hessian_factor", "gptq_quantize", "gptq_model_", "output_error"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the ``with`` block with one torch thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def inverse_hessian_factor(h: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """U, the upper Cholesky factor of (H + λI)⁻¹ = UᵀU with λ = ``damp`` × mean diagonal, in float64: row c of U
    says how column c's rounding error is spread over the later columns in GPTQ.

    The reference code takes three steps (Cholesky, inverse, Cholesky); reversing the order of the columns gives U
    in two: U = flip(L⁻¹) where L Lᵀ = flip(H + λI). float64, because float32 changed the lesson's results visibly.
    """
    h = h.to(torch.float64, copy=True)
    h.diagonal().add_(damp * h.diagonal().mean())
    return _lower_inverse(torch.linalg.cholesky(h.flip(0, 1))).flip(0, 1)


def _lower_inverse(low: torch.Tensor, leaf: int = 128) -> torch.Tensor:
    """L⁻¹ of a lower-triangular ``low`` by halves, [[A, 0], [C, D]]⁻¹ = [[A⁻¹, 0], [−D⁻¹ C A⁻¹, D⁻¹]]: matrix
    products instead of a triangular solve against the identity, about twice as fast for SmolLM2's 1,536 inputs
    (the same float64 result to ~1e-15, the same float32 factor)."""
    n = low.shape[0]
    if n <= leaf:
        return torch.linalg.solve_triangular(low, torch.eye(n, dtype=low.dtype), upper=False)
    k = n // 2
    a, d = _lower_inverse(low[:k, :k], leaf), _lower_inverse(low[k:, k:], leaf)
    out = torch.zeros_like(low)
    out[:k, :k], out[k:, k:] = a, d
    out[k:, :k] = -(d @ (low[k:, :k] @ a))
    return out


class _ColumnRounder:
    """:func:`fake_quantize_rows` for one column at a time, bit for bit, with the group's constants prepared once
    (``grid``) and the result written into a given tensor: the column loop of GPTQ runs it ~100,000 times on
    SmolLM2, where each avoided tensor operation saves seconds."""

    def __init__(self, bits: int, symmetric: bool):
        self.symmetric = symmetric
        self.low, self.high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)

    def grid(self, scale: torch.Tensor, zero: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What one group needs: its scale, and (affine) 1 / scale and the zero point as floats."""
        if self.symmetric:
            return (scale,)
        return scale, 1.0 / scale, zero.to(scale.dtype)

    def __call__(self, col: torch.Tensor, grid: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            (scale,) = grid
            return torch.div(col, scale, out=out).round_().clamp_(self.low, self.high).mul_(scale)
        scale, inverse, zero = grid
        return torch.mul(col, inverse, out=out).round_().add_(zero).clamp_(self.low, self.high).sub_(zero).mul_(scale)


def gptq_quantize(w: torch.Tensor, xtx: torch.Tensor, bits: int, group_size: int | None = None,
                  damp: float = 0.01, block_size: int = 128, symmetric: bool = False, act_order: bool = False
                  ) -> torch.Tensor:
    """GPTQ (Frantar et al. 2023) for one weight matrix ``(out, in)`` given its inputs' ``xtx`` ``(in, in)``.

    Columns are quantized one at a time on the grid of :func:`quantize_groupwise`. After each column the rounding
    error, weighted by the inverse Hessian H⁻¹ = (XᵀX + λI)⁻¹ (λ = ``damp`` × mean diagonal), is pushed onto the
    columns not yet quantized, so that the layer's output X Wᵀ changes as little as possible. Returns the
    dequantized weight in ``w``'s shape and dtype.

    ``act_order=False``: columns left to right; a group's scale and zero point are set when the algorithm reaches
    its first column (from the weights as updated so far). ``act_order=True``: columns in order of decreasing
    H_jj (the inputs with the most energy first, while there are many columns left to absorb their error); each
    group's scale and zero point come from the original weights ("static groups"), so the stored format is exactly
    RTN's. With ``xtx`` = identity there is nothing to compensate and either order equals round-to-nearest.
    """
    _check_weight(w)
    bits = _check_bits(bits)
    rows, cols = w.shape
    g = _check_group(cols, group_size)
    if not torch.is_tensor(xtx) or xtx.shape != (cols, cols):
        raise ValueError(f"xtx must be ({cols}, {cols}) for a weight with {cols} inputs, got "
                         f"{tuple(getattr(xtx, 'shape', ()))}")
    validate.tensor(xtx, "xtx", floating=True)
    if not bool((torch.diag(xtx) != 0).any()):
        raise ValueError("xtx is all zero on its diagonal: the layer's inputs were 0 on every calibration token, so "
                         "there is nothing to weigh the rounding by (empty or broken calibration data?)")
    damp = validate.fraction(damp, "damp")
    validate.integer(block_size, "block_size", 1)
    symmetric = validate.flag(symmetric, "symmetric")
    act_order = validate.flag(act_order, "act_order")
    W = w.detach().float().clone()
    H = xtx.detach().float().clone()
    dead = torch.diag(H) == 0  # inputs that were always 0: their weights do not matter
    H[dead, dead] = 1
    W[:, dead] = 0
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        scale, zero = (t.reshape(rows, cols // g) for t in group_qparams(W.reshape(-1, g), bits, symmetric))
        group_of = perm // g  # static groups: column perm[c]'s scale and zero point, fixed before any update
        col_scale, col_zero = scale.T[group_of].contiguous(), zero.T[group_of].contiguous()  # (in, out)
        W, H = W[:, perm], H[perm][:, perm]
        block = block_size
    else:
        perm = col_scale = col_zero = None
        block = g * max(1, block_size // g) if g < cols else cols  # a group never straddles two blocks
    Hinv = inverse_hessian_factor(H, damp).float()
    WT = W.T.contiguous()  # (in, out): one column of W is one contiguous row here
    QT = torch.zeros_like(WT)
    round_into = _ColumnRounder(bits, symmetric)
    static = None if col_scale is None else round_into.grid(col_scale, col_zero)  # act order: every column's grid
    # One thread for the column loop: thousands of small updates, where thread hand-offs cost more than the maths
    with single_thread():
        for i1 in range(0, cols, block):
            i2 = min(i1 + block, cols)
            W1, Hinv1 = WT[i1:i2].clone(), Hinv[i1:i2, i1:i2]
            Err1 = torch.zeros_like(W1)
            for i in range(i2 - i1):
                if col_scale is not None:
                    grid = tuple(t[i1 + i] for t in static)
                elif (i1 + i) % g == 0:
                    grid = round_into.grid(*(t.squeeze(1) for t in group_qparams(W1[i:i + g].T, bits, symmetric)))
                col, q, err = W1[i], QT[i1 + i], Err1[i]
                round_into(col, grid, q)  # q = fake_quantize_rows(col, scale, zero), written in place
                torch.sub(col, q, out=err).div_(Hinv1[i, i])
                W1[i + 1:].addr_(Hinv1[i, i + 1:], err, alpha=-1)  # row i itself is done: only later ones
            WT[i2:] -= Hinv[i1:i2, i2:].T @ Err1
    Q = QT.T
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q.contiguous().to(w.dtype)


def gptq_model_(model: nn.Module, windows: torch.Tensor, bits: int, group_size: int | None = None, *,
               damp: float = 0.01, act_order: bool = True, sequential: bool = True, batch_size: int = 8,
               max_layers: int | None = None) -> nn.Module:
    """Quantize every decoder linear of ``model`` in place with :func:`gptq_quantize`; returns ``model``.

    The Hessians come from the calibration ``windows`` (int64, (n, seq_len)), one decoder layer at a time, as the
    reference implementation does. ``sequential=True``: each layer is calibrated on the outputs of the layers
    before it *already quantized*, so it also compensates their errors; ``False``: every layer sees the unquantized
    model's activations (one pass, the errors of earlier layers are ignored). Linears that read the same input
    (q/k/v, gate/up) share one Hessian and are quantized together. ``max_layers``: quantize only the first
    ``max_layers`` decoder layers (None = all; a shortcut for quick test runs, the rest stay as they are).
    A model that the course's quantizers have already rounded is refused: GPTQ run twice moves the weights (by up to
    a step; new Hessians, new error feedback), and the weights cannot tell, since the course's SmolLM2 already lies
    on a 4-bit grid, so the quantizers mark what they return (:func:`lecture_utils.llm.check_float`).
    """
    linears_all = decoder_linears(model)  # refuses a model that is not Llama-style or already quantized
    check_float(model, "gptq_model_")  # ... and one the course's own quantizers have rounded
    _check_windows(windows, model)
    bits = _check_bits(bits)
    for name, m in linears_all.items():
        _check_group(m.weight.shape[1], group_size)
        validate.tensor(m.weight, f"the weight of {name}", floating=True)
    damp = validate.fraction(damp, "damp")
    act_order = validate.flag(act_order, "act_order")
    sequential = validate.flag(sequential, "sequential")
    validate.integer(batch_size, "batch_size", 1)
    if max_layers is not None:
        validate.integer(max_layers, "max_layers", 1)
    inputs = decoder_inputs(model, windows, batch_size)
    # Gemma2-style models give sliding-window and full layers different masks: each layer gets its own arguments
    per_layer = layer_kwargs(model, windows, batch_size) if mixed_attention(model) else None
    with torch.no_grad():
        for index, layer in enumerate(decoder_layers(model)[:max_layers]):
            if per_layer is not None:
                inputs = [(h, kw) for (h, _), kw in zip(inputs, per_layer[index], strict=True)]
            linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
            groups = _input_groups(linears)
            # statistics of every linear's inputs, and the layer's outputs before it is quantized
            stats, outputs = _collect({names[0]: linears[names[0]] for names in groups},
                                      functools.partial(_layer_outputs, layer, inputs))
            _check_stats(stats)
            for names in groups:
                stacked = torch.cat([linears[n].weight for n in names])
                q = gptq_quantize(stacked, stats[names[0]].xtx, bits, group_size, damp, act_order=act_order)
                for n, part in zip(names, q.split([linears[n].weight.shape[0] for n in names]), strict=True):
                    linears[n].weight.copy_(part)
            if sequential:  # the next layer reads what the quantized layer outputs
                outputs = _layer_outputs(layer, inputs)
            inputs = [(out, kw) for out, (_, kw) in zip(outputs, inputs, strict=True)]
    return mark_quantized_(model, "gptq_model_", bits, group_size)


def output_error(w: torch.Tensor, w_hat: torch.Tensor, xtx: torch.Tensor) -> float:
    """Squared error of a linear layer's output over the calibration tokens, ‖X(W − Ŵ)ᵀ‖² = tr(D XᵀX Dᵀ)."""
    d = (w - w_hat).double()
    return float(((d @ xtx.double()) * d).sum())
