"""Every lesson notebook runs top to bottom at smoke scale, with checks in strict mode, and records its results.

No test here asserts a wall-clock time: budgets are measured and reported by ``python -m lecture_utils course``
(``build/results.json``). The only time limit is the runner's per-cell hang guard, several times what the slowest
cell needs on a busy machine.
"""

import json
from pathlib import Path

import pytest

from lecture_utils import runner

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED_RESULTS = {
    "00_welcome": {"teacher.test_accuracy", "teacher.train_seconds", "teacher.params", "teacher.size_mb",
                   "teacher.latency_ms"},
    "01_size_problem": {"size.minilm.params", "size.minilm.embedding_share", "size.minilm.int8_linear_bound",
                        "size.minilm.int8_linear_mb"},
    "03_distillation": {"distill.scratch.test_accuracy", "distill.hard_only.test_accuracy", "distill.kd.test_accuracy",
                        "distill.kd_intermediate.test_accuracy", "distill.small.test_accuracy", "distill.retention",
                        "distill.speedup", "distill.student3.size_ratio"},
    "02_why_compression_works": {"overparam.xor.success.w2", "overparam.xor.success.w16"},
    "04_pruning_weights": {"prune.dense.test_accuracy", "prune.global90_oneshot.test_accuracy",
                           "prune.layerwise90_ft.test_accuracy", "prune.layerwise90_kd.test_accuracy",
                           "prune.layerwise90_gradual.test_accuracy", "prune.iterative_gap.sparsity",
                           "prune.iterative_gap.iterative_accuracy", "prune.iterative_gap.oneshot_accuracy",
                           "prune.latency_ratio_90", "prune.sparse_size_ratio_90", "prune.csr_whole.size_ratio"},
    "05_pruning_heads_layers": {"heads.removed50.test_accuracy",
                                "heads.removed50.speedup", "heads.removed50.speedup_b1",
                                "layers.top.k3.test_accuracy", "layers.bottom.k3.test_accuracy",
                                "layers.alternate.k3.test_accuracy", "layers.symmetric.k3.test_accuracy",
                                "layers.contribution.k3.test_accuracy", "layers.top.k2.test_accuracy",
                                "layers.top.k3.speedup",
                                "layers.meanpool.teacher.test_accuracy", "layers.meanpool.top.k3.test_accuracy",
                                "layers.meanpool.alternate.k3.test_accuracy"},
    "07_lottery_tickets": {"lottery.dense.test_accuracy", "lottery.ticket_20.test_accuracy",
                           "lottery.ticket_10.test_accuracy", "lottery.reinit_10.test_accuracy",
                           "lottery.random_mask_10.test_accuracy", "lottery.snip_10.test_accuracy", "lottery.seeds",
                           "lottery.dense.train_accuracy", "lottery.dense_long.test_accuracy",
                           "lottery.ticket_beats_dense_levels", "lottery.supermask.remaining",
                           "lottery.supermask.test_accuracy", "lottery.supermask.random_mask.test_accuracy",
                           "lottery.supermask.test_accuracy_10", "lottery.supermask.linear_probe.test_accuracy",
                           "lottery.sparse_training.remaining", "lottery.sparse_training.set.test_accuracy",
                           "lottery.sparse_training.static.test_accuracy",
                           "lottery.sparse_training.set_minus_static"},
    "08_putting_it_together": {"combined.size_ratio", "combined.speedup", "combined.accuracy_drop",
                               "combined.test_accuracy", "lowrank.64.test_accuracy", "lowrank.128.test_accuracy",
                               "lowrank.192.test_accuracy", "lowrank.128_ft.test_accuracy", "lowrank.64.params",
                               "sharing.pairs.test_accuracy", "trainlarge.large_compressed.test_accuracy",
                               "trainlarge.small_light.test_accuracy", "trainlarge.large_compressed.bytes",
                               "trainlarge.small_light.bytes", "combined.ort.speedup_b1", "combined.ort.size_ratio",
                               "combined.ort.accuracy_drop", "combined.ort.test_accuracy", "combined.ort.speedup"},
    "06_quantization": {"quant.int8_dynamic.test_accuracy", "quant.int8_dynamic.speedup",
                        "quant.int8_dynamic.size_ratio", "quant.int8_all.size_ratio", "quant.ptq4.test_accuracy",
                        "quant.qat3.test_accuracy", "quant.ft_ptq3.test_accuracy", "quant.torchao_int8.speedup",
                        "runtime.ort_int8.speedup_b1",
                        "runtime.ort_int8.speedup_b32", "runtime.ort_fp32.speedup_b1",
                        "runtime.torch_ao_int8.speedup_b1", "runtime.torchao_int8.speedup_b1",
                        "runtime.ort_int8.test_accuracy", "runtime.ort_int8.size_ratio",
                        "runtime.ort_int8.fusion_gain_b1"},
    "09_compressing_llms": {"llm.baseline.ppl", "llm.rtn.w8_channel.ppl", "llm.rtn.w4_g64.ppl", "llm.rtn.w3_g64.ppl",
                            "llm.gptq.w4_g64.ppl", "llm.gptq.w3_g64.ppl", "llm.magnitude50.ppl", "llm.wanda50.ppl",
                            "llm.wanda_2of4.ppl", "llm.w8a8_naive.ppl", "llm.w8a8_smoothquant.ppl",
                            "llm.kv_cache.bytes_per_token", "llm.kv_cache.measured_bytes_per_token",
                            "llm.kv_cache.batch_bytes",
                            "llm.salient1.activation.ppl", "llm.salient1.weight.ppl", "llm.salient1.random.ppl",
                            "llm.awq.w3_g64.ppl", "llm.awq.w4_g64.ppl", "llm.awq.w3_g64_scales_only.ppl",
                            "llm.awq.w3_g64_clip_only.ppl"},
    "10_running_llms": {"serve.bandwidth_gbs", *(f"serve.{v}.{m}" for v in ("torch_fp32", "torch_ao_int8", "ort_fp32",
                                                                            "ort_int4")
                                                for m in ("decode_tok_s", "ttft_ms", "size_mb", "ppl")),
                        "serve.ort_int4.speedup", "serve.best.bound_fraction", "serve.ort_int4.sim_ppl",
                        "serve.gptq_int4.ppl", "serve.rtn_int4.ppl", "serve.kv.b4.ppl", "serve.kv.b2.ppl",
                        "serve.kv.fp.ppl", "serve.drop.bi.k6.ppl", "serve.drop.top.k6.ppl",
                        "serve.drop.random.k6.ppl"},
}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_scale(path, tmp_path, prepared):
    res = runner.execute_notebook(path, tmp_path, "smoke")
    assert res["status"] == "ok", f"{path.name}: {res['error']} (executed copy: {tmp_path / 'notebooks'})"
    assert res["cells_executed"] > 0
    missing = EXPECTED_RESULTS.get(path.stem, set()) - set(res["results"])
    assert not missing, f"{path.name} did not record {missing}"
    for key, value in res["results"].items():
        if key.endswith("accuracy"):
            assert 0 <= value <= 1, (key, value)
    # a headless run prints widgets as tables: no widget comm is opened (they can stall nbclient: config.headless)
    executed = json.loads((tmp_path / "notebooks" / path.name).read_text())
    views = [o for c in executed["cells"] for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert not views, f"{path.name} displayed a live widget in a headless run: {views[:1]}"
