"""Widgets that wrap plain functions. Each widget has a fallback function that prints the same result, for
front ends where widgets do not render (static pages, some editors) — and so the tests can call it."""

from __future__ import annotations

from . import memory


def fit_table(models: dict[str, float], devices: dict[str, float] | None = None, dtype: str = "fp32",
              mode: str = "inference") -> list[dict]:
    """Does each model fit on each device? Prints a table (✅/❌ and the GB needed) and returns its rows.

    ``models`` maps a name to a parameter count; ``devices`` maps a name to GB (default :data:`memory.DEVICES`).
    """
    devices = devices or memory.DEVICES
    rows = []
    for name, n in models.items():
        row = {"model": name, "needed_gb": memory.fits(n, 1, dtype, mode)["needed_gb"]}
        for dev, gb in devices.items():
            row[dev] = memory.fits(n, gb, dtype, mode)["fits"]
        rows.append(row)
    width = max(len(m) for m in models)
    header = f"{'model':<{width}} {'needs GB':>9}  " + "  ".join(devices)
    print(f"{mode} in {dtype}\n{header}")
    for row in rows:
        marks = "  ".join(f"{('✅' if row[d] else '❌'):^{len(d)}}" for d in devices)
        print(f"{row['model']:<{width}} {row['needed_gb']:>9,.2f}  {marks}")
    return rows


def fit_widget(models: dict[str, float]):
    """An interactive "does it fit?" explorer over model, precision, mode and device memory.

    Falls back to :func:`fit_table` (printed for every model and device) when ipywidgets is unavailable.
    Returns the widget (or None after the fallback).
    """
    try:
        import ipywidgets as w
        from IPython.display import display
    except ImportError:
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
