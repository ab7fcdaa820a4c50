"""ONNX export and ONNX Runtime: logits against torch, int8 accuracy, pruned shapes, sizes on disk, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lecture_utils as lu
from lecture_utils import hardware, heads, measure, runtime, surgery, training
from lecture_utils.validate import BadType

# ORT fp32 runs the same float32 arithmetic in a different order (fused kernels): logits may differ by rounding.
FP32_ATOL = 1e-4
# ORT dynamic int8 on the smoke teacher: test accuracy within 5 points of its own fp32 export (64 examples, so
# one example is 1.6 points; a broken quantization lands near 50%).
INT8_ACCURACY_TOL = 0.05


def _batch(batch_size: int = 3, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (batch_size, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0  # one padded row: the attention mask must be honoured
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out


@pytest.fixture(scope="module")
def exported_once(tmp_path_factory):
    """The tiny BERT of conftest exported once for the module (an export takes seconds)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(cfg).eval()
    return runtime.export_onnx(model, _batch(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture
def exported(exported_once, tmp_path):
    """A private copy of the exported tiny BERT (graph and weights), so a test may move or replace it."""
    for f in (exported_once, exported_once.with_name(exported_once.name + ".data")):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path / exported_once.name


def test_exported_fixture_is_conftests_tiny_bert(tiny_bert, exported):
    torch.testing.assert_close(runtime.OrtModel(exported, threads=1)(**_batch()).logits, _logits(tiny_bert, _batch()),
                               atol=FP32_ATOL, rtol=0)


def test_fp32_logits_equal_torch_on_other_shapes(tiny_bert, exported):
    ort_model = runtime.OrtModel(exported, threads=1)
    for shape in [(1, 7), (5, 16)]:  # batch and sequence are dynamic: neither is the export's (3, 10)
        batch = _batch(*shape, seed=1)
        got = ort_model(**batch).logits
        assert got.shape == (shape[0], 2)
        torch.testing.assert_close(got, _logits(tiny_bert, batch), atol=FP32_ATOL, rtol=0)


def test_export_writes_external_data_and_size_counts_it(tiny_bert, exported):
    data = exported.with_name(exported.name + ".data")
    assert runtime.external_data_files(exported) == [data]
    expected = (exported.stat().st_size + data.stat().st_size) / 1e6
    assert runtime.onnx_size_mb(exported) == pytest.approx(expected)
    ort_model = runtime.OrtModel(exported)
    assert measure.size_mb(ort_model) == pytest.approx(expected)
    # the weights are all there in fp32: at least 4 bytes per torch parameter
    assert data.stat().st_size >= 4 * measure.count_parameters(tiny_bert) * 0.95


def test_session_follows_thread_policy(exported):
    assert runtime.OrtModel(exported).threads == torch.get_num_threads()
    sess = runtime.ort_session(exported, threads=1)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="threads"):
        runtime.OrtModel(exported, threads=0)


def test_ort_model_works_with_course_interfaces(tiny_bert, exported):
    ort_model = runtime.OrtModel(exported, threads=1)
    batches = [{**_batch(4, 12, seed=s), "labels": torch.tensor([0, 1, 1, 0])} for s in range(3)]
    want = training.evaluate(tiny_bert, batches, progress=False)
    got = training.evaluate(ort_model, batches, progress=False)
    assert got.accuracy == want.accuracy and got.loss == pytest.approx(want.loss, abs=1e-4)
    lat = measure.compare_latency({"torch": tiny_bert, "ort": ort_model}, _batch(), repeats=2, warmup=1)
    assert lat["ort"].batch_size == 3 and lat["ort"].repeats == 2
    bench = measure.benchmark(ort_model, _batch(), batches, repeats=2)
    assert bench.accuracy == want.accuracy and bench.size_mb == pytest.approx(
        runtime.onnx_size_mb(exported))
    # the numbers stored in the file: the exporter merges identical tensors (this random model's all-zero biases)
    assert 0.9 * measure.count_parameters(tiny_bert) < bench.params == ort_model.count_parameters()
    agree = runtime.agreement(tiny_bert, ort_model, batches)
    assert agree.same_prediction == 1.0 and agree.max_abs_diff < FP32_ATOL and agree.examples == 12


def test_int8_is_smaller_and_close(tiny_bert, exported, tmp_path):
    q = runtime.quantize_onnx_dynamic(exported, tmp_path / "tiny-int8.onnx")
    q_lin = runtime.quantize_onnx_dynamic(exported, tmp_path / "tiny-int8-lin.onnx", embeddings=False)
    assert runtime.external_data_files(q) == []  # one self-contained file
    # tiny_bert is tiny: the graph itself weighs as much as its weights, so only "smaller" is expected here (the
    # teacher's ratio is checked in test_int8_accuracy_on_smoke_data_close_to_fp32)
    assert runtime.onnx_size_mb(q) < runtime.onnx_size_mb(exported)
    assert runtime.onnx_size_mb(q) < runtime.onnx_size_mb(q_lin)  # embeddings in int8 too
    batch = _batch(4, 12)
    got = runtime.OrtModel(q, threads=1)(**batch).logits
    ref = _logits(tiny_bert, batch)
    assert not torch.equal(got, ref)  # really quantized
    assert (got - ref).abs().max().item() < 0.1 * ref.abs().max().item() + 0.05


@pytest.mark.parametrize("surgery_kind", [None, "heads"])
def test_fusion_keeps_the_logits_and_fuses_layer_norms_and_gelus(tiny_bert, tmp_path, surgery_kind):
    model = tiny_bert if surgery_kind is None else heads.remove_heads(tiny_bert, {0: [1], 1: [0, 2, 3]})
    src = runtime.export_onnx(model, _batch(), tmp_path / "m.onnx")
    fused_path, fused = runtime.optimize_onnx(src, tmp_path / "m-fused.onnx")
    layers = len(surgery.encoder_layers(model))
    # per layer: two residual adds + layer norms (attention, feed-forward) and one bias + GELU
    assert fused == {"SkipLayerNormalization": 2 * layers, "BiasGelu": layers}
    assert runtime.external_data_files(fused_path) == []  # one file
    for batch in (_batch(), _batch(2, 9, seed=3), _batch(1, 5, seed=4)):
        torch.testing.assert_close(runtime.OrtModel(fused_path, threads=1)(**batch).logits, _logits(model, batch),
                                   atol=FP32_ATOL, rtol=0)
    # fused, then quantized: still the same model to int8 precision
    q = runtime.quantize_onnx_dynamic(fused_path, tmp_path / "m-fused-int8.onnx")
    got, ref = runtime.OrtModel(q, threads=1)(**_batch(4, 12)).logits, _logits(model, _batch(4, 12))
    assert (got - ref).abs().max().item() < 0.1 * ref.abs().max().item() + 0.05
    # ONNX Runtime's session fuses the residual add + layer norm itself when it loads the exported graph
    assert runtime.session_op_counts(src)["SkipLayerNormalization"] == 2 * layers
    assert sum(runtime.session_op_counts(fused_path).values()) <= sum(runtime.session_op_counts(src).values())
    # a graph with nothing to fuse comes back unchanged, with an empty count
    mlp = runtime.export_onnx(nn.Sequential(nn.Linear(6, 3)).eval(), torch.randn(2, 6), tmp_path / "mlp.onnx")
    assert runtime.optimize_onnx(mlp, tmp_path / "mlp-fused.onnx")[1] == {}
    with pytest.raises(ValueError, match="dst must differ"):
        runtime.optimize_onnx(src, src)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        runtime.optimize_onnx(src, fused_path)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        runtime.optimize_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx")


@pytest.mark.parametrize("surgery_kind", ["heads", "heads_and_layers"])
def test_pruned_models_export_with_their_shapes(tiny_bert, tmp_path, surgery_kind):
    if surgery_kind == "heads":
        model = heads.remove_heads(tiny_bert, {0: [1], 1: [0, 2, 3]})  # 3 and 1 heads left: different per layer
    else:
        model = surgery.drop_layers(heads.remove_heads(tiny_bert, {0: [0, 1]}), [1])  # one layer, 2 heads
    path = runtime.export_onnx(model, _batch(), tmp_path / f"{surgery_kind}.onnx")
    ort_model = runtime.OrtModel(path, threads=1)
    batch = _batch(2, 9, seed=3)
    torch.testing.assert_close(ort_model(**batch).logits, _logits(model, batch), atol=FP32_ATOL, rtol=0)
    import onnx

    proto = onnx.load(str(path))
    shapes = {tuple(t.dims) for t in proto.graph.initializer}
    for layer in surgery.encoder_layers(model):
        q = heads.self_attention(layer).query
        assert tuple(q.weight.shape[::-1]) in shapes or tuple(q.weight.shape) in shapes  # sliced, not padded
    n_matmuls = sum(n.op_type in ("MatMul", "Gemm") for n in proto.graph.node)
    assert n_matmuls == 6 * len(surgery.encoder_layers(model)) + 2 + 2 * len(surgery.encoder_layers(model))


def test_plain_module_with_one_tensor_input(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6)
    path = runtime.export_onnx(model, x, tmp_path / "mlp.onnx")
    ort_model = runtime.OrtModel(path, threads=1)
    torch.testing.assert_close(ort_model(torch.randn(2, 6).clone()).logits.shape, torch.Size([2, 3]))
    torch.testing.assert_close(ort_model(x).logits, model(x).detach(), atol=FP32_ATOL, rtol=0)


def test_bad_paths_give_clear_errors(tiny_bert, exported, tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx"):
        runtime.export_onnx(tiny_bert, _batch(), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runtime.export_onnx(tiny_bert, _batch(), tmp_path / "no" / "such" / "m.onnx")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        runtime.export_onnx(tiny_bert, _batch(), exported)
    with pytest.raises(TypeError, match="path"):
        runtime.OrtModel(123)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        runtime.OrtModel(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="dst must differ"):
        runtime.quantize_onnx_dynamic(exported, exported)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        runtime.quantize_onnx_dynamic(tmp_path / "missing.onnx", tmp_path / "q.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        runtime.OrtModel(corrupt)
    # the graph without its weights file
    moved = tmp_path / "alone"
    moved.mkdir()
    (moved / exported.name).write_bytes(exported.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"\.data"):
        runtime.onnx_size_mb(moved / exported.name)
    # overwrite=True replaces both files
    again = runtime.export_onnx(tiny_bert, _batch(), exported, overwrite=True)
    assert again == exported and runtime.onnx_size_mb(again) > 0


def _files(path):
    return {f.name: f.read_bytes() for f in sorted(path.parent.iterdir())}


def test_a_failed_export_with_overwrite_leaves_the_old_files_intact(tiny_bert, exported):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x):
            raise RuntimeError("broken on purpose")

    before = _files(exported)
    assert set(before) == {exported.name, exported.name + ".data"}
    with pytest.raises(RuntimeError, match="could not export Broken"):
        runtime.export_onnx(Broken(), torch.randn(2, 3), exported, overwrite=True)
    assert _files(exported) == before  # both byte-identical, and no temporary folder left behind
    torch.testing.assert_close(runtime.OrtModel(exported, threads=1)(**_batch()).logits, _logits(tiny_bert, _batch()),
                               atol=FP32_ATOL, rtol=0)


def test_a_successful_overwrite_replaces_both_files_and_drops_a_stale_data_file(exported):
    model = nn.Sequential(nn.Linear(6, 3)).eval()  # small enough that the exporter writes no .data
    runtime.export_onnx(model, torch.randn(2, 6), exported, overwrite=True)
    assert sorted(_files(exported)) == [exported.name] and runtime.external_data_files(exported) == []
    x = torch.randn(4, 6)
    torch.testing.assert_close(runtime.OrtModel(exported, threads=1)(x).logits, model(x).detach(), atol=FP32_ATOL,
                               rtol=0)


@pytest.mark.parametrize("writer", ["quantize", "optimize"])
def test_a_failed_quantization_or_fusion_leaves_the_old_destination(exported, tmp_path, monkeypatch, writer):
    import onnxruntime.quantization
    import onnxruntime.transformers.optimizer

    dst = tmp_path / "out" / "model.onnx"
    dst.parent.mkdir()
    runtime.quantize_onnx_dynamic(exported, dst)
    before = _files(dst)

    def half_written(_src, out, *args, **kwargs):
        Path(out).write_bytes(b"half a model")
        raise OSError("disk full")

    if writer == "quantize":
        monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", half_written)
        call = lambda: runtime.quantize_onnx_dynamic(exported, dst, overwrite=True)  # noqa: E731
    else:
        class Optimized:
            class model:  # noqa: N801 - mimics onnxruntime's OnnxModel
                class graph:  # noqa: N801
                    node = []

            def save_model_to_file(self, out, **kwargs):
                half_written(None, out)

        monkeypatch.setattr(onnxruntime.transformers.optimizer, "optimize_model", lambda *a, **k: Optimized())
        call = lambda: runtime.optimize_onnx(exported, dst, overwrite=True)  # noqa: E731
    with pytest.raises(OSError, match="disk full"):
        call()
    assert _files(dst) == before
    with pytest.raises(BadType, match="overwrite"):
        runtime.quantize_onnx_dynamic(exported, dst, overwrite="yes")


def test_ort_models_copy_and_evaluate_like_course_models(exported):
    import copy
    import pickle

    ort_model = runtime.OrtModel(exported, threads=1)
    twin = copy.deepcopy(ort_model)
    assert twin.session is not ort_model.session and twin.path == ort_model.path
    torch.testing.assert_close(twin(**_batch()).logits, ort_model(**_batch()).logits)
    torch.testing.assert_close(pickle.loads(pickle.dumps(ort_model))(**_batch()).logits, ort_model(**_batch()).logits)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 3)).eval()
    path = runtime.export_onnx(mlp, torch.randn(2, 6), exported.with_name("mlp.onnx"))
    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    want = training.evaluate(mlp, [(x, y)], progress=False)
    got = training.evaluate(runtime.OrtModel(path, threads=1), [(x, y)], progress=False)  # (x, y) batches too
    assert got.accuracy == want.accuracy and got.loss == pytest.approx(want.loss, abs=1e-5)
    with pytest.raises(ValueError, match=r"input 'input' must have shape \(batch, 6\), got \(2, 5\)"):
        runtime.OrtModel(path)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="add the batch dimension"):
        runtime.OrtModel(path)(torch.randn(6))


def test_unsupported_models_give_clear_errors(tiny_bert, exported, tmp_path):
    int8 = lu.quantize.dynamic_int8(tiny_bert)
    with pytest.raises(TypeError, match="quantize_onnx_dynamic"):
        runtime.export_onnx(int8, _batch(), tmp_path / "q.onnx")
    with pytest.raises(TypeError, match="already an ONNX Runtime model"):
        runtime.export_onnx(runtime.OrtModel(exported), _batch(), tmp_path / "o.onnx")
    with pytest.raises(TypeError, match="nn.Module"):
        runtime.export_onnx(lambda x: x, _batch(), tmp_path / "f.onnx")
    with pytest.raises(TypeError, match="dict of tensors"):
        runtime.export_onnx(tiny_bert, [1, 2, 3], tmp_path / "l.onnx")

    class DataDependent(nn.Module):  # control flow on a tensor's value: torch.export cannot trace it
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(RuntimeError, match="could not export DataDependent"):
        runtime.export_onnx(DataDependent(), torch.randn(2, 3), tmp_path / "dd.onnx")
    assert not (tmp_path / "dd.onnx").exists()
    ort_model = runtime.OrtModel(exported)
    with pytest.raises(ValueError, match="missing"):
        ort_model(input_ids=_batch()["input_ids"])


def test_int8_accuracy_on_smoke_data_close_to_fp32(tmp_path, prepared):
    teacher = lu.models.finetuned_teacher("smoke", device="cpu", progress=False)
    tok = lu.models.load_tokenizer("smoke")
    loaders = lu.data.sentiment_loaders(tok, "smoke")
    example = lu.data.fixed_batch(tok, ["a fine film"], 2, 32)
    fp32 = runtime.export_onnx(teacher, example, tmp_path / "teacher.onnx")
    int8 = runtime.quantize_onnx_dynamic(fp32, tmp_path / "teacher-int8.onnx")
    acc_torch = training.evaluate(teacher, loaders["test"], progress=False).accuracy
    acc_fp32 = training.evaluate(runtime.OrtModel(fp32), loaders["test"], progress=False).accuracy
    acc_int8 = training.evaluate(runtime.OrtModel(int8), loaders["test"], progress=False).accuracy
    assert acc_fp32 == acc_torch
    assert abs(acc_int8 - acc_fp32) <= INT8_ACCURACY_TOL
    assert runtime.onnx_size_mb(fp32) / runtime.onnx_size_mb(int8) > 3.5  # embeddings and Linear layers in int8
    agree = runtime.agreement(teacher, runtime.OrtModel(fp32), loaders["test"])
    assert agree.max_abs_diff < FP32_ATOL and np.isclose(agree.same_prediction, 1.0)



def test_logits_agreement_by_hand_and_scratch_dir():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    b = torch.tensor([[1.5, 0.0], [0.0, 1.0], [0.0, 1.0]])
    got = runtime.logits_agreement(a, b)
    assert got == runtime.Agreement(max_abs_diff=3.0, mean_abs_diff=pytest.approx(4.5 / 6),
                                    same_prediction=pytest.approx(2 / 3), examples=3)
    with pytest.raises(ValueError, match="same shape"):
        runtime.logits_agreement(a, b[:2])
    d1, d2 = runtime.scratch_dir(), runtime.scratch_dir()
    assert d1 != d2 and d1.is_dir() and not any(d1.iterdir())


def test_logits_agreement_refuses_nan_and_empty_logits():
    good = torch.randn(3, 2)
    with pytest.raises(ValueError, match="other .* NaN"):
        runtime.logits_agreement(good, torch.tensor([[0.0, float("nan")], [1, 2], [3, 4]]))
    with pytest.raises(ValueError, match="empty"):
        runtime.logits_agreement(torch.zeros(0, 2), torch.zeros(0, 2))


@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.float16, torch.float64, torch.bool])
def test_export_refuses_inputs_of_a_dtype_the_float_model_cannot_take(tmp_path, dtype):
    """The exporter traces with fake tensors: integer (or half, double, bool) features for a float Linear used to
    give a graph that ONNX Runtime refuses to load. Now nothing is written and the error names the inputs."""
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with pytest.raises(TypeError, match=rf"inputs .*Given: inputs {dtype} \(2, 4\); the model's weights are "
                                        r"torch.float32 — a float model takes float features"):
        runtime.export_onnx(model, torch.ones(2, 4, dtype=dtype), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_float_token_ids_and_exports_what_torch_runs(tiny_bert, tmp_path):
    """The reverse: float token ids for an embedding model are refused; int32 and int64 ids, and float features
    for a float model, export, and ONNX Runtime reproduces torch's outputs."""
    batch = _batch()
    with pytest.raises(TypeError, match=r"could not export BertForSequenceClassification.*input_ids torch.float32"):
        runtime.export_onnx(tiny_bert, {**batch, "input_ids": batch["input_ids"].float()}, tmp_path / "f.onnx")
    assert list(tmp_path.iterdir()) == []
    ids32 = {k: v.int() for k, v in batch.items()}
    path = runtime.export_onnx(tiny_bert, ids32, tmp_path / "int32.onnx")
    torch.testing.assert_close(runtime.OrtModel(path, threads=1)(**ids32).logits, _logits(tiny_bert, batch),
                               atol=FP32_ATOL, rtol=0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    path = runtime.export_onnx(model, x, tmp_path / "mlp.onnx")
    torch.testing.assert_close(runtime.OrtModel(path, threads=1)(x).logits, model(x).detach(), atol=FP32_ATOL, rtol=0)


def _features(**flags) -> hardware.CpuFeatures:
    base = {"machine": "x86_64", "model_name": "test CPU", "torch_capability": "AVX2", "avx2": True, "avx512": False,
            "vnni": False, "amx": False, "arm_dot": None, "source": "test"}
    return hardware.CpuFeatures(**{**base, **flags})


def test_ort_int8_settings_follow_onnx_runtimes_advice_per_cpu():
    """ONNX Runtime (quantize_static's "Choosing parameters for CPU inference"): 7-bit weights on x86 without VNNI,
    whose u8·s8 kernels saturate; 8 bits with VNNI and on ARM."""
    assert runtime.ort_int8_settings(_features())["reduce_range"] is True
    assert "no VNNI" in runtime.ort_int8_settings(_features())["why"]
    assert runtime.ort_int8_settings(_features(vnni=None))["reduce_range"] is True  # unknown: the safe choice
    assert runtime.ort_int8_settings(_features(avx512=True, vnni=True))["reduce_range"] is False
    assert runtime.ort_int8_settings(_features(amx=True, vnni=None))["reduce_range"] is False
    arm = _features(machine="aarch64", avx2=None, avx512=None, vnni=None, amx=None, arm_dot=False)
    assert runtime.ort_int8_settings(arm)["reduce_range"] is False
    with pytest.raises(TypeError, match="features must be a CpuFeatures"):
        runtime.ort_int8_settings({"vnni": True})


def _int8_weight_range(path) -> tuple[int, int]:
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    weights = np.concatenate([a.ravel() for a in arrays if a.dtype == np.int8 and a.size > 1])
    return int(weights.min()), int(weights.max())


def test_quantize_onnx_dynamic_chooses_the_weight_range_for_the_cpu(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(4, 64)
    fp32 = runtime.export_onnx(model, x, tmp_path / "m.onnx")
    lo, hi = _int8_weight_range(runtime.quantize_onnx_dynamic(fp32, tmp_path / "r.onnx", reduce_range=True))
    assert -64 <= lo and hi <= 64 and max(-lo, hi) == 64  # 7 bits, the range used
    lo, hi = _int8_weight_range(runtime.quantize_onnx_dynamic(fp32, tmp_path / "f.onnx", reduce_range=False))
    assert max(-lo, hi) == 127
    for vnni, widest in ((False, 64), (True, 127)):  # the default follows the CPU
        monkeypatch.setattr(hardware, "cpu_features", lambda vnni=vnni: _features(vnni=vnni))
        path = runtime.quantize_onnx_dynamic(fp32, tmp_path / f"auto-{vnni}.onnx")
        assert max(map(abs, _int8_weight_range(path))) == widest
        got = runtime.OrtModel(path, threads=1)(x).logits
        assert (got - model(x).detach()).abs().max() < 0.05 * model(x).detach().abs().max()
    with pytest.raises(TypeError, match="reduce_range must be True or False"):
        runtime.quantize_onnx_dynamic(fp32, tmp_path / "s.onnx", reduce_range="no")


def test_ort_model_refuses_float_token_ids_instead_of_truncating_them(exported):
    """A float input for an int64 graph input used to be cast (1.7 → 1) without a word."""
    model = runtime.OrtModel(exported, threads=1)
    batch = _batch()
    with pytest.raises(TypeError, match=r"input 'input_ids' must hold integers .*got dtype float32"):
        model(**{**batch, "input_ids": batch["input_ids"].float() + 0.7})
    torch.testing.assert_close(model(**{k: v.int() for k, v in batch.items()}).logits, model(**batch).logits)
