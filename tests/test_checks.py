"""Every check passes a correct answer, fails wrong ones with feedback, and never crashes."""

import doctest
import math
import time

import pytest
import torch

import lecture_utils as lu
from lecture_utils import checks


def _not_done(*_args):
    raise NotImplementedError()


def _boom(*_args):
    raise RuntimeError("student bug")


def _imp_round(trained, init, mask, fraction, of_all=False, rewind=True, signed=False):
    alive = int(mask.sum())
    keep = alive - round(fraction * (mask.numel() if of_all else alive))
    score = trained if signed else trained.abs()
    score = torch.where(mask, score, torch.tensor(float("-inf")))
    new = torch.zeros(mask.numel(), dtype=torch.bool)
    new[score.flatten().topk(max(keep, 0)).indices] = True
    new = new.view_as(mask)
    return new, (init if rewind else trained) * new


def _snip_mask(weights, grads, keep, layerwise=False):
    scores = [(g * w).abs() for g, w in zip(grads, weights, strict=True)]
    if layerwise:
        return [s >= s.flatten().topk(round(keep * s.numel())).values.min() for s in scores]
    flat = torch.cat([s.flatten() for s in scores])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[flat.topk(round(keep * flat.numel())).indices] = True
    return [m.view_as(s) for m, s in zip(mask.split([s.numel() for s in scores]), scores, strict=True)]


def _magnitude_mask(w, s, per_row=False, largest=False):
    n = round(s * w.numel())
    if per_row:
        k = round(s * w.shape[1])
        idx = w.abs().topk(k, dim=1, largest=largest).indices
        return ~torch.zeros_like(w, dtype=torch.bool).scatter(1, idx, True)
    mask = torch.ones(w.numel(), dtype=torch.bool)
    mask[w.abs().flatten().topk(n, largest=largest).indices] = False
    return mask.view_as(w)


def _by_kind(layers, key=lambda n: n.split(".", 4)[-1], how=lambda v: sum(v) / len(v)):
    groups = {}
    for name, value in layers.items():
        groups.setdefault(key(name), []).append(value)
    return {k: how(v) for k, v in groups.items()}


def _kivi(x, bits, dim, symmetric=False):
    """KIVI's quantizer written independently (symmetric=True: a plausible mistake, scale from max |x|)."""
    if symmetric:
        scale = (x.abs().amax(dim, keepdim=True) / (2 ** (bits - 1) - 1)).clamp(min=1e-8)
        return torch.clamp(torch.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * scale
    lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=1e-8)
    return torch.clamp(torch.round((x - lo) / scale), 0, 2**bits - 1) * scale + lo


def _quantize_groups(w, bits, g, widen=True):
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


def _awq(m, alpha):
    s = m.pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def _paired(t, c, noise):
    d = t - c
    if len(d) < 2:
        return "tie"
    return "ticket" if d.mean() > 2 * noise(d) else "control" if d.mean() < -2 * noise(d) else "tie"


def _unpaired_verdict(t, c):
    if len(t) < 2:
        return "tie"
    m, se = t.mean() - c.mean(), (t.var() / len(t) + c.var() / len(c)) ** 0.5
    return "ticket" if m > 2 * se else "control" if m < -2 * se else "tie"


def _cache(cfg, batch, tokens, b, kv="num_key_value_heads", head_dim=True):
    size = cfg.head_dim if head_dim else cfg.hidden_size // cfg.num_attention_heads  # the latter: not always so
    return 2 * cfg.num_hidden_layers * getattr(cfg, kv) * size * batch * tokens * b


def _bert_parameters(cfg, biases=True, pooler=True):
    h, i, b = cfg.hidden_size, cfg.intermediate_size, int(biases)
    emb = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + b * h) + (h * i + b * i) + (i * h + b * h) + 4 * h
    head = pooler * (h * h + b * h) + h * cfg.num_labels + b * cfg.num_labels
    return emb + cfg.num_hidden_layers * layer + head


def _moment(stds, counts, k):
    """The count-weighted mean of σᵏ."""
    return sum(c * s**k for s, c in zip(stds, counts, strict=True)) / sum(counts)


def _all_param_sparsity(m):
    return sum((p == 0).sum().item() for p in m.parameters()) / sum(p.numel() for p in m.parameters())


CORRECT = {
    "accuracy": lambda logits, labels: (logits.argmax(-1) == labels).float().mean().item(),
    "predicted_size_mb": lambda n, b: n * b / 1e6,
    "speedup": lambda base, var: base / var,
    "predicted_parameters": lambda cfg: _bert_parameters(cfg),
    "weight_bytes": lambda n, bits: n * bits / 8,
    "adam_training_bytes": lambda n: 16 * n,
    "embedding_share": lambda m: sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n)
    / sum(p.numel() for p in m.parameters()),
    "predicted_int8_mb": lambda linear, other: (linear + 4 * other) / 1e6,
    "xor_success": lambda logits, y: ((logits > 0) == (y > 0.5)).all(dim=-1),
    "effective_rank": lambda s, e: int(((s.sort(descending=True).values ** 2).cumsum(0) / (s**2).sum() < e - 1e-9)
                                       .sum()) + 1,
    "mixture_kurtosis": lambda stds, counts: 3 * _moment(stds, counts, 4) / _moment(stds, counts, 2) ** 2,
    "imp_round": _imp_round,
    "snip_mask": _snip_mask,
    "paired_verdict": lambda t, c: lu.lottery.paired_verdict(t, c),
    "kd_loss": lambda s, t, y, T, a: a * T * T * torch.nn.functional.kl_div(
        torch.log_softmax(s / T, -1), torch.softmax(t / T, -1), reduction="batchmean")
    + (1 - a) * torch.nn.functional.cross_entropy(s, y),
    "layer_map": lambda n_s, n_t: [(m + 1) * (n_t // n_s) - 1 for m in range(n_s)],
    "predicted_size_ratio": lambda share, kept: 1 / (share + (1 - share) * kept),
    "magnitude_mask": _magnitude_mask,
    "matrix_sparsity": lambda m: lu.measure.sparsity(m),
    "csr_nbytes": lambda rows, cols, nnz, vb, ib: nnz * (vb + ib) + (rows + 1) * ib,
    "sparsity_by_kind": lambda layers: _by_kind(layers),
    "predicted_csr_ratio": lambda share, s: 1 / ((1 - share) + share * 2 * (1 - s)),
    "affine_qparams": lambda lo, hi, bits: _ref_affine(lo, hi, bits),
    "quantize_dequantize": lambda x, s, z, bits: (torch.clamp(torch.round(x / s) + z, 0, 2**bits - 1) - z) * s,
    "symmetric_scales": lambda w, bits: 2 * w.abs().amax(dim=1) / (2**bits - 1),
    "predicted_mse": lambda mse8, bits: mse8 * ((2**8 - 1) / (2**bits - 1)) ** 2,
    "low_rank": lambda w, r: _low_rank(w, r),
    "predicted_low_rank_weights": lambda shapes, r: sum(min(r * (o + i), o * i) for o, i in shapes),
    "sparse_int8_bytes": lambda rows, cols, nnz: nnz + math.ceil(rows * cols / 8) + 4 * rows,
    "symmetric_layers": lambda n, k: list(range((n - k + 1) // 2, (n - k + 1) // 2 + k))[::-1],  # any order
    "predicted_speedup": lambda s, f: 1 / ((1 - s) + s * f),
    "predicted_heads_speedup": lambda h, i, t, r: 1 / (1 - r * (4 * h * h + 2 * t * h) / (4 * h * h + 2 * t * h
                                                                                          + 2 * h * i)),
    "quantize_groups": lambda w, bits, g: _quantize_groups(w, bits, g),
    "faster_phase": lambda: "decode",
    "random_network_accuracy": lambda: 0.1,
    "decode_bound": lambda bw, n, bits, block, sb, kv: bw * 1e9 / (n * (bits / 8 + (sb / block if block else 0)) + kv),
    "pack_nibbles": lambda q: (q[..., 0::2] | (q[..., 1::2] << 4)).to(torch.uint8),
    "kivi_quantizer": lambda x, bits, dim: _kivi(x, bits, dim),
    "kv_cache_bytes": lambda n_layers, kv, hd, tokens, b: 2 * n_layers * kv * hd * tokens * b,
    "predicted_cache_bytes": lambda cfg, batch, tokens, b: _cache(cfg, batch, tokens, b),
    "wanda_mask": lambda w, x, s: _row_mask(w.abs() * x, s),
    "smooth_scales": lambda a, w, alpha: a**alpha / w ** (1 - alpha),
    "awq_scales": lambda m, alpha: _awq(m, alpha),
}


def _low_rank(w, r, part="both"):
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    if part == "no_s":
        return u[:, :r], vh[:r]
    if part == "smallest":
        return u[:, -r:] * s[-r:], vh[-r:]
    return u[:, :r] * s[:r], vh[:r]


def _ref_affine(lo, hi, bits):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, int(0 - round(lo / scale))


WRONG = {
    "accuracy": [lambda logits, labels: (logits.argmax(-1) == labels).sum().item(),  # a count, not a fraction
                 lambda logits, labels: (logits.argmin(-1) == labels).float().mean().item(),
                 lambda logits, labels: (logits.argmax(-1) == labels).float()],  # not reduced
    "predicted_size_mb": [lambda n, b: n * b / 2**20, lambda n, b: n * b],
    "speedup": [lambda base, var: var / base, lambda base, var: base - var],
    "predicted_parameters": [lambda cfg: _bert_parameters(cfg, biases=False),
                             lambda cfg: _bert_parameters(cfg, pooler=False),
                             lambda cfg: (cfg.vocab_size + cfg.max_position_embeddings) * cfg.hidden_size
                             + cfg.num_hidden_layers * 12 * cfg.hidden_size**2],  # the 12h² rule: assumes 4h

    "weight_bytes": [lambda n, bits: n * bits, lambda n, bits: n * 4],
    "adam_training_bytes": [lambda n: 4 * n, lambda n: 12 * n],
    "embedding_share": [lambda m: m.bert.embeddings.word_embeddings.weight.numel()
                        / sum(p.numel() for p in m.parameters()),
                        lambda m: 100 * sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n)
                        / sum(p.numel() for p in m.parameters())],
    "predicted_int8_mb": [lambda linear, other: (linear + other) / 1e6,  # everything in int8
                          lambda linear, other: linear / 1e6,  # the rest forgotten
                          lambda linear, other: (linear + 4 * other) / 2**20,  # MiB
                          lambda linear, other: 58.63],  # our model's measurement, typed in: the small model fails
    "xor_success": [lambda logits, y: ((logits > 0) == (y > 0.5)).any(dim=-1),  # one right point is not enough
                    lambda logits, y: ((logits > 0) == (y > 0.5)).float().mean() > 0.5,  # one answer for all
                    lambda logits, y: ((logits > 0) == (y > 0.5)).float().mean(dim=-1) >= 0.75],
    "effective_rank": [lambda s, e: int((s.sort(descending=True).values.cumsum(0) / s.sum() < e).sum()) + 1,
                       lambda s, e: int((s > 0.1 * s.max()).sum()),
                       lambda s, e: int(((s ** 2).cumsum(0) / (s ** 2).sum() < e).sum()) + 1],  # unsorted
    "mixture_kurtosis": [lambda stds, counts: 3.0,  # one Gaussian's
                         lambda stds, counts: 3 * sum(s**4 for s in stds) / len(stds)  # the counts ignored
                         / (sum(s**2 for s in stds) / len(stds)) ** 2,
                         lambda stds, counts: 3 * _moment(stds, counts, 4) / _moment(stds, counts, 1) ** 4],  # E[σ]⁴
    "imp_round": [lambda t, i, m, f: _imp_round(t, i, m, f, of_all=True),
                  lambda t, i, m, f: _imp_round(t, i, m, f, rewind=False),
                  lambda t, i, m, f: _imp_round(t, i, m, f, signed=True),
                  lambda t, i, m, f: _imp_round(t, i, m, f)[0]],
    "magnitude_mask": [lambda w, s: _magnitude_mask(w, s, largest=True),  # keeps the small ones
                       lambda w, s: _magnitude_mask(w, s, per_row=True),  # per row, not per matrix
                       lambda w, s: w.abs() > s],  # the sparsity is not a threshold
    "matrix_sparsity": [_all_param_sparsity,  # counts biases and LayerNorm
                        lambda m: 100 * lu.measure.sparsity(m)],
    "csr_nbytes": [lambda rows, cols, nnz, vb, ib: nnz * (vb + ib) + rows * ib,  # forgets the last row pointer
                   lambda rows, cols, nnz, vb, ib: nnz * (vb + ib) + (cols + 1) * ib,
                   lambda rows, cols, nnz, vb, ib: rows * cols * vb],
    "paired_verdict": [_unpaired_verdict,  # the two means against their own noise: blind to pairing
                       lambda t, c: _paired(t, c, noise=lambda d: d.std() / len(d) ** 0.5),  # 2 SE, not Student's t
                       lambda t, c: _paired(t, c, noise=lambda d: 4.303 / 2 * d.std() / len(d) ** 0.5),  # 3 seeds' t
                       lambda t, c: _paired(t, c, noise=lambda d: d.std()),  # standard deviation, not error
                       lambda t, c: "ticket" if (t - c).mean() > 0 else "control",  # no noise at all
                       lambda t, c: _paired(c, t, noise=lambda d: d.std() / len(d) ** 0.5),  # swapped
                       lambda t, c: (t - c).mean()],  # a number, not a verdict
    "sparsity_by_kind": [lambda layers: _by_kind(layers, key=lambda n: n.split(".")[-1]),  # "dense" lumps three kinds
                         lambda layers: _by_kind(layers, how=max),  # the largest, not the mean
                         lambda layers: {k: 100 * v for k, v in _by_kind(layers).items()},  # percentages
                         lambda layers: sum(layers.values()) / len(layers)],  # one number, not a dict
    "predicted_csr_ratio": [lambda share, s: 1 / ((1 - share) + share * (1 - s)),  # the column indices forgotten
                            lambda share, s: 1 / (2 * (1 - s)),  # the whole model as if all of it were pruned
                            lambda share, s: (1 - share) + share * 2 * (1 - s),  # sparse / dense
                            lambda share, s: 1.59],  # our measurement typed in: the small BERT fails
    "snip_mask": [lambda w, g, k: _snip_mask(w, g, k, layerwise=True),
                  lambda w, g, k: _snip_mask([x.abs() for x in w], [torch.ones_like(x) for x in g], k)],
    "kd_loss": [lambda s, t, y, T, a: a * torch.nn.functional.kl_div(  # no T²
                    torch.log_softmax(s / T, -1), torch.softmax(t / T, -1), reduction="batchmean")
                + (1 - a) * torch.nn.functional.cross_entropy(s, y),
                lambda s, t, y, T, a: a * T * T * torch.nn.functional.kl_div(  # summed over the batch
                    torch.log_softmax(s / T, -1), torch.softmax(t / T, -1), reduction="sum")
                + (1 - a) * torch.nn.functional.cross_entropy(s, y),
                lambda s, t, y, T, a: torch.nn.functional.cross_entropy(s, y)],
    "predicted_size_ratio": [lambda share, kept: 1 / kept,  # everything shrinks with the layers
                             lambda share, kept: share + (1 - share) * kept,  # student / teacher
                             lambda share, kept: 1 / ((1 - share) + share * kept),  # the shares swapped
                             lambda share, kept: 1.31],  # our measurement typed in: the small BERT fails
    "layer_map": [lambda n_s, n_t: [m * (n_t // n_s) for m in range(n_s)],  # first of each block
                  lambda n_s, n_t: list(range(n_s))],
    "affine_qparams": [lambda lo, hi, bits: ((hi - lo) / (2**bits - 1), 0),  # range not widened, no zero point
                       lambda lo, hi, bits: ((hi - lo) / 2**bits, round(-lo * 2**bits / (hi - lo)))],
    "quantize_dequantize": [lambda x, s, z, bits: torch.round(x / s) + z,  # never dequantized
                            lambda x, s, z, bits: (torch.round(x / s) + z - z) * s,  # no clamp
                            lambda x, s, z, bits: x],
    "predicted_mse": [lambda mse8, bits: mse8 * 2 ** (8 - bits),  # grows with the step, not its square
                      lambda mse8, bits: mse8 * 4 ** (8 - bits),  # 2^bits steps instead of 2^bits - 1: 23% off at 3
                      lambda mse8, bits: mse8 / ((2**8 - 1) / (2**bits - 1)) ** 2,  # shrinks
                      lambda mse8, bits: 7.5e-4],  # one measurement typed in
    "symmetric_scales": [lambda w, bits: 2 * w.abs().max() / (2**bits - 1),  # per tensor
                         lambda w, bits: w.abs().amax(dim=1) / (2**bits - 1),
                         lambda w, bits: 2 * w.abs().amax(dim=0) / (2**bits - 1)],  # per column
    "predicted_low_rank_weights": [lambda shapes, r: sum(r * (o + i) for o, i in shapes),  # every layer factorised
                                   lambda shapes, r: sum(r * max(o, i) for o, i in shapes),
                                   lambda shapes, r: sum(r * r + r * (o + i) for o, i in shapes),  # a core S too
                                   lambda shapes, r: 5_308_416],  # one measurement typed in
    "low_rank": [lambda w, r: _low_rank(w, r, "no_s"),
                 lambda w, r: _low_rank(w, r, "smallest"),
                 lambda w, r: (w[:, :r], torch.eye(r, w.shape[1])),  # the first columns, not the best rank r
                 lambda w, r: _low_rank(w.T, r)],  # factors of the transpose: wrong shapes
    "sparse_int8_bytes": [lambda rows, cols, nnz: nnz + rows * cols / 8 + 4 * rows,  # bitmask not rounded up
                          lambda rows, cols, nnz: nnz + math.ceil(rows * cols / 8),  # no scales
                          lambda rows, cols, nnz: nnz + rows * cols + 4 * rows,  # a byte per position
                          lambda rows, cols, nnz: 4 * nnz + math.ceil(rows * cols / 8) + 4 * rows],  # fp32 values
    "symmetric_layers": [lambda n, k: list(range((n - k) // 2, (n - k) // 2 + k)),  # the top keeps the extra
                         lambda n, k: list(range((n - k + 1) // 2 + 1, (n - k + 1) // 2 + k + 1)),  # from 1
                         lambda n, k: list(range(n - k, n)),  # top dropping
                         lambda n, k: [n // 2]],
    "predicted_heads_speedup": [lambda h, i, t, r: 1 / (1 - r),  # all the work shrinks with the heads
                                lambda h, i, t, r: 1 / (1 - r * 4 * h / (4 * h + 2 * i)),  # no attention term
                                lambda h, i, t, r: 1 - r / 3],  # a new time, not a speed-up
    "predicted_speedup": [lambda s, f: 1 / f,  # everything scales
                          lambda s, f: (1 - s) + s * f,  # the time ratio
                          lambda s, f: 1 / (s * f)],
    "quantize_groups": [lambda w, bits, g: _quantize_groups(w, bits, w.shape[1]),  # one scale per row
                        lambda w, bits, g: _quantize_groups(w, bits, g, widen=False),  # range not widened to 0
                        lambda w, bits, g: _quantize_groups(w.flatten()[None], bits, w.numel()).view_as(w)],
    "predicted_cache_bytes": [lambda cfg, batch, tokens, b: _cache(cfg, batch, tokens, b, kv="num_attention_heads"),
                              lambda cfg, batch, tokens, b: _cache(cfg, 1, tokens, b),  # one sequence
                              lambda cfg, batch, tokens, b: _cache(cfg, batch, tokens, b) / 2,  # keys only
                              lambda cfg, batch, tokens, b: _cache(cfg, batch, tokens, b, head_dim=False),
                              lambda cfg, batch, tokens, b: 23_592_960],  # our measurement typed in
    "faster_phase": [lambda: "prefill", lambda: "both"],
    "random_network_accuracy": [lambda: 0.5, lambda: 10.0, lambda: 0.0, lambda: "chance"],
    "decode_bound": [lambda bw, n, bits, block, sb, kv: bw * 1e9 / (n * bits / 8 + kv),  # scales forgotten
                     lambda bw, n, bits, block, sb, kv: bw * 1e9 / (n * bits + kv),  # bits as bytes
                     lambda bw, n, bits, block, sb, kv: bw * 1e9 / (n * (bits / 8 + (sb / block if block else 0)))],
    "pack_nibbles": [lambda q: (q[..., 1::2] | (q[..., 0::2] << 4)).to(torch.uint8),  # nibbles swapped
                     lambda q: q[..., 0::2].to(torch.uint8),  # the odd values dropped
                     lambda q: (q[..., 0::2] + q[..., 1::2]).to(torch.uint8)],
    "kivi_quantizer": [lambda x, bits, dim: _kivi(x, bits, -1 if dim != -1 else -2),  # along the other dimension
                       lambda x, bits, dim: _kivi(x, bits, dim, symmetric=True),
                       lambda x, bits, dim: x],
    "kv_cache_bytes": [lambda n_layers, kv, hd, tokens, b: n_layers * kv * hd * tokens * b,  # keys only
                       lambda n_layers, kv, hd, tokens, b: 2 * n_layers * 9 * hd * tokens * b,  # query heads
                       lambda n_layers, kv, hd, tokens, b: 2 * n_layers * kv * hd * tokens * b * 8],  # bits
    "wanda_mask": [lambda w, x, s: _row_mask(w.abs(), s),  # ignores the inputs
                   lambda w, x, s: _magnitude_mask(w * x, s),  # whole matrix
                   lambda w, x, s: ~_row_mask(w.abs() * x, 1 - s)],  # keeps the lowest
    "smooth_scales": [lambda a, w, alpha: w**alpha / a ** (1 - alpha),  # swapped
                      lambda a, w, alpha: a**alpha / w**alpha,
                      lambda a, w, alpha: (a / w) ** 0.5],  # ignores alpha
    "awq_scales": [lambda m, alpha: m.pow(alpha).clamp(min=1e-4),  # not normalised
                   lambda m, alpha: m.pow(alpha).clamp(min=1e-4) / m.pow(alpha).clamp(min=1e-4).max(),  # by the max
                   lambda m, alpha: _awq(m, 1 - alpha),  # exponent flipped
                   lambda m, alpha: m.pow(alpha) / (m.pow(alpha).max() * m.pow(alpha).min()).sqrt(),  # no floor
                   lambda m, alpha: _awq(m.clamp(min=1e-4), alpha) * 2],  # scaled away from 1
}


@pytest.fixture(autouse=True)
def lenient(monkeypatch, measured):  # `measured`: what the notebooks record before a prediction check runs
    monkeypatch.delenv(checks.STRICT_ENV, raising=False)


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_answer_passes(name, capsys):
    assert getattr(checks, name)(CORRECT[name]).passed is True
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(CORRECT))
def test_wrong_answers_scaffolds_and_crashes_fail_with_a_hint(name, capsys):
    for wrong in [*WRONG[name], _not_done, _boom, "not a function"]:
        assert getattr(checks, name)(wrong).passed is False
        out = capsys.readouterr().out
        assert "❌" in out and "Hint:" in out


def test_feedback_names_the_problem(capsys):
    checks.accuracy(_not_done)
    assert "not implemented yet" in capsys.readouterr().out
    checks.accuracy(_boom)
    assert "RuntimeError: student bug" in capsys.readouterr().out
    checks.predicted_size_mb(WRONG["predicted_size_mb"][0])
    assert "MiB" in capsys.readouterr().out
    checks.embedding_share(WRONG["embedding_share"][0])
    assert "word embeddings only" in capsys.readouterr().out
    checks.imp_round(WRONG["imp_round"][1])
    assert "rewind them to init" in capsys.readouterr().out
    checks.snip_mask(WRONG["snip_mask"][0])
    assert "all layers together" in capsys.readouterr().out
    checks.paired_verdict(WRONG["paired_verdict"][1])
    assert "Student's t needs 4.30" in capsys.readouterr().out
    checks.random_network_accuracy(WRONG["random_network_accuracy"][1])
    assert "not in percent" in capsys.readouterr().out
    checks.effective_rank(WRONG["effective_rank"][0])
    assert "not their squares" in capsys.readouterr().out
    checks.low_rank(WRONG["low_rank"][0])
    assert "missing the singular values" in capsys.readouterr().out
    checks.low_rank(WRONG["low_rank"][1])
    assert "smallest singular values" in capsys.readouterr().out
    checks.sparse_int8_bytes(WRONG["sparse_int8_bytes"][0])
    assert "round the bitmask up" in capsys.readouterr().out
    checks.sparse_int8_bytes(WRONG["sparse_int8_bytes"][1])
    assert "scale of every row is missing" in capsys.readouterr().out
    checks.symmetric_layers(WRONG["symmetric_layers"][0])
    assert "bottom should keep the extra one" in capsys.readouterr().out
    checks.symmetric_layers(WRONG["symmetric_layers"][1])
    assert "count layers from 0" in capsys.readouterr().out
    checks.predicted_heads_speedup(WRONG["predicted_heads_speedup"][0])
    assert "feed-forward block" in capsys.readouterr().out
    checks.predicted_heads_speedup(WRONG["predicted_heads_speedup"][1])
    assert "the attention itself" in capsys.readouterr().out
    checks.predicted_heads_speedup(WRONG["predicted_heads_speedup"][2])
    assert "old time / new time" in capsys.readouterr().out
    checks.predicted_speedup(WRONG["predicted_speedup"][0])
    assert "the rest (1 − share) stays" in capsys.readouterr().out
    checks.predicted_speedup(WRONG["predicted_speedup"][1])
    assert "old time / new time" in capsys.readouterr().out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    with pytest.raises(checks.CheckFailed):
        checks.speedup(_not_done)
    assert checks.speedup(CORRECT["speedup"])


def test_every_public_check_is_covered():
    public = {n for n in dir(checks) if not n.startswith("_") and callable(getattr(checks, n))
              and getattr(checks, n).__module__.startswith(f"{checks.__name__}.lesson") and n[0].islower()}
    assert "CheckResult" in dir(checks)
    assert public == set(CORRECT), "add new checks to CORRECT and WRONG"
    assert lu.checks is checks and torch  # the notebooks call lu.checks.<name>


def test_use_returns_the_students_function_only_after_its_check_passed(capsys):
    def speed(a, b):
        return CORRECT["speedup"](a, b)

    ref = lu.measure.speedup  # called like the student's function (use() refuses one that is not)
    assert checks.use(speed, ref) is ref  # never checked
    assert "has not passed its check" in capsys.readouterr().out
    assert checks.speedup(speed)
    assert checks.use(speed, ref) is speed
    assert not checks.speedup(_not_done)
    assert checks.use(_not_done, ref) is ref
    with pytest.raises(TypeError, match="reference"):
        checks.use(speed, 3)


# --- graded mode, time limits, unusable results, inputs changed in place ------------------------------------------

def test_graded_mode_is_on_while_nbgrader_executes(monkeypatch):
    monkeypatch.setenv(checks.NBGRADER_ENV, "autograde")  # what nbgrader 0.9's autograde sets in the kernel
    with pytest.raises(checks.CheckFailed, match="not implemented"):
        checks.speedup(_not_done)
    monkeypatch.setenv(checks.NBGRADER_ENV, "validate")  # what `nbgrader validate` (the Validate button) sets
    with pytest.raises(checks.CheckFailed):
        checks.weight_bytes(WRONG["weight_bytes"][0])
    assert checks.speedup(CORRECT["speedup"])  # a right answer still passes quietly
    monkeypatch.setenv(checks.STRICT_ENV, "0")  # an explicit 0 wins
    assert not checks.speedup(_not_done)
    monkeypatch.delenv(checks.NBGRADER_ENV)
    monkeypatch.delenv(checks.STRICT_ENV)
    assert not checks.speedup(_not_done)  # interactive: feedback only


def _forever(*_args):
    while True:
        pass


def test_a_function_that_never_returns_is_given_up_on(monkeypatch, capsys):
    monkeypatch.setattr(checks.harness, "CASE_TIMEOUT_S", 0.3)
    assert not checks.accuracy(_forever)
    out = capsys.readouterr().out
    assert "did not return within 0.3 s" in out and "Hint:" in out
    assert checks.accuracy(CORRECT["accuracy"])  # the timer is gone: a later check runs normally


def test_the_time_limit_also_works_outside_the_main_thread(monkeypatch, capsys):
    import threading

    monkeypatch.setattr(checks.harness, "CASE_TIMEOUT_S", 0.3)
    box = {}
    worker = threading.Thread(target=lambda: box.update(result=checks.speedup(lambda a, b: time.sleep(5))))
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and not box["result"]
    assert "did not return within" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(CORRECT))
def test_numpy_and_meta_results_are_feedback_not_a_crash(name, capsys):
    import numpy as np

    for returned in (np.zeros((3, 2)), np.float64("nan"), torch.empty(3, 2, device="meta"),
                     (torch.empty(2, device="meta"), torch.empty(2, device="meta")), [np.ones(2), np.ones(2)]):
        result = getattr(checks, name)(lambda *_a, r=returned: r)
        assert result.passed is False
        assert "❌" in capsys.readouterr().out


TENSOR_CHECKS = ["xor_success", "imp_round", "snip_mask", "magnitude_mask", "quantize_dequantize", "low_rank",
                 "quantize_groups", "pack_nibbles", "kivi_quantizer", "wanda_mask", "smooth_scales", "awq_scales"]


def _reshaped(reference, change):
    """The correct answer with every returned tensor changed by ``change``; ``given`` lists the shapes returned."""
    given = []

    def fn(*args):
        out = reference(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        changed = [change(o) if torch.is_tensor(o) else o for o in outs]
        given.extend(tuple(o.shape) for o in changed if torch.is_tensor(o))
        return type(out)(changed) if isinstance(out, (tuple, list)) else changed[0]

    return fn, given


@pytest.mark.parametrize("change", [lambda t: t.reshape(1, -1), lambda t: t[:1], lambda t: t.unsqueeze(0),
                                    lambda t: t.flatten()[:0]], ids=["flat-row", "first-row", "extra-dim", "empty"])
@pytest.mark.parametrize("name", TENSOR_CHECKS)
def test_a_result_of_the_wrong_shape_gets_a_cross_naming_the_shapes(name, change, capsys):
    """Never broadcast, never a traceback: a wrong shape is a ❌ whose text names the shape given and the expected
    one."""
    fn, given = _reshaped(CORRECT[name], change)
    result = getattr(checks, name)(fn)
    out = capsys.readouterr().out
    assert result.passed is False and "❌" in out and "could not compare" not in out, out
    assert "shape" in out or " should be (" in out, out
    assert str(given[-1]) in out, (given, out)  # the shape returned in the case that failed


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.int32, torch.complex64])
def test_a_result_of_another_dtype_is_compared_or_named_never_uncomparable(dtype, capsys):
    """imp_round used to answer "the check could not compare your result (Half did not match Float)"."""
    for name in TENSOR_CHECKS:
        fn, _ = _reshaped(CORRECT[name], lambda t: t.to(dtype))
        getattr(checks, name)(fn)
        out = capsys.readouterr().out
        assert "❌" in out or "✅" in out
        assert "could not compare" not in out, out
    checks.imp_round(_reshaped(CORRECT["imp_round"], lambda t: t if t.dtype == torch.bool else t.int())[0])
    assert "rewound_weights should be float weights" in capsys.readouterr().out


def test_meta_and_numpy_messages_say_what_to_return(capsys):
    checks.quantize_dequantize(lambda x, *_: torch.empty_like(x, device="meta"))
    assert "'meta' device" in capsys.readouterr().out
    checks.symmetric_scales(lambda w, bits: (2 * w.abs().amax(dim=1) / (2**bits - 1)).numpy())
    assert "numpy array" in capsys.readouterr().out


def test_changing_the_input_in_place_cannot_make_a_wrong_answer_pass(capsys):
    def zero_everything(model):  # makes the model 100% sparse, then reports it
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return 1.0

    assert not checks.matrix_sparsity(zero_everything)

    def overwrite_labels(logits, labels):  # makes every prediction "right"
        labels.copy_(logits.argmax(-1))
        return 1.0

    assert not checks.accuracy(overwrite_labels)

    def flatten_singular_values(s, energy):
        s.fill_(1.0)
        return CORRECT["effective_rank"](s, energy)

    assert not checks.effective_rank(flatten_singular_values)
    capsys.readouterr()


REFERENCES = {  # the course's reference for each exercise whose function later cells use (through lu.checks.use)
    "accuracy": lu.measure.accuracy, "predicted_size_mb": lu.memory.megabytes, "speedup": lu.measure.speedup,
    "predicted_parameters": lu.models.config_parameters,
    "weight_bytes": lu.memory.bytes_at_bits, "adam_training_bytes": lu.memory.training_bytes,
    "embedding_share": lu.measure.embedding_share, "xor_success": lu.overparam.xor_success,
    "effective_rank": lu.overparam.effective_rank, "magnitude_mask": lu.prune.magnitude_mask,
    "mixture_kurtosis": lu.overparam.gaussian_mixture_kurtosis,
    "matrix_sparsity": lu.measure.sparsity, "csr_nbytes": lu.prune.csr_nbytes,
    "sparsity_by_kind": lu.prune.sparsity_by_kind,
    "predicted_speedup": lu.surgery.predicted_speedup, "predicted_heads_speedup": lu.heads.predicted_heads_speedup,
    "affine_qparams": lu.quantize.affine_qparams,
    "quantize_dequantize": lu.quantize.quantize_dequantize, "imp_round": lu.lottery.prune_and_rewind,
    "snip_mask": lu.lottery.global_snip_masks, "low_rank": lu.lowrank.low_rank_factors,
    "paired_verdict": lu.lottery.paired_verdict,
    "sparse_int8_bytes": lu.combine.sparse_int8_bytes,
    "decode_bound": lu.llm.decode_bound,
}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_the_course_reference_passes_its_check(name, capsys):
    assert getattr(checks, name)(REFERENCES[name]).passed, capsys.readouterr().out


@pytest.mark.parametrize("call", [
    lambda: lu.memory.megabytes(-1, 4), lambda: lu.memory.megabytes(10, 0), lambda: lu.memory.bytes_at_bits(10, 0),
    lambda: lu.measure.accuracy(torch.zeros(3), torch.zeros(3)),
    lambda: lu.measure.accuracy(torch.zeros(3, 2), torch.zeros(4)), lambda: lu.measure.speedup(1.0, 0),
    lambda: lu.measure.embedding_share(torch.nn.ReLU()), lambda: lu.prune.magnitude_mask(torch.ones(3, 3), 1.5),
    lambda: lu.prune.csr_nbytes(2, 2, 5, 4, 4), lambda: lu.prune.csr_nbytes(2, 2, -1, 4, 4),
    lambda: lu.prune.sparsity_by_kind({}), lambda: lu.prune.sparsity_by_kind({"layer.0.query": 1.5}),
    lambda: lu.surgery.predicted_speedup(1.2, 0.5), lambda: lu.surgery.predicted_speedup(1.0, 0.0),
    lambda: lu.heads.predicted_heads_speedup(384, 1536, 64, 1.5), lambda: lu.heads.head_flop_share(0, 1536, 64),
    lambda: lu.quantize.quantize_dequantize(torch.ones(2), 0.0, 0, 8),
    lambda: lu.quantize.quantize_dequantize(torch.ones(2), 0.1, 300, 8),
    lambda: lu.quantize.quantize_dequantize(torch.ones(2), 0.1, 1.5, 8),
    lambda: lu.lottery.prune_and_rewind(torch.ones(2, 2), torch.ones(2, 3), torch.ones(2, 2, dtype=torch.bool), 0.2),
    lambda: lu.lottery.global_snip_masks([torch.ones(2)], [], 0.5),
    lambda: lu.lottery.global_snip_masks([torch.ones(2)], [torch.ones(2)], 0.0),
    lambda: lu.lottery.paired_verdict([0.5, 0.6], [0.5]), lambda: lu.lottery.paired_verdict([[0.5]], [[0.5]]),
])
def test_references_reject_bad_input_with_a_clear_error(call):
    with pytest.raises(ValueError, match="must"):
        call()


def test_use_announces_the_fallback_once_per_cell_run_even_in_a_loop(capsys):
    def mine(a, b):
        raise NotImplementedError()

    checks.speedup(mine)
    capsys.readouterr()
    assert [checks.use(mine, lu.measure.speedup)(4.0, 2.0) for _ in range(3)] == [2.0, 2.0, 2.0]
    out = capsys.readouterr().out
    assert out.count("has not passed its check") == 1 and "`lecture_utils.measure.speedup`" in out


def test_a_graded_failure_shows_the_verdict_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    with pytest.raises(checks.CheckFailed) as info:
        checks.weight_bytes(_not_done)
    assert info.value._render_traceback_() == ["❌ CheckFailed: weight_bytes: hidden case 1 of 5: not implemented yet: "
                                               "replace `raise NotImplementedError()` with your code."]


def test_the_harness_docstring_examples_run():
    result = doctest.testmod(checks.harness)
    assert result.attempted >= 1 and result.failed == 0


def test_a_prediction_check_needs_the_measurement_and_explains_the_gap(monkeypatch, measured, capsys):
    monkeypatch.setattr(lu.results, "_recorded", {})
    assert not checks.predicted_int8_mb(CORRECT["predicted_int8_mb"])
    assert "has not been measured yet" in capsys.readouterr().out
    monkeypatch.setattr(lu.results, "_recorded", measured)
    assert checks.predicted_int8_mb(CORRECT["predicted_int8_mb"])
    assert "measured 58.63 MB" in capsys.readouterr().out
    assert not checks.predicted_int8_mb(WRONG["predicted_int8_mb"][0])
    assert "only the Linear layers' weight matrices" in capsys.readouterr().out
    assert not checks.predicted_cache_bytes(WRONG["predicted_cache_bytes"][0])
    assert "grouped-query attention" in capsys.readouterr().out


def test_use_refuses_a_reference_that_cannot_be_called_like_the_students_function():
    def wanda_mask(w, x_norm, sparsity):
        raise NotImplementedError()

    with pytest.raises(TypeError, match=r"use\(wanda_mask, kv_cache_bytes\).*takes wanda_mask\(w, x_norm, "
                                        r"sparsity\)"):
        lu.checks.use(wanda_mask, lu.llm.kv_cache_bytes)  # five required arguments: another exercise's reference
    assert lu.checks.use(wanda_mask, lu.llm.wanda_mask) is lu.llm.wanda_mask
