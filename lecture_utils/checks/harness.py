"""The machinery every exercise check shares: run hidden cases, turn the learner's failures into feedback, report.

A lesson's check (``checks/lessonNN.py``) builds a few hidden cases, each a function that calls the learner's code
through :func:`call` and compares with :func:`number`, :func:`close`, :func:`as_tensor` or :func:`tensor_like`,
raising :class:`Wrong` with what the learner should see; :func:`run_cases` runs them and prints the verdict.

Graded mode (a failed check raises :class:`CheckFailed`) is read from the kernel's environment when a check runs:
``config.STRICT_ENV`` set to 1 or 0 decides; unset, it is on while nbgrader executes (``config.NBGRADER_ENV``).
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..config import NBGRADER_ENV, STRICT_ENV

__all__ = ["CASE_TIMEOUT_S", "NBGRADER_ENV", "STRICT_ENV", "CheckFailed", "CheckResult", "Exercise", "EXERCISES",
           "declare", "exercise", "use"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable)
CASE_TIMEOUT_S = 10.0  # seconds one call of the learner's function may take before the check gives up on it


class CheckFailed(AssertionError):
    """Raised by a failed check in graded mode."""

    def _render_traceback_(self) -> list[str]:
        """What IPython (and so nbgrader's feedback and Validate) shows: the verdict, without a traceback."""
        return [f"❌ CheckFailed: {self}"]


@dataclass(frozen=True)
class CheckResult:
    """What a check returns: truthy when every hidden case passed. ``message`` is the verdict it printed."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        """Show nothing as a cell's value: the check has already printed its verdict."""


@dataclass(frozen=True)
class Exercise:
    """One exercise, declared once (by :func:`declare`, at the bottom of its lesson's check module); the check cell,
    the student copy's fallback (:func:`use`), the tests' correct and wrong answers and the graded wrong answer of the
    nbgrader test are all read from here.

    ``name`` is the function the learner writes, and the name of its check (``lu.checks.<name>``). ``reference`` is
    the course's solution, called like the learner's function: the cells below an unfinished exercise use it, and
    the tests require it to pass its own check. ``wrong`` are plausible mistakes, each called like the learner's
    function, that the check must fail; ``graded_wrong`` is one of them written as a learner would type it, the body
    that replaces the solution region when nbgrader grades a wrong submission.
    """

    name: str
    lesson: str
    check: Callable[[Callable], CheckResult]
    reference: Callable
    wrong: tuple[Callable, ...]
    graded_wrong: str

    def __post_init__(self) -> None:
        if not (callable(self.check) and callable(self.reference)) or not self.wrong or not self.graded_wrong.strip():
            raise ValueError(f"exercise {self.name!r}: a check, a reference, at least one wrong answer and a graded "
                             "wrong answer are required")


EXERCISES: dict[str, Exercise] = {}  # every exercise of the course by name, in lesson order (filled by declare)


def declare(lesson: str, check: Callable[[Callable], CheckResult], reference: Callable, wrong: tuple[Callable, ...],
            graded_wrong: str) -> Exercise:
    """Declare the exercise whose check is ``check`` (its name is the check's) in lesson ``lesson`` ("04"); see
    :class:`Exercise` for the rest. A name declared twice is a mistake and raises ValueError."""
    ex = Exercise(check.__name__, lesson, check, reference, tuple(wrong), graded_wrong)
    if ex.name in EXERCISES:
        raise ValueError(f"exercise {ex.name!r} is declared twice (lessons {EXERCISES[ex.name].lesson} and {lesson})")
    EXERCISES[ex.name] = ex
    return ex


def exercise(name: str) -> Exercise:
    """The declaration of exercise ``name`` (the function the learner writes), or a KeyError listing the names."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise is called {name!r}; the course's exercises are {', '.join(EXERCISES)}")
    return EXERCISES[name]


class Wrong(Exception):
    """One hidden case failed; the message is what the learner sees (raised by a lesson's cases)."""


def _strict() -> bool:
    """Graded mode: ``LECTURE_UTILS_STRICT_CHECKS`` if set to 1 or 0, else on while nbgrader executes."""
    explicit = os.environ.get(STRICT_ENV, "").strip()
    if explicit in ("0", "1"):
        return explicit == "1"
    return bool(os.environ.get(NBGRADER_ENV))


class _TimedOut(BaseException):
    """The learner's function ran past its time limit (a BaseException, so their ``except Exception`` lets it by)."""


def _copied(value: Any) -> Any:
    """A deep copy of a check's input, so the learner's function cannot change what the reference sees."""
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - an uncopyable input is passed as it is
        return value


def _with_time_limit(fn: Callable[..., T], args: tuple, seconds: float) -> T:
    """``fn(*args)``, interrupted with :class:`_TimedOut` after ``seconds``.

    In the main thread of a POSIX process (a Jupyter kernel, pytest) a timer signal interrupts the function where it
    is. Elsewhere the function runs in a daemon thread that is abandoned when it overruns.
    """
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def on_alarm(_signum, _frame):
            raise _TimedOut()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _TimedOut()
    if "error" in box:
        raise box["error"]
    return box["value"]


# Functions whose most recent check passed (weakly held: a redefined function starts unchecked).
_PASSED: weakref.WeakSet = weakref.WeakSet()
# The learner's functions called by the check that is running now.
_CALLED: list = []


def call(fn: Callable, *args: Any) -> Any:
    """Call the learner's function on copies of ``args``, turning its failures into feedback."""
    if not callable(fn):
        raise Wrong(f"expected a function, got {type(fn).__name__}. Pass the function itself, without calling it.")
    _CALLED.append(fn)
    try:
        result = _with_time_limit(fn, tuple(_copied(a) for a in args), CASE_TIMEOUT_S)
    except _TimedOut:
        raise Wrong(f"your function did not return within {CASE_TIMEOUT_S:g} s on this case, so the check gave up "
                     "on it. Look for a loop that never ends (or one far longer than it needs to be).") from None
    except NotImplementedError:
        raise Wrong("not implemented yet: replace `raise NotImplementedError()` with your code.") from None
    except Exception as exc:  # noqa: BLE001 - any error in the learner's code is feedback, not a crash
        raise Wrong(f"your code raised {type(exc).__name__}: {exc}") from None
    _check_returned(result)
    return result


def _check_returned(value) -> None:
    """Reject results that hold no usable values: meta tensors and numpy arrays (also inside a tuple or list)."""
    items = value if isinstance(value, (tuple, list)) else [value]
    for item in items:
        if torch.is_tensor(item) and item.is_meta:
            raise Wrong("you returned a tensor on the 'meta' device, which has a shape but no values. Compute it "
                         "from the inputs (on the CPU) instead of creating it with device='meta'.")
        if type(item).__module__ == "numpy" and getattr(item, "ndim", 0) > 0:
            raise Wrong(f"you returned a numpy array of shape {tuple(item.shape)}; return a torch tensor "
                         "(torch.from_numpy(array) converts one, or stay in torch all the way).")


def number(value: Any, what: str) -> float:
    """``value`` as a float (a one-element tensor counts); anything else is feedback naming ``what``."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise Wrong(f"{what} should be a single number, got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise Wrong(f"{what} should be a number, got {type(value).__name__}.")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise Wrong(f"{what} should be a number, got {type(value).__name__} ({exc}).") from None


def close(got: float, want: float, what: str, rel: float = 1e-6, abs_tol: float = 1e-9) -> None:
    """Feedback naming the case ``what`` unless ``got`` is within ``rel`` (relative) or ``abs_tol`` of ``want``."""
    if not math.isclose(got, want, rel_tol=rel, abs_tol=abs_tol):
        raise Wrong(f"{what}: got {got:.6g}, expected {want:.6g}.")


def run_cases(title: str, cases: list[Callable[[], None]], hint: str) -> CheckResult:
    """Run every case; report the first failure with the hint. Raises :class:`CheckFailed` in graded mode."""
    _CALLED.clear()
    for i, case in enumerate(cases, start=1):
        try:
            case()
        except Wrong as wrong:
            return _failed(title, f"hidden case {i} of {len(cases)}: {wrong}", hint)
        except Exception as exc:  # noqa: BLE001 - a result the check cannot compare is feedback, not a crash
            return _failed(title, f"hidden case {i} of {len(cases)}: the check could not compare your result "
                                  f"({type(exc).__name__}: {exc}).", hint)
    message = f"✅ {title} — all {len(cases)} hidden cases pass."
    print(message)
    _mark(passed=True)
    return CheckResult(title, True, message)


def _failed(title: str, problem: str, hint: str) -> CheckResult:
    message = f"❌ {title} — {problem}\n   Hint: {hint}"
    print(message)
    _mark(passed=False)
    if _strict():
        raise CheckFailed(f"{title}: {problem}") from None
    return CheckResult(title, False, message)


def _mark(passed: bool) -> None:
    """Remember whether the functions the finished check called passed it (for :func:`use`)."""
    _NOTED.clear()  # a new verdict: announce the fallback again
    for fn in _CALLED:
        try:
            (_PASSED.add if passed else _PASSED.discard)(fn)
        except TypeError:  # not weak-referenceable (a builtin): never remembered, so use() falls back
            pass
    _CALLED.clear()


def use(fn: F, reference: F | None = None) -> F:
    """The function the rest of a lesson should use: ``fn`` if its check passed, else the course's reference — the
    declared exercise's of ``fn``'s name (:data:`EXERCISES`), or ``reference`` when one is given.

    A student copy runs top to bottom: cells after an unfinished exercise say so in one line and carry on with the
    reference implementation instead of raising ``NotImplementedError``.

    Examples:
        >>> def mine(x): raise NotImplementedError()
        >>> use(mine, abs) is abs  # never checked (or failed): the reference, with a note
        ℹ️  `mine` has not passed its check yet, so the cells below use the course's `abs` instead.
        True
        >>> def csr_nbytes(rows, cols, nnz, value_bytes, index_bytes): raise NotImplementedError()
        >>> use(csr_nbytes)(2, 3, 4, 4, 4)  # doctest: +ELLIPSIS
        ℹ️  `csr_nbytes` has not passed its check yet, so the cells below use the course's `...csr_nbytes` instead.
        44
    """
    if reference is None:
        name = getattr(fn, "__name__", None)
        if name not in EXERCISES:
            raise TypeError(f"use({name or type(fn).__name__}): no exercise is called {name!r}, so there is no "
                            "reference to fall back on; keep the exercise's function name (one of "
                            f"{', '.join(EXERCISES)}) or pass the reference: use(fn, reference)")
        reference = EXERCISES[name].reference
    if not callable(reference):
        raise TypeError(f"reference must be a function, got {type(reference).__name__}")
    _same_calls(fn, reference)
    if callable(fn) and fn in _PASSED:
        return fn
    note = (id(fn), id(reference), _execution_count())
    if note not in _NOTED:  # once per cell run, also when the cell calls use() in a loop
        _NOTED.add(note)
        name = getattr(fn, "__name__", None) or type(fn).__name__
        ref = ".".join(p for p in (getattr(reference, "__module__", None), getattr(reference, "__qualname__", None))
                       if p and p != "builtins") or repr(reference)
        print(f"ℹ️  `{name}` has not passed its check yet, so the cells below use the course's `{ref}` instead.")
    return reference


_NOTED: set = set()  # (function, reference, cell run) already announced by use()


def _same_calls(fn: Any, reference: Any) -> None:
    """Raise TypeError if ``reference`` cannot be called the way ``fn`` is (with ``fn``'s required positional
    arguments): use() would silently swap in a function of another signature."""
    import inspect

    if not callable(fn):
        return
    try:
        mine, theirs = inspect.signature(fn), inspect.signature(reference)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to compare
        return

    if any(p.kind is p.VAR_POSITIONAL for p in mine.parameters.values()):
        return  # fn(*args) says nothing about how it is called

    def required(sig: inspect.Signature) -> int:
        return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                   for p in sig.parameters.values())

    for a, b in ((mine, theirs),):
        try:
            b.bind(*range(required(a)))
        except TypeError:
            name = getattr(fn, "__name__", type(fn).__name__)
            ref = getattr(reference, "__qualname__", None) or repr(reference)
            raise TypeError(f"use({name}, {ref}): the reference takes {ref}{theirs} but `{name}` takes "
                            f"{name}{mine}; pass the course's function that does what `{name}` does") from None


def _execution_count() -> int | None:
    """The running cell's number in IPython (None elsewhere)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` if it is a tensor; anything else is feedback naming ``what``."""
    if not torch.is_tensor(value):
        raise Wrong(f"{what} should be a tensor, got {type(value).__name__}.")
    if value.is_complex():
        raise Wrong(f"{what} should hold real numbers, got a complex tensor ({value.dtype}).")
    return value


def tensor_like(value: Any, shape: torch.Size, what: str, of: str = "the weight's shape") -> torch.Tensor:
    """``value`` if it is a real tensor of ``shape`` (``of`` says whose: the weight's, by default); anything else is
    feedback naming ``what``, the expected and the given shape."""
    if not torch.is_tensor(value):
        raise Wrong(f"{what} should be a tensor, got {type(value).__name__}.")
    if value.shape != shape:
        raise Wrong(f"{what} should have {of} {tuple(shape)}, got {tuple(value.shape)}.")
    if value.is_complex():
        raise Wrong(f"{what} should hold real numbers, got a complex tensor ({value.dtype}).")
    return value


def measured(key: str, what: str) -> float:
    """A number this kernel's notebook recorded with ``lu.record`` (a prediction exercise's measurement); feedback
    naming ``what`` when the cell that measures it has not run yet."""
    from ..results import recorded

    value = recorded().get(key)
    if value is None:
        raise Wrong(f"{what} has not been measured yet: run the cells above this check first (the one that "
                     f"records {key!r}).")
    return value


def predicted(got: float, want: float, what: str, rel: float, gap: str = "") -> None:
    """Feedback unless the prediction ``got`` is within ``rel`` (relative) of the measurement ``want``; ``gap``
    says what a prediction outside the tolerance has missed."""
    if not math.isclose(got, want, rel_tol=rel):
        off = f"{100 * (got / want - 1):+.1f}%" if want else "off"
        raise Wrong(f"{what}: you predicted {got:.4g}, measured {want:.4g} ({off}, more than the ±{100 * rel:g}% "
                     f"allowed).{' ' + gap if gap else ''}")


def verdict(title: str, cases: list[Callable[[], None]], hint: str, explain: Callable[[], str]) -> CheckResult:
    """:func:`run_cases` for a prediction: after a pass, also print ``explain()`` (prediction against measurement,
    and what the remaining gap is)."""
    result = run_cases(title, cases, hint)
    if result.passed:
        try:
            print("   " + explain())
        except Exception:  # noqa: BLE001 - the explanation is a bonus; the verdict stands without it
            pass
    return result


def seeded_bert(vocab: int, hidden: int, layers: int, intermediate: int, max_positions: int) -> torch.nn.Module:
    """A BERT sequence classifier with 2 attention heads and weights seeded with 0: the small model a check builds
    to test the learner's function on a case of its own (sizes in tokens and features)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=intermediate, max_position_embeddings=max_positions))
