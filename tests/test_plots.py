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
