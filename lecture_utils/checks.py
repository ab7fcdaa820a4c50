"""Exercise checks. After each exercise a cell calls ``lu.checks.<name>(your_function)``.

A check runs hidden cases against a reference, prints ✅ or ❌ with a hint that points the way without giving the
answer, and returns a :class:`CheckResult` that is truthy when every case passed. It never crashes and never hangs
on a wrong answer: a ``NotImplementedError``, an exception in your code, a value of the wrong type, shape or device,
or a function that runs longer than :data:`CASE_TIMEOUT_S` seconds on one case becomes feedback. Your function gets
copies of the check's inputs, so changing them in place cannot change the expected answer.

In graded mode a failed check raises :class:`CheckFailed`, so its test cell earns no points and an executed notebook
whose solution is wrong fails loudly. Graded mode is on while nbgrader grades or validates a notebook (it sets
``NBGRADER_EXECUTION`` in the kernel's environment) and when ``LECTURE_UTILS_STRICT_CHECKS=1`` (set by the course
runner and the tests); ``LECTURE_UTILS_STRICT_CHECKS=0`` switches it off even under nbgrader.
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

import torch

from . import memory
from .config import STRICT_ENV

NBGRADER_ENV = "NBGRADER_EXECUTION"  # nbgrader 0.9 sets it to "autograde" or "validate" while it executes a notebook
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


class _Wrong(Exception):
    """One hidden case failed; the message is what the learner sees."""


def _strict() -> bool:
    """Graded mode: ``LECTURE_UTILS_STRICT_CHECKS`` if set to 1 or 0, else on while nbgrader executes."""
    explicit = os.environ.get(STRICT_ENV, "").strip()
    if explicit in ("0", "1"):
        return explicit == "1"
    return bool(os.environ.get(NBGRADER_ENV))


class _TimedOut(BaseException):
    """The learner's function ran past its time limit (a BaseException, so their ``except Exception`` lets it by)."""


def _copied(value):
    """A deep copy of a check's input, so the learner's function cannot change what the reference sees."""
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - an uncopyable input is passed as it is
        return value


def _with_time_limit(fn: Callable, args: tuple, seconds: float):
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


def _call(fn: Callable, *args):
    """Call the learner's function on copies of ``args``, turning its failures into feedback."""
    if not callable(fn):
        raise _Wrong(f"expected a function, got {type(fn).__name__}. Pass the function itself, without calling it.")
    _CALLED.append(fn)
    try:
        result = _with_time_limit(fn, tuple(_copied(a) for a in args), CASE_TIMEOUT_S)
    except _TimedOut:
        raise _Wrong(f"your function did not return within {CASE_TIMEOUT_S:g} s on this case, so the check gave up "
                     "on it. Look for a loop that never ends (or one far longer than it needs to be).") from None
    except NotImplementedError:
        raise _Wrong("not implemented yet: replace `raise NotImplementedError()` with your code.") from None
    except Exception as exc:  # noqa: BLE001 - any error in the learner's code is feedback, not a crash
        raise _Wrong(f"your code raised {type(exc).__name__}: {exc}") from None
    _check_returned(result)
    return result


def _check_returned(value) -> None:
    """Reject results that hold no usable values: meta tensors and numpy arrays (also inside a tuple or list)."""
    items = value if isinstance(value, (tuple, list)) else [value]
    for item in items:
        if torch.is_tensor(item) and item.is_meta:
            raise _Wrong("you returned a tensor on the 'meta' device, which has a shape but no values. Compute it "
                         "from the inputs (on the CPU) instead of creating it with device='meta'.")
        if type(item).__module__ == "numpy" and getattr(item, "ndim", 0) > 0:
            raise _Wrong(f"you returned a numpy array of shape {tuple(item.shape)}; return a torch tensor "
                         "(torch.from_numpy(array) converts one, or stay in torch all the way).")


def _number(value, what: str) -> float:
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise _Wrong(f"{what} should be a single number, got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise _Wrong(f"{what} should be a number, got {type(value).__name__}.")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Wrong(f"{what} should be a number, got {type(value).__name__} ({exc}).") from None


def _close(got: float, want: float, what: str, rel: float = 1e-6, abs_tol: float = 1e-9) -> None:
    if not math.isclose(got, want, rel_tol=rel, abs_tol=abs_tol):
        raise _Wrong(f"{what}: got {got:.6g}, expected {want:.6g}.")


def _run(title: str, cases: list[Callable[[], None]], hint: str) -> CheckResult:
    """Run every case; report the first failure with the hint. Raises :class:`CheckFailed` in graded mode."""
    _CALLED.clear()
    for i, case in enumerate(cases, start=1):
        try:
            case()
        except _Wrong as wrong:
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


def use(fn: Callable, reference: Callable) -> Callable:
    """The function the rest of a lesson should use: ``fn`` if its check passed, else the course's ``reference``.

    A student copy runs top to bottom: cells after an unfinished exercise say so in one line and carry on with the
    reference implementation instead of raising ``NotImplementedError``.

    Examples:
        >>> def mine(x): raise NotImplementedError()
        >>> use(mine, abs) is abs  # never checked (or failed): the reference, with a note
        ℹ️  `mine` has not passed its check yet, so the cells below use the course's `abs` instead.
        True
    """
    if not callable(reference):
        raise TypeError(f"reference must be a function, got {type(reference).__name__}")
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


def _execution_count() -> int | None:
    """The running cell's number in IPython (None elsewhere)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


# --------------------------------------------------------------------------------------------------------------
# Lesson 00
# --------------------------------------------------------------------------------------------------------------

def accuracy(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> CheckResult:
    """Check ``fn(logits (N, C), labels (N,)) -> fraction of rows whose largest logit is the label``."""
    gen = torch.Generator().manual_seed(1234)

    def case(n: int, c: int):
        def run():
            logits = torch.randn(n, c, generator=gen)
            labels = torch.randint(0, c, (n,), generator=gen)
            want = (logits.argmax(-1) == labels).float().mean().item()
            got = _number(_call(fn, logits.clone(), labels.clone()), "accuracy")
            if not 0 <= got <= 1:
                raise _Wrong(f"accuracy must be a fraction in [0, 1], got {got:.4g} (did you forget to divide?)")
            _close(got, want, f"{n} examples, {c} classes", rel=1e-5)
        return run

    def perfect():
        labels = torch.tensor([0, 1, 1, 0])
        got = _number(_call(fn, torch.nn.functional.one_hot(labels, 2).float(), labels), "accuracy")
        _close(got, 1.0, "logits that always favour the right class")

    return _run("accuracy", [perfect, case(10, 2), case(33, 5), case(1, 3), case(500, 2)],
                "the predicted class of each row is the index of its largest logit (argmax over the last "
                "dimension); compare with the labels and take the mean as a float.")


def predicted_size_mb(fn: Callable[[int, float], float]) -> CheckResult:
    """Check ``fn(n_params, bytes_per_param) -> size in MB`` (MB = 10^6 bytes)."""
    def case(n: int, b: float):
        def run():
            got = _number(_call(fn, n, b), "size")
            want = n * b / 1e6
            if math.isclose(got, n * b / 2**20, rel_tol=1e-6) and not math.isclose(got, want, rel_tol=1e-6):
                raise _Wrong(f"{got:.6g} is in MiB (2^20 bytes); the course uses MB = 10^6 bytes.")
            _close(got, want, f"{n:,} parameters at {b} bytes each")
        return run

    return _run("predicted_size_mb", [case(1_000_000, 4), case(22_713_218, 4), case(110_000_000, 2), case(7, 1),
                                      case(123_456_789, 0.5)],
                "size in bytes is parameters × bytes per parameter; one MB is 10^6 bytes.")


def speedup(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(baseline_ms, variant_ms) -> speed-up`` (baseline / variant: 2.0 means twice as fast)."""
    def case(base: float, var: float):
        def run():
            _close(_number(_call(fn, base, var), "speed-up"), base / var, f"baseline {base} ms, variant {var} ms")
        return run

    return _run("speedup", [case(100, 50), case(50, 100), case(42.0, 42.0), case(3.3, 1.1), case(1e3, 7.5)],
                "a speed-up compares how long the baseline takes with how long the variant takes; a faster "
                "variant must give a number above 1.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 01
# --------------------------------------------------------------------------------------------------------------

def weight_bytes(fn: Callable[[int, int], float]) -> CheckResult:
    """Check ``fn(n_params, bits) -> bytes`` needed to store the weights at ``bits`` bits each."""
    def case(n: int, bits: int):
        def run():
            _close(_number(_call(fn, n, bits), "bytes"), n * bits / 8, f"{n:,} parameters at {bits} bits")
        return run

    return _run("weight_bytes", [case(1000, 32), case(1000, 16), case(22_713_218, 8), case(7_000_000_000, 4),
                                 case(3, 1)],
                "a byte holds 8 bits; work out the bytes per parameter first.")


def adam_training_bytes(fn: Callable[[int], float]) -> CheckResult:
    """Check ``fn(n_params) -> bytes`` to train in fp32 with Adam (weights, gradients, two optimizer states)."""
    def case(n: int):
        def run():
            got = _number(_call(fn, n), "bytes")
            want = memory.training_bytes(n, "fp32", "adam")
            if math.isclose(got, n * 4, rel_tol=1e-6):
                raise _Wrong(f"{got:.6g} bytes counts the weights only.")
            _close(got, want, f"{n:,} parameters")
        return run

    return _run("adam_training_bytes", [case(1), case(1000), case(22_713_218), case(175_000_000_000)],
                "list every fp32 tensor training keeps per parameter: the weight, its gradient, and Adam's "
                "two running averages (first and second moment). Each fp32 value takes 4 bytes.")


def embedding_share(fn: Callable[[torch.nn.Module], float]) -> CheckResult:
    """Check ``fn(model) -> fraction of the model's parameters that sit in its embeddings`` on small BERTs."""
    from transformers import BertConfig, BertForSequenceClassification

    def case(vocab: int, hidden: int, layers: int):
        def run():
            cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                             intermediate_size=2 * hidden, max_position_embeddings=32)
            torch.manual_seed(0)
            model = BertForSequenceClassification(cfg)
            emb = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." in f".{n}")
            want = emb / sum(p.numel() for p in model.parameters())
            got = _number(_call(fn, model), "share")
            if 1 < got <= 100 and math.isclose(got / 100, want, rel_tol=1e-6):
                raise _Wrong("return a fraction in [0, 1], not a percentage.")
            word = model.bert.embeddings.word_embeddings.weight.numel() / sum(p.numel() for p in model.parameters())
            if math.isclose(got, word, rel_tol=1e-6) and not math.isclose(word, want, rel_tol=1e-6):
                raise _Wrong("you counted the word embeddings only; position and token-type embeddings "
                             "(and the embeddings' LayerNorm) belong to the embeddings too.")
            _close(got, want, f"BERT with vocabulary {vocab}, hidden {hidden}, {layers} layers", rel=1e-6)
        return run

    return _run("embedding_share", [case(1000, 16, 2), case(30522, 32, 1), case(50, 64, 4)],
                "walk over model.named_parameters(); the embeddings' parameters have 'embeddings' in their name. "
                "Divide their element count (numel) by the total.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 02
# --------------------------------------------------------------------------------------------------------------

def _bool_vector(value, n: int, what: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value)
        except Exception:  # noqa: BLE001 - anything that is not tensor-like is feedback
            raise _Wrong(f"{what} should be a tensor of {n} booleans, got {type(value).__name__}.") from None
    if value.shape != (n,):
        raise _Wrong(f"{what} should have shape ({n},) — one entry per network — got {tuple(value.shape)}.")
    return value.bool()


def xor_success(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check ``fn(logits (S, N), targets (N,) of 0/1) -> bool (S,)``: True for the networks whose logit is > 0
    exactly at the points whose target is 1 (every point classified correctly)."""
    gen = torch.Generator().manual_seed(2)
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0])

    def case(logits: torch.Tensor, y: torch.Tensor = targets):
        def run():
            want = ((logits > 0) == (y > 0.5)).all(dim=-1)
            got = _bool_vector(_call(fn, logits.clone(), y.clone()), len(logits), "the result")
            if not torch.equal(got, want):
                i = int((got != want).nonzero()[0])
                raise _Wrong(f"network {i} with logits {[round(v, 2) for v in logits[i].tolist()]} and targets "
                             f"{y.tolist()}: you said {bool(got[i])}, expected {bool(want[i])}.")
        return run

    solved = torch.tensor([[-2.0, 3.0, 1.5, -0.5]])
    three_of_four = torch.tensor([[-2.0, 3.0, 1.5, 0.5], [-2.0, -3.0, 1.5, -0.5], [2.0, 3.0, 1.5, -0.5]])
    tiny_margins = torch.tensor([[-1e-3, 1e-3, 2e-3, -4e-3], [1e-3, 1e-3, 2e-3, 4e-3]])
    random = torch.randn(64, 4, generator=gen) * 3
    random[::3] = torch.tensor([-1.0, 1.0, 1.0, -1.0]) * (torch.rand(22, 4, generator=gen) + 0.1)  # solved rows
    other_task = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    return _run("xor_success", [case(solved), case(three_of_four), case(tiny_margins), case(random),
                                case(torch.randn(10, 5, generator=gen), other_task)],
                "a network has solved the task only if *every* point is on the right side: logit > 0 where the "
                "target is 1 and logit <= 0 where it is 0. Compare per point, then combine over the last dimension "
                "so you get one boolean per network (row).")


def effective_rank(fn: Callable[[torch.Tensor, float], int]) -> CheckResult:
    """Check ``fn(singular_values (K,), energy) -> the smallest k whose k largest squared singular values hold at
    least ``energy`` of the sum of all squared singular values``."""
    from .overparam import effective_rank as reference

    gen = torch.Generator().manual_seed(3)

    def case(s: torch.Tensor, energy: float):
        def run():
            got = _number(_call(fn, s.clone(), energy), "effective rank")
            want = reference(s, energy)
            if got != want:
                plain = int(((s.sort(descending=True).values.cumsum(0) / s.sum()) < energy).sum()) + 1
                extra = " (that is the count for the singular values themselves, not their squares)" \
                    if got == plain and plain != want else ""
                raise _Wrong(f"{s.numel()} singular values, energy {energy}: got {got:g}, expected {want}{extra}.")
        return run

    decaying = torch.logspace(0, -3, 50)
    return _run("effective_rank", [case(torch.tensor([4.0, 0.0, 0.0]), 0.9), case(torch.ones(10), 0.5),
                                   case(decaying, 0.9), case(decaying.flip(0), 0.99),
                                   case(torch.rand(30, generator=gen), 0.8), case(torch.tensor([3.0, 4.0]), 1.0)],
                "the energy of a direction is its singular value squared. Sort from largest to smallest, take the "
                "running sum of the squares as a share of the total, and count how many you need to reach the "
                "target share. The singular values may arrive in any order.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 03
# --------------------------------------------------------------------------------------------------------------

def kd_loss(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(student_logits, teacher_logits, labels, temperature, alpha) -> scalar`` (Hinton's loss)."""
    from . import distill

    gen = torch.Generator().manual_seed(3)

    def case(n: int, c: int, temperature: float, alpha: float):
        def run():
            s, t = torch.randn(n, c, generator=gen) * 2, torch.randn(n, c, generator=gen) * 2
            y = torch.randint(0, c, (n,), generator=gen)
            got = _number(_call(fn, s.clone(), t.clone(), y.clone(), temperature, alpha), "loss")
            want = distill.kd_loss(s, t, y, temperature, alpha).item()
            soft = distill.kd_loss(s, t, y, temperature, 1.0).item()
            if alpha > 0 and math.isclose(got, want - alpha * soft * (1 - 1 / temperature**2), rel_tol=1e-4) \
                    and temperature != 1:
                raise _Wrong(f"T = {temperature}: the soft term is missing its T² factor.")
            if alpha > 0 and math.isclose(got, want + alpha * soft * (n - 1), rel_tol=1e-4) and n > 1:
                raise _Wrong("the KL term is summed over the batch; average it per example (reduction 'batchmean').")
            _close(got, want, f"{n} examples, {c} classes, T = {temperature}, alpha = {alpha}", rel=1e-4, abs_tol=1e-6)
        return run

    return _run("kd_loss", [case(4, 2, 1.0, 0.5), case(8, 2, 2.0, 0.5), case(5, 3, 4.0, 0.9), case(6, 2, 8.0, 1.0),
                            case(3, 4, 2.0, 0.0)],
                "soft part: KL divergence between the teacher's and the student's softmax at temperature T (use "
                "log_softmax for the student, reduction='batchmean'), times T²; hard part: cross-entropy with the "
                "labels at T = 1; mix them as alpha · soft + (1 − alpha) · hard.")


def layer_map(fn: Callable[[int, int], list]) -> CheckResult:
    """Check ``fn(n_student, n_teacher) -> teacher layer (0-based) for each student layer`` (uniform mapping)."""
    from . import distill

    def case(n_student: int, n_teacher: int):
        def run():
            got = _call(fn, n_student, n_teacher)
            try:
                got = [int(v) for v in got]
            except (TypeError, ValueError):
                raise _Wrong(f"return a list of ints, got {got!r}") from None
            want = distill.uniform_layer_map(n_student, n_teacher)
            if got != want:
                raise _Wrong(f"{n_student} student layers from {n_teacher} teacher layers: got {got}.")
        return run

    return _run("layer_map", [case(3, 6), case(1, 6), case(4, 12), case(6, 6), case(2, 8)],
                "the teacher has k = n_teacher / n_student layers per student layer; student layer m (counting from "
                "0) learns from the last teacher layer of its block of k.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 07
# --------------------------------------------------------------------------------------------------------------

def _tensor_like(value, shape: torch.Size, what: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise _Wrong(f"{what} should be a tensor, got {type(value).__name__}.")
    if value.shape != shape:
        raise _Wrong(f"{what} should have the weight's shape {tuple(shape)}, got {tuple(value.shape)}.")
    return value


def imp_round(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple]) -> CheckResult:
    """Check ``fn(trained (R, C), init (R, C), mask (R, C) bool, fraction) -> (new_mask, rewound)``: prune
    ``round(fraction × survivors)`` of the surviving weights with the smallest ``|trained|``, then set the weights
    to ``init`` where the new mask is True and 0 elsewhere."""
    gen = torch.Generator().manual_seed(7)

    def case(shape: tuple[int, int], alive: float, fraction: float):
        def run():
            init = torch.randn(shape, generator=gen)
            mask = torch.rand(shape, generator=gen) < alive
            trained = (init + torch.randn(shape, generator=gen)) * mask
            out = _call(fn, trained.clone(), init.clone(), mask.clone(), fraction)
            if not isinstance(out, tuple) or len(out) != 2:
                raise _Wrong("return a pair (new_mask, rewound_weights).")
            new = _tensor_like(out[0], trained.shape, "new_mask").bool()
            rewound = _tensor_like(out[1], trained.shape, "rewound_weights")
            n_alive = int(mask.sum())
            want_keep = n_alive - round(fraction * n_alive)
            where = f"a {shape[0]}×{shape[1]} weight with {n_alive} survivors, fraction {fraction}"
            if (new & ~mask).any():
                raise _Wrong(f"{where}: your new mask revives weights that were already pruned.")
            if int(new.sum()) != want_keep:
                raise _Wrong(f"{where}: your mask keeps {int(new.sum())} weights, expected {want_keep}.")
            mags = trained.abs()
            if new.any() and (mask & ~new).any() and mags[new].min() < mags[mask & ~new].max():
                raise _Wrong(f"{where}: you pruned a weight larger in magnitude than one you kept.")
            if torch.allclose(rewound, trained * new) and not torch.allclose(trained * new, init * new):
                raise _Wrong(f"{where}: the survivors keep their trained values; rewind them to init.")
            if not torch.allclose(rewound, init * new):
                raise _Wrong(f"{where}: rewound weights should equal init where the new mask is True and 0 "
                             "elsewhere.")
        return run

    return _run("imp_round", [case((4, 5), 1.0, 0.2), case((30, 20), 1.0, 0.5), case((50, 40), 0.41, 0.2),
                              case((10, 10), 0.8, 0.0), case((25, 8), 0.6, 0.9)],
                "count the survivors in the mask and prune a fraction of *them* (not of all weights). Among the "
                "survivors, the ones with the smallest absolute trained value go; then take the initial weights "
                "and multiply by the new mask.")


def snip_mask(fn: Callable[[list[torch.Tensor], list[torch.Tensor], float], list[torch.Tensor]]) -> CheckResult:
    """Check ``fn(weights, grads, keep) -> masks``: lists of tensors, one per layer; keep the
    ``round(keep × total)`` connections with the largest ``|grad × weight|`` over all layers together."""
    gen = torch.Generator().manual_seed(11)

    def case(shapes: list[tuple[int, int]], keep: float, scale_last: float = 1.0):
        def run():
            weights = [torch.randn(s, generator=gen) for s in shapes]
            grads = [torch.randn(s, generator=gen) for s in shapes]
            weights[-1] = weights[-1] * scale_last
            out = _call(fn, [w.clone() for w in weights], [g.clone() for g in grads], keep)
            if not isinstance(out, (list, tuple)) or len(out) != len(shapes):
                raise _Wrong(f"return a list of {len(shapes)} masks, one per layer.")
            masks = [_tensor_like(m, w.shape, f"mask {i}").bool() for i, (m, w) in enumerate(zip(out, weights,
                                                                                                 strict=True))]
            scores = torch.cat([(g * w).abs().flatten() for g, w in zip(grads, weights, strict=True)])
            kept = torch.cat([m.flatten() for m in masks])
            want = round(keep * scores.numel())
            where = f"{len(shapes)} layers, {scores.numel()} weights, keep {keep}"
            if int(kept.sum()) != want:
                raise _Wrong(f"{where}: you kept {int(kept.sum())} weights, expected {want}.")
            if kept.any() and (~kept).any() and scores[kept].min() < scores[~kept].max():
                layerwise = all(int(m.sum()) == round(keep * m.numel()) for m in masks)
                raise _Wrong(f"{where}: you dropped a connection with a larger |g·w| than one you kept"
                             + (" — SNIP ranks all layers together, not each layer on its own." if layerwise
                                else "."))
        return run

    return _run("snip_mask", [case([(6, 4)], 0.5), case([(20, 10), (10, 3)], 0.2, scale_last=10.0),
                              case([(40, 30), (30, 20), (20, 10)], 0.1), case([(5, 5), (5, 2)], 1.0)],
                "score every connection by the absolute value of gradient times weight, put the scores of all "
                "layers in one long vector, keep the k largest (torch.topk), then cut the result back into one "
                "mask per layer with each layer's shape.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 04
# --------------------------------------------------------------------------------------------------------------

def magnitude_mask(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(weight, sparsity) -> mask``: a mask of the weight's shape, 1/True where a weight survives,
    removing the ``round(sparsity × numel)`` entries with the smallest |weight| — the mask of
    ``torch.nn.utils.prune.l1_unstructured``."""
    from torch.nn.utils import prune

    gen = torch.Generator().manual_seed(4)

    def case(shape: tuple[int, ...], s: float, spread_rows: bool = False):
        def run():
            w = torch.randn(shape, generator=gen)
            if spread_rows:
                w = w * torch.logspace(-2, 1, shape[0]).unsqueeze(1)
            layer = torch.nn.Linear(shape[1], shape[0], bias=False)
            with torch.no_grad():
                layer.weight.copy_(w)
            want = prune.l1_unstructured(layer, "weight", amount=s).weight_mask.bool()
            got = _tensor_like(_call(fn, w.clone(), s), w.shape, "mask")
            got = got.bool() if got.dtype == torch.bool else got != 0
            where = f"a {shape[0]}×{shape[1]} weight at sparsity {s}"
            removed, want_removed = int((~got).sum()), int((~want).sum())
            if removed != want_removed:
                raise _Wrong(f"{where}: your mask removes {removed} weights, expected {want_removed}.")
            if not torch.equal(got, want):
                kept_small = (got & ~want).any()
                raise _Wrong(f"{where}: " + ("you kept a weight smaller in magnitude than one you removed — rank by "
                                            "|w| over the whole matrix." if kept_small else
                                            "your mask differs from the expected one."))
        return run

    return _run("magnitude_mask", [case((6, 5), 0.5), case((20, 30), 0.9), case((40, 10), 0.3, spread_rows=True),
                                   case((8, 8), 0.0)],
                "count how many weights go (round(sparsity × number of weights)), find the threshold among the "
                "absolute values (torch.topk or sort on the flattened |w|), and keep everything above it.")


def matrix_sparsity(fn: Callable[[torch.nn.Module], float]) -> CheckResult:
    """Check ``fn(model) -> float``: the fraction of zeros over the model's weight matrices only (every module
    ``weight`` with 2+ dimensions; biases and LayerNorm parameters left out), in [0, 1]."""
    from .measure import sparsity

    def case(seed: int, frac: float):
        def run():
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 16), torch.nn.LayerNorm(16),
                                        torch.nn.Linear(16, 4))
            with torch.no_grad():
                for m in (model[1], model[3]):
                    m.weight[torch.rand_like(m.weight) < frac] = 0
                    m.bias.zero_()  # zero biases must not count
            want = sparsity(model)  # before the learner's function runs
            got = _number(_call(fn, model), "sparsity")
            if 1 < got <= 100:
                raise _Wrong(f"got {got:.4g}: return a fraction in [0, 1], not a percentage.")
            _close(got, want, f"a small model with {100 * frac:.0f}% of its Linear weights set to 0", rel=1e-5)
        return run

    return _run("matrix_sparsity", [case(0, 0.5), case(1, 0.9), case(2, 0.0)],
                "walk over model.modules(), keep the `weight` of those whose weight has 2 or more dimensions, and "
                "divide the number of zeros by the number of entries of those matrices together.")


def csr_nbytes(fn: Callable[[int, int, int, int, int], int]) -> CheckResult:
    """Check ``fn(rows, cols, nnz, value_bytes, index_bytes) -> int``: bytes of a (rows, cols) matrix with nnz
    non-zeros in CSR format — values, column indices and row pointers."""

    def case(rows: int, cols: int, nnz: int, vb: int, ib: int):
        def run():
            got = _number(_call(fn, rows, cols, nnz, vb, ib), "bytes")
            want = nnz * vb + nnz * ib + (rows + 1) * ib
            _close(got, want, f"{rows}×{cols}, {nnz} non-zeros, {vb}-byte values, {ib}-byte indices")
        return run

    return _run("csr_nbytes", [case(384, 384, 14_746, 4, 4), case(1536, 384, 58_982, 4, 8), case(3, 5, 0, 4, 8),
                               case(10, 1000, 10_000, 2, 4)],
                "CSR stores one value and one column index per non-zero, plus one row pointer per row and one more "
                "at the end. The number of columns does not appear.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 05
# --------------------------------------------------------------------------------------------------------------

def _int_list(value, what: str) -> list[int]:
    try:
        items = [int(v) for v in value]
    except (TypeError, ValueError):
        raise _Wrong(f"{what} should be a list of ints, got {value!r}.") from None
    if any(not float(v).is_integer() for v in value):
        raise _Wrong(f"{what} should hold whole layer numbers, got {value!r}.")
    return items


def symmetric_layers(fn: Callable[[int, int], list]) -> CheckResult:
    """Check ``fn(n_layers, k) -> the 0-based layers that symmetric dropping removes``: k consecutive layers from
    the middle; when the kept layers cannot split evenly, the bottom keeps the extra one (any order accepted)."""
    from .surgery import layers_to_drop

    def case(n: int, k: int):
        def run():
            got = sorted(_int_list(_call(fn, n, k), "the dropped layers"))
            want = layers_to_drop("symmetric", n, k)
            if got == want:
                return
            where = f"{n} layers, k = {k}"
            if len(got) != k:
                raise _Wrong(f"{where}: you drop {len(got)} layers, expected {k}.")
            if got == [i + 1 for i in want]:
                raise _Wrong(f"{where}: got {got} — count layers from 0 (layer 0 is next to the embeddings).")
            top_heavy = (n - k) // 2
            if got == list(range(top_heavy, top_heavy + k)):
                raise _Wrong(f"{where}: got {got}, which keeps more layers at the top than at the bottom; the bottom "
                             "should keep the extra one.")
            raise _Wrong(f"{where}: got {got}.")
        return run

    return _run("symmetric_layers", [case(12, 4), case(6, 2), case(12, 6), case(6, 3), case(24, 7), case(7, 2),
                                     case(6, 1), case(12, 11)],
                "n_layers − k layers stay: half of them at the bottom (rounded up), the rest at the top. The dropped "
                "layers are the k consecutive ones just above the bottom part.")


def predicted_speedup(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(layer_share, kept_fraction) -> predicted speed-up`` when only the share ``layer_share`` of the
    run time scales with the number of layers (Amdahl's law): ``1 / ((1 - s) + s × f)``."""
    def case(share: float, kept: float):
        def run():
            got = _number(_call(fn, share, kept), "speed-up")
            time_ratio = (1 - share) + share * kept
            want = 1 / time_ratio
            if not math.isclose(want, time_ratio) and math.isclose(got, time_ratio, rel_tol=1e-6):
                raise _Wrong(f"share {share}, kept {kept}: {got:.4g} is the new time as a fraction of the old; "
                             "a speed-up is old time / new time.")
            if share < 1 and kept < 1 and math.isclose(got, 1 / kept, rel_tol=1e-6):
                raise _Wrong(f"share {share}, kept {kept}: {got:.4g} assumes the whole run time shrinks with the "
                             "layers; the rest (1 − share) stays.")
            _close(got, want, f"share {share}, kept {kept}", rel=1e-6)
        return run

    return _run("predicted_speedup", [case(1.0, 0.5), case(0.9, 0.5), case(0.5, 0.5), case(0.8, 1.0),
                                      case(0.95, 0.25), case(0.6, 2 / 3)],
                "split the old run time (call it 1) into a part that shrinks with the kept fraction and a part that "
                "does not; add them up to get the new time, then compare old with new.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 06
# --------------------------------------------------------------------------------------------------------------

def _as_tensor(value, what: str) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise _Wrong(f"{what} should be a tensor, got {type(value).__name__}.")
    return value


def affine_qparams(fn: Callable[[float, float, int], tuple]) -> CheckResult:
    """Check ``fn(x_min, x_max, bits) -> (scale, zero_point)`` for unsigned affine quantization."""
    from . import quantize as q

    def case(lo: float, hi: float, bits: int):
        def run():
            got = _call(fn, lo, hi, bits)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise _Wrong("return a pair (scale, zero_point).")
            scale, zp = _number(got[0], "scale"), _number(got[1], "zero point")
            want_s = q.qparams(lo, hi, bits, "affine")[0].item()
            _close(scale, want_s, f"scale for range [{lo}, {hi}] at {bits} bits", rel=1e-5)
            # the zero point in exact arithmetic; on a .5 tie float rounding may go either way, so both count
            t = min(lo, 0.0) / ((max(hi, 0.0) - min(lo, 0.0)) / (2**bits - 1))
            ties = {math.floor(t), math.ceil(t)} if abs(abs(t - math.floor(t)) - 0.5) < 1e-4 else {round(t)}
            allowed = {min(max(0 - r, 0), 2**bits - 1) for r in ties}
            if zp not in allowed:
                raise _Wrong(f"zero point for range [{lo}, {hi}] at {bits} bits: got {zp:g}, expected the integer "
                             f"{min(allowed)}.")
        return run

    return _run("affine_qparams", [case(-1.0, 1.0, 8), case(-0.3, 2.5, 8), case(-4.0, 0.5, 4), case(0.2, 1.7, 8),
                                   case(-6.1, -0.4, 3)],
                "the scale spreads the range over q_max - q_min steps (q_min = 0, q_max = 2^bits - 1); the zero point "
                "is the integer that x = 0 maps to: q_min - round(x_min / scale). Widen the range to include 0 first.")


def quantize_dequantize(fn: Callable[[torch.Tensor, float, int, int], torch.Tensor]) -> CheckResult:
    """Check ``fn(x, scale, zero_point, bits) -> x_hat`` (unsigned affine round trip, clamped to [0, 2^bits - 1])."""
    from . import quantize as q

    gen = torch.Generator().manual_seed(6)

    def case(scale: float, zp: int, bits: int):
        def run():
            x = torch.randn(7, 5, generator=gen) * 2
            got = _as_tensor(_call(fn, x.clone(), scale, zp, bits), "x_hat")
            if got.shape != x.shape:
                raise _Wrong(f"x_hat should have the shape of x {tuple(x.shape)}, got {tuple(got.shape)}.")
            want = q.dequantize(q.quantize(x, torch.tensor(scale), torch.tensor(zp), bits, signed=False),
                                torch.tensor(scale), torch.tensor(zp))
            if not torch.allclose(got.float(), want, atol=1e-5):
                worst = (got.float() - want).abs().max().item()
                raise _Wrong(f"scale {scale}, zero point {zp}, {bits} bits: off by up to {worst:.4g}. Values outside "
                             "the range must be clamped, and the result must be back in float units.")
        return run

    return _run("quantize_dequantize", [case(0.02, 128, 8), case(0.5, 3, 4), case(0.01, 0, 8), case(1.0, 2, 2)],
                "round(x / scale) + zero_point, clamp to [0, 2^bits - 1], then undo: (q - zero_point) * scale.")


def symmetric_scales(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """Check ``fn(weight (rows, cols), bits) -> scales (rows,)`` for symmetric per-channel (per-row) quantization."""
    from . import quantize as q

    gen = torch.Generator().manual_seed(66)

    def case(rows: int, cols: int, bits: int):
        def run():
            w = torch.randn(rows, cols, generator=gen) * torch.rand(rows, 1, generator=gen)
            got = _as_tensor(_call(fn, w.clone(), bits), "scales")
            want = q.tensor_qparams(w, bits, "symmetric", per_channel=True)[0].flatten()
            if got.numel() == 1 and rows > 1:
                raise _Wrong("you returned one scale for the whole matrix; per-channel means one per row.")
            if got.flatten().shape != want.shape:
                raise _Wrong(f"expected {rows} scales (one per row), got shape {tuple(got.shape)}.")
            if not torch.allclose(got.flatten().float(), want, rtol=1e-5):
                raise _Wrong(f"a {rows}×{cols} matrix at {bits} bits: scales differ from the expected ones.")
        return run

    return _run("symmetric_scales", [case(4, 10, 8), case(16, 3, 4), case(1, 50, 2), case(7, 7, 3)],
                "for each row, take its largest absolute value; the symmetric range [-max, max] is spread over "
                "q_max - q_min = 2^bits - 1 steps of a signed integer.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 08
# --------------------------------------------------------------------------------------------------------------

def low_rank(fn: Callable[[torch.Tensor, int], tuple]) -> CheckResult:
    """Check ``fn(weight (out, in), rank) -> (A (out, rank), B (rank, in))`` whose product ``A @ B`` is the best
    rank-``rank`` approximation of ``weight`` (truncated SVD). The split of the singular values between A and B is
    free; only the shapes and the product are checked."""
    gen = torch.Generator().manual_seed(8)

    def case(out: int, inp: int, rank: int, decay: bool = False):
        def run():
            w = torch.randn(out, inp, generator=gen)
            if decay:  # a matrix whose singular values fall off, like trained weights
                u, _, vh = torch.linalg.svd(w, full_matrices=False)
                w = (u * torch.logspace(0, -2, min(out, inp))) @ vh
            got = _call(fn, w.clone(), rank)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise _Wrong("return a pair (A, B).")
            a, b = _as_tensor(got[0], "A"), _as_tensor(got[1], "B")
            where = f"a {out}×{inp} weight at rank {rank}"
            if tuple(a.shape) != (out, rank) or tuple(b.shape) != (rank, inp):
                raise _Wrong(f"{where}: A should be {(out, rank)} and B {(rank, inp)}, got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}.")
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            want = (u[:, :rank] * s[:rank]) @ vh[:rank]
            got_w = a.float() @ b.float()
            scale = w.abs().max().item()
            if torch.allclose(got_w, want, atol=1e-4 * scale):
                return
            if torch.allclose(got_w, u[:, :rank] @ vh[:rank], atol=1e-4):
                raise _Wrong(f"{where}: A @ B is missing the singular values S.")
            if rank < min(out, inp) and torch.allclose(got_w, (u[:, -rank:] * s[-rank:]) @ vh[-rank:],
                                                         atol=1e-4 * scale):
                raise _Wrong(f"{where}: you kept the smallest singular values; keep the largest.")
            err, best = (got_w - w).norm().item(), (want - w).norm().item()
            raise _Wrong(f"{where}: ‖W − A @ B‖ is {err:.4g}, the best rank-{rank} approximation reaches {best:.4g}.")
        return run

    return _run("low_rank", [case(6, 4, 2), case(20, 30, 5, decay=True), case(48, 16, 16), case(8, 8, 1),
                             case(64, 24, 12, decay=True)],
                "torch.linalg.svd(weight, full_matrices=False) gives U, S and Vᵀ with S sorted from largest to "
                "smallest. Keep the first `rank` columns of U, entries of S and rows of Vᵀ, and put S into A or B "
                "(or √S into each) so that A @ B = U_r · diag(S_r) · Vᵀ_r.")


def sparse_int8_bytes(fn: Callable[[int, int, int], int]) -> CheckResult:
    """Check ``fn(rows, cols, nnz) -> bytes`` of a pruned weight stored as int8 non-zeros, a 1-bit-per-position
    bitmask rounded up to whole bytes, and one float32 scale per row."""
    from .combine import sparse_int8_bytes as reference

    def case(rows: int, cols: int, nnz: int):
        def run():
            got = _number(_call(fn, rows, cols, nnz), "bytes")
            want = reference(rows, cols, nnz)
            where = f"{rows}×{cols} with {nnz} non-zeros"
            if math.isclose(got, want - 4 * rows):
                raise _Wrong(f"{where}: got {got:g} — the float32 scale of every row is missing.")
            if math.isclose(got, nnz + rows * cols / 8 + 4 * rows) and got != want:
                raise _Wrong(f"{where}: got {got:g} — a file holds whole bytes: round the bitmask up.")
            _close(got, want, where)
        return run

    return _run("sparse_int8_bytes", [case(512, 40, 1024), case(512, 512, 26_214), case(3, 5, 7), case(10, 10, 0),
                                      case(7, 9, 63)],
                "three parts: one byte per non-zero value; one bit per position of the full matrix (rows × cols "
                "bits, rounded up to whole bytes with math.ceil); and 4 bytes of float32 scale per row.")


# --------------------------------------------------------------------------------------------------------------
# Lesson 09
# --------------------------------------------------------------------------------------------------------------

def quantize_groups(fn: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """Check ``fn(w, bits, group_size) -> w_hat``: round-to-nearest of each group of ``group_size`` consecutive
    weights of a row, unsigned affine with its own scale and integer zero point (range widened to include 0),
    dequantized back to floats in ``w``'s shape — :func:`lecture_utils.llm.quantize_groupwise`."""
    from .llm import quantize_groupwise

    gen = torch.Generator().manual_seed(9)

    def case(rows: int, cols: int, bits: int, group: int, shift: float = 0.0, outliers: bool = False):
        def run():
            w = torch.randn(rows, cols, generator=gen) * 0.05 + shift
            if outliers:
                w[:, 3] *= 40
            got = _as_tensor(_call(fn, w.clone(), bits, group), "w_hat")
            if got.shape != w.shape:
                raise _Wrong(f"w_hat should have w's shape {tuple(w.shape)}, got {tuple(got.shape)}.")
            want = quantize_groupwise(w, bits, group)
            where = f"a {rows}×{cols} weight, {bits} bits, groups of {group}"
            levels = max(int(torch.unique(r).numel()) for r in got.reshape(-1, group))
            if levels > 2**bits:
                raise _Wrong(f"{where}: a group holds {levels} different values, more than 2^{bits}.")
            if not torch.allclose(got.float(), want, atol=1e-6, rtol=1e-5):
                per_row = quantize_groupwise(w, bits, None)
                hint = (" It matches one scale per row: cut each row into groups first (reshape to "
                        "(-1, group_size))." if torch.allclose(got.float(), per_row, atol=1e-6) else "")
                raise _Wrong(f"{where}: off by up to {(got.float() - want).abs().max().item():.3g}.{hint}")
        return run

    return _run("quantize_groups", [case(8, 64, 4, 16), case(4, 96, 3, 32, outliers=True), case(6, 64, 8, 64),
                                    case(5, 32, 4, 8, shift=0.2), case(3, 48, 2, 16)],
                "reshape w to (-1, group_size) so each row is one group; per row take min and max (widened to "
                "include 0), scale = (max - min) / (2^bits - 1), zero point = round(-min / scale); round, clamp to "
                "[0, 2^bits - 1], dequantize, and reshape back.")


def kv_cache_bytes(fn: Callable[[int, int, int, int, float], float]) -> CheckResult:
    """Check ``fn(num_layers, num_kv_heads, head_dim, tokens, bytes_per_number) -> bytes`` of a KV cache."""
    from .llm import kv_cache_bytes as reference

    def case(layers: int, kv: int, hd: int, tokens: int, b: float):
        def run():
            got = _number(_call(fn, layers, kv, hd, tokens, b), "bytes")
            want = reference(layers, kv, hd, tokens, b)
            where = f"{layers} layers, {kv} key/value heads of size {hd}, {tokens} tokens, {b} bytes per number"
            if want and math.isclose(got, want / 2):
                raise _Wrong(f"{where}: got {got:g}, half the answer — the cache holds a key AND a value.")
            _close(got, want, where)
        return run

    return _run("kv_cache_bytes", [case(30, 3, 64, 1, 4), case(30, 3, 64, 2048, 2), case(32, 8, 128, 4096, 2),
                                   case(2, 1, 16, 0, 4), case(12, 12, 64, 100, 1)],
                "for every token the cache keeps one key vector and one value vector per layer and per key/value "
                "head, each head_dim numbers long; multiply by the bytes of one number.")


def wanda_mask(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(w, x_norm, sparsity) -> mask``: Wanda's keep-mask, scores |W_ij| × ‖X_j‖, the
    ``round(sparsity × in)`` lowest of every output row removed — :func:`lecture_utils.llm.wanda_mask`."""
    from .llm import magnitude_mask as mag_ref
    from .llm import wanda_mask as reference

    gen = torch.Generator().manual_seed(19)

    def case(rows: int, cols: int, s: float):
        def run():
            w = torch.randn(rows, cols, generator=gen)
            x_norm = torch.rand(cols, generator=gen) * torch.logspace(-1, 1, cols)
            got = _tensor_like(_call(fn, w.clone(), x_norm.clone(), s), w.shape, "mask")
            got = got.bool() if got.dtype == torch.bool else got != 0
            want = reference(w, x_norm, s)
            where = f"a {rows}×{cols} weight at sparsity {s}"
            if torch.equal(got, want):
                return
            if torch.equal(got, mag_ref(w * x_norm, s)) or torch.equal(got, mag_ref(w, s)):
                raise _Wrong(f"{where}: you compared over the whole matrix; Wanda compares within each output row.")
            if torch.equal(got, reference(w, torch.ones(cols), s)):
                raise _Wrong(f"{where}: your mask ignores the input norms (that is magnitude pruning per row).")
            raise _Wrong(f"{where}: your mask differs from the expected one in {int((got != want).sum())} places.")
        return run

    return _run("wanda_mask", [case(6, 8, 0.5), case(16, 32, 0.5), case(10, 20, 0.25), case(4, 12, 0.0)],
                "score = w.abs() * x_norm (broadcast over rows); in each row drop the round(sparsity × columns) "
                "lowest scores (topk with largest=False along dim 1) and keep the rest.")


def smooth_scales(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(act_absmax, weight_absmax, alpha) -> s``: SmoothQuant's s_j = max|X_j|^α / max|W_j|^(1−α)."""
    gen = torch.Generator().manual_seed(29)

    def case(n: int, alpha: float):
        def run():
            a = torch.rand(n, generator=gen) * 20 + 0.1
            w = torch.rand(n, generator=gen) + 0.05
            got = _as_tensor(_call(fn, a.clone(), w.clone(), alpha), "s")
            if got.shape != a.shape:
                raise _Wrong(f"expected one factor per channel, shape {tuple(a.shape)}, got {tuple(got.shape)}.")
            want = a.double() ** alpha / w.double() ** (1 - alpha)
            if torch.allclose(got.double(), w.double() ** alpha / a.double() ** (1 - alpha), rtol=1e-4) and \
                    alpha != 0.5:
                raise _Wrong(f"alpha = {alpha}: activations and weights are swapped.")
            if not torch.allclose(got.double(), want, rtol=1e-4):
                raise _Wrong(f"alpha = {alpha}, {n} channels: factors differ from the expected ones.")
        return run

    return _run("smooth_scales", [case(8, 0.5), case(16, 0.8), case(5, 0.0), case(5, 1.0), case(32, 0.3)],
                "the activation maximum to the power alpha, divided by the weight maximum to the power 1 - alpha, "
                "channel by channel (element-wise on the two vectors).")
