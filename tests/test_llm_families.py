"""lu.llm on small random models of other families (conftest's ``tiny_lm``): every helper either gives a result
checked against a reference, or one clear refusal that names the families it supports."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import LLAMA_STYLE, SLIDING_WINDOW, make_tiny_lm

from lecture_utils import llm
from lecture_utils.llm.calibration import _input_groups

SMOOTHABLE = ("llama", "llama_mha", "qwen2", "qwen2_sliding", "mistral")
SMOOTH_REFUSED = {"phi3": "fused projections", "gemma": "1 \\+ weight", "gemma2": "more weighted parts",
                  "gpt2": "Llama-style", "opt": "Llama-style"}
# Relative precision of float32 weights and activations after a rescaling (the balance and the logits)
SMOOTH_RTOL = 1e-5


def _windows(n: int = 4, length: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 96, (n, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, windows):
    with torch.no_grad():
        return model(input_ids=windows, use_cache=False).logits


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- weight-only helpers: verified or refused

def test_weight_only_helpers_are_verified_on_llama_style_families_and_refuse_others(tiny_lm):
    family, model = tiny_lm
    if family not in LLAMA_STYLE:
        for call in (lambda m: llm.rtn_model_(m, 4), lambda m: llm.prune_model_(m, 0.5, "magnitude"),
                     lambda m: llm.gptq_model_(m, _windows(), 4), lambda m: llm.calibrate(m, _windows()),
                     lambda m: llm.model_bytes(m, 4, 16)):
            m = copy.deepcopy(model)
            with pytest.raises(TypeError, match="Llama-style.*SmolLM2"):
                call(m)
            assert all(torch.equal(a, b) for a, b in zip(_state(m).values(), _state(model).values(), strict=True))
        return
    linears = llm.decoder_linears(model)
    in_blocks = sum(isinstance(mod, torch.nn.Linear) for layer in model.model.layers for mod in layer.modules())
    assert len(linears) == in_blocks  # every projection of every block, fused ones included (Phi-3)
    rtn = llm.rtn_model_(copy.deepcopy(model), 4, 16)
    for name, lin in llm.decoder_linears(rtn).items():
        assert torch.equal(lin.weight, llm.quantize_groupwise(linears[name].weight, 4, 16)), name
    for method in ("magnitude", "wanda"):
        stats = llm.calibrate(model, _windows(), hessian=False)
        pruned = llm.prune_model_(copy.deepcopy(model), 0.5, method, stats=stats)
        for name, lin in llm.decoder_linears(pruned).items():
            w = linears[name].weight
            keep = llm.wanda_mask(w, stats[name].sq_norm.sqrt(), 0.5) if method == "wanda" else \
                llm.magnitude_mask(w, 0.5)
            assert torch.equal(lin.weight, w * keep), (method, name)


def test_one_shot_gptq_uses_each_layers_own_hessian_on_every_family(tiny_lm):
    """calibrate() runs the whole model, so its Hessians are right by construction; one-shot GPTQ catches layer
    inputs itself and must give the same matrices — also where sliding and full layers get different masks."""
    family, model = tiny_lm
    if family not in LLAMA_STYLE:
        pytest.skip("refused: see the test above")
    windows = _windows()
    stats = llm.calibrate(model, windows, batch_size=2)
    quantized = llm.gptq_model_(copy.deepcopy(model), windows, 4, None, sequential=False, act_order=False,
                               batch_size=2)
    original, got = llm.decoder_linears(model), llm.decoder_linears(quantized)
    for names in _input_groups(original):
        stacked = torch.cat([original[n].weight for n in names])
        want = llm.gptq_quantize(stacked, stats[names[0]].xtx, 4, None, act_order=False)
        rows = [original[n].weight.shape[0] for n in names]
        for n, part in zip(names, want.split(rows), strict=True):
            torch.testing.assert_close(got[n].weight, part, atol=1e-5, rtol=0, msg=f"{family}: {n}")


# ---------------------------------------------------------------- SmoothQuant: same function, balanced, or refused

def test_smoothquant_keeps_the_function_and_balances_every_smoothed_input_or_refuses(tiny_lm):
    family, model = tiny_lm
    windows = _windows()
    if family not in SMOOTHABLE:
        stats = llm.calibrate(model, windows, hessian=False) if family in LLAMA_STYLE else {}
        m = copy.deepcopy(model)
        with pytest.raises(TypeError, match=SMOOTH_REFUSED[family]):
            llm.smoothquant_model_(m, stats)
        assert all(torch.equal(a, b) for a, b in zip(_state(m).values(), _state(model).values(), strict=True))
        return
    stats = llm.calibrate(model, windows, hessian=False)
    smooth = llm.smoothquant_model_(copy.deepcopy(model), stats, alpha=0.5)
    before, after = _logits(model, windows), _logits(smooth, windows)
    torch.testing.assert_close(after, before, rtol=0, atol=SMOOTH_RTOL * before.abs().max().item())
    # α = 0.5 promises max|X_j| / s_j = s_j · max|W_j|: measured on the smoothed model, activations and weights
    # have the same per-channel maxima for q/k/v, gate/up and down_proj alike (in float64, so that float32 rounding
    # of the forward pass, ~1e-6 after a few layers, does not hide a real imbalance)
    model64 = copy.deepcopy(model).double()
    smooth = llm.smoothquant_model_(copy.deepcopy(model64), llm.calibrate(model64, windows, hessian=False), alpha=0.5)
    again = llm.calibrate(smooth, windows, hessian=False)
    for i, layer in enumerate(smooth.model.layers):
        for key, group in (("self_attn.q_proj", ["q_proj", "k_proj", "v_proj"]),
                           ("mlp.gate_proj", ["gate_proj", "up_proj"]), ("mlp.down_proj", ["down_proj"])):
            owner = layer.self_attn if key.startswith("self_attn") else layer.mlp
            w_max = torch.stack([getattr(owner, n).weight.abs().amax(0) for n in group]).amax(0)
            x_max = again[f"model.layers.{i}.{key}"].absmax
            torch.testing.assert_close(x_max.double(), w_max, rtol=1e-6, atol=0, msg=f"{family} layer {i} {key}")


def test_the_old_order_would_leave_gate_and_up_unbalanced():
    """The test above can fail: smoothing gate/up before down_proj (the former order) rescales up_proj afterwards."""
    model = make_tiny_lm("llama")
    windows = _windows()
    stats = llm.calibrate(model, windows, hessian=False)
    m = copy.deepcopy(model)
    with torch.no_grad():
        for i, layer in enumerate(m.model.layers):
            mlp = layer.mlp
            for norm_w, prev, linears, key in [(layer.post_attention_layernorm.weight, None,
                                                [mlp.gate_proj, mlp.up_proj], "mlp.gate_proj"),
                                               (None, mlp.up_proj, [mlp.down_proj], "mlp.down_proj")]:
                w_max = torch.stack([lin.weight.abs().amax(0) for lin in linears]).amax(0)
                s = llm.smooth_scales(stats[f"model.layers.{i}.{key}"].absmax, w_max, 0.5)
                if norm_w is not None:
                    norm_w.copy_((norm_w.double() / s).float())
                else:
                    prev.weight.copy_((prev.weight.double() / s.unsqueeze(1)).float())
                for lin in linears:
                    lin.weight.copy_((lin.weight.double() * s.unsqueeze(0)).float())
    again = llm.calibrate(m, windows, hessian=False)
    mlp = m.model.layers[0].mlp
    w_max = torch.stack([mlp.gate_proj.weight.abs().amax(0), mlp.up_proj.weight.abs().amax(0)]).amax(0)
    ratio = again["model.layers.0.mlp.gate_proj"].absmax / w_max
    assert (ratio - 1).abs().max() > 0.05


def test_smoothquant_refuses_bad_statistics_and_bad_factors():
    model = make_tiny_lm("llama")
    stats = llm.calibrate(model, _windows(), hessian=False)
    broken = dict(stats)
    name = "model.layers.0.mlp.down_proj"
    broken[name] = llm.InputStats(stats[name].xtx, stats[name].sq_norm, stats[name].absmax.clone(), 1)
    broken[name].absmax[3] = float("nan")
    m = copy.deepcopy(model)
    with pytest.raises(ValueError, match="absmax.*NaN"):
        llm.smoothquant_model_(m, broken)
    assert torch.equal(m.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)

    def one_factor(a, w, alpha):  # a plausible slip: a single number for every channel
        return (a.max() / w.max()).sqrt().reshape(1)

    def zeros(a, w, alpha):
        return torch.zeros_like(a)

    with pytest.raises(ValueError, match="`.*one_factor` must return one smoothing factor.*shape"):
        llm.smoothquant_model_(copy.deepcopy(model), stats, scale_fn=one_factor)
    with pytest.raises(ValueError, match="zeros.*> 0"):
        llm.smoothquant_model_(copy.deepcopy(model), stats, scale_fn=zeros)
    with pytest.raises(ValueError, match="act_absmax.*>= 0"):
        llm.smooth_scales(-torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        llm.smooth_scales(torch.tensor([1.0, float("nan")]), torch.ones(2))


# ---------------------------------------------------------------- the KV cache against a measured one

@pytest.mark.parametrize("tokens", [5, SLIDING_WINDOW, 16, 40])
def test_kv_cache_formula_equals_the_measured_cache_on_every_family(tiny_lm, tokens):
    family, model = tiny_lm
    ids = torch.randint(0, 96, (1, tokens), generator=torch.Generator().manual_seed(tokens))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    assert llm.model_kv_bytes(model.config, tokens, 4) == llm.measured_cache_bytes(cache), family
    if llm.sliding_window_layers(model.config):
        with pytest.raises(ValueError, match="sliding-window.*model_kv_bytes"):
            llm.model_kv_bytes_per_token(model.config)
    else:
        assert llm.model_kv_bytes_per_token(model.config) * tokens == llm.measured_cache_bytes(cache)


def test_the_kv_cache_after_generation_matches_too():
    for family in ("mistral", "gemma2", "llama"):
        model = make_tiny_lm(family)
        ids = _windows(1, 6)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                 do_sample=False, return_dict_in_generate=True, pad_token_id=0)
        held = out.sequences.shape[1] - 1  # the last token's keys and values are not computed
        assert llm.model_kv_bytes(model.config, held, 4) == llm.measured_cache_bytes(out.past_key_values), family


# ---------------------------------------------------------------- already quantized, NaN, wrong inputs

@pytest.mark.parametrize("kind", ["torch.ao", "torchao"])
def test_an_already_quantized_model_is_refused_not_passed_through(kind):
    from lecture_utils import quantize

    model = make_tiny_lm("llama")
    q = quantize.dynamic_int8(model) if kind == "torch.ao" else quantize.torchao_int8(model)
    for call in (lambda: llm.rtn_model_(q, 4), lambda: llm.gptq_model_(q, _windows(), 4),
                 lambda: llm.prune_model_(q, 0.5, "magnitude"), lambda: llm.calibrate(q, _windows()),
                 lambda: llm.smoothquant_model_(q, {}), lambda: llm.model_bytes(q, 4, 16)):
        with pytest.raises(TypeError, match="quantized already"):
            call()
    assert llm.perplexity(q, _windows()) > 1  # measuring a quantized model is fine


def test_nan_weights_and_activations_raise():
    model = make_tiny_lm("llama")
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="perplexity is undefined"):
        llm.perplexity(broken, _windows())
    with pytest.raises(ValueError, match="NaN"):
        llm.rtn_model_(copy.deepcopy(broken), 4)
    with pytest.raises(ValueError, match="down_proj.*NaN"):
        llm.calibrate(broken, _windows())
    with pytest.raises(ValueError, match="NaN"):
        llm.fake_quantize_activation(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="empty"):
        llm.fake_quantize_activation(torch.zeros(0))
    with pytest.raises(ValueError, match="all zero"):
        llm.gptq_quantize(torch.randn(4, 8), torch.zeros(8, 8), 4)
    with pytest.raises(ValueError, match="finite"):
        llm.score_mask(torch.tensor([[1.0, float("nan")], [0.5, 0.2]]))
    with pytest.raises(ValueError, match="x_norm.*>= 0"):
        llm.wanda_mask(torch.randn(4, 8), -torch.ones(8))


def test_token_ids_are_checked_against_the_model():
    model = make_tiny_lm("llama")
    with pytest.raises(ValueError, match="vocabulary"):
        llm.perplexity(model, torch.full((2, 8), 500))
    with pytest.raises(TypeError, match="int64"):
        llm.perplexity(model, _windows().float())
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        llm.calibrate(model, _windows(1, 80))
    with pytest.raises(ValueError, match="non-empty"):
        llm.perplexity(model, torch.zeros(0, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="vocabulary"):
        llm.forward_ms(model, torch.full((1, 4), -1))


def test_an_encoder_is_refused_by_the_language_model_helpers(tiny_bert):
    with pytest.raises(TypeError, match="Llama-style"):
        llm.rtn_model_(tiny_bert, 4)
    with pytest.raises((TypeError, ValueError), match="causal language model|use_cache"):
        llm.perplexity(tiny_bert, _windows())


# ---------------------------------------------------------------- student functions: shape, dtype, finite

def test_a_students_quantizer_or_mask_of_the_wrong_shape_is_never_broadcast():
    model = make_tiny_lm("llama")
    before = _state(model)

    def first_row_only(w, bits, group_size):
        return llm.quantize_groupwise(w, bits, group_size)[:1]

    def as_int(w, bits, group_size):
        return torch.round(w).to(torch.int64)

    def with_nan(w, bits, group_size):
        return w * float("nan")

    for fn, match in ((first_row_only, "first_row_only.*shape.*never broadcast"), (as_int, "as_int.*floating"),
                      (with_nan, "with_nan.*NaN")):
        m = copy.deepcopy(model)
        with pytest.raises(ValueError, match=match):
            llm.rtn_model_(m, 4, 16, quantize=fn)
    stats = llm.calibrate(model, _windows(), hessian=False)

    def one_row_mask(w, x_norm, sparsity):
        return llm.wanda_mask(w, x_norm, sparsity)[:1]

    def scores_not_mask(w, x_norm, sparsity):
        return w.abs() * x_norm

    for fn, match in ((one_row_mask, "one_row_mask.*shape"), (scores_not_mask, "scores_not_mask.*True/False")):
        m = copy.deepcopy(model)
        with pytest.raises(ValueError, match=match):
            llm.prune_model_(m, 0.5, "wanda", stats=stats, mask_fn=fn)
        assert all(torch.equal(a, b) for a, b in zip(_state(m).values(), before.values(), strict=True))
    m = llm.prune_model_(copy.deepcopy(model), 0.5, "wanda", stats=stats,
                        mask_fn=lambda w, x, s: llm.wanda_mask(w, x, s).int())  # 0/1 integers are a mask too
    reference = llm.prune_model_(copy.deepcopy(model), 0.5, "wanda", stats=stats)
    assert torch.equal(m.model.layers[0].mlp.up_proj.weight, reference.model.layers[0].mlp.up_proj.weight)


# ---------------------------------------------------------------- arguments read the wrong way

def test_arguments_that_would_be_read_the_wrong_way_are_refused():
    model = make_tiny_lm("llama")

    class Tok:
        chat_template = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) % 96 for c in text]}

    with pytest.raises(TypeError, match="single string"):
        llm.token_windows(Tok(), "one long review", 8, 4)
    with pytest.raises(TypeError, match="single string"):
        llm.generate(model, Tok(), "What is the capital of France?")
    with pytest.raises(ValueError, match="chat template"):
        llm.generate(model, Tok(), ["What is the capital of France?"])
    with pytest.raises(ValueError, match="group_size"):
        llm.model_bytes(model, 4, 0)
    with pytest.raises(ValueError, match="group_size 24 does not divide"):
        llm.model_bytes(model, 4, 24)  # rtn_model_ refuses it too: it is not a format
    with pytest.raises(ValueError, match="group_size 24 does not divide"):
        llm.rtn_model_(copy.deepcopy(model), 4, 24)
    with pytest.raises(ValueError, match="other_bytes"):
        llm.model_bytes(model, 4, 16, other_bytes=-2)
    with pytest.raises(ValueError, match="scale_bytes"):
        llm.bytes_per_weight(4, 32, scale_bytes=-1)
    for bad in (float("nan"), float("inf"), -4, 0):
        with pytest.raises(ValueError, match="bytes_per_number"):
            llm.kv_cache_bytes(2, 2, 16, 10, bad)
    with pytest.raises(TypeError, match="symmetric"):
        llm.quantize_groupwise(torch.randn(4, 8), 4, None, symmetric="no")
    with pytest.raises(TypeError, match="symmetric"):
        llm.rtn_model_(copy.deepcopy(model), 4, symmetric="no")
    with pytest.raises(ValueError, match=r"sparsity=0.9 disagrees with n_m=\(2, 4\)"):
        llm.prune_model_(copy.deepcopy(model), 0.9, "magnitude", n_m=(2, 4))
    with pytest.raises(ValueError, match="disagrees"):
        llm.magnitude_mask(torch.randn(4, 8), 0.25, n_m=(2, 4))
    assert llm.magnitude_mask(torch.randn(4, 8), n_m=(1, 4)).float().mean().item() == 0.25  # sparsity from n_m
    assert llm.magnitude_mask(torch.randn(4, 8), 0.75, n_m=(1, 4)).float().mean().item() == 0.25
    with pytest.raises(TypeError, match="n_m"):
        llm.magnitude_mask(torch.randn(4, 8), n_m=2)
    with pytest.raises(TypeError, match="hessian"):
        llm.calibrate(model, _windows(), hessian="no")


# ---------------------------------------------------------------- GPT-2's Conv1D in the encoder-era helpers

def test_conv1d_models_are_refused_by_the_helpers_that_act_on_nn_linear():
    """GPT-2's projections are transformers Conv1D: quantizing or pruning "every nn.Linear" would touch only its
    output layer and look done."""
    from lecture_utils import combine, prune, quantize

    gpt2 = make_tiny_lm("gpt2")
    before = _state(gpt2)
    for call in (lambda: quantize.dynamic_int8(gpt2), lambda: quantize.torchao_int8(gpt2),
                 lambda: quantize.fake_quantize_linears(gpt2, 8), lambda: prune.prune_global_(gpt2, 0.5),
                 lambda: prune.prune_layerwise_(gpt2, 0.5), lambda: prune.pruned_copy(gpt2, 0.5),
                 lambda: combine.linear_layers(gpt2)):
        with pytest.raises(ValueError, match=r"Conv1D \(transformer\.h\.0\.attn\.c_attn.*nn\.Linear \(BERT"):
            call()
    assert not prune.is_pruned(gpt2)
    assert all(torch.equal(a, b) for a, b in zip(_state(gpt2).values(), before.values(), strict=True))
    llama = make_tiny_lm("llama")  # the same helpers on a model of nn.Linear layers act on every block
    q = quantize.dynamic_int8(llama)
    assert sum(type(m).__name__ == "Linear" and "quantized" in type(m).__module__ for m in q.modules()) == 15
