import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import lecture_utils as lu  # noqa: E402


def test_size_trend_is_log_scale_with_a_point_per_model():
    lu.plots.use_style()
    table = lu.data.load_table("model_sizes")
    ax = lu.plots.size_trend(table)
    assert ax.get_yscale() == "log"
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(table)
    assert len(ax.texts) == len(table)
    ax = lu.plots.size_trend(table, labels=["GPT-3"], highlight="all-MiniLM-L6-v2")
    assert [t.get_text() for t in ax.texts] == ["GPT-3"]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(table) + 1  # the star on top
    with pytest.raises(ValueError, match="not in the table"):
        lu.plots.size_trend(table, labels=["GPT-9"])
    plt.close("all")


def test_component_bars_and_tradeoff_chart():
    ax = lu.plots.component_bars({"embeddings": 50, "encoder": 40, "head": 10, "total": 100})
    assert len(ax.patches) == 3
    ax = lu.plots.tradeoff_chart([{"name": "a", "latency_ms": 10, "accuracy": 0.8, "size_mb": 90},
                                  {"name": "b", "latency_ms": 5, "accuracy": 0.78, "size_mb": 23}])
    sizes = [c.get_sizes()[0] for c in ax.collections]
    assert sizes[0] > sizes[1]  # bubble area follows size on disk
    plt.close("all")


def test_success_rates_has_a_point_and_an_error_bar_per_width():
    table = lu.overparam.xor_sweep([1, 2, 4], seeds=3, steps=5)
    ax = lu.plots.success_rates(table)
    assert ax.get_xscale() == "log"
    assert list(ax.lines[0].get_xdata()) == [1, 2, 4]
    with pytest.raises(ValueError, match="columns"):
        lu.plots.success_rates(table.drop(columns="low"))
    plt.close("all")


def test_accuracy_vs_remaining_draws_mean_lines_bands_and_the_dense_level():
    import pandas as pd

    rows = pd.DataFrame([{"seed": s, "method": "dense", "remaining": 1.0, "accuracy": 0.6 + 0.01 * s} for s in (0, 1)]
                        + [{"seed": s, "method": m, "remaining": r, "accuracy": a + 0.02 * s}
                           for s in (0, 1) for m, a in (("ticket", 0.7), ("reinit", 0.5)) for r in (0.8, 0.4)])
    ax = lu.plots.accuracy_vs_remaining(rows)
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100%", "50%"]
    ticket = [ln for ln in ax.lines if ln.get_label() == "ticket"][0]
    assert list(ticket.get_ydata()) == pytest.approx([0.71, 0.71])
    dense = [ln for ln in ax.lines if ln.get_label().startswith("dense")][0]
    assert dense.get_ydata()[0] == pytest.approx(0.605)
    assert len(ax.collections) == 2  # one band per method
    plt.close("all")


def test_layer_sparsity_bars_has_a_bar_per_layer_and_report():
    reports = {"layer-wise": {"bert.encoder.layer.0.attention.self.query": 0.5, "classifier": 0.5},
               "global": {"bert.encoder.layer.0.attention.self.query": 0.3, "classifier": 0.9}}
    ax = lu.plots.layer_sparsity_bars(reports)
    assert len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["L0.self.query", "classifier"]
    with pytest.raises(ValueError, match="same layers"):
        lu.plots.layer_sparsity_bars({"a": {"x": 0.1}, "b": {"y": 0.1}})
    with pytest.raises(ValueError, match="at least one"):
        lu.plots.layer_sparsity_bars({})
    plt.close("all")


def test_accuracy_vs_sparsity_and_weight_block():
    import pandas as pd
    import torch

    rows = pd.DataFrame([{"method": m, "sparsity": s, "accuracy": a - s / 2}
                         for m, a in (("one-shot", 0.8), ("fine-tuned", 0.85)) for s in (0.9, 0.0, 0.5)])
    ax = lu.plots.accuracy_vs_sparsity(rows, dense_accuracy=0.8)
    assert [ln.get_label() for ln in ax.lines] == ["one-shot", "fine-tuned", "dense"]
    assert list(ax.lines[0].get_xdata()) == [0, 50, 90]
    with pytest.raises(ValueError, match="columns"):
        lu.plots.accuracy_vs_sparsity(rows.drop(columns="method"))
    w = torch.randn(4, 6)
    axes = lu.plots.weight_block(w, w * (w.abs() > 0.5))
    assert len(axes) == 2 and axes[1].get_title() == "after"
    with pytest.raises(ValueError, match="one shape"):
        lu.plots.weight_block(w, w.T)
    plt.close("all")


def test_course_chart_and_budget_chart():
    import pandas as pd

    variants = [{"name": "teacher", "latency_ms": 200, "accuracy": 0.82, "size_mb": 90},
                {"name": "int8", "latency_ms": 60, "accuracy": 0.81, "size_mb": 23, "measured": True},
                {"name": "heads (05)", "latency_ms": 120, "accuracy": 0.8, "size_mb": 70, "measured": False}]
    ax = lu.plots.course_chart(variants, teacher_accuracy=0.82)
    texts = [t.get_text() for t in ax.texts]
    assert texts[:3] == ["1", "2", "3"] and "1  teacher (90 MB)" in texts[3] and "3  heads (05) (70 MB) *" in texts[3]
    sizes = [c.get_sizes()[0] for c in ax.collections if len(c.get_offsets())][:3]
    assert sizes[0] == pytest.approx(1500) and sizes[1] == pytest.approx(1500 * 23 / 90)
    with pytest.raises(ValueError, match="lack"):
        lu.plots.course_chart([{"name": "x", "latency_ms": None, "accuracy": 0.5, "size_mb": 1}])
    with pytest.raises(ValueError, match="at least one"):
        lu.plots.course_chart([])
    rows = pd.DataFrame([{"model": "large dense fp32", "bytes": 1e6, "accuracy": 0.6, "budget_bytes": None},
                         {"model": "large pruned + int8", "bytes": 5e4, "accuracy": 0.5, "budget_bytes": 5e4},
                         {"model": "small int8", "bytes": 4.9e4, "accuracy": 0.55, "budget_bytes": 5e4},
                         {"model": "large pruned + int8", "bytes": 1e5, "accuracy": 0.6, "budget_bytes": 1e5},
                         {"model": "small int8", "bytes": 9.9e4, "accuracy": 0.58, "budget_bytes": 1e5}])
    ax = lu.plots.budget_chart(rows)
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["50", "100"]
    seeds = pd.DataFrame([{"model": m, "bytes": b, "accuracy": 0.5, "budget_bytes": b, "budget_density": d}
                          for m in ("large", "small") for b, d in ((5.0e4, 0.1), (5.2e4, 0.1), (9e4, 0.2))])
    ax = lu.plots.budget_chart(seeds)  # two seeds of one budget with slightly different bytes: one point
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [2, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["51", "90"]
    with pytest.raises(ValueError, match="lack"):
        lu.plots.budget_chart(rows.drop(columns="bytes"))
    plt.close("all")


def test_head_heatmap_draws_one_cell_per_head_and_marks_removed_ones():
    import torch

    scores = torch.arange(12, dtype=torch.float32).view(3, 4) / 12
    ax = lu.plots.head_heatmap(scores, title="importance", removed={0: [1], 2: [0, 3]})
    assert ax.images[0].get_array().shape == (3, 4)
    assert len(ax.texts) == 12 and ax.texts[5].get_text() == f"{5 / 12:.2f}"
    assert len(ax.lines) == 3  # one cross per removed head
    assert ax.get_ylabel() == "layer" and ax.get_xlabel() == "head"
    with pytest.raises(ValueError, match="shape"):
        lu.plots.head_heatmap(torch.ones(4))
    plt.close("all")


# --------------------------------------------------------------------------------------------------------------
# Bad input: an error before drawing, not a half-drawn chart or a message from matplotlib
# --------------------------------------------------------------------------------------------------------------

import pandas as pd  # noqa: E402
import torch  # noqa: E402

_ROW = {"name": "a", "latency_ms": 10.0, "accuracy": 0.8, "size_mb": 90.0}


@pytest.mark.parametrize(("variants", "match"), [
    ([], "needs at least one variant"), ("a", "variants must be a list"),
    ([{**_ROW, "size_mb": 0}], r"size_mb'\] must be a finite number > 0"),
    ([{**_ROW, "latency_ms": float("nan")}], "latency_ms"), ([{**_ROW, "accuracy": 80}], "accuracy"),
    ([{"name": "a", "latency_ms": 1.0}], "lack accuracy, size_mb"),
])
def test_variant_charts_check_every_variant(variants, match):
    for chart in (lu.plots.tradeoff_chart, lu.plots.course_chart):
        with pytest.raises(ValueError, match=match):
            chart(variants)
    plt.close("all")


def test_component_bars_need_positive_counts():
    with pytest.raises(ValueError, match="besides 'total'"):
        lu.plots.component_bars({"total": 5})
    with pytest.raises(ValueError, match="positive number of parameters"):
        lu.plots.component_bars({"encoder": 0, "head": 0})
    with pytest.raises(ValueError, match=r"parts\[0\] must be a finite number >= 0"):
        lu.plots.component_bars({"encoder": -5, "head": 10})


def test_tables_must_be_dataframes_with_rows_and_numbers():
    with pytest.raises(TypeError, match="rows must be a pandas DataFrame"):
        lu.plots.accuracy_vs_sparsity([{"method": "a", "sparsity": 0.5, "accuracy": 0.8}])
    with pytest.raises(ValueError, match="rows has no rows"):
        lu.plots.accuracy_vs_remaining(pd.DataFrame(columns=["method", "remaining", "accuracy", "seed"]))
    with pytest.raises(ValueError, match="finite"):
        lu.plots.budget_chart(pd.DataFrame({"model": ["a"], "bytes": [float("nan")], "accuracy": [0.5],
                                            "budget_bytes": [None]}))
    with pytest.raises(ValueError, match="low <= rate <= high"):
        lu.plots.success_rates(pd.DataFrame({"width": [2], "rate": [0.5], "low": [0.6], "high": [0.9]}))
    with pytest.raises(TypeError, match="labels must be a list of strings, got the single string"):
        lu.plots.size_trend(lu.data.load_table("model_sizes"), labels="GPT-3")


def test_matrices_and_head_marks_are_checked():
    with pytest.raises(ValueError, match="before must be a non-empty 2-D"):
        lu.plots.weight_block(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        lu.plots.head_heatmap(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(ValueError, match=r"removed\[0\]: head must be an int from 0 to 1, got 5"):
        lu.plots.head_heatmap(torch.rand(2, 2), removed={0: [5]})  # used to draw a cross outside the map
    ax = lu.plots.weight_block([[1.0, 0.0], [0.0, -1.0]], [[1.0, 0.0], [0.0, 0.0]])  # nested lists are fine
    assert len(ax) == 2
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        lu.plots.component_bars({"encoder": 5}, ax="left")
    plt.close("all")
