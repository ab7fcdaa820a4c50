"""AWQ (lecture_utils.llm.awq) against references, on tiny random Llamas (no download)."""

import copy

import pytest
import torch
from torch import nn

from lecture_utils import llm


def _llama(kv_heads: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                         max_position_embeddings=64, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1 and a few input channels with large activations, as in a real model
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(torch.rand(64) + 0.5)
                norm.weight[[3, 17]] *= 12
    return model


@pytest.fixture(scope="module")
def tiny():
    return _llama(kv_heads=2)  # grouped-query attention, as SmolLM2


@pytest.fixture(scope="module")
def tiny_mha():
    return _llama(kv_heads=4, seed=1)  # one key/value head per query head: v_proj feeds o_proj's scale


@pytest.fixture(scope="module")
def windows():
    return torch.randint(0, 96, (6, 16), generator=torch.Generator().manual_seed(1))


def _logits(model, windows):
    with torch.no_grad():
        return model(input_ids=windows).logits


# ---------------------------------------------------------------- scales and folding

def test_scaling_then_unscaling_leaves_a_layer_unchanged():
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(32, 8, bias=True)
    x = torch.randn(20, 32, generator=gen)
    s = torch.rand(32, generator=gen) * 5 + 0.1
    want = lin(x)
    scaled = copy.deepcopy(lin)
    with torch.no_grad():
        scaled.weight.mul_(s)
    assert torch.allclose(scaled(x / s), want, atol=1e-5)
    assert not torch.allclose(scaled(x), want, atol=1e-3)  # the scale does change the weights


def test_folding_into_rmsnorm_matches_applying_the_scale_explicitly(tiny):
    layer = copy.deepcopy(tiny.model.layers[0])
    norm, lins = layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]
    h = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(2))
    s = torch.rand(64, generator=torch.Generator().manual_seed(3)) * 4 + 0.25
    with torch.no_grad():
        original = [lin(norm(h)) for lin in lins]
        explicit = [nn.functional.linear(norm(h) / s, lin.weight * s) for lin in lins]
        llm.fold_scales_(norm, lins, s)
        folded = [lin(norm(h)) for lin in lins]
    for o, e, f in zip(original, explicit, folded, strict=True):
        assert torch.allclose(f, e, atol=1e-5)
        assert torch.allclose(f, o, atol=1e-4)


def test_folding_into_a_linear_divides_its_output_rows():
    gen = torch.Generator().manual_seed(4)
    prev, nxt = nn.Linear(16, 24), nn.Linear(24, 8)
    x = torch.randn(10, 16, generator=gen)
    s = torch.rand(24, generator=gen) + 0.5
    with torch.no_grad():
        want = nxt(prev(x))
        llm.fold_scales_(prev, [nxt], s)
        assert torch.allclose(nxt(prev(x)), want, atol=1e-5)
    with pytest.raises(ValueError, match="positive factors"):
        llm.fold_scales_(prev, [nxt], -s)
    with pytest.raises(ValueError, match="24 positive factors"):
        llm.fold_scales_(prev, [nxt], s[:5])


@pytest.mark.parametrize("fixture", ["tiny", "tiny_mha"])
def test_awq_without_rounding_or_clipping_keeps_the_model_s_function(fixture, windows, request):
    model = request.getfixturevalue(fixture)
    m = copy.deepcopy(model)
    result = llm.awq_model_(m, windows, 3, 16, grid=5, clip=False, quantize=False)
    assert torch.allclose(_logits(m, windows), _logits(model, windows), atol=1e-4)
    n_groups = 4 if fixture == "tiny_mha" else 3  # o_proj gets a scale only without grouped-query attention
    assert len(result.alphas) == 2 * n_groups
    changed = [n for n, p in m.named_parameters() if not torch.equal(p, dict(model.named_parameters())[n])]
    assert any("input_layernorm" in n for n in changed) and any("up_proj" in n for n in changed)
    assert any("o_proj" in n for n in changed) == (fixture == "tiny_mha")


def test_awq_scales_reference():
    m = torch.tensor([0.0, 0.5, 2.0, 8.0])
    assert torch.equal(llm.awq_scales(m, 0.0), torch.ones(4))
    raw = m.pow(0.5).clamp(min=1e-4)
    assert torch.allclose(llm.awq_scales(m, 0.5), raw / (raw.max() * raw.min()).sqrt())
    s = llm.awq_scales(torch.rand(50) * 10, 0.7)
    assert torch.isclose(s.max() * s.min(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="alpha"):
        llm.awq_scales(m, 1.5)
    with pytest.raises(ValueError, match=">= 0"):
        llm.awq_scales(-m, 0.5)


# ---------------------------------------------------------------- α = 0 is round-to-nearest; the search

def test_alpha_zero_is_round_to_nearest():
    w = torch.randn(12, 64, generator=torch.Generator().manual_seed(5))
    s0 = llm.awq_scales(torch.rand(64) * 3, 0.0)
    assert torch.equal(llm.scaled_quantize(w, s0, 3, 16), llm.quantize_groupwise(w, 3, 16))


def test_awq_with_only_alpha_zero_and_no_clipping_is_rtn(tiny, windows):
    awq = llm.awq_model_(copy.deepcopy(tiny), windows, 3, 16, grid=1, clip=False).model
    rtn = llm.rtn_model_(copy.deepcopy(tiny), 3, 16)
    for (n, a), (_, r) in zip(awq.named_parameters(), rtn.named_parameters(), strict=True):
        assert torch.equal(a, r), n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_never_returns_an_error_above_alpha_zero(seed):
    gen = torch.Generator().manual_seed(seed)
    lins = [nn.Linear(64, 32, bias=False), nn.Linear(64, 16, bias=False)]
    x = torch.randn(4, 20, 64, generator=gen) * (torch.rand(64, generator=gen) * 4 + 0.1)
    x[..., 7] *= 30

    def run():
        return [torch.relu(lins[0](h)).sum(-1, keepdim=True) * lins[1](h) for h in x]

    before = [lin.weight.clone() for lin in lins]
    with torch.no_grad():
        reference = run()
        rtn = [llm.quantize_groupwise(w, 3, 16) for w in before]
        for lin, q in zip(lins, rtn, strict=True):
            lin.weight.copy_(q)
        rtn_err = sum(float((o - r).pow(2).sum()) for o, r in zip(run(), reference, strict=True)) / sum(
            r.numel() for r in reference)
        for lin, w in zip(lins, before, strict=True):
            lin.weight.copy_(w)
    search = llm.search_scale(run, lins, x.abs().reshape(-1, 64).mean(0), 3, 16, grid=10)
    assert search.alphas == [k / 10 for k in range(10)]
    assert search.errors[0] == pytest.approx(rtn_err, rel=1e-6)  # α = 0 is RTN
    assert min(search.errors) == search.errors[search.alphas.index(search.alpha)] <= search.rtn_error
    assert torch.allclose(search.scales, llm.awq_scales(x.abs().reshape(-1, 64).mean(0), search.alpha))
    assert all(torch.equal(lin.weight, w) for lin, w in zip(lins, before, strict=True))  # weights restored


def test_awq_model_search_errors_never_exceed_rtn(tiny, windows):
    result = llm.awq_model_(copy.deepcopy(tiny), windows, 3, 16, grid=8)
    for name, errors in result.errors.items():
        assert errors[round(result.alphas[name] * 8)] == min(errors) <= errors[0], name
    assert set(result.clip_kept) == {f"model.layers.{i}.{n}" for i in range(2) for n, _ in llm.awq.CLIPPED}
    assert all(0.5 < v <= 1 for v in result.clip_kept.values())
    for lin in llm.decoder_linears(result.model).values():  # rounded: at most 2^3 levels per group of 16
        assert llm.block_levels(lin.weight, 16).max() <= 8


def test_awq_statistics_from_calibrate_and_reused_alphas(tiny, windows):
    searched = llm.awq_model_(copy.deepcopy(tiny), windows, 4, 16, grid=6)
    stats = llm.calibrate(tiny, windows)
    from_stats = llm.awq_model_(copy.deepcopy(tiny), windows, 4, 16, grid=6, stats=stats)
    assert from_stats.alphas == searched.alphas  # the same tokens: the same statistics, up to float rounding
    diff = _logits(from_stats.model, windows) - _logits(searched.model, windows)  # a rounding may flip, no more
    assert diff.abs().mean() < 1e-3
    reused = llm.awq_model_(copy.deepcopy(tiny), windows, 4, 16, alphas=searched.alphas)
    assert reused.errors == {} and reused.alphas == searched.alphas
    for a, b in zip(reused.model.parameters(), searched.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="alphas has no entry"):
        llm.awq_model_(copy.deepcopy(tiny), windows, 4, 16, alphas={})
    with pytest.raises(ValueError, match="stats has no entry"):
        llm.awq_model_(copy.deepcopy(tiny), windows, 4, 16, stats={})


# ---------------------------------------------------------------- clipping

def _token_errors(w, x, limit, bits, g):
    """The reference code's error: per output channel and group, the mean over tokens of (x_g·(q_g − w_g))²."""
    rows, cols = w.shape
    wg = w.reshape(rows, 1, cols // g, g)
    xg = x.reshape(1, x.shape[0], cols // g, g)
    clipped = torch.clamp(wg, -limit.unsqueeze(1).unsqueeze(-1), limit.unsqueeze(1).unsqueeze(-1))
    q = llm.quantize_groupwise(clipped.reshape(rows, cols), bits, g).reshape(rows, 1, cols // g, g)
    return ((xg * q).sum(-1) - (xg * wg).sum(-1)).pow(2).mean(1)  # (out, groups)


def test_clip_search_picks_the_best_range_by_the_token_error():
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(8, 64, generator=gen)
    w[:, 5] *= 6  # an outlier weight per row, which clipping may give up
    x = torch.randn(40, 64, generator=gen) * (torch.rand(64, generator=gen) + 0.2)
    best = llm.search_clip(w, x.T @ x, 3, 16, grid=20, max_shrink=0.5)
    top = w.reshape(8, 4, 16).abs().amax(-1)
    errs = torch.stack([_token_errors(w, x, top * (1 - i / 20), 3, 16) for i in range(10)])  # (10, out, groups)
    chosen = _token_errors(w, x, best, 3, 16)
    assert torch.allclose(chosen, errs.min(0).values, rtol=1e-4, atol=1e-7)
    assert bool((chosen <= errs[0] * (1 + 1e-5)).all())  # never worse than no clipping
    assert bool((best < top).any())  # and it does clip somewhere
    clipped = llm.apply_clip(w, best)
    assert bool((clipped.reshape(8, 4, 16).abs().amax(-1) <= best + 1e-7).all())


# ---------------------------------------------------------------- the salient 1%

def test_mean_abs_from_calibration(tiny, windows):
    stats = llm.calibrate(tiny, windows)
    layer = tiny.model.layers[0]
    with torch.no_grad():
        x = layer.input_layernorm(tiny.model.embed_tokens(windows))
    assert torch.allclose(llm.mean_abs(stats["model.layers.0.self_attn.q_proj"]),
                          x.abs().reshape(-1, 64).mean(0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="InputStats"):
        llm.mean_abs(torch.ones(3))


def test_salient_channels_and_full_precision_channels(tiny, windows):
    stats = llm.calibrate(tiny, windows)
    by_act = llm.salient_channels(tiny, stats, 0.05, "activation")
    name = "model.layers.1.mlp.down_proj"
    assert by_act[name].numel() == round(0.05 * 128)
    assert set(by_act[name].tolist()) == set(llm.mean_abs(stats[name]).topk(6).indices.tolist())
    assert set(by_act["model.layers.0.self_attn.q_proj"].tolist()) >= {3, 17}  # the large-norm channels
    by_w = llm.salient_channels(tiny, stats, 0.05, "weight")
    w = llm.decoder_linears(tiny)[name].weight
    assert set(by_w[name].tolist()) == set(w.abs().sum(0).topk(6).indices.tolist())
    r0, r1 = (llm.salient_channels(tiny, stats, 0.05, "random", seed) for seed in (0, 1))
    assert not all(torch.equal(r0[n], r1[n]) for n in r0)
    assert all(v.numel() >= 1 for v in llm.salient_channels(tiny, stats, 0.001, "random").values())
    with pytest.raises(ValueError, match="by must be one of"):
        llm.salient_channels(tiny, stats, 0.01, "gradient")

    q = llm.rtn_model_(copy.deepcopy(tiny), 3, 16)
    rounded = {n: lin.weight.clone() for n, lin in llm.decoder_linears(q).items()}
    original = llm.decoder_linears(tiny)
    with llm.full_precision_channels(q, tiny, by_act) as inside:
        for n, lin in llm.decoder_linears(inside).items():
            idx = by_act[n]
            assert torch.equal(lin.weight[:, idx], original[n].weight[:, idx])
            rest = torch.ones(lin.in_features, dtype=torch.bool)
            rest[idx] = False
            assert torch.equal(lin.weight[:, rest], rounded[n][:, rest])
    assert all(torch.equal(lin.weight, rounded[n]) for n, lin in llm.decoder_linears(q).items())


def test_scaled_rtn_model_with_unit_scales_is_rtn(tiny):
    ones = {n: torch.ones(lin.in_features) for n, lin in llm.decoder_linears(tiny).items()}
    a = llm.scaled_rtn_model_(copy.deepcopy(tiny), 4, 16, ones)
    b = llm.rtn_model_(copy.deepcopy(tiny), 4, 16)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_scaled_rtn_model_checks_every_scale_before_any_weight_changes(tiny):
    """A misspelt name used to be ignored (plain RTN there, without a word), a dict of the wrong kind failed with an
    AttributeError, and a bad factor for a later layer left the earlier layers rounded."""
    names = list(llm.decoder_linears(tiny))
    model = copy.deepcopy(tiny)
    for scales, error, match in [({"model.layers.9.mlp.up_proj": torch.ones(64)}, ValueError, "name no decoder linear"),
                                 ("ones", TypeError, "scales must be a dict"),
                                 ({names[-1]: torch.ones(3)}, ValueError, r"scales\['model.layers.1.mlp.down_proj'\]"),
                                 ({names[-1]: [1.0] * 128}, TypeError, "must be a torch tensor"),
                                 ({names[-1]: -torch.ones(128)}, ValueError, "positive factors")]:
        with pytest.raises(error, match=match):
            llm.scaled_rtn_model_(model, 4, 16, scales)
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), tiny.parameters(), strict=True))
    with pytest.raises(ValueError, match="bits must be"):
        llm.scaled_rtn_model_(model, 1, 16, {})


def test_salient_scale_makes_the_protected_channel_more_precise():
    """Scaling one input channel by s > 1 before rounding shrinks that channel's relative rounding error
    (its group's step is set by the other weights), the effect AWQ exploits."""
    gen = torch.Generator().manual_seed(8)
    w = torch.randn(64, 64, generator=gen)
    s = torch.ones(64)
    s[10] = 2.0
    err_plain = (llm.quantize_groupwise(w, 3, 64) - w)[:, 10].abs().mean()
    err_scaled = (llm.scaled_quantize(w, s, 3, 64) - w)[:, 10].abs().mean()
    assert err_scaled < 0.75 * err_plain


def test_validation():
    w = torch.randn(4, 32)
    with pytest.raises(ValueError, match="2-D"):
        llm.scaled_quantize(torch.randn(32), torch.ones(32), 3, 16)
    with pytest.raises(ValueError, match="group_size 24 does not divide"):
        llm.scaled_quantize(w, torch.ones(32), 3, 24)
    with pytest.raises(ValueError, match="xtx must be"):
        llm.search_clip(w, torch.randn(16, 16), 3, 16)
    with pytest.raises(ValueError, match="calibration windows"):
        llm.awq_model_(nn.Linear(2, 2), torch.zeros(0, 4, dtype=torch.int64), 3, 16)


@pytest.mark.parametrize(("bits", "group"), [(3, 16), (4, 64), (2, 8), (8, 32)])
def test_fast_rounding_is_exactly_quantize_groupwise(bits, group):
    gen = torch.Generator().manual_seed(bits * group)
    w = torch.randn(16, 64, generator=gen) * torch.rand(16, 1, generator=gen) * 3 + 0.05
    w[0] = 0.0  # an all-zero group
    w[1] = w[1].abs()  # groups without a negative weight
    assert torch.equal(llm.awq._rtn(w, bits, group), llm.quantize_groupwise(w, bits, group))


def test_step_growth_counts_groups_whose_step_grows():
    w = torch.tensor([[0.1, -0.2, 0.3, 0.05], [1.0, -0.3, 0.1, 0.2]])
    s = torch.tensor([1.0, 1.0, 2.0, 1.0])  # channel 2 doubled: row 0's group (max 0.3 → 0.6) grows, row 1's not
    assert llm.step_growth(w, s, 3, 4) == (1, 2)
    assert llm.step_growth(w, torch.ones(4), 3, 4) == (0, 0)
