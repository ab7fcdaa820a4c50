"""Shared argument checks for the helpers: each returns the value in a plain form or raises a ``TypeError`` (wrong
kind of value) or ``ValueError`` (right kind, wrong value) whose message names the parameter, what was given and
what is allowed.

Numbers: a Python ``int``/``float``, a NumPy scalar or a one-element tensor/array are accepted wherever a number
is expected (``np.int64(3)`` and ``torch.tensor(3)`` are valid layer indices); ``bool`` is never a number here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["BadType", "show", "integer", "optional_integer", "real", "optional_real", "positive", "fraction", "flag",
           "choice", "text", "module", "conv1d_layers", "linear_model", "callable_", "mapping", "items", "integers",
           "strings", "tensor", "function_name", "result", "loader", "device", "scale"]


class BadType(TypeError, ValueError):
    """A value of the wrong kind (a string where a list is expected, a float where an int is). Both a TypeError
    and a ValueError, so ``except ValueError`` around a helper catches every bad argument."""


def show(value: Any, limit: int = 80) -> str:
    """A short ``repr`` of ``value`` for an error message (shapes and dtypes for tensors and arrays)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, nn.Module):
        return f"a {type(value).__name__} module"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    kind = type(value).__name__
    return text if type(value) in (int, float, str, list, tuple, dict, type(None)) else f"{text} ({kind})"


def _scalar(value: Any) -> Any:
    """Unwrap a NumPy scalar, a 0-d/one-element array or tensor to a Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_meta:
        return value.detach().item()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None, *, hint: str = "",
            maximum_text: str | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound optional). Integer NumPy scalars and
    one-element integer tensors are accepted; floats (even 3.0), bools and strings are not. ``maximum_text``
    names the upper bound in the message (``"min(out, in) = 8"``); ``hint`` adds a reason."""
    raw = _scalar(value)
    if minimum is not None and maximum is not None:
        allowed = f"an int from {minimum} to {maximum_text or maximum}"
    elif minimum is not None:
        allowed = "a positive int" if minimum == 1 else "a non-negative int" if minimum == 0 else \
            f"an int >= {minimum}"
    elif maximum is not None:
        allowed = f"an int <= {maximum_text or maximum}"
    else:
        allowed = "an int"
    hint = f" ({hint})" if hint else ""
    if isinstance(raw, bool) or not isinstance(raw, numbers.Integral):
        raise BadType(f"{name} must be {allowed}{hint}, got {show(value)}")
    raw = int(raw)
    if (minimum is not None and raw < minimum) or (maximum is not None and raw > maximum):
        raise ValueError(f"{name} must be {allowed}{hint}, got {raw}")
    return raw


def optional_integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """:func:`integer`, or None when ``value`` is None."""
    return None if value is None else integer(value, name, minimum, maximum)


def _range_text(minimum: Any, maximum: Any, low_open: bool = False, high_open: bool = False) -> str:
    if minimum is not None and maximum is not None:
        return f" in {'(' if low_open else '['}{minimum}, {maximum}{')' if high_open else ']'}"
    if minimum is not None:
        return f" {'>' if low_open else '>='} {minimum}"
    if maximum is not None:
        return f" {'<' if high_open else '<='} {maximum}"
    return ""


def real(value: Any, name: str, minimum: float | None = None, maximum: float | None = None, *,
         low_open: bool = False, high_open: bool = False, finite: bool = True, hint: str = "") -> float:
    """``value`` as a finite ``float`` within the given bounds (``low_open``/``high_open`` exclude the bound).
    NumPy scalars and one-element tensors are accepted; NaN is never, infinity only with ``finite=False``."""
    raw = _scalar(value)
    allowed = f"a {'finite ' if finite else ''}number{_range_text(minimum, maximum, low_open, high_open)}"
    sign = ("positive" if low_open else "non-negative") if minimum == 0 and maximum is None else None
    notes = ([sign] if sign else []) + ([hint] if hint else [])
    hint = f" ({'; '.join(notes)})" if notes else ""
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
        raise BadType(f"{name} must be {allowed}{hint}, got {show(value)}")
    raw = float(raw)
    if math.isnan(raw) or (finite and math.isinf(raw)):
        raise ValueError(f"{name} must be {allowed}{hint}, got {raw}")
    too_low = minimum is not None and (raw <= minimum if low_open else raw < minimum)
    too_high = maximum is not None and (raw >= maximum if high_open else raw > maximum)
    if too_low or too_high:
        raise ValueError(f"{name} must be {allowed}{hint}, got {raw:g}")
    return raw


def optional_real(value: Any, name: str, minimum: float | None = None, maximum: float | None = None,
                  **kwargs) -> float | None:
    """:func:`real`, or None when ``value`` is None."""
    return None if value is None else real(value, name, minimum, maximum, **kwargs)


def positive(value: Any, name: str, hint: str = "") -> float:
    """A finite number > 0."""
    return real(value, name, 0, None, low_open=True, hint=hint)


def fraction(value: Any, name: str, *, low_open: bool = False, high_open: bool = True, hint: str = "") -> float:
    """A number in [0, 1) by default; ``low_open``/``high_open`` choose which ends are excluded."""
    return real(value, name, 0, 1, low_open=low_open, high_open=high_open, hint=hint)


def flag(value: Any, name: str) -> bool:
    """A bool (NumPy bools accepted); 0/1 or strings are refused, since ``"no"`` would be true."""
    if isinstance(value, np.bool_):
        return bool(value)
    if not isinstance(value, bool):
        raise BadType(f"{name} must be True or False, got {show(value)}")
    return value


def choice(value: Any, name: str, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed`` (compared with ==), else a ValueError listing them."""
    try:
        ok = any(value == a and type(value) is type(a) for a in allowed)
    except Exception:  # noqa: BLE001 - an array or other odd value that cannot be compared: not allowed
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of the allowed values, got {show(value)}. "
                         f"Allowed: {', '.join(str(a) for a in allowed)}.")
    return value


def text(value: Any, name: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise BadType(f"{name} must be a string, got {show(value)}")
    return value


def module(value: Any, name: str = "model") -> nn.Module:
    """An ``nn.Module``."""
    if not isinstance(value, nn.Module):
        raise BadType(f"{name} must be a torch nn.Module, got {show(value)}")
    return value


def conv1d_layers(model: nn.Module) -> list[str]:
    """Names of the transformers ``Conv1D`` layers of ``model`` (GPT-2 style: a linear layer whose weight is stored
    as (in, out), which is not an ``nn.Linear``)."""
    return [n for n, m in model.named_modules()
            if type(m).__name__ == "Conv1D" and type(m).__module__.startswith("transformers")]


def linear_model(model: Any, helper: str, name: str = "model") -> nn.Module:
    """``model`` as an ``nn.Module`` whose linear layers are all ``nn.Linear``: a model with transformers'
    ``Conv1D`` layers (GPT-2) is refused, since a helper that acts on ``nn.Linear`` would silently skip them."""
    module(model, name)
    conv = conv1d_layers(model)
    if conv:
        raise ValueError(
            f"{helper} acts on nn.Linear layers, but {name} ({type(model).__name__}) keeps {len(conv)} of its linear "
            f"layers as transformers Conv1D ({', '.join(conv[:3])}{', ...' if len(conv) > 3 else ''}; GPT-2 style, "
            "weight stored as (in, out)): they would be left untouched and the result would look done. The course's "
            "helpers support models built of nn.Linear (BERT, DistilBERT, ELECTRA, and Llama-style language models "
            "such as Llama, SmolLM2, Mistral or Qwen2).")
    return model


def callable_(value: Any, name: str) -> Any:
    """A callable (a function)."""
    if not callable(value):
        raise BadType(f"{name} must be a function, got {show(value)}")
    return value


def mapping(value: Any, name: str, non_empty: bool = False, what: str = "a dict") -> Mapping:
    """A Mapping (dict), non-empty when asked."""
    if not isinstance(value, Mapping):
        raise BadType(f"{name} must be {what}, got {show(value)}")
    if non_empty and len(value) == 0:
        raise ValueError(f"{name} must not be empty ({what} with at least one entry), got an empty one")
    return value


def items(value: Any, name: str, non_empty: bool = True, what: str = "a list") -> list:
    """A list made of a list, tuple, range, 1-D array or tensor; a string, a dict or a single number is refused
    (``"abc"`` would otherwise be taken as three one-letter items)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise BadType(f"{name} must be {what}, got {show(value)}")
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 1:
            raise BadType(f"{name} must be {what} (or a 1-D tensor/array), got {show(value)}")
        out = value.tolist()
    elif isinstance(value, Iterator):
        raise BadType(f"{name} must be {what}, not a one-pass iterator (got {show(value)}): pass list(...)")
    else:
        out = list(value)
    if non_empty and not out:
        raise ValueError(f"{name} must not be empty ({what} with at least one entry)")
    return out


def integers(value: Any, name: str, minimum: int | None = None, maximum: int | None = None,
             non_empty: bool = True) -> list[int]:
    """A list of ints each in ``[minimum, maximum]`` (see :func:`items` and :func:`integer`)."""
    return [integer(v, f"{name}[{i}]", minimum, maximum)
            for i, v in enumerate(items(value, name, non_empty, "a list of ints"))]


def strings(value: Any, name: str, non_empty: bool = True) -> list[str]:
    """A list of strings; a single string is refused (it would be split into characters)."""
    if isinstance(value, str):
        raise BadType(f"{name} must be a list of strings, got the single string {show(value)}: wrap it as "
                        f"[{value[:40]!r}]")
    out = items(value, name, non_empty, "a list of strings")
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise BadType(f"{name} must be a list of strings, got items {show(bad)}")
    return out


def tensor(value: Any, name: str, *, floating: bool = False, finite: bool = True, dims: Sequence[int] | None = None,
           non_empty: bool = False) -> torch.Tensor:
    """A torch tensor; ``floating`` demands a float dtype, ``finite`` no NaN/inf, ``dims`` one of these numbers of
    dimensions, ``non_empty`` at least one element."""
    if not isinstance(value, torch.Tensor):
        raise BadType(f"{name} must be a torch tensor, got {show(value)}"
                        + (" (use torch.as_tensor)" if isinstance(value, (np.ndarray, list)) else ""))
    if dims is not None and value.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise BadType(f"{name} must be a floating-point tensor, got dtype {value.dtype} (use .float())")
    if non_empty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if finite and value.is_meta:
        raise ValueError(f"{name} is a meta tensor (no data): pass a tensor with values")
    if finite and (value.is_floating_point() or value.is_complex()) and value.numel() and \
            not bool(torch.isfinite(value.detach()).all()):
        n = int((~torch.isfinite(value.detach())).sum())
        raise ValueError(f"{name} must be finite, but {n} of its {value.numel()} values are NaN or infinite")
    return value


def function_name(fn: Any) -> str:
    """How to name a (student's) function in a message: ``your function `f```."""
    return f"`{getattr(fn, '__qualname__', None) or getattr(fn, '__name__', None) or type(fn).__name__}`"


def result(value: Any, fn: Any, shape: Sequence[int], *, what: str = "a tensor", floating: bool = True,
           mask: bool = False, positive: bool = False) -> torch.Tensor:
    """What a function passed to a helper returned, checked before it is used: a tensor of exactly ``shape`` (never
    broadcast), finite, floating point (``floating``), or a keep-mask of bools or 0/1 values (``mask``, returned as
    bool), all > 0 with ``positive``. The error names the function, what it returned and what was expected."""
    shape = tuple(shape)
    who = f"{function_name(fn)} must return {what} of shape {shape}"
    if not isinstance(value, torch.Tensor):
        raise BadType(f"{who}, but it returned {show(value)}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{who}, but it returned shape {tuple(value.shape)} (results are never broadcast)")
    if mask:
        if value.dtype != torch.bool:
            if value.is_complex() or not bool(((value == 0) | (value == 1)).all()):
                raise ValueError(f"{who} holding True/False (or 0/1), but it returned other values "
                                 f"({show(value)})")
            value = value != 0
        return value
    if floating and not value.is_floating_point():
        raise BadType(f"{who} and a floating-point dtype, but it returned dtype {value.dtype}")
    if value.is_floating_point() and not bool(torch.isfinite(value.detach()).all()):
        n = int((~torch.isfinite(value.detach())).sum())
        raise ValueError(f"{who} with finite values, but {n} of its {value.numel()} values are NaN or infinite")
    if positive and not bool((value > 0).all()):
        raise ValueError(f"{who} with every value > 0, but its smallest is {value.min().item():g}")
    return value


def loader(value: Any, name: str = "loader") -> Any:
    """Something to iterate batches from: not a string, dict or single tensor; not an empty sized container."""
    if isinstance(value, (str, bytes, Mapping, torch.Tensor)) or not isinstance(value, Iterable):
        hint = " (a single batch: wrap it as [batch])" if isinstance(value, Mapping) else ""
        raise BadType(f"{name} must be a DataLoader or a list of batches{hint}, got {show(value)}")
    try:
        n = len(value)
    except TypeError:
        return value
    if n == 0:
        raise ValueError(f"{name} is empty: it must yield at least one batch")
    return value


def device(value: Any, name: str = "device") -> torch.device:
    """A ``torch.device`` from a string such as "cpu" or "cuda:0", or a device."""
    if isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise BadType(f"{name} must be a device name such as 'cpu' or 'cuda', got {show(value)}")
    try:
        return torch.device(value)
    except RuntimeError as exc:
        raise ValueError(f"{name} must be a device name such as 'cpu', 'cuda' or 'mps', got {value!r}") from exc


def scale(value: Any, name: str = "scale"):
    """A :class:`lecture_utils.config.Scale` from a scale name ("smoke", "laptop", "full"), a Scale, or None
    (the scale of ``$LECTURE_UTILS_SCALE``)."""
    from .config import SCALES, Scale, get_scale

    if isinstance(value, Scale):
        return value
    if value is not None and not isinstance(value, str):
        raise BadType(f"{name} must be one of {', '.join(map(repr, SCALES))} or None, got {show(value)}")
    return get_scale(value)
