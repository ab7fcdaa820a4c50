"""Checks of lesson 06, quantization: affine qparams, the quantize-dequantize round trip, symmetric per-row scales;
the predicted growth of the round-trip error against the measured one."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import quantize as q
from .harness import (
    CheckResult,
    Wrong,
    as_tensor,
    call,
    close,
    declare,
    measured,
    number,
    predicted,
    run_cases,
    verdict,
)

__all__ = ["affine_qparams", "quantize_dequantize", "symmetric_scales", "MSE_TOLERANCE", "MSE_BITS", "predicted_mse",
           "symmetric_scales_reference", "predicted_mse_reference"]


def affine_qparams(fn: Callable[[float, float, int], tuple]) -> CheckResult:
    """Check ``fn(x_min, x_max, bits) -> (scale, zero_point)`` for unsigned affine quantization."""
    def case(lo: float, hi: float, bits: int):
        def run():
            got = call(fn, lo, hi, bits)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise Wrong("return a pair (scale, zero_point).")
            scale, zp = number(got[0], "scale"), number(got[1], "zero point")
            want_s = q.qparams(lo, hi, bits, "affine")[0].item()
            close(scale, want_s, f"scale for range [{lo}, {hi}] at {bits} bits", rel=1e-5)
            # the zero point in exact arithmetic; on a .5 tie float rounding may go either way, so both count
            t = min(lo, 0.0) / ((max(hi, 0.0) - min(lo, 0.0)) / (2**bits - 1))
            ties = {math.floor(t), math.ceil(t)} if abs(abs(t - math.floor(t)) - 0.5) < 1e-4 else {round(t)}
            allowed = {min(max(0 - r, 0), 2**bits - 1) for r in ties}
            if zp not in allowed:
                raise Wrong(f"zero point for range [{lo}, {hi}] at {bits} bits: got {zp:g}, expected the integer "
                             f"{min(allowed)}.")
        return run

    return run_cases("affine_qparams", [case(-1.0, 1.0, 8), case(-0.3, 2.5, 8), case(-4.0, 0.5, 4), case(0.2, 1.7, 8),
                                   case(-6.1, -0.4, 3)],
                "the scale spreads the range over q_max - q_min steps (q_min = 0, q_max = 2^bits - 1); the zero point "
                "is the integer that x = 0 maps to: q_min - round(x_min / scale). Widen the range to include 0 first.")


def quantize_dequantize(fn: Callable[[torch.Tensor, float, int, int], torch.Tensor]) -> CheckResult:
    """Check ``fn(x, scale, zero_point, bits) -> x_hat`` (unsigned affine round trip, clamped to [0, 2^bits - 1])."""
    gen = torch.Generator().manual_seed(6)

    def case(scale: float, zp: int, bits: int):
        def run():
            x = torch.randn(7, 5, generator=gen) * 2
            got = as_tensor(call(fn, x.clone(), scale, zp, bits), "x_hat")
            if got.shape != x.shape:
                raise Wrong(f"x_hat should have the shape of x {tuple(x.shape)}, got {tuple(got.shape)}.")
            want = q.dequantize(q.quantize(x, torch.tensor(scale), torch.tensor(zp), bits, signed=False),
                                torch.tensor(scale), torch.tensor(zp))
            if not torch.allclose(got.float(), want, atol=1e-5):
                worst = (got.float() - want).abs().max().item()
                raise Wrong(f"scale {scale}, zero point {zp}, {bits} bits: off by up to {worst:.4g}. Values outside "
                             "the range must be clamped, and the result must be back in float units.")
        return run

    return run_cases("quantize_dequantize", [case(0.02, 128, 8), case(0.5, 3, 4), case(0.01, 0, 8), case(1.0, 2, 2)],
                "round(x / scale) + zero_point, clamp to [0, 2^bits - 1], then undo: (q - zero_point) * scale.")


def symmetric_scales(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Check ``fn(weight (rows, cols), bits) -> scales (rows,)`` for symmetric per-channel (per-row) quantization."""
    gen = torch.Generator().manual_seed(66)

    def case(rows: int, cols: int, bits: int):
        def run():
            w = torch.randn(rows, cols, generator=gen) * torch.rand(rows, 1, generator=gen)
            got = as_tensor(call(fn, w.clone(), bits), "scales")
            want = symmetric_scales_reference(w, bits)
            if got.numel() == 1 and rows > 1:
                raise Wrong("you returned one scale for the whole matrix; per-channel means one per row.")
            if got.flatten().shape != want.shape:
                raise Wrong(f"expected {rows} scales (one per row), got shape {tuple(got.shape)}.")
            if not torch.allclose(got.flatten().float(), want, rtol=1e-5):
                raise Wrong(f"a {rows}×{cols} matrix at {bits} bits: scales differ from the expected ones.")
        return run

    return run_cases("symmetric_scales", [case(4, 10, 8), case(16, 3, 4), case(1, 50, 2), case(7, 7, 3)],
                "for each row, take its largest absolute value; the symmetric range [-max, max] is spread over "
                "q_max - q_min = 2^bits - 1 steps of a signed integer.")


MSE_TOLERANCE = 0.10  # rounding error spread evenly over a step: close while a step is small next to the weights
MSE_BITS = (6, 4, 3)  # at 2 bits the even spread no longer holds (the notebook shows how far off it is)


def predicted_mse(fn: Callable[[float, int], float]) -> CheckResult:
    """Check ``fn(mse_8bit, bits) -> predicted mean squared round-trip error at ``bits`` bits`` (affine, one scale per
    tensor, the same range) against errors measured here: a random Gaussian matrix, and the lesson's weight matrix
    (measured and recorded by the notebook), at 6, 4 and 3 bits, each within ``MSE_TOLERANCE``."""
    from ..quantize import roundtrip_error

    def judge(mse8: float, bits: int, want: float, where: str):
        got = number(call(fn, mse8, bits), "predicted mean squared error")
        if math.isclose(got, mse8 * (2 ** (8 - bits)), rel_tol=1e-3):
            raise Wrong(f"{where}, {bits} bits: {got:.3g} grows with the step; the *squared* error grows with the "
                         "step squared.")
        if math.isclose(got, mse8 * 4 ** (8 - bits), rel_tol=1e-3) and not math.isclose(got, want, rel_tol=0.1):
            raise Wrong(f"{where}, {bits} bits: {got:.3g} is {100 * (got / want - 1):+.0f}% off. Four times per bit "
                         "is the rough rule; count the steps exactly: 2^bits levels leave 2^bits − 1 steps across "
                         "the range.")
        predicted(got, want, f"{where}, {bits} bits", MSE_TOLERANCE, "How does the step change with the bits when "
                  "the range stays the same, and how does a squared error change with the step?")

    def gaussian():
        gen = torch.Generator().manual_seed(6)
        w = torch.randn(256, 256, generator=gen) * 0.05
        mse8 = roundtrip_error(w, 8).mse
        for bits in MSE_BITS:
            judge(mse8, bits, roundtrip_error(w, bits).mse, "a random Gaussian matrix made by the check")

    def lesson_matrix():
        mse8 = measured("quant.roundtrip.mse_b8", "the 8-bit error of W")
        for bits in MSE_BITS:
            judge(mse8, bits, measured(f"quant.roundtrip.mse_b{bits}", f"the {bits}-bit error of W"), "W")

    def explain() -> str:
        mse8 = measured("quant.roundtrip.mse_b8", "")
        parts = [f"{b} bits {number(call(fn, mse8, b), ''):.2e} vs {measured(f'quant.roundtrip.mse_b{b}', ''):.2e}"
                 for b in (*MSE_BITS, 2)]
        return ("W, predicted vs measured: " + "; ".join(parts) + ". At 2 bits the rule breaks: most weights round "
                "to the level at 0.0 and their error is the weight itself, less than an even spread over a step "
                "would give.")

    return verdict("predicted_mse", [gaussian, lesson_matrix],
                   "the range stays the same; only the number of integer steps across it changes with the bits. "
                   "Rounding error is spread over one step, so the squared error scales with the step squared.",
                   explain)


def symmetric_scales_reference(w: torch.Tensor, bits: int) -> torch.Tensor:
    """One symmetric scale per output row of ``w`` (out, in), ``2 · max|w_row| / (2^bits − 1)``, shape (out,): the
    reference answer of exercise ``symmetric_scales``."""
    return q.tensor_qparams(w, bits, "symmetric", per_channel=True)[0].flatten()


def predicted_mse_reference(mse_8bit: float, bits: int) -> float:
    """The round-trip mean squared error at ``bits`` from the one measured at 8 bits: it grows with the square of the
    step, (255 / (2^bits − 1))²: the reference answer of exercise ``predicted_mse``."""
    return mse_8bit * ((2**8 - 1) / (2**bits - 1)) ** 2


# --- the exercises of lesson 06, declared once ---------------------------------------------------------------------
declare("06", affine_qparams, q.affine_qparams, wrong=(
    lambda lo, hi, bits: ((hi - lo) / (2**bits - 1), 0),  # range not widened, no zero point
    lambda lo, hi, bits: ((hi - lo) / 2**bits, round(-lo * 2**bits / (hi - lo)))),
    graded_wrong="return (x_max - x_min) / (2**bits - 1), 0")
declare("06", quantize_dequantize, q.quantize_dequantize, wrong=(
    lambda x, s, z, bits: torch.round(x / s) + z,  # never dequantized
    lambda x, s, z, bits: (torch.round(x / s) + z - z) * s,  # no clamp
    lambda x, s, z, bits: x),
    graded_wrong="return x")
declare("06", symmetric_scales, symmetric_scales_reference, wrong=(
    lambda w, bits: 2 * w.abs().max() / (2**bits - 1),  # per tensor
    lambda w, bits: w.abs().amax(dim=1) / (2**bits - 1),
    lambda w, bits: 2 * w.abs().amax(dim=0) / (2**bits - 1)),  # per column
    graded_wrong="return w.abs().amax(dim=1) / (2**bits - 1)")
declare("06", predicted_mse, predicted_mse_reference, wrong=(
    lambda mse8, bits: mse8 * 2 ** (8 - bits),  # grows with the step, not its square
    lambda mse8, bits: mse8 * 4 ** (8 - bits),  # 2^bits steps instead of 2^bits - 1: 23% off at 3
    lambda mse8, bits: mse8 / ((2**8 - 1) / (2**bits - 1)) ** 2,  # shrinks
    lambda mse8, bits: 7.5e-4),  # one measurement typed in
    graded_wrong="return mse_8bit * 2 ** (8 - bits)")
