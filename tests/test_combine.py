"""Reading what the course recorded (whatever is missing), placing variants, and equal-bytes arithmetic."""

import json
import math

import pytest
import torch

import lecture_utils as lu
from lecture_utils import combine


@pytest.fixture
def build(tmp_path, monkeypatch):
    monkeypatch.delenv(lu.results.RESULTS_ENV, raising=False)
    monkeypatch.setenv(lu.config.SCALE_ENV, "laptop")
    (tmp_path / "results").mkdir()
    return tmp_path


def test_missing_build_folder_gives_empty_results_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv(lu.results.RESULTS_ENV, raising=False)
    got = combine.read_results(tmp_path / "nowhere", scale="smoke")
    assert got["results"] == {} and got["scale"] == "smoke"
    assert any("no " in n and "results.json yet" in n for n in got["notes"])
    assert any("nothing recorded" in n for n in got["notes"])


def test_summary_of_the_same_scale_is_read_and_per_notebook_files_fill_gaps(build):
    (build / "results.json").write_text(json.dumps({"scale": "laptop", "notebooks": {},
                                                    "results": {"teacher.test_accuracy": 0.82, "x.flag": True}}))
    (build / "results" / "03_distillation.json").write_text(json.dumps({"distill.kd.test_accuracy": 0.80,
                                                                        "teacher.test_accuracy": 0.5}))
    (build / "results" / "broken.json").write_text("{not json")
    got = combine.read_results(build)
    assert got["results"] == {"teacher.test_accuracy": 0.82, "distill.kd.test_accuracy": 0.80}  # summary wins
    assert got["sources"]["distill.kd.test_accuracy"] == "results/03_distillation.json"
    assert got["sources"]["teacher.test_accuracy"] == "results.json"
    assert any("1 numbers read from" in n for n in got["notes"])
    assert any("broken.json" in n for n in got["notes"])


def test_summary_of_another_scale_is_skipped_with_its_per_notebook_files(build):
    (build / "results.json").write_text(json.dumps({"scale": "smoke", "results": {"teacher.test_accuracy": 0.5}}))
    (build / "results" / "00_welcome.json").write_text(json.dumps({"teacher.test_accuracy": 0.5}))
    got = combine.read_results(build)
    assert got["results"] == {}
    assert any("'smoke'-scale run" in n for n in got["notes"])


def test_the_notebooks_own_results_file_is_not_read(build, monkeypatch):
    own = build / "results" / "08_putting_it_together.json"
    own.write_text(json.dumps({"combined.speedup": 5.0}))
    (build / "results" / "06_quantization.json").write_text(json.dumps({"quant.int8_dynamic.speedup": 3.5}))
    monkeypatch.setenv(lu.results.RESULTS_ENV, str(own))
    assert combine.build_dir() == build.resolve()
    assert combine.read_results()["results"] == {"quant.int8_dynamic.speedup": 3.5}


def test_recorded_variants_are_placed_relative_to_the_teacher_measured_now():
    results = {"quant.int8_dynamic.test_accuracy": 0.81, "quant.int8_dynamic.speedup": 4.0,
               "quant.int8_dynamic.size_ratio": 2.0, "layers.top.k3.test_accuracy": 0.7,
               "layers.top.k3.speedup": 2.0, "layers.top.k3.size_mb": 70.0, "layers.bottom.k3.test_accuracy": 0.6,
               "prune.global90_oneshot.test_accuracy": 0.6, "prune.latency_ratio_90": 1.25,
               "prune.layerwise90_gradual.test_accuracy": 0.75,
               "quant.qat3.test_accuracy": 0.8, "layers.meanpool.top.k3.test_accuracy": 0.8}
    rows = {r["name"]: r for r in combine.recorded_variants(results, teacher_latency_ms=200.0, teacher_size_mb=90.0)}
    int8 = rows["int8 Linear (dynamic)"]
    assert int8["latency_ms"] == 50.0 and int8["size_mb"] == 45.0 and int8["on_chart"] and int8["lesson"] == "06"
    top = rows["3 layers kept (top)"]
    assert top["latency_ms"] == 100.0 and top["size_mb"] == 70.0 and top["key"] == "layers.top.k3.test_accuracy"
    bottom = rows["3 layers kept (bottom)"]
    assert not bottom["on_chart"] and "no speed-up recorded" in bottom["note"]
    pruned = rows["pruned 90%, one-shot"]
    assert pruned["size_mb"] == 90.0 and pruned["latency_ms"] == pytest.approx(250.0) and pruned["on_chart"]
    gradual = rows["pruned 90% layer-wise, gradual, soft targets"]
    assert gradual["size_mb"] == 90.0 and gradual["latency_ms"] == pytest.approx(250.0) and gradual["accuracy"] == 0.75
    assert not rows["3-bit weights, QAT (simulated)"]["on_chart"]
    assert not [n for n in rows if "meanpool" in n]  # a wildcard is one part of the key, not several
    missing = combine.missing_variants(results)
    assert any("heads removed" in m and "heads.removed50.test_accuracy" in m for m in missing)
    assert not any("int8 Linear (dynamic)" in m for m in missing)
    with pytest.raises(ValueError, match="positive"):
        combine.recorded_variants(results, 0.0, 90.0)


def test_byte_formats():
    assert combine.dense_int8_bytes(10, 20) == 200 + 40
    assert combine.sparse_int8_bytes(3, 5, 7) == 7 + 2 + 12  # 15 bits round up to 2 bytes
    assert combine.sparse_int8_bytes(512, 512, 0) == 512 * 512 // 8 + 4 * 512
    for bad in [(3, 5, 16), (3, 5, -1), (0, 5, 0), (3, 5, 1.5)]:
        with pytest.raises(ValueError):
            combine.sparse_int8_bytes(*bad)


def test_mlp_bytes_and_width_for_bytes():
    torch.manual_seed(0)
    model = lu.models.mlp([40, 30, 30, 10])
    weights = 40 * 30 + 30 * 30 + 30 * 10
    assert combine.mlp_bytes(model, "fp32") == 4 * weights + 4 * 70
    assert combine.mlp_bytes(model, "int8") == weights + 4 * 70 + 4 * 70
    with torch.no_grad():
        model[0].weight[:, :20] = 0
    assert combine.mlp_bytes(model, "sparse_int8") == (weights - 600) + sum(
        math.ceil(r * c / 8) for r, c in [(30, 40), (30, 30), (10, 30)]) + 4 * 70 + 4 * 70
    budget = combine.mlp_bytes(lu.models.mlp([40, 30, 30, 10]), "int8")
    assert combine.width_for_bytes(budget, 40, 10) == 30
    assert combine.width_for_bytes(budget - 1, 40, 10) == 29
    with pytest.raises(ValueError, match="width-1"):
        combine.width_for_bytes(10, 40, 10)
    with pytest.raises(ValueError, match="fmt"):
        combine.mlp_bytes(model, "int4")


def test_quantize_weights_int8_keeps_zeros_and_rounds_to_255_levels():
    torch.manual_seed(0)
    model = lu.models.mlp([8, 16, 4])
    with torch.no_grad():
        model[0].weight[0] = 0
    q = combine.quantize_weights_int8(model)
    assert (q[0].weight[0] == 0).all()
    for row in q[2].weight:
        assert row.unique().numel() <= 255
    assert not torch.equal(q[2].weight, model[2].weight) and torch.allclose(q[2].weight, model[2].weight, atol=0.01)


def test_budget_experiment_on_tiny_data():
    gen = torch.Generator().manual_seed(0)
    data = {"x_train": torch.randn(200, 12, generator=gen), "y_train": torch.randint(0, 3, (200,), generator=gen),
            "x_test": torch.randn(50, 12, generator=gen), "y_test": torch.randint(0, 3, (50,), generator=gen)}
    rows = combine.budget_experiment(data, large_width=32, densities=(0.1, 0.5), steps=4, seed=1)
    assert [r["model"] for r in rows] == ["large dense fp32", "large pruned + int8", "small int8",
                                          "large pruned + int8", "small int8"]
    for big, small in zip(rows[1::2], rows[2::2], strict=True):
        assert small["bytes"] <= big["budget_bytes"] == big["bytes"] and small["width"] < 32
        assert small["budget_density"] == big["budget_density"] == big["density"] and small["density"] == 1.0
        assert 0 <= big["accuracy"] <= 1 and 0 <= small["accuracy"] <= 1
    with pytest.raises(ValueError, match="densities"):
        combine.budget_experiment(data, densities=(0.0,), steps=4)


# --------------------------------------------------------------------------------------------------------------
# Bad input: no hang, no NaN placed on a chart
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [float("inf"), float("nan"), -1, "1000", None])
def test_width_search_refuses_a_budget_that_is_not_a_finite_number(budget, hang_guard):
    with hang_guard(30), pytest.raises(ValueError, match="budget_bytes must be a finite number"):
        combine.width_for_bytes(budget, 40, 10)  # inf used to double the width forever; NaN returned width 1


def test_width_search_accepts_numpy_budgets_and_checks_sizes():
    np = pytest.importorskip("numpy")
    assert combine.width_for_bytes(np.int64(50_000), 40, 10) == combine.width_for_bytes(50_000, 40, 10)
    with pytest.raises(ValueError, match="n_in must be a positive int"):
        combine.width_for_bytes(50_000, 0, 10)
    with pytest.raises(ValueError, match="hidden_layers must be a non-negative int"):
        combine.mlp_sizes(40, 8, 10, -1)
    assert combine.dense_int8_bytes(np.int64(3), np.int32(4)) == 3 * 4 + 4 * 3
    with pytest.raises(ValueError, match="nnz"):
        combine.sparse_int8_bytes(3, 4, 13)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -3.0])
def test_recorded_variants_need_a_measured_teacher(bad):
    with pytest.raises(ValueError, match="teacher_latency_ms must be a finite number > 0"):
        combine.recorded_variants({}, bad, 90.0)
    with pytest.raises(ValueError, match="teacher_size_mb must be"):
        combine.recorded_variants({}, 10.0, bad)


def test_non_finite_recorded_numbers_are_not_placed():
    results = {"distill.kd.test_accuracy": 0.8, "distill.speedup": float("nan"), "distill.kd.size_ratio": 2.0}
    rows = combine.recorded_variants(results, 10.0, 90.0)
    kd = next(r for r in rows if r["key"] == "distill.kd.test_accuracy")
    assert kd["latency_ms"] is None and not kd["on_chart"] and "no speed-up" in kd["note"]
    with pytest.raises(TypeError, match="results must be a dict"):
        combine.missing_variants([("distill.kd.test_accuracy", 0.8)])


def test_budget_experiment_checks_before_training():
    data = {"x_train": torch.randn(20, 4), "y_train": torch.randint(0, 3, (20,)),
            "x_test": torch.randn(10, 4), "y_test": torch.randint(0, 3, (10,))}
    with pytest.raises(ValueError, match="densities"):
        combine.budget_experiment(data, densities="0.1")
    with pytest.raises(ValueError, match="densities"):
        combine.budget_experiment(data, densities=[float("nan")])
    with pytest.raises(ValueError, match="steps must be an int >= 2"):
        combine.budget_experiment(data, steps=1)
    with pytest.raises(ValueError, match=r"data lacks \['x_test'\]"):
        combine.budget_experiment({k: v for k, v in data.items() if k != "x_test"})
    with pytest.raises(TypeError, match="scale must be one of"):
        combine.read_results(scale=1)
