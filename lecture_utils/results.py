"""The results contract: notebooks record their headline numbers; the course runner collects them.

``lu.record("teacher.test_accuracy", 0.83)`` prints the number and, when the notebook is run by
``python -m lecture_utils course`` (or the tests), writes it to the file named by ``$LECTURE_UTILS_RESULTS_FILE``.
The runner merges those files into ``build/results.json``. Units: accuracies are fractions in [0, 1], latencies
ms, sizes MB (10^6 bytes), speed-ups and size ratios are baseline / variant, a key ending in ``_drop`` is in
percentage points.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re

from .config import RESULTS_ENV, atomic_write

__all__ = ["RESULTS_ENV", "record", "recorded"]

KEY_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")

_recorded: dict[str, float] = {}


def record(key: str, value: float, quiet: bool = False) -> None:
    """Record one headline number of this notebook under a dotted key such as ``teacher.test_accuracy``.

    The key is lower-case words joined by dots (at least two parts); the value a finite real number (a 0-d tensor
    or NumPy scalar is accepted). Prints what it recorded and returns nothing, so a cell ending with it stays quiet.
    """
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"Result keys are dotted lower-case names like 'teacher.test_accuracy', got {key!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        size = getattr(value, "numel", getattr(value, "size", None))
        size = size() if callable(size) else size
        if hasattr(value, "item") and size == 1:  # a 0-d tensor or NumPy scalar
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"Result {key!r} must be one real number, got {type(value).__name__}"
                            + (f" with {size} elements" if isinstance(size, int) and size != 1 else ""))
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"Result {key!r} must be finite, got an int too large for a float ({len(str(value))} "
                         "digits)") from None
    if not math.isfinite(value):
        raise ValueError(f"Result {key!r} must be finite, got {value}")
    if not isinstance(quiet, bool):
        raise TypeError(f"quiet must be True or False, got {quiet!r}")
    _recorded[key] = value
    path = os.environ.get(RESULTS_ENV)
    if path:
        atomic_write(path, json.dumps(_recorded, indent=2, sort_keys=True))
    if not quiet:
        print(f"📌 recorded {key} = {value:.4g}")


def recorded() -> dict[str, float]:
    """Everything this kernel has recorded so far (a copy)."""
    return dict(_recorded)
