"""Widgets that wrap plain functions. Each widget has a fallback function that prints the same result, for
front ends where widgets do not render (static pages, some editors, headless runs) — and so the tests can call it.

Empty or mismatched tables (no models, no rows of logits, labels that do not match the columns) are refused with an
error naming the argument, in the widget and in its fallback alike: nothing is ever shown blank.

Every widget takes ``static``: True prints the fallback table instead of building the widget; None (the default)
does so when ipywidgets is missing or the notebook runs headless (the course runner, nbgrader's autograde and
validate: :func:`lecture_utils.config.headless`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import memory
from . import validate as check
from .config import headless

__all__ = ["fit_table", "fit_widget", "quantization_table", "quantization_widget", "temperature_table",
           "temperature_widget"]


def _widget_modules(static: bool | None):
    """(ipywidgets, IPython's display) when a live widget should be built, else (None, None)."""
    if static is not None:
        static = check.flag(static, "static")
    if static is None:
        static = headless()
    if static:
        return None, None
    try:
        import ipywidgets
        from IPython.display import display
    except ImportError:
        return None, None
    return ipywidgets, display


def _check_fit_args(models, devices, dtype: str = "fp32", mode: str = "inference") -> tuple[dict, dict]:
    """``models`` and ``devices`` as non-empty dicts of name → number, every value checked (so a table is never
    printed half, or blank)."""
    check.mapping(models, "models", non_empty=True, what="a dict of model name → number of parameters")
    if devices is None:
        devices = memory.DEVICES
    check.mapping(devices, "devices", non_empty=True, what="a dict of device name → GB of memory")
    models = {str(k): check.real(v, f"models[{k!r}]", 0, hint="a number of parameters") for k, v in models.items()}
    devices = {str(k): check.positive(v, f"devices[{k!r}]", "GB of device memory") for k, v in devices.items()}
    check.choice(mode, "mode", ["inference", "training"])
    check.choice(dtype, "dtype", list(memory.BYTES_PER_PARAM))
    memory.fits(1, 1, dtype, mode)  # refuses what cannot be (training in int8) before anything is printed
    return models, devices


def fit_table(models: dict[str, float], devices: dict[str, float] | None = None, dtype: str = "fp32",
              mode: str = "inference") -> list[dict]:
    """Does each model fit on each device? Prints a table (✅/❌ and the GB needed) and returns its rows.

    ``models`` maps a name to a parameter count; ``devices`` maps a name to GB (default :data:`memory.DEVICES`).
    Both must hold at least one entry (an empty table is refused, never printed blank).
    """
    models, devices = _check_fit_args(models, devices, dtype, mode)
    rows = []
    for name, n in models.items():
        row = {"model": name, "needed_gb": memory.fits(n, 1, dtype, mode).needed_gb}
        for dev, gb in devices.items():
            row[dev] = memory.fits(n, gb, dtype, mode).fits
        rows.append(row)
    width = max(len(m) for m in models)
    header = f"{'model':<{width}} {'needs GB':>9}  " + "  ".join(devices)
    print(f"{mode} in {dtype}\n{header}")
    for row in rows:
        marks = "  ".join(f"{('✅' if row[d] else '❌'):^{len(d)}}" for d in devices)
        print(f"{row['model']:<{width}} {row['needed_gb']:>9,.2f}  {marks}")
    return rows


def fit_widget(models: dict[str, float], static: bool | None = None):
    """An interactive "does it fit?" explorer over model, precision, mode and device memory.

    Falls back to :func:`fit_table` (printed for every model and device) when static (see the module docstring).
    Returns the widget (or None after the fallback).
    """
    models, _ = _check_fit_args(models, None)
    w, display = _widget_modules(static)
    if w is None:
        fit_table(models)
        return None
    model = w.Dropdown(options=list(models), description="model")
    dtype = w.ToggleButtons(options=list(memory.BYTES_PER_PARAM), description="precision")
    mode = w.ToggleButtons(options=["inference", "training"], description="mode")
    device = w.Dropdown(options=list(memory.DEVICES.items()), description="device")
    out = w.Output()

    def update(_=None):
        out.clear_output()
        with out:
            try:
                print(memory.describe_fit(models[model.value], device.value, dtype.value, mode.value))
            except ValueError as exc:  # e.g. training in int8
                print(f"⚠️  {exc}")

    for control in (model, dtype, mode, device):
        control.observe(update, names="value")
    update()
    box = w.VBox([model, dtype, mode, device, out])
    display(box)
    return box


def _check_weight(weight) -> torch.Tensor:
    """A non-empty, finite 2-D weight tensor (rows × columns: the per-channel rows use one scale per row)."""
    return check.tensor(weight, "weight", dims=(2,), non_empty=True)


def quantization_table(weight: torch.Tensor, bits: tuple[int, ...] = (8, 6, 4, 3, 2)) -> list[dict]:
    """Round-trip error of ``weight`` for every scheme × granularity × bit-width; prints a table, returns its rows.

    The plain-function twin of :func:`quantization_widget`. Errors are in the units of the weights.
    """
    from .quantize import roundtrip_error

    weight = _check_weight(weight)
    bits = check.integers(bits, "bits", 2, 16)
    rows = [roundtrip_error(weight, b, scheme, per_channel)
            for scheme in ("affine", "symmetric") for per_channel in (False, True) for b in bits]
    print(f"{'scheme':<10} {'granularity':<12} {'bits':>4} {'mean sq. error':>15} {'max |error|':>12}")
    for r in rows:
        gran = "per-channel" if r.per_channel else "per-tensor"
        print(f"{r.scheme:<10} {gran:<12} {r.bits:>4} {r.mse:>15.3e} {r.max_abs:>12.3e}")
    return rows


def quantization_widget(weight: torch.Tensor, static: bool | None = None):
    """Explore quantizing ``weight``: bits, scheme and granularity in, round-trip error out.

    Falls back to :func:`quantization_table` when static. Returns the widget (or None).
    """
    from .quantize import roundtrip_error

    weight = _check_weight(weight)
    w, display = _widget_modules(static)
    if w is None:
        quantization_table(weight)
        return None
    bits = w.IntSlider(value=8, min=2, max=8, description="bits")
    scheme = w.ToggleButtons(options=["affine", "symmetric"], description="scheme")
    # a checkbox's description sits in a fixed-width label unless told otherwise: let the whole text show
    per_channel = w.Checkbox(value=False, description="per-channel (one scale per row)", indent=False,
                             style={"description_width": "initial"}, layout=w.Layout(width="auto"))
    out = w.Output()

    def update(_=None):
        out.clear_output()
        with out:
            r = roundtrip_error(weight, bits.value, scheme.value, per_channel.value)
            print(f"{2 ** bits.value} levels · mean scale {r.mean_scale:.3e} · mean squared error {r.mse:.3e}"
                  f" · max |error| {r.max_abs:.3e}")

    for control in (bits, scheme, per_channel):
        control.observe(update, names="value")
    update()
    box = w.VBox([bits, scheme, per_channel, out])
    display(box)
    return box


def _check_logits(logits, labels) -> tuple[torch.Tensor, list[str]]:
    """``logits`` as a non-empty (N, C) float tensor and ``labels`` as C class names (one per column)."""
    check.tensor(logits, "logits", floating=True, dims=(2,), non_empty=True)
    labels = check.strings(labels, "labels")
    if len(labels) != logits.shape[1]:
        raise ValueError(f"labels must name every column of logits: logits has {logits.shape[1]} classes (shape "
                         f"{tuple(logits.shape)}), but {len(labels)} labels were given ({labels})")
    return logits, labels


def temperature_table(logits: torch.Tensor, temperatures: Sequence[float] = (1, 2, 4, 8),
                      labels: Sequence[str] = ("rotten", "fresh")) -> list[dict]:
    """Soft targets ``softmax(logits / T)`` of each row of ``logits`` (N, C) at each temperature; prints a table
    (one line per example and temperature) and returns its rows. The plain twin of :func:`temperature_widget`."""
    from .distill import soft_targets

    logits, labels = _check_logits(logits, labels)
    temperatures = [check.positive(t, f"temperatures[{i}]", "a softmax temperature")
                    for i, t in enumerate(check.items(temperatures, "temperatures", what="a list of temperatures"))]
    rows = []
    for i, row in enumerate(logits):
        for t in temperatures:
            probs = soft_targets(row, float(t))
            rows.append({"example": i + 1, "temperature": t, **{lab: p.item() for lab, p in zip(labels, probs,
                                                                                                    strict=True)}})
    print(f"{'example':>7} {'T':>4} " + " ".join(f"{lab:>8}" for lab in labels))
    for r in rows:
        print(f"{r['example']:>7} {r['temperature']:>4g} " + " ".join(f"{r[lab]:>8.3f}" for lab in labels))
    return rows


def temperature_widget(logits: torch.Tensor, labels: Sequence[str] = ("rotten", "fresh"), static: bool | None = None):
    """A slider over the temperature showing every example's soft targets; falls back to
    :func:`temperature_table` when static. Returns the widget (or None)."""
    from .distill import soft_targets

    logits, labels = _check_logits(logits, labels)
    w, display = _widget_modules(static)
    if w is None:
        temperature_table(logits, labels=labels)
        return None
    temperature = w.FloatLogSlider(value=1, base=2, min=-1, max=4, step=0.25, description="T")
    out = w.Output()

    def update(_=None):
        out.clear_output()
        with out:
            for i, row in enumerate(logits):
                probs = soft_targets(row, temperature.value)
                bars = "  ".join(f"{lab} {p.item():.3f} {'█' * round(20 * p.item())}" for lab, p in
                                 zip(labels, probs, strict=True))
                print(f"{i + 1}: {bars}")

    temperature.observe(update, names="value")
    update()
    box = w.VBox([temperature, out])
    display(box)
    return box
