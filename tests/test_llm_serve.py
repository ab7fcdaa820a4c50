"""Lesson 10's helpers: 4-bit packing into ONNX Runtime's MatMulNBits, genai-built models, decoding and timing, the
KIVI-style KV cache and Block Influence layer dropping — on tiny random Llama models (built once per session), and
against ONNX Runtime's own operator where it is the reference."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import lecture_utils as lu

L = lu.llm


def _tiny_llama(layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def llama():
    return _tiny_llama(3)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny random Llama (2 layers, hidden 64, vocabulary 256) saved with a word-level tokenizer, as a Hugging Face
    folder the genai builder reads; and the model itself."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    model = _tiny_llama(2)
    model.save_pretrained(folder)
    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(256)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="t0", bos_token="t1", eos_token="t2").save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="session")
def tiny_builds(tiny_folder):
    """The builder's fp32 and 4-bit graphs of the tiny model (cached by their settings: built once)."""
    folder, _ = tiny_folder
    return {p: L.build_ort_llm(p, src=folder) for p in ("fp32", "int4")}


# ---------------------------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------------------------

def test_pack_int4_layout_and_round_trip():
    q = torch.tensor([[1, 2, 15, 0], [7, 8, 3, 12]])
    packed = L.pack_int4(q)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[1 | 2 << 4, 15], [7 | 8 << 4, 3 | 12 << 4]]  # even index in the low nibble
    assert torch.equal(L.unpack_int4(packed), q.to(torch.uint8))
    with pytest.raises(ValueError, match="4-bit"):
        L.pack_int4(torch.tensor([[16, 0]]))
    with pytest.raises(ValueError, match="even"):
        L.pack_int4(torch.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("symmetric", [True, False])
def test_block_integers_recover_rtn(symmetric):
    w = torch.randn(6, 64)
    w_hat = L.quantize_groupwise(w, 4, 32, symmetric=symmetric)
    q, scale, zero = L.block_integers(w_hat, w, 32, symmetric)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    back = (q.float().reshape(6, 2, 32) - zero.float().unsqueeze(-1)) * scale.unsqueeze(-1)
    assert torch.allclose(back.reshape(6, 64), w_hat, atol=1e-6)
    if symmetric:
        assert torch.all(zero == 8)
    with pytest.raises(ValueError, match="not on the"):
        L.block_integers(w, w, 32, symmetric)  # unquantized weights have no such integers


@pytest.mark.parametrize("symmetric,k", [(True, 64), (False, 96)])  # 96: an odd number of blocks (zero-point pad)
def test_packed_weights_multiply_like_onnxruntime(symmetric, k, tmp_path):
    """MatMulNBits (accuracy level 0: float32 arithmetic) with the packed arrays computes x @ w_hat.T."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n = 16
    w = torch.randn(n, k)
    w_hat = L.quantize_groupwise(w, 4, 32, symmetric=symmetric)
    q, scale, zero = L.block_integers(w_hat, w, 32, symmetric)
    b, s, zp = L.matmulnbits_arrays(q, scale, None if symmetric else zero, 32)
    assert torch.allclose(L.dequantize_matmulnbits(b, s, zp, k), w_hat, atol=1e-6)
    inputs = ["x", "B", "scales"] + ([] if zp is None else ["zp"])
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(s, "scales")]
    if zp is not None:
        inits.append(numpy_helper.from_array(zp, "zp"))
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=32,
                            accuracy_level=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, tmp_path / "m.onnx")
    x = torch.randn(3, k)
    y = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    assert np.allclose(y[0], (x @ w_hat.T).numpy(), atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Built models, shipped weights, decoding
# ---------------------------------------------------------------------------------------------------------------

def test_built_fp32_model_matches_torch(tiny_folder, tiny_builds):
    _, model = tiny_folder
    ort_model = L.OrtCausalLM(tiny_builds["fp32"], threads=1)
    ids = torch.randint(3, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    assert torch.allclose(ort_model(input_ids=ids).logits, want, atol=1e-4)
    assert L.perplexity(ort_model, ids) == pytest.approx(L.perplexity(model, ids), rel=1e-4)
    assert L.ort_llm_meta(L.ort_llm_settings("fp32", src=tiny_folder[0])) is not None  # cached, keyed


@pytest.mark.parametrize("symmetric", [True, False])
def test_shipped_weights_run_what_torch_simulates(tiny_folder, tiny_builds, tmp_path, symmetric):
    _, model = tiny_folder
    sim = L.rtn_head_(L.rtn_model_(copy.deepcopy(model), 4, 32, symmetric=symmetric))
    out = L.ship_weights(sim, model, tiny_builds["int4"], tmp_path / "shipped", symmetric=symmetric)
    # the graph now holds exactly the simulated weights
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(out / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    node = next(n for n in proto.graph.node if n.name == "/model/layers.1/mlp/down_proj/MatMul_Q4")
    zp = inits[node.input[3]] if len(node.input) > 3 and node.input[3] else None
    assert (zp is None) == symmetric
    got = L.dequantize_matmulnbits(inits[node.input[1]], inits[node.input[2]], zp, 128)
    assert torch.allclose(got, sim.model.layers[1].mlp.down_proj.weight, atol=1e-6)
    # and its logits follow the torch simulation (up to the int8 activations of accuracy level 4)
    ids = torch.randint(3, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    ort_ppl = L.perplexity(L.OrtCausalLM(out, threads=1), ids)
    assert ort_ppl == pytest.approx(L.perplexity(sim, ids), rel=0.02)
    with pytest.raises(FileExistsError):
        L.ship_weights(sim, model, tiny_builds["int4"], out, symmetric=symmetric)
    with pytest.raises(ValueError, match="not on the"):  # unquantized weights cannot be shipped as 4-bit
        L.ship_weights(model, model, tiny_builds["int4"], tmp_path / "float", symmetric=symmetric)



@pytest.mark.parametrize("symmetric", [True, False])
def test_loading_shipped_weights_gives_back_the_simulated_model(tiny_folder, tiny_builds, tmp_path, symmetric):
    """What the graph multiplies by, read back into torch, is the model that was shipped (q/k/v split again)."""
    _, model = tiny_folder
    sim = L.rtn_head_(L.rtn_model_(copy.deepcopy(model), 4, 32, symmetric=symmetric))
    out = L.ship_weights(sim, model, tiny_builds["int4"], tmp_path / "shipped", symmetric=symmetric)
    back = L.load_shipped_weights_(copy.deepcopy(model), out)
    for (name, a), (_, b) in zip(sim.named_parameters(), back.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    ids = torch.randint(3, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    assert L.perplexity(back, ids) == pytest.approx(L.perplexity(sim, ids), rel=1e-5)
    with pytest.raises(ValueError, match="no MatMulNBits"):  # a float32 graph holds no 4-bit weights
        L.load_shipped_weights_(copy.deepcopy(model), tiny_builds["fp32"])
    with pytest.raises(FileNotFoundError, match="no model.onnx"):
        L.load_shipped_weights_(copy.deepcopy(model), tmp_path)
    with pytest.raises(TypeError, match="model"):
        L.load_shipped_weights_("not a model", out)


def test_peak_memory_is_measured_in_a_fresh_process_and_bad_input_is_refused(tiny_builds, tmp_path):
    ballast = np.ones(400_000_000 // 8)  # 400 MB held (and touched) by this process while the child measures
    assert L.peak_resident_mb() > 400
    out = L.peak_memory_mb("ort", [1, 17, 42, 5], 4, folder=tiny_builds["int4"])
    assert out.peak_mb >= out.before_mb > 0 and out.model_peak_mb == out.peak_mb - out.before_mb
    # the child's own peak: a tiny model adds little, and the parent's 400 MB (which getrusage's ru_maxrss carries
    # across exec on Linux) must not show up in it
    assert out.model_peak_mb < 200, out
    del ballast
    with pytest.raises(ValueError, match="runtime must be one of"):
        L.peak_memory_mb("tensorrt", [1, 2])
    with pytest.raises(ValueError, match="folder is needed"):
        L.peak_memory_mb("ort", [1, 2])
    with pytest.raises(ValueError, match="folder is needed"):
        L.peak_memory_mb("torch_fp32", [1, 2], folder=tiny_builds["int4"])
    with pytest.raises(FileNotFoundError, match="genai_config"):
        L.peak_memory_mb("ort", [1, 2], folder=tmp_path)
    with pytest.raises(ValueError, match="prompt_ids"):
        L.peak_memory_mb("torch_fp32", [])
    with pytest.raises(ValueError, match="new_tokens"):
        L.peak_memory_mb("torch_fp32", [1, 2], new_tokens=1)

def test_peak_resident_reads_vmhwm_and_says_nan_without_it(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 900000 kB\nVmHWM:\t  250000 kB\nVmRSS:\t  120000 kB\n")
    assert L.peak_resident_mb(status) == pytest.approx(250000 * 1024 / 1e6)
    status.write_text("Name:\tpython\n")
    assert math.isnan(L.peak_resident_mb(status))
    assert math.isnan(L.peak_resident_mb(tmp_path / "missing"))


def test_decoders_agree_with_generate(tiny_folder, tiny_builds):
    _, model = tiny_folder
    prompt = [1, 17, 42, 99, 5, 230]
    with torch.no_grad():
        want = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                              pad_token_id=2, eos_token_id=None)[0, len(prompt):].tolist()
    torch_run = L.time_decode(L.TorchDecoder(model), prompt, 8)
    assert torch_run.tokens == want
    assert torch_run.ttft_ms > 0 and torch_run.decode_tok_s > 0
    genai = L.GenaiDecoder(tiny_builds["fp32"], threads=1, max_length=64)
    assert L.time_decode(genai, prompt, 8).tokens == want
    batched = L.time_decode(L.TorchDecoder(model), prompt, 4, batch=3)
    assert batched.tokens == want[:4] and batched.batch == 3
    table = L.round_robin_decode({"torch": L.TorchDecoder(model), "genai": genai}, prompt, 4, repeats=2)
    assert set(table) == {"torch", "genai"} and all(len(v.runs) == 2 for v in table.values())
    assert table["genai"].tokens == want[:4]
    with pytest.raises(RuntimeError, match="prefill"):
        L.TorchDecoder(model).step()


@pytest.mark.parametrize("symmetric", [True, False])
def test_product_rate_runs_the_models_own_products_and_refuses_bad_input(tiny_folder, tiny_builds, tmp_path,
                                                                         symmetric):
    import onnx
    from onnx import numpy_helper

    _, model = tiny_folder
    folder = tiny_builds["int4"]
    if not symmetric:  # an affine graph: its products carry zero points, whose bytes count too
        sim = L.rtn_head_(L.rtn_model_(copy.deepcopy(model), 4, 32, symmetric=False))
        folder = L.ship_weights(sim, model, folder, tmp_path / "affine", symmetric=False)
    graph = onnx.load(str(folder / "model.onnx")).graph
    sizes = {t.name: numpy_helper.to_array(t).nbytes for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    packed = sum(sizes[name] for n in nodes for name in n.input[1:] if name)  # integers, scales (, zero points)
    assert any(len(n.input) > 3 and n.input[3] for n in nodes) != symmetric
    once = L.product_rate(folder, packed / 1e6, threads=1, repeats=2)
    assert once.products == len(nodes) and once.megabytes == pytest.approx(packed / 1e6)  # the model's bytes, exactly
    assert once.gbs == pytest.approx(once.megabytes / once.run_ms) and once.threads == 1
    twice = L.product_rate(folder, 2 * packed / 1e6 + 1e-6, threads=1, repeats=2)  # cycles through them again
    assert twice.products == 2 * len(nodes) + 1
    assert L.product_rate(folder, 1e-6, threads=1, repeats=1).products == 1
    from onnx import helper

    levels = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in nodes}
    graph, nbytes = L.products_graph(folder, packed / 1e6)
    assert nbytes == packed and [n.op_type for n in graph.graph.node] == ["MatMulNBits"] * len(nodes)
    assert [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in graph.graph.node] == list(
        levels.values())  # the model's own shapes and attributes, in its order
    floats, _ = L.products_graph(folder, packed / 1e6, accuracy_level=0)
    assert {helper.get_attribute_value(a) for n in floats.graph.node for a in n.attribute
            if a.name == "accuracy_level"} == {0}
    assert L.product_rate(folder, 1e-6, threads=1, repeats=1, accuracy_level=0).products == 1
    for bad in (5, -1, "4", 4.0):
        with pytest.raises(ValueError, match="accuracy_level"):
            L.product_rate(folder, 1, accuracy_level=bad)
    with pytest.raises(ValueError, match="no MatMulNBits"):
        L.product_rate(tiny_builds["fp32"], 1)
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        L.product_rate(tmp_path / "missing", 1)
    for bad in (0, -1, 5000, float("nan")):
        with pytest.raises(ValueError, match="megabytes"):
            L.product_rate(folder, bad)
    with pytest.raises(TypeError, match="megabytes"):
        L.product_rate(folder, "4")
    with pytest.raises(ValueError, match="threads"):
        L.product_rate(folder, 1, threads=0)
    with pytest.raises(ValueError, match="repeats"):
        L.product_rate(folder, 1, repeats=0)


def test_gain_relation_reads_speed_ups_with_a_margin():
    assert [L.gain_relation(g, 1.4) for g in (1.62, 1.4, 1.21, 1.6, 1.22)] == ["more", "same", "less", "same", "same"]
    assert L.gain_relation(1.24, 1.0, margin=1.5) == "same" and L.gain_relation(2.0, 1.0, margin=1.5) == "more"
    assert L.gain_relation(0.5, 1.0, margin=1.0) == "less" and L.gain_relation(1.0, 1.0, margin=1.0) == "same"
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="gain"):
            L.gain_relation(bad, 1.0)
        with pytest.raises(ValueError, match="reference"):
            L.gain_relation(1.0, bad)
    with pytest.raises(ValueError, match="margin"):
        L.gain_relation(1.0, 1.0, margin=0.9)
    with pytest.raises(TypeError, match="gain"):
        L.gain_relation("1.2", 1.0)


def test_shipped_options_are_one_source_for_the_preparation_and_the_lesson():
    from lecture_utils.config import get_scale

    laptop = get_scale("laptop")
    opts = L.shipped_options(laptop)
    assert opts == {"calib_tokens": laptop.serve_gptq_calib_tokens, "seq_len": laptop.llm_seq_len,
                    "gptq_layers": laptop.llm_gptq_layers, "layers": laptop.llm_layers}
    assert L.shipped_settings("gptq", **opts)["calib_tokens"] == laptop.serve_gptq_calib_tokens
    with pytest.raises(TypeError, match="scale must be"):
        L.shipped_options("laptop")


def test_bandwidth_and_bound(llama):
    n = sum(m.weight.numel() for m in L.decoder_linears(llama).values()) + llama.lm_head.weight.numel()
    assert L.read_bytes_per_token(llama) == 4 * n
    assert L.read_bytes_per_token(llama, 4, 32) == pytest.approx(n * (0.5 + 4 / 32))
    assert L.read_bytes_per_token(llama, 4, 32, kv_bytes=100) == pytest.approx(n * (0.5 + 4 / 32) + 100)
    n_head = llama.lm_head.weight.numel()  # lesson 09's variants: decoder linears quantized, the output layer float32
    assert L.read_bytes_per_token(llama, 3, 64, scale_bytes=2, zero_bytes=2, head_bytes=4) == pytest.approx(
        (n - n_head) * (3 / 8 + 4 / 64) + 4 * n_head)
    assert L.read_bytes_per_token(llama, float_bytes=2.125, head_bytes=4) == pytest.approx(
        (n - n_head) * 2.125 + 4 * n_head)
    for bad in (0, -1.0, "4"):
        with pytest.raises((ValueError, TypeError), match="head_bytes"):
            L.read_bytes_per_token(llama, 4, 32, head_bytes=bad)
    assert L.decode_bound_tok_s(10, 5e8) == pytest.approx(20)
    with pytest.raises(ValueError, match="bandwidth_gbs"):
        L.decode_bound_tok_s(0, 1)
    assert L.resident_mb() > 0 or math.isnan(L.resident_mb())


# ---------------------------------------------------------------------------------------------------------------
# The KV cache
# ---------------------------------------------------------------------------------------------------------------

def test_kivi_quantize_per_channel_and_per_token():
    x = torch.randn(1, 2, 8, 4)
    x[..., 1] *= 50  # an outlier channel, as keys have
    per_channel = L.kivi_quantize(x, 2, dim=-2)
    per_token = L.kivi_quantize(x, 2, dim=-1)
    for got, dim in ((per_channel, -2), (per_token, -1)):  # 4 levels per slice, extremes kept
        assert torch.allclose(got.amin(dim), x.amin(dim), atol=1e-5)
        assert torch.allclose(got.amax(dim), x.amax(dim), atol=1e-4)
        assert got.movedim(dim, -1).reshape(-1, x.shape[dim]).unique(dim=0).shape[0] >= 1
    lo, hi = x.amin(-2, keepdim=True), x.amax(-2, keepdim=True)
    step = (hi - lo) / 3
    assert torch.all((per_channel - x).abs() <= step / 2 + 1e-5)
    # keys with an outlier channel: per channel is far more accurate than per token
    assert (per_channel - x)[..., 0].abs().mean() < (per_token - x)[..., 0].abs().mean()
    with pytest.raises(ValueError, match="bits"):
        L.kivi_quantize(x, 0, -1)


def test_kv_perplexity(llama):
    ids = torch.randint(3, 256, (2, 40), generator=torch.Generator().manual_seed(3))
    plain = L.perplexity(llama, ids)
    assert L.kv_perplexity(llama, ids, None, chunk=8) == pytest.approx(plain, rel=1e-4)
    assert L.kv_perplexity(llama, ids, 8, chunk=8, residual=8, group=8) == pytest.approx(plain, rel=0.01)
    two = L.kv_perplexity(llama, ids, 2, chunk=8, residual=8, group=8)
    assert two != pytest.approx(plain, rel=1e-6)  # 2 bits changes something
    # nothing older than the residual window: the cache stays exact whatever the bits
    assert L.kv_perplexity(llama, ids, 2, chunk=8, residual=64, group=8) == pytest.approx(plain, rel=1e-4)
    calls = []

    def spy(x, bits, dim):
        calls.append(dim)
        return L.kivi_quantize(x, bits, dim)

    L.kv_perplexity(llama, ids[:1], 4, chunk=8, residual=8, group=8, quantizer=spy)
    assert set(calls) == {-1, -2}


def test_kivi_cache_bytes(llama):
    cfg = llama.config
    assert L.kivi_cache_bytes(cfg, 100, None) == L.model_kv_bytes_per_token(cfg, 2) * 100
    # 96 tokens, 32 recent: 64 quantized at 4 bits + constants + 32 tokens at fp16
    layers, heads, d = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
    want = (2 * layers * heads * d * 64 * 0.5 + layers * heads * d * 2 * 2 * 2 + layers * heads * 64 * 2 * 2
            + 2 * layers * heads * d * 32 * 2)
    assert L.kivi_cache_bytes(cfg, 96, 4, group=32, residual=32) == pytest.approx(want)
    assert L.kivi_cache_bytes(cfg, 8192, 2) < L.kivi_cache_bytes(cfg, 8192, 4) < L.kivi_cache_bytes(cfg, 8192, None)


# ---------------------------------------------------------------------------------------------------------------
# Layer dropping
# ---------------------------------------------------------------------------------------------------------------

def test_block_influence_and_dropping(llama):
    with torch.no_grad():  # layer 1 becomes an identity: its residual branches add zero
        llama.model.layers[1].self_attn.o_proj.weight.zero_()
        llama.model.layers[1].mlp.down_proj.weight.zero_()
    ids = torch.randint(3, 256, (2, 16), generator=torch.Generator().manual_seed(4))
    bi = L.block_influence(llama, ids)
    assert bi.shape == (3,) and abs(bi[1].item()) < 1e-9 and bi[0] > 0 and bi[2] > 0
    assert L.layers_to_drop(3, 1, "bi", bi) == [1]
    assert L.layers_to_drop(30, 3, "top") == [27, 28, 29]
    assert L.layers_to_drop(30, 3, "bottom") == [0, 1, 2]
    draws = {tuple(L.layers_to_drop(30, 6, "random", seed=s)) for s in range(4)}
    assert len(draws) > 1 and all(len(d) == 6 for d in draws)
    with torch.no_grad():
        want = llama(input_ids=ids).logits
    dropped = L.drop_layers_(copy.deepcopy(llama), [1])
    assert dropped.config.num_hidden_layers == 2 and len(dropped.model.layers) == 2
    assert [lay.self_attn.layer_idx for lay in dropped.model.layers] == [0, 1]
    with torch.no_grad():
        assert torch.allclose(dropped(input_ids=ids).logits, want, atol=1e-5)
        gen = dropped.generate(input_ids=ids[:1, :5], max_new_tokens=4, do_sample=False, pad_token_id=2,
                               eos_token_id=None)
    assert L.time_decode(L.TorchDecoder(dropped), ids[0, :5].tolist(), 4).tokens == gen[0, 5:].tolist()
    with pytest.raises(ValueError, match="strategy"):
        L.layers_to_drop(3, 1, "middle")
    with pytest.raises(ValueError, match="scores"):
        L.layers_to_drop(3, 1, "bi")


def test_decode_bound_reference_and_bad_input():
    """Lesson 10's exercise reference: bytes of weights, block scales and cache; a float format has no scales."""
    assert L.decode_bound(10.0, 1_000_000, 32, None, 0, 0) == pytest.approx(10e9 / 4e6)
    assert L.decode_bound(10.0, 1_000_000, 4, 32, 4, 1e5) == pytest.approx(10e9 / (1e6 * (0.5 + 4 / 32) + 1e5))
    for bad, match in [((0, 1000, 4, 32, 4, 0), "bandwidth_gbs"), ((10, 0, 4, 32, 4, 0), "n_weights"),
                       ((10, 1000, 0, 32, 4, 0), "bits"), ((10, 1000, 4, 0, 4, 0), "block_size"),
                       ((10, 1000, 4, 32, -1, 0), "scale_bytes"), ((10, 1000, 4, 32, 4, -5), "kv_bytes"),
                       ((10, 1000, 4, 32, "4", 0), "scale_bytes")]:
        with pytest.raises((ValueError, TypeError), match=match):
            L.decode_bound(*bad)
