"""Checks of lesson 09, compressing LLMs: group-wise rounding, KV-cache bytes (and a prediction of them from a config,
against measured caches), Wanda masks, SmoothQuant scales, AWQ scales."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import llm
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
    tensor_like,
    verdict,
)

__all__ = ["quantize_groups", "kv_cache_bytes", "wanda_mask", "smooth_scales", "awq_scales", "CACHE_TOLERANCE",
           "predicted_cache_bytes", "predicted_cache_bytes_reference"]


def quantize_groups(fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """Check ``fn(w, bits, group_size) -> w_hat``: round-to-nearest of each group of ``group_size`` consecutive
    weights of a row, unsigned affine with its own scale and integer zero point (range widened to include 0),
    dequantized back to floats in ``w``'s shape — :func:`lecture_utils.llm.quantize_groupwise`."""

    gen = torch.Generator().manual_seed(9)

    def case(rows: int, cols: int, bits: int, group: int, shift: float = 0.0, outliers: bool = False):
        def run():
            w = torch.randn(rows, cols, generator=gen) * 0.05 + shift
            if outliers:
                w[:, 3] *= 40
            got = as_tensor(call(fn, w.clone(), bits, group), "w_hat")
            if got.shape != w.shape:
                raise Wrong(f"w_hat should have w's shape {tuple(w.shape)}, got {tuple(got.shape)}.")
            want = llm.quantize_groupwise(w, bits, group)
            where = f"a {rows}×{cols} weight, {bits} bits, groups of {group}"
            levels = max(int(torch.unique(r).numel()) for r in got.reshape(-1, group))
            if levels > 2**bits:
                raise Wrong(f"{where}: a group holds {levels} different values, more than 2^{bits}.")
            if not torch.allclose(got.float(), want, atol=1e-6, rtol=1e-5):
                per_row = llm.quantize_groupwise(w, bits, None)
                hint = (" It matches one scale per row: cut each row into groups first (reshape to "
                        "(-1, group_size))." if torch.allclose(got.float(), per_row, atol=1e-6) else "")
                raise Wrong(f"{where}: off by up to {(got.float() - want).abs().max().item():.3g}.{hint}")
        return run

    return run_cases("quantize_groups", [case(8, 64, 4, 16), case(4, 96, 3, 32, outliers=True), case(6, 64, 8, 64),
                                    case(5, 32, 4, 8, shift=0.2), case(3, 48, 2, 16)],
                "reshape w to (-1, group_size) so each row is one group; per row take min and max (widened to "
                "include 0), scale = (max - min) / (2^bits - 1), zero point = round(-min / scale); round, clamp to "
                "[0, 2^bits - 1], dequantize, and reshape back.")


def kv_cache_bytes(fn: Callable[[int, int, int, int, float], float]) -> CheckResult:
    """Check ``fn(num_layers, num_kv_heads, head_dim, tokens, bytes_per_number) -> bytes`` of a KV cache."""

    def case(layers: int, kv: int, hd: int, tokens: int, b: float):
        def run():
            got = number(call(fn, layers, kv, hd, tokens, b), "bytes")
            want = llm.kv_cache_bytes(layers, kv, hd, tokens, b)
            where = f"{layers} layers, {kv} key/value heads of size {hd}, {tokens} tokens, {b} bytes per number"
            if want and math.isclose(got, want / 2):
                raise Wrong(f"{where}: got {got:g}, half the answer — the cache holds a key AND a value.")
            close(got, want, where)
        return run

    return run_cases("kv_cache_bytes", [case(30, 3, 64, 1, 4), case(30, 3, 64, 2048, 2), case(32, 8, 128, 4096, 2),
                                   case(2, 1, 16, 0, 4), case(12, 12, 64, 100, 1)],
                "for every token the cache keeps one key vector and one value vector per layer and per key/value "
                "head, each head_dim numbers long; multiply by the bytes of one number.")


def wanda_mask(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(w, x_norm, sparsity) -> mask``: Wanda's keep-mask, scores |W_ij| × ‖X_j‖, the
    ``round(sparsity × in)`` lowest of every output row removed — :func:`lecture_utils.llm.wanda_mask`."""

    gen = torch.Generator().manual_seed(19)

    def case(rows: int, cols: int, s: float):
        def run():
            w = torch.randn(rows, cols, generator=gen)
            x_norm = torch.rand(cols, generator=gen) * torch.logspace(-1, 1, cols)
            got = tensor_like(call(fn, w.clone(), x_norm.clone(), s), w.shape, "mask")
            got = got.bool() if got.dtype == torch.bool else got != 0
            want = llm.wanda_mask(w, x_norm, s)
            where = f"a {rows}×{cols} weight at sparsity {s}"
            if torch.equal(got, want):
                return
            if torch.equal(got, llm.magnitude_mask(w * x_norm, s)) or torch.equal(got, llm.magnitude_mask(w, s)):
                raise Wrong(f"{where}: you compared over the whole matrix; Wanda compares within each output row.")
            if torch.equal(got, llm.wanda_mask(w, torch.ones(cols), s)):
                raise Wrong(f"{where}: your mask ignores the input norms (that is magnitude pruning per row).")
            raise Wrong(f"{where}: your mask differs from the expected one in {int((got != want).sum())} places.")
        return run

    return run_cases("wanda_mask", [case(6, 8, 0.5), case(16, 32, 0.5), case(10, 20, 0.25), case(4, 12, 0.0)],
                "score = w.abs() * x_norm (broadcast over rows); in each row drop the round(sparsity × columns) "
                "lowest scores (topk with largest=False along dim 1) and keep the rest.")


def smooth_scales(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(act_absmax, weight_absmax, alpha) -> s``: SmoothQuant's s_j = max|X_j|^α / max|W_j|^(1−α)."""
    gen = torch.Generator().manual_seed(29)

    def case(n: int, alpha: float):
        def run():
            a = torch.rand(n, generator=gen) * 20 + 0.1
            w = torch.rand(n, generator=gen) + 0.05
            got = as_tensor(call(fn, a.clone(), w.clone(), alpha), "s")
            if got.shape != a.shape:
                raise Wrong(f"expected one factor per channel, shape {tuple(a.shape)}, got {tuple(got.shape)}.")
            want = a.double() ** alpha / w.double() ** (1 - alpha)
            if torch.allclose(got.double(), w.double() ** alpha / a.double() ** (1 - alpha), rtol=1e-4) and \
                    alpha != 0.5:
                raise Wrong(f"alpha = {alpha}: activations and weights are swapped.")
            if not torch.allclose(got.double(), want, rtol=1e-4):
                raise Wrong(f"alpha = {alpha}, {n} channels: factors differ from the expected ones.")
        return run

    return run_cases("smooth_scales", [case(8, 0.5), case(16, 0.8), case(5, 0.0), case(5, 1.0), case(32, 0.3)],
                "the activation maximum to the power alpha, divided by the weight maximum to the power 1 - alpha, "
                "channel by channel (element-wise on the two vectors).")


def awq_scales(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(x_mean_abs, alpha) -> s``: AWQ's s = (mean |x|)^α, each at least 1e-4, divided by
    √(max s · min s) — :func:`lecture_utils.llm.awq_scales`."""

    gen = torch.Generator().manual_seed(39)

    def case(n: int, alpha: float, zeros: int = 0):
        def run():
            m = torch.rand(n, generator=gen) * torch.logspace(-1, 1.5, n)
            m[:zeros] = 0.0  # channels that never fired: the floor of 1e-4 keeps s finite
            got = as_tensor(call(fn, m.clone(), alpha), "s")
            where = f"{n} channels, alpha = {alpha}" + (f", {zeros} of them with mean |x| = 0" if zeros else "")
            if got.shape != m.shape:
                raise Wrong(f"{where}: expected one factor per channel, shape {tuple(m.shape)}, got "
                            f"{tuple(got.shape)}.")
            got = got.double()
            want = llm.awq_scales(m, alpha).double()
            if not bool(torch.isfinite(got).all()):
                raise Wrong(f"{where}: some factors are infinite or NaN — clamp (mean |x|)^alpha to at least 1e-4 "
                            "before normalising.")
            if torch.allclose(got, want, rtol=1e-4):
                return
            raw = m.double().pow(alpha).clamp(min=1e-4)
            if torch.allclose(got, raw, rtol=1e-4):
                raise Wrong(f"{where}: the factors are not normalised (divide by sqrt(max s * min s)).")
            if torch.allclose(got, raw / raw.max(), rtol=1e-4):
                raise Wrong(f"{where}: you divided by the largest factor; AWQ divides by sqrt(max s * min s), so "
                            "the factors straddle 1.")
            flip = m.double().pow(1 - alpha).clamp(min=1e-4)
            if alpha != 0.5 and torch.allclose(got, flip / (flip.max() * flip.min()).sqrt(), rtol=1e-4):
                raise Wrong(f"{where}: the exponent is 1 - alpha; AWQ raises mean |x| to the power alpha.")
            raise Wrong(f"{where}: factors differ from the expected ones by up to "
                        f"{(got / want - 1).abs().max().item():.2%}.")
        return run

    return run_cases("awq_scales", [case(8, 0.5), case(16, 0.3, zeros=2), case(6, 0.0), case(32, 0.9),
                                    case(12, 0.75, zeros=1)],
                     "raise each channel's mean |x| to the power alpha, clamp at 1e-4, then divide every factor by "
                     "the square root of (largest factor × smallest factor).")


CACHE_TOLERANCE = 0.01  # a transformers cache holds exactly keys and values: nothing to leave out


def predicted_cache_bytes(fn: Callable[..., float]) -> CheckResult:
    """Check ``fn(config, batch, tokens, bytes_per_number) -> predicted bytes of the KV cache`` after one forward
    pass over ``batch`` sequences of ``tokens`` tokens, read from a transformers config, against caches measured
    here: two small grouped-query Llamas run by the check, and the lesson's SmolLM2 (measured and recorded by the
    notebook), each within ``CACHE_TOLERANCE``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def judge(config, batch: int, tokens: int, nbytes: float, want: float, where: str):
        got = number(call(fn, config, batch, tokens, nbytes), "predicted cache bytes")
        kv, heads = config.num_key_value_heads, config.num_attention_heads
        if kv != heads and math.isclose(got, want * heads / kv, rel_tol=1e-3):
            raise Wrong(f"{where}: {got:,.0f} bytes is the cache with one key/value head per *query* head; "
                         "grouped-query attention stores num_key_value_heads of them.")
        if batch > 1 and math.isclose(got, want / batch, rel_tol=1e-3):
            raise Wrong(f"{where}: {got:,.0f} bytes is the cache of one sequence; the batch holds {batch}.")
        if math.isclose(got, want / 2, rel_tol=1e-3):
            raise Wrong(f"{where}: {got:,.0f} bytes stores the keys only; the values are cached too.")
        predicted(got, want, where, CACHE_TOLERANCE, "Read the sizes from the config: layers, key/value heads and "
                  "the size of one head (config.head_dim).")

    def small_llama(heads: int, kv_heads: int, head_dim: int, layers: int, batch: int, tokens: int):
        def run():
            config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_attention_heads=heads,
                                 num_key_value_heads=kv_heads, head_dim=head_dim, num_hidden_layers=layers)
            torch.manual_seed(0)
            model = LlamaForCausalLM(config).eval()
            with torch.no_grad():
                out = model(input_ids=torch.randint(0, 64, (batch, tokens)), use_cache=True)
            judge(config, batch, tokens, 4, llm.measured_cache_bytes(out.past_key_values),
                  f"a small Llama ({layers} layers, {heads} query heads sharing {kv_heads} key/value heads of size "
                  f"{head_dim}), {batch} × {tokens} tokens in float32")
        return run

    def lesson_config():
        names = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim")
        values = {n: int(measured(f"llm.config.{n}", f"the model's {n}")) for n in names}
        return LlamaConfig(vocab_size=64, intermediate_size=64, **values)

    def lesson_model():
        config = lesson_config()
        batch, tokens = int(measured("llm.kv_cache.batch", "the batch")), int(measured("llm.kv_cache.tokens", ""))
        judge(config, batch, tokens, measured("llm.kv_cache.bytes_per_number", "the cache's number format"),
              measured("llm.kv_cache.batch_bytes", "the cache"), f"SmolLM2, {batch} × {tokens} tokens")

    def explain() -> str:
        batch, tokens = int(measured("llm.kv_cache.batch", "")), int(measured("llm.kv_cache.tokens", ""))
        got = number(call(fn, lesson_config(), batch, tokens, measured("llm.kv_cache.bytes_per_number", "")), "")
        want = measured("llm.kv_cache.batch_bytes", "")
        return (f"SmolLM2, {batch} × {tokens} tokens: predicted {got / 1e6:.2f} MB, measured {want / 1e6:.2f} MB: "
                "the cache is exactly keys and values, so the arithmetic leaves nothing out.")

    return verdict("predicted_cache_bytes", [small_llama(4, 2, 8, 2, 3, 7), small_llama(4, 1, 16, 3, 1, 5),
                                             lesson_model],
                   "one key and one value vector of head_dim numbers per layer, per key/value head, per token of "
                   "every sequence in the batch; multiply by the bytes per number.", explain)


def predicted_cache_bytes_reference(config, batch: int, tokens: int, bytes_per_number: float) -> float:
    """Bytes of the keys and values a transformers ``config``'s model caches for ``batch`` sequences of ``tokens``
    tokens: the reference answer of exercise ``predicted_cache_bytes``."""
    return batch * llm.kv_cache_bytes(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, tokens,
                                      bytes_per_number)


def _quantize_groups(w, bits, g, widen=True):
    """Group-wise affine rounding with a mistake switched on (the range not widened to include 0)."""
    rows = w.reshape(-1, g)
    lo, hi = rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)
    if widen:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    zero = torch.round(-lo / scale)
    return ((torch.clamp(torch.round(rows / scale) + zero, 0, 2**bits - 1) - zero) * scale).reshape(w.shape)


def _row_mask(score, s):
    k = round(s * score.shape[1])
    mask = torch.ones_like(score, dtype=torch.bool)
    if k:
        mask.scatter_(1, score.topk(k, dim=1, largest=False).indices, False)
    return mask


def _whole_matrix_mask(score, s):
    mask = torch.ones(score.numel(), dtype=torch.bool)
    mask[score.flatten().topk(round(s * score.numel()), largest=False).indices] = False
    return mask.view_as(score)


def _awq(m, alpha):
    s = m.pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def _cache(cfg, batch, tokens, b, kv="num_key_value_heads", head_dim=True):
    size = cfg.head_dim if head_dim else cfg.hidden_size // cfg.num_attention_heads  # the latter: not always so
    return 2 * cfg.num_hidden_layers * getattr(cfg, kv) * size * batch * tokens * b


# --- the exercises of lesson 09, declared once ---------------------------------------------------------------------
declare("09", quantize_groups, llm.quantize_groupwise, wrong=(
    lambda w, bits, g: _quantize_groups(w, bits, w.shape[1]),  # one scale per row
    lambda w, bits, g: _quantize_groups(w, bits, g, widen=False),  # range not widened to 0
    lambda w, bits, g: _quantize_groups(w.flatten()[None], bits, w.numel()).view_as(w)),  # one for the tensor
    graded_wrong="lo, hi = w.min().clamp(max=0), w.max().clamp(min=0)  # one scale for the whole tensor\n"
                 "scale = (hi - lo) / (2**bits - 1)\nzero = torch.round(-lo / scale)\n"
                 "return (torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1) - zero) * scale")
declare("09", kv_cache_bytes, llm.kv_cache_bytes, wrong=(
    lambda n_layers, kv, hd, tokens, b: n_layers * kv * hd * tokens * b,  # keys only
    lambda n_layers, kv, hd, tokens, b: 2 * n_layers * 9 * hd * tokens * b,  # query heads
    lambda n_layers, kv, hd, tokens, b: 2 * n_layers * kv * hd * tokens * b * 8),  # bits
    graded_wrong="return num_layers * num_kv_heads * head_dim * tokens * bytes_per_number")
declare("09", wanda_mask, llm.wanda_mask, wrong=(
    lambda w, x, s: _row_mask(w.abs(), s),  # ignores the inputs
    lambda w, x, s: _whole_matrix_mask(w.abs() * x, s),  # whole matrix
    lambda w, x, s: ~_row_mask(w.abs() * x, 1 - s)),  # keeps the lowest
    graded_wrong="return w.abs() >= w.abs().median()")
declare("09", smooth_scales, llm.smooth_scales, wrong=(
    lambda a, w, alpha: w**alpha / a ** (1 - alpha),  # swapped
    lambda a, w, alpha: a**alpha / w**alpha,
    lambda a, w, alpha: (a / w) ** 0.5),  # ignores alpha
    graded_wrong="return act_absmax**alpha / weight_absmax**alpha")
declare("09", awq_scales, llm.awq_scales, wrong=(
    lambda m, alpha: m.pow(alpha).clamp(min=1e-4),  # not normalised
    lambda m, alpha: m.pow(alpha).clamp(min=1e-4) / m.pow(alpha).clamp(min=1e-4).max(),  # by the max
    lambda m, alpha: _awq(m, 1 - alpha),  # exponent flipped
    lambda m, alpha: m.pow(alpha) / (m.pow(alpha).max() * m.pow(alpha).min()).sqrt(),  # no floor
    lambda m, alpha: _awq(m.clamp(min=1e-4), alpha) * 2),  # scaled away from 1
    graded_wrong="s = x_mean_abs.clamp(min=1e-4) ** alpha\nreturn s / s.max()  # normalised by the largest factor")
declare("09", predicted_cache_bytes, predicted_cache_bytes_reference, wrong=(
    lambda cfg, batch, tokens, b: _cache(cfg, batch, tokens, b, kv="num_attention_heads"),
    lambda cfg, batch, tokens, b: _cache(cfg, 1, tokens, b),  # one sequence
    lambda cfg, batch, tokens, b: _cache(cfg, batch, tokens, b) / 2,  # keys only
    lambda cfg, batch, tokens, b: _cache(cfg, batch, tokens, b, head_dim=False),
    lambda cfg, batch, tokens, b: 23_592_960),  # our measurement typed in
    graded_wrong="return 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * "
                 "batch * tokens * bytes_per_number")
