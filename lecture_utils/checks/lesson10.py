"""Checks of lesson 10, running a compressed LLM: which phase 4-bit weights speed up, the bandwidth bound on decoding,
packing two 4-bit integers per byte, and KIVI's per-channel / per-token quantizer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import llm
from .harness import CheckResult, Wrong, as_tensor, call, close, declare, number, run_cases, tensor_like

__all__ = ["faster_phase", "decode_bound", "pack_nibbles", "kivi_quantize", "faster_phase_reference"]


def faster_phase(fn: Callable[[], str]) -> CheckResult:
    """Check ``fn() -> "prefill" | "decode"``: the phase of generation that 4-bit weights speed up most at batch 1."""

    def run():
        got = call(fn)
        if not isinstance(got, str) or got.strip().lower() not in ("prefill", "decode"):
            raise Wrong(f"return the string 'prefill' or 'decode', got {got!r}.")
        if got.strip().lower() != "decode":
            raise Wrong("not that one. Count, for each phase, the arithmetic per byte of weights read: prefill "
                        "multiplies every weight by all the prompt's tokens at once, decoding by a single token.")

    return run_cases("faster_phase", [run],
                     "a phase limited by how fast the weights arrive from memory gains when they are 8× smaller; "
                     "a phase limited by arithmetic does not (4-bit weights are unpacked to be multiplied).")


def decode_bound(fn: Callable[[float, int, int, int | None, float, float], float]) -> CheckResult:
    """Check ``fn(bandwidth_gbs, n_weights, bits, block_size, scale_bytes, kv_bytes) -> tokens/s``: the memory
    bound on decoding, bandwidth ÷ (weights at bits/8 bytes + one scale of scale_bytes per block + the KV cache);
    ``block_size=None`` means no scales (a float format)."""


    def case(bw, n, bits, block, scale_bytes, kv):
        def run():
            got = number(call(fn, bw, n, bits, block, scale_bytes, kv), "tokens/s")
            want = llm.decode_bound(bw, n, bits, block, scale_bytes, kv)
            where = (f"{bw} GB/s, {n:,} weights at {bits} bits"
                     + (f" in blocks of {block} with {scale_bytes}-byte scales" if block else "")
                     + f", {kv:,.0f} bytes of KV cache")
            if block and math.isclose(got, llm.decode_bound(bw, n, bits, None, 0, kv), rel_tol=1e-6):
                raise Wrong(f"{where}: got {got:.4g}, the bound without the scales — every block of {block} "
                            f"weights also reads its {scale_bytes}-byte scale.")
            if math.isclose(got, bw * 1e9 / (n * bits + kv), rel_tol=1e-6):
                raise Wrong(f"{where}: got {got:.4g} — a weight of {bits} bits takes {bits}/8 bytes.")
            if math.isclose(got, bw * 2**30 / (n * bits / 8 + (scale_bytes / block if block else 0) * n + kv),
                            rel_tol=1e-6):
                raise Wrong(f"{where}: got {got:.4g} — a GB/s here is 10^9 bytes per second, not 2^30.")
            close(got, want, where, rel=1e-6)
        return run

    return run_cases("decode_bound", [case(13.8, 134_000_000, 32, None, 0, 0),
                                      case(13.8, 134_000_000, 4, 32, 4, 2e6),
                                      case(50.0, 7_000_000_000, 4, 128, 2, 0),
                                      case(8.0, 1_000_000, 8, 64, 2, 5e5)],
                     "bytes per token = n_weights × (bits / 8 + scale_bytes / block_size) + kv_bytes (no scale "
                     "term when block_size is None); tokens/s ≤ bandwidth_gbs × 10^9 ÷ bytes per token.")


def pack_nibbles(fn: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``fn(q) -> bytes``: integers in [0, 15] with an even last dimension packed two per uint8 byte, the
    even-indexed value in the low nibble (the ``MatMulNBits`` layout): :func:`lecture_utils.llm.pack_int4`."""

    gen = torch.Generator().manual_seed(10)

    def case(shape: tuple[int, ...]):
        def run():
            q = torch.randint(0, 16, shape, generator=gen, dtype=torch.uint8)
            got = tensor_like(call(fn, q.clone()), torch.Size((*shape[:-1], shape[-1] // 2)), "the packed bytes",
                              of=f"the shape of q {tuple(shape)} with its last dimension halved,")
            if got.dtype != torch.uint8:
                raise Wrong(f"return uint8 bytes, got {got.dtype}.")
            want = llm.pack_int4(q)
            if torch.equal(got, q[..., 1::2] | (q[..., 0::2] << 4)):
                raise Wrong("the nibbles are swapped: the value at the even index goes into the LOW four bits.")
            if not torch.equal(got, want):
                raise Wrong(f"a {tuple(shape)} input: {(got != want).sum().item()} bytes differ from the layout.")
        return run

    return run_cases("pack_nibbles", [case((4, 8)), case((3, 2, 32)), case((1, 2))],
                     "take the values at even positions (q[..., 0::2]) and at odd positions (q[..., 1::2]); "
                     "byte = even | (odd << 4), as torch.uint8.")


def kivi_quantize(fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """Check ``fn(x, bits, dim) -> x_hat``: asymmetric round-to-nearest with one scale and one minimum per slice
    along ``dim`` (KIVI: ``dim=-2`` on keys = per channel, ``dim=-1`` on values = per token) —
    :func:`lecture_utils.llm.kivi_quantize`."""

    gen = torch.Generator().manual_seed(11)

    def case(shape: tuple[int, ...], bits: int, dim: int, outlier: bool = False):
        def run():
            x = torch.randn(shape, generator=gen)
            if outlier:
                x[..., 2] = x[..., 2] * 30 + 5
            got = as_tensor(call(fn, x.clone(), bits, dim), "x_hat")
            if got.shape != x.shape:
                raise Wrong(f"x_hat should have x's shape {tuple(x.shape)}, got {tuple(got.shape)}.")
            want = llm.kivi_quantize(x, bits, dim)
            where = f"a {tuple(shape)} tensor, {bits} bits, one scale per slice along dim={dim}"
            other = -1 if dim != -1 else -2
            if not torch.allclose(got.float(), want, atol=1e-5, rtol=1e-5):
                if torch.allclose(got.float(), llm.kivi_quantize(x, bits, other), atol=1e-5):
                    raise Wrong(f"{where}: you took min and max along dim={other}; reduce along `dim` instead.")
                raise Wrong(f"{where}: off by up to {(got.float() - want).abs().max().item():.3g}.")
        return run

    return run_cases("kivi_quantize", [case((1, 2, 8, 4), 2, -2, outlier=True), case((1, 2, 8, 4), 2, -1),
                                        case((2, 3, 16, 8), 4, -2), case((2, 3, 16, 8), 8, -1, outlier=True)],
                     "lo = x.amin(dim, keepdim=True), hi = x.amax(dim, keepdim=True), scale = (hi - lo) / "
                     "(2^bits - 1); q = clamp(round((x - lo) / scale), 0, 2^bits - 1); return q * scale + lo.")


def faster_phase_reference() -> str:
    """Decoding: at batch 1 it reads every weight for one token, so it is bound by memory, which 4-bit weights
    relieve: the reference answer of exercise ``faster_phase``."""
    return "decode"


def _kivi(x, bits, dim, symmetric=False):
    """KIVI's quantizer with a mistake switched on (symmetric: the scale from max |x|)."""
    if not symmetric:
        return llm.kivi_quantize(x, bits, dim)
    scale = (x.abs().amax(dim, keepdim=True) / (2 ** (bits - 1) - 1)).clamp(min=1e-8)
    return torch.clamp(torch.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * scale


# --- the exercises of lesson 10, declared once ---------------------------------------------------------------------
declare("10", faster_phase, faster_phase_reference, wrong=(lambda: "prefill", lambda: "both"),
        graded_wrong="return 'prefill'")
declare("10", decode_bound, llm.decode_bound, wrong=(
    lambda bw, n, bits, block, sb, kv: bw * 1e9 / (n * bits / 8 + kv),  # scales forgotten
    lambda bw, n, bits, block, sb, kv: bw * 1e9 / (n * bits + kv),  # bits as bytes
    lambda bw, n, bits, block, sb, kv: bw * 1e9 / (n * (bits / 8 + (sb / block if block else 0)))),  # no cache
    graded_wrong="return bandwidth_gbs * 1e9 / (n_weights * bits / 8 + kv_bytes)  # the scales forgotten")
declare("10", pack_nibbles, llm.pack_int4, wrong=(
    lambda q: (q[..., 1::2] | (q[..., 0::2] << 4)).to(torch.uint8),  # nibbles swapped
    lambda q: q[..., 0::2].to(torch.uint8),  # the odd values dropped
    lambda q: (q[..., 0::2] + q[..., 1::2]).to(torch.uint8)),
    graded_wrong="return (q[..., 1::2] | (q[..., 0::2] << 4)).to(torch.uint8)  # nibbles swapped")
declare("10", kivi_quantize, llm.kivi_quantize, wrong=(
    lambda x, bits, dim: _kivi(x, bits, -1 if dim != -1 else -2),  # along the other dimension
    lambda x, bits, dim: _kivi(x, bits, dim, symmetric=True),
    lambda x, bits, dim: x),
    graded_wrong="lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)  # always per token\n"
                 "scale = ((hi - lo) / (2**bits - 1)).clamp(min=1e-8)\n"
                 "return torch.clamp(torch.round((x - lo) / scale), 0, 2**bits - 1) * scale + lo")
