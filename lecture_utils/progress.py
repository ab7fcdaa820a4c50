"""Progress bars that leave nothing broken behind.

A ``tqdm.auto`` bar in Jupyter is a widget. Its output stays in the notebook after the bar is gone, and a saved
notebook reopened later shows "Error displaying widget: model not found" there (an HTML page shows the bar frozen
at 0%). :func:`bar` shows the same live widget, but when the bar closes it replaces its own output with plain text:
the final state of the bar when ``leave`` is True, nothing when ``leave`` is False. Outside a Jupyter kernel it is
tqdm's text bar; with ``enabled=False`` or ``$TQDM_DISABLE=1`` it is silent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm import tqdm as text_tqdm

from .config import PROGRESS_OFF_ENV as DISABLE_ENV  # tqdm's own switch; the course runner sets it
from .config import headless

__all__ = ["in_notebook_kernel", "bar"]


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel whose front end can show widgets (ipywidgets importable, not a headless run:
    see :func:`lecture_utils.config.headless`)."""
    if headless():
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True,
        leave: bool = False, **kwargs) -> text_tqdm:
    """A tqdm progress bar over ``iterable`` (``total`` steps); a widget in Jupyter that turns into plain text (or
    nothing, when ``leave`` is False) once closed. Use it like tqdm: iterate, ``set_postfix``, ``close``."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r} ({type(enabled).__name__})")
    if not isinstance(leave, bool):
        raise TypeError(f"leave must be True or False, got {leave!r} ({type(leave).__name__})")
    if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float)) or not total >= 0):
        raise ValueError(f"total must be a number of steps >= 0 (or None), got {total!r}")
    disable = not enabled or os.environ.get(DISABLE_ENV, "") == "1"
    if disable or not in_notebook_kernel():
        return text_tqdm(iterable, total=total, desc=desc, disable=disable, leave=leave, **kwargs)
    return _WidgetBar(iterable, total=total, desc=desc, leave=leave, **kwargs)


def _widget_class():
    from tqdm.notebook import tqdm as notebook_tqdm

    return notebook_tqdm


class _WidgetBar(_widget_class()):
    """tqdm's notebook bar, displayed under a display id so that closing it can overwrite its output."""

    def __init__(self, *args, **kwargs):
        from IPython.display import display

        self._handle = None
        super().__init__(*args, display=False, **kwargs)
        if not self.disable:
            self._handle = display(self.container, display_id=True)
            self.displayed = True

    def close(self) -> None:
        if self.disable or self._handle is None:
            return super().close()
        line = self.format_meter(**self.format_dict) if self.leave else ""
        handle, self._handle = self._handle, None
        super().close()
        handle.update({"text/plain": line}, raw=True)  # the output keeps text, no widget reference
        self.container.close()  # and the widget's model is released
