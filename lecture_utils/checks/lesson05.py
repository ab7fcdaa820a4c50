"""Checks of lesson 05, pruning heads and layers: a predicted heads speed-up, symmetric layer dropping, Amdahl's
law."""

from __future__ import annotations

import math
from collections.abc import Callable

from .. import heads, surgery
from .harness import CheckResult, Wrong, call, close, declare, number, run_cases

__all__ = ["predicted_heads_speedup", "symmetric_layers", "predicted_speedup", "symmetric_layers_reference"]


def _int_list(value, what: str) -> list[int]:
    try:
        items = [int(v) for v in value]
    except (TypeError, ValueError):
        raise Wrong(f"{what} should be a list of ints, got {value!r}.") from None
    if any(not float(v).is_integer() for v in value):
        raise Wrong(f"{what} should hold whole layer numbers, got {value!r}.")
    return items


def symmetric_layers(fn: Callable[[int, int], list]) -> CheckResult:
    """Check ``fn(n_layers, k) -> the 0-based layers that symmetric dropping removes``: k consecutive layers from
    the middle; when the kept layers cannot split evenly, the bottom keeps the extra one (any order accepted)."""
    def case(n: int, k: int):
        def run():
            got = sorted(_int_list(call(fn, n, k), "the dropped layers"))
            want = symmetric_layers_reference(n, k)
            if got == want:
                return
            where = f"{n} layers, k = {k}"
            if len(got) != k:
                raise Wrong(f"{where}: you drop {len(got)} layers, expected {k}.")
            if got == [i + 1 for i in want]:
                raise Wrong(f"{where}: got {got} — count layers from 0 (layer 0 is next to the embeddings).")
            top_heavy = (n - k) // 2
            if got == list(range(top_heavy, top_heavy + k)):
                raise Wrong(f"{where}: got {got}, which keeps more layers at the top than at the bottom; the bottom "
                             "should keep the extra one.")
            raise Wrong(f"{where}: got {got}.")
        return run

    return run_cases("symmetric_layers", [case(12, 4), case(6, 2), case(12, 6), case(6, 3), case(24, 7), case(7, 2),
                                     case(6, 1), case(12, 11)],
                "n_layers − k layers stay: half of them at the bottom (rounded up), the rest at the top. The dropped "
                "layers are the k consecutive ones just above the bottom part.")


def predicted_speedup(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(layer_share, kept_fraction) -> predicted speed-up`` when only the share ``layer_share`` of the
    run time scales with the number of layers (Amdahl's law): ``1 / ((1 - s) + s × f)``."""
    def case(share: float, kept: float):
        def run():
            got = number(call(fn, share, kept), "speed-up")
            want = surgery.predicted_speedup(share, kept)
            time_ratio = 1 / want
            if not math.isclose(want, time_ratio) and math.isclose(got, time_ratio, rel_tol=1e-6):
                raise Wrong(f"share {share}, kept {kept}: {got:.4g} is the new time as a fraction of the old; "
                             "a speed-up is old time / new time.")
            if share < 1 and kept < 1 and math.isclose(got, 1 / kept, rel_tol=1e-6):
                raise Wrong(f"share {share}, kept {kept}: {got:.4g} assumes the whole run time shrinks with the "
                             "layers; the rest (1 − share) stays.")
            close(got, want, f"share {share}, kept {kept}", rel=1e-6)
        return run

    return run_cases("predicted_speedup", [case(1.0, 0.5), case(0.9, 0.5), case(0.5, 0.5), case(0.8, 1.0),
                                      case(0.95, 0.25), case(0.6, 2 / 3)],
                "split the old run time (call it 1) into a part that shrinks with the kept fraction and a part that "
                "does not; add them up to get the new time, then compare old with new.")


def predicted_heads_speedup(fn: Callable[[int, int, int, float], float]) -> CheckResult:
    """Check ``fn(hidden, intermediate, tokens, removed) -> speed-up`` predicted *before* timing anything, from a
    count of multiply-adds per token and layer: the heads own the Q, K, V, O projections (4·H²) and the attention
    (2·T·H), the feed-forward block (2·H·I) stays. A prediction within 3% of that count passes (leaving out the
    attention's 2·T·H is within it at short sequences, not at 1,024 tokens); the measured speed-up is never used."""

    def case(hidden: int, intermediate: int, tokens: int, removed: float):
        def run():
            got = number(call(fn, hidden, intermediate, tokens, removed), "speed-up")
            want = heads.predicted_heads_speedup(hidden, intermediate, tokens, removed)
            where = f"H = {hidden}, I = {intermediate}, T = {tokens}, {removed:.0%} of the heads removed"
            if math.isclose(want, got, rel_tol=0.03):
                return
            if removed < 1 and math.isclose(got, 1 / (1 - removed), rel_tol=0.03):
                raise Wrong(f"{where}: {got:.3g}× assumes all the work shrinks with the heads; the feed-forward "
                            "block (two H×I matrices per token) does not.")
            if 0 < got < 1:
                raise Wrong(f"{where}: {got:.3g} is below 1 — a speed-up is old time / new time, and less work "
                            "cannot take longer.")
            no_attention = 1 / (1 - removed * 4 * hidden / (4 * hidden + 2 * intermediate))
            if math.isclose(got, no_attention, rel_tol=0.03):
                raise Wrong(f"{where}: {got:.3g}× counts only the four projections; at {tokens} tokens the "
                            "attention itself (each query against T keys, then a weighted sum of T values) is a "
                            "large share too, and it belongs to the heads.")
            raise Wrong(f"{where}: your prediction {got:.3g}× is more than 3% from the count of multiply-adds "
                        f"({want:.3g}×).")
        return run

    return run_cases("predicted_heads_speedup",
                     [case(384, 1536, 64, 0.5), case(384, 1536, 64, 0.8), case(768, 3072, 128, 0.5),
                      case(384, 1536, 1024, 0.5), case(384, 1536, 64, 0.0)],
                     "count the multiply-adds of one layer for one token: which of them disappear with a head, and "
                     "which stay? The new time is the part that stays plus the heads' part that is left.")


def symmetric_layers_reference(n_layers: int, k: int) -> list[int]:
    """The k middle layers (0-based, in ascending order) that symmetric dropping removes, the bottom keeping the extra
    layer when the rest cannot split evenly: the reference answer of exercise ``symmetric_layers``."""
    return sorted(surgery.layers_to_drop("symmetric", n_layers, k))


# --- the exercises of lesson 05, declared once ---------------------------------------------------------------------
declare("05", predicted_heads_speedup, heads.predicted_heads_speedup, wrong=(
    lambda h, i, t, r: 1 / (1 - r),  # all the work shrinks with the heads
    lambda h, i, t, r: 1 / (1 - r * 4 * h / (4 * h + 2 * i)),  # no attention term
    lambda h, i, t, r: 1 - r / 3),  # a new time, not a speed-up
    graded_wrong="return 1 / (1 - removed)")
declare("05", symmetric_layers, symmetric_layers_reference, wrong=(
    lambda n, k: list(range((n - k) // 2, (n - k) // 2 + k)),  # the top keeps the extra
    lambda n, k: list(range((n - k + 1) // 2 + 1, (n - k + 1) // 2 + k + 1)),  # from 1
    lambda n, k: list(range(n - k, n)),  # top dropping
    lambda n, k: [n // 2]),
    graded_wrong="return list(range(n_layers - k, n_layers))")
declare("05", predicted_speedup, surgery.predicted_speedup, wrong=(
    lambda s, f: 1 / f,  # everything scales
    lambda s, f: (1 - s) + s * f,  # the time ratio
    lambda s, f: 1 / (s * f)),
    graded_wrong="return 1 / kept_fraction")
