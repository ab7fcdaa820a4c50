"""Consistent figures for the course: one style, and the charts several lessons share."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from . import validate as check

__all__ = ["PALETTE", "use_style", "size_trend", "component_bars", "tradeoff_chart", "success_rates",
           "accuracy_vs_remaining", "layer_sparsity_bars", "accuracy_vs_sparsity", "weight_block", "course_chart",
           "budget_chart", "head_heatmap"]

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def use_style() -> None:
    """The course's matplotlib style: readable sizes, light grid, no top/right spines."""
    plt.rcParams.update({
        "figure.figsize": (7, 4), "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 12, "axes.labelsize": 11,
        "legend.frameon": False, "axes.prop_cycle": plt.cycler(color=PALETTE),
    })


def _frame(table, name: str, columns: set[str], non_empty: bool = True) -> pd.DataFrame:
    """A DataFrame with ``columns`` (and rows, when ``non_empty``), else a clear error."""
    if not isinstance(table, pd.DataFrame):
        raise check.BadType(f"{name} must be a pandas DataFrame, got {check.show(table)}")
    missing = columns - set(table.columns)
    if missing:
        raise ValueError(f"{name} lacks columns {sorted(missing)}")
    if non_empty and len(table) == 0:
        raise ValueError(f"{name} has no rows: nothing to plot")
    return table


def _ax(ax, count: int = 1):
    if ax is None:
        return None
    if count == 1 and not isinstance(ax, plt.Axes):
        raise check.BadType(f"ax must be a matplotlib Axes (or None), got {check.show(ax)}")
    return ax


def _numbers(values, name: str, minimum: float | None = None, low_open: bool = False) -> None:
    """Every value a finite number (above ``minimum``)."""
    for i, v in enumerate(values):
        check.real(v, f"{name}[{i}]", minimum, None, low_open=low_open)


def size_trend(table: pd.DataFrame, ax: plt.Axes | None = None, labels: list[str] | None = None,
               highlight: str | None = None) -> plt.Axes:
    """Parameters (log scale) against release date, one point per row of ``table`` (columns ``model``, ``date``
    as YYYY-MM, ``parameters``; optional ``sparse_moe``). ``labels`` names the models to annotate (default: all);
    ``highlight`` marks one model with a star."""
    _frame(table, "table", {"model", "date", "parameters"})
    _ax(ax)
    if labels is not None:
        labels = check.strings(labels, "labels", non_empty=False)
    if highlight is not None:
        check.text(highlight, "highlight")
    try:
        dates = pd.to_datetime(table["date"], format="%Y-%m")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"table['date'] must hold dates as YYYY-MM: {exc}") from None
    _numbers(table["parameters"], "table['parameters']", 0, low_open=True)
    ax = ax or plt.subplots(figsize=(9, 5))[1]
    params = table["parameters"]
    moe = table["sparse_moe"].astype(bool) if "sparse_moe" in table else pd.Series(False, index=table.index)
    ax.scatter(dates[~moe], params[~moe], label="dense", zorder=3)
    if moe.any():
        ax.scatter(dates[moe], params[moe], marker="D", label="sparse mixture-of-experts (total)", zorder=3)
    if highlight is not None:
        mine = table["model"] == highlight
        if not mine.any():
            raise ValueError(f"highlight={highlight!r} is not a model of the table")
        ax.scatter(dates[mine], params[mine], marker="*", s=250, color=PALETTE[3], label=highlight, zorder=4)
    wanted = set(table["model"]) if labels is None else set(labels)
    unknown = wanted - set(table["model"])
    if unknown:
        raise ValueError(f"labels names models that are not in the table: {sorted(unknown)}")
    for d, p, name in zip(dates, params, table["model"], strict=True):
        if name in wanted:
            ax.annotate(name, (d, p), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_ylabel("parameters (log scale)")
    ax.set_xlabel("release")
    ax.legend(loc="upper left")
    return ax


def component_bars(parts: dict[str, int], ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """Horizontal bars of parameters per component (e.g. from ``lu.measure.parameters_by_component``), with
    millions and shares written on the bars. A ``total`` key is left out of the bars."""
    check.mapping(parts, "parts", what="a dict {component: parameters}")
    _ax(ax)
    items = [(k, v) for k, v in parts.items() if k != "total"]
    if not items:
        raise ValueError("parts must name at least one component besides 'total'")
    _numbers([v for _, v in items], "parts", 0)
    total = sum(v for _, v in items)
    if total <= 0:
        raise ValueError("parts must hold a positive number of parameters in total, got 0")
    ax = ax or plt.subplots(figsize=(7, 2.5))[1]
    names, values = zip(*items, strict=True)
    ax.barh(names, [v / 1e6 for v in values], color=PALETTE[: len(values)])
    for i, v in enumerate(values):
        ax.text(v / 1e6, i, f" {v / 1e6:.2f} M ({100 * v / total:.0f}%)", va="center")
    ax.set_xlabel("parameters (millions)")
    ax.invert_yaxis()
    ax.set_title(title)
    return ax


def _check_variants(variants, where: str) -> None:
    """A non-empty list of dicts with a name, a positive latency and size, and an accuracy in [0, 1]."""
    variants = check.items(variants, "variants", non_empty=False, what="a list of dicts")
    if not variants:
        raise ValueError(f"{where} needs at least one variant")
    for i, v in enumerate(variants):
        check.mapping(v, f"variants[{i}]", what="a dict with name, latency_ms, accuracy and size_mb")
        missing = [k for k in ("name", "latency_ms", "accuracy", "size_mb") if v.get(k) is None]
        if missing:
            raise ValueError(f"variants {[v.get('name', i)]} lack {', '.join(missing)} (each needs name, latency_ms, "
                             "accuracy and size_mb)")
        check.positive(v["latency_ms"], f"variants[{i}]['latency_ms']")
        check.positive(v["size_mb"], f"variants[{i}]['size_mb']")
        check.fraction(v["accuracy"], f"variants[{i}]['accuracy']", high_open=False, hint="a fraction")


def tradeoff_chart(variants: list[dict], ax: plt.Axes | None = None) -> plt.Axes:
    """Accuracy against latency, one bubble per variant, bubble area proportional to size on disk.

    Each variant is a dict with ``name``, ``latency_ms``, ``accuracy`` and ``size_mb``.
    """
    _check_variants(variants, "tradeoff_chart")
    _ax(ax)
    ax = ax or plt.subplots(figsize=(8, 5))[1]
    biggest = max(v["size_mb"] for v in variants)
    for i, v in enumerate(variants):
        ax.scatter(v["latency_ms"], v["accuracy"], s=1500 * v["size_mb"] / biggest, alpha=0.5,
                   color=PALETTE[i % len(PALETTE)], edgecolor="black")
        ax.annotate(f"{v['name']}\n{v['size_mb']:.0f} MB", (v["latency_ms"], v["accuracy"]), fontsize=8,
                    ha="center", va="center")
    ax.set_xlabel("latency (ms, lower is better)")
    ax.set_ylabel("test accuracy")
    return ax


def success_rates(table: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Success rate against width (log scale, base 2) with confidence intervals as error bars. ``table`` has
    columns ``width``, ``rate``, ``low``, ``high`` (fractions), e.g. from ``lu.overparam.xor_sweep``."""
    _frame(table, "table", {"width", "rate", "low", "high"})
    _ax(ax)
    _numbers(table["width"], "table['width']", 0, low_open=True)
    for col in ("rate", "low", "high"):
        _numbers(table[col], f"table[{col!r}]", 0)
    if ((table["low"] > table["rate"] + 1e-9) | (table["rate"] > table["high"] + 1e-9)).any():
        raise ValueError("table must have low <= rate <= high in every row (an interval around the rate)")
    ax = ax or plt.subplots()[1]
    err = [table["rate"] - table["low"], table["high"] - table["rate"]]
    ax.errorbar(table["width"], table["rate"], yerr=err, marker="o", capsize=4)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(table["width"]), [str(w) for w in table["width"]])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("hidden units (log scale)")
    ax.set_ylabel("fraction of seeds that succeed")
    return ax


def accuracy_vs_remaining(rows: pd.DataFrame, ax: plt.Axes | None = None, dense: str = "dense") -> plt.Axes:
    """Test accuracy against the fraction of weights remaining (log scale, 100% on the left): one line per
    ``method`` (mean over seeds) with a band from the lowest to the highest seed, and the mean of the ``dense``
    method as a horizontal line. ``rows`` has columns ``method``, ``remaining``, ``accuracy``, ``seed``
    (e.g. the rows of ``lu.lottery.run_seed``); methods sharing a round share its ``remaining`` up to rounding."""
    _frame(rows, "rows", {"method", "remaining", "accuracy", "seed"})
    _ax(ax)
    _numbers(rows["remaining"], "rows['remaining']", 0, low_open=True)
    _numbers(rows["accuracy"], "rows['accuracy']")
    ax = ax or plt.subplots(figsize=(8, 4.5))[1]
    for i, (method, part) in enumerate(rows[rows["method"] != dense].groupby("method", sort=False)):
        stats = part.groupby(part["remaining"].round(3))["accuracy"].agg(["mean", "min", "max"]).sort_index()
        color = PALETTE[i % len(PALETTE)]
        ax.plot(stats.index, stats["mean"], marker="o", ms=4, color=color, label=method)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
    if (rows["method"] == dense).any():
        ax.axhline(rows.loc[rows["method"] == dense, "accuracy"].mean(), color="black", ls="--", lw=1,
                   label=f"{dense} (mean)")
    ax.set_xscale("log")
    low = rows["remaining"].min()
    ticks = [t for t in (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001) if t >= low * 0.9]
    ax.set_xticks(ticks, [f"{100 * t:g}%" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (log scale)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    return ax


def layer_sparsity_bars(reports: dict[str, dict[str, float]], ax: plt.Axes | None = None) -> plt.Axes:
    """Grouped bars of the sparsity (fraction of zeros, 0–1) of each layer: ``reports`` maps a label (e.g.
    ``"layer-wise"``) to ``{layer name: sparsity}``; all reports must name the same layers, in order. Layer names
    are shortened to their last two parts (``0.query``, ``output.dense``, ...)."""
    check.mapping(reports, "reports", what="a dict {label: {layer name: sparsity}}")
    if not reports:
        raise ValueError("layer_sparsity_bars needs at least one report")
    _ax(ax)
    for label, report in reports.items():
        check.mapping(report, f"reports[{label!r}]", non_empty=True, what="a dict {layer name: sparsity}")
        for name, v in report.items():
            check.fraction(v, f"reports[{label!r}][{name!r}]", high_open=False, hint="a sparsity")
    layers = list(next(iter(reports.values())))
    if any(list(r) != layers for r in reports.values()):
        raise ValueError("every report must name the same layers in the same order")
    ax = ax or plt.subplots(figsize=(11, 4))[1]
    width = 0.8 / len(reports)
    for i, (label, report) in enumerate(reports.items()):
        xs = [j + (i - (len(reports) - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, list(report.values()), width=width, label=label, color=PALETTE[i % len(PALETTE)])
    short = [".".join(n.replace("bert.encoder.layer.", "L").replace("attention.", "").split(".")[-3:])
             for n in layers]
    ax.set_xticks(range(len(layers)), short, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("sparsity (fraction of zeros)")
    ax.legend()
    return ax


def accuracy_vs_sparsity(rows: pd.DataFrame, dense_accuracy: float | None = None,
                         ax: plt.Axes | None = None) -> plt.Axes:
    """Test accuracy against sparsity (0–1, shown in %): one line per ``method`` in the order of first
    appearance; ``rows`` has columns ``method``, ``sparsity``, ``accuracy``. ``dense_accuracy`` draws the
    unpruned model as a dashed line."""
    _frame(rows, "rows", {"method", "sparsity", "accuracy"})
    _ax(ax)
    _numbers(rows["sparsity"], "rows['sparsity']", 0)
    _numbers(rows["accuracy"], "rows['accuracy']")
    if dense_accuracy is not None:
        check.real(dense_accuracy, "dense_accuracy")
    ax = ax or plt.subplots(figsize=(8, 4.5))[1]
    markers = "osD^v"
    for i, (method, part) in enumerate(rows.groupby("method", sort=False)):
        part = part.sort_values("sparsity")
        ax.plot(100 * part["sparsity"], part["accuracy"], marker=markers[i % len(markers)],
                color=PALETTE[i % len(PALETTE)], label=method)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="black", ls="--", lw=1, label="dense")
    ax.set_xlabel("sparsity of the Linear weights (%)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    return ax


def _matrix(value, name: str) -> np.ndarray:
    """A 2-D float array from a tensor or array-like, finite."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise check.BadType(f"{name} must be a 2-D tensor or array of numbers, got {check.show(value)}") from exc
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D tensor or array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def weight_block(before, after, ax: tuple[plt.Axes, plt.Axes] | None = None, title: str = "") -> tuple:
    """Two heat maps side by side: a small block of a weight matrix before and after pruning (2-D arrays or
    tensors of the same shape), on one colour scale centred at 0, so pruned entries show as white."""
    before, after = _matrix(before, "before"), _matrix(after, "after")
    if tuple(before.shape) != tuple(after.shape) or len(before.shape) != 2:
        raise ValueError(f"before and after must be 2-D and of one shape, got {tuple(before.shape)} and "
                         f"{tuple(after.shape)}")
    axes = ax or plt.subplots(1, 2, figsize=(9, 4))[1]
    lim = float(abs(before).max())
    for a, block, name in zip(axes, (before, after), ("before", "after"), strict=True):
        im = a.imshow(block, cmap="RdBu_r", vmin=-lim, vmax=lim)
        a.set_title(f"{title} {name}".strip())
        a.grid(False)
    plt.colorbar(im, ax=list(axes), shrink=0.8)
    return tuple(axes)


def course_chart(variants: list[dict], teacher_accuracy: float | None = None, band_points: float = 3.0,
                 ax: plt.Axes | None = None, mb_per_area: float | None = None) -> plt.Axes:
    """Every variant of the course on one chart: test accuracy against latency, bubble area proportional to size
    on disk (one MB-to-area scale for all bubbles, so areas compare). Bubbles are numbered; a key beside the axes
    names them, so that labels never overlap in a crowded corner.

    Each variant is a dict with ``name``, ``latency_ms``, ``accuracy`` (fraction), ``size_mb`` and optionally
    ``measured`` (default True: measured in this run, a filled bubble; False: placed from another lesson's
    recorded ratios, a hollow dashed bubble). ``teacher_accuracy`` draws a band ``band_points`` percentage points
    below it: the variants inside the band keep the teacher's accuracy within that margin. ``mb_per_area`` fixes
    the scale (default: the largest variant gets an area of 1500 points²).
    """
    _check_variants(variants, "course_chart")
    _ax(ax)
    if teacher_accuracy is not None:
        check.fraction(teacher_accuracy, "teacher_accuracy", high_open=False, hint="a fraction")
    check.real(band_points, "band_points", 0, 100, hint="percentage points")
    if mb_per_area is not None:
        check.positive(mb_per_area, "mb_per_area")
    ax = ax or plt.subplots(figsize=(11, 6))[1]
    scale = mb_per_area or max(v["size_mb"] for v in variants) / 1500
    if teacher_accuracy is not None:
        ax.axhspan(teacher_accuracy - band_points / 100, teacher_accuracy, color="grey", alpha=0.12, zorder=0,
                   label=f"within {band_points:g} points of the teacher")
    key, placed = [], []
    xs, ys = [v["latency_ms"] for v in variants], [v["accuracy"] for v in variants]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    for i, v in enumerate(variants):
        color = PALETTE[i % len(PALETTE)]
        measured = v.get("measured", True)
        ax.scatter(v["latency_ms"], v["accuracy"], s=v["size_mb"] / scale, zorder=3,
                   color=color if measured else "none", alpha=0.45 if measured else 1.0,
                   edgecolor=color if not measured else "black", linestyle="-" if measured else "--", linewidth=1.2)
        # a number whose bubble sits on top of earlier ones moves up, a step per neighbour, with a leader line
        near = sum(abs(v["latency_ms"] - x) / x_span < 0.04 and abs(v["accuracy"] - y) / y_span < 0.04
                   for x, y in placed)
        placed.append((v["latency_ms"], v["accuracy"]))
        ax.annotate(str(i + 1), (v["latency_ms"], v["accuracy"]), xytext=(9 * near, 11 * near),
                    textcoords="offset points", fontsize=8, ha="center", va="center", zorder=4, fontweight="bold",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"} if near else None)
        key.append(f"{i + 1:>2}  {v['name']} ({v['size_mb']:.0f} MB)" + ("" if measured else " *"))
    ax.text(1.02, 1.0, "\n".join(key) + ("\n\n* recorded by another lesson" if len(key) > sum(
        v.get("measured", True) for v in variants) else ""), transform=ax.transAxes, va="top", ha="left",
        fontsize=8, family="monospace")
    ax.scatter([], [], s=80, color="grey", alpha=0.45, edgecolor="black", label="measured in this run")
    ax.scatter([], [], s=80, color="none", edgecolor="grey", linestyle="--", label="recorded by another lesson")
    ax.set_xlabel("latency, batch of 32 (ms, lower is better)")
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower left", fontsize=8)
    return ax


def budget_chart(rows: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Test accuracy against stored kilobytes (log scale) for an equal-budget comparison: one line per ``model``
    (mean over seeds; a dot per seed), ticks at the budgets. ``rows`` has columns ``model``, ``bytes``,
    ``accuracy`` and ``budget_bytes`` (rows without a budget are drawn as a horizontal reference line), e.g. from
    ``lu.combine.budget_experiment``. Rows are grouped into budgets by ``budget_density`` when the column exists
    (the exact byte count differs a little from seed to seed), else by ``budget_bytes``."""
    _frame(rows, "rows", {"model", "bytes", "accuracy", "budget_bytes"})
    _ax(ax)
    _numbers(rows["bytes"], "rows['bytes']", 0, low_open=True)
    _numbers(rows["accuracy"], "rows['accuracy']")
    ax = ax or plt.subplots(figsize=(8, 4.5))[1]
    budgeted = rows[rows["budget_bytes"].notna()]
    group = "budget_density" if "budget_density" in rows.columns else "budget_bytes"
    for i, (model, part) in enumerate(budgeted.groupby("model", sort=False)):
        stats = part.groupby(group).agg(kb=("bytes", "mean"), mean=("accuracy", "mean")).sort_values("kb")
        color = PALETTE[i % len(PALETTE)]
        ax.scatter(part["bytes"] / 1e3, part["accuracy"], s=12, color=color, alpha=0.5)
        ax.plot(stats["kb"] / 1e3, stats["mean"], marker="o", color=color, label=f"{model} (mean; dots: seeds)")
    for model, part in rows[rows["budget_bytes"].isna()].groupby("model", sort=False):
        ax.axhline(part["accuracy"].mean(), color="black", ls="--", lw=1,
                   label=f"{model} ({part['bytes'].mean() / 1e3:.0f} kB)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if len(budgeted):
        budgets = sorted(budgeted.groupby(group)["bytes"].mean() / 1e3)
        ax.set_xticks(budgets, [f"{b:.0f}" for b in budgets])
    ax.set_xlabel("stored size (kB, log scale)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    return ax


def head_heatmap(scores, ax: plt.Axes | None = None, title: str = "", annotate: bool = True,
                 removed: dict[int, list[int]] | None = None) -> plt.Axes:
    """A heat map of one number per attention head: ``scores`` of shape (layers, heads) (tensor or array), layer 0
    at the bottom as in a diagram of the encoder, with the values written in the cells when ``annotate``.
    ``removed`` (``{layer: [head, ...]}``) marks those cells with a cross."""
    values = _matrix(scores, "scores (layers, heads)")
    _ax(ax)
    n_layers, n_heads = values.shape
    if removed is not None:
        check.mapping(removed, "removed", what="a dict {layer: [head, ...]}")
        for layer, heads in removed.items():
            check.integer(layer, "removed: layer", 0, n_layers - 1)
            for h in check.items(heads, f"removed[{layer}]", non_empty=False, what="a list of heads"):
                check.integer(h, f"removed[{layer}]: head", 0, n_heads - 1)
    ax = ax or plt.subplots(figsize=(1 + 0.6 * n_heads, 1 + 0.5 * n_layers))[1]
    im = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)])
    ax.set_yticks(range(n_layers), [str(i) for i in range(n_layers)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.grid(False)
    if annotate:
        mid = (values.max() + values.min()) / 2
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < mid else "black")
    for layer, heads in (removed or {}).items():
        for h in heads:
            ax.plot(h, layer, marker="x", color=PALETTE[3], markersize=14, markeredgewidth=2)
    plt.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    return ax
