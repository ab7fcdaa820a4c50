"""Checks of lesson 08, putting it together: low-rank factors, bytes of a sparse int8 weight; the predicted weights of
a factorised encoder against the measured model."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import combine, lowrank
from .harness import (
    CheckResult,
    Wrong,
    as_tensor,
    call,
    close,
    declare,
    measured,
    number,
    predicted,
    run_cases,
    seeded_bert,
    verdict,
)

__all__ = ["low_rank", "sparse_int8_bytes", "LOW_RANK_TOLERANCE", "LOW_RANK_RANKS", "predicted_low_rank_weights",
           "predicted_low_rank_weights_reference"]


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
            got = call(fn, w.clone(), rank)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise Wrong("return a pair (A, B).")
            a, b = as_tensor(got[0], "A"), as_tensor(got[1], "B")
            where = f"a {out}×{inp} weight at rank {rank}"
            if tuple(a.shape) != (out, rank) or tuple(b.shape) != (rank, inp):
                raise Wrong(f"{where}: A should be {(out, rank)} and B {(rank, inp)}, got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}.")
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            want = (u[:, :rank] * s[:rank]) @ vh[:rank]
            got_w = a.float() @ b.float()
            scale = w.abs().max().item()
            if torch.allclose(got_w, want, atol=1e-4 * scale):
                return
            if torch.allclose(got_w, u[:, :rank] @ vh[:rank], atol=1e-4):
                raise Wrong(f"{where}: A @ B is missing the singular values S.")
            if rank < min(out, inp) and torch.allclose(got_w, (u[:, -rank:] * s[-rank:]) @ vh[-rank:],
                                                         atol=1e-4 * scale):
                raise Wrong(f"{where}: you kept the smallest singular values; keep the largest.")
            err, best = (got_w - w).norm().item(), (want - w).norm().item()
            raise Wrong(f"{where}: ‖W − A @ B‖ is {err:.4g}, the best rank-{rank} approximation reaches {best:.4g}.")
        return run

    return run_cases("low_rank", [case(6, 4, 2), case(20, 30, 5, decay=True), case(48, 16, 16), case(8, 8, 1),
                             case(64, 24, 12, decay=True)],
                "torch.linalg.svd(weight, full_matrices=False) gives U, S and Vᵀ with S sorted from largest to "
                "smallest. Keep the first `rank` columns of U, entries of S and rows of Vᵀ, and put S into A or B "
                "(or √S into each) so that A @ B = U_r · diag(S_r) · Vᵀ_r.")


def sparse_int8_bytes(fn: Callable[[int, int, int], int]) -> CheckResult:
    """Check ``fn(rows, cols, nnz) -> bytes`` of a pruned weight stored as int8 non-zeros, a 1-bit-per-position
    bitmask rounded up to whole bytes, and one float32 scale per row."""

    def case(rows: int, cols: int, nnz: int):
        def run():
            got = number(call(fn, rows, cols, nnz), "bytes")
            want = combine.sparse_int8_bytes(rows, cols, nnz)
            where = f"{rows}×{cols} with {nnz} non-zeros"
            if math.isclose(got, want - 4 * rows):
                raise Wrong(f"{where}: got {got:g} — the float32 scale of every row is missing.")
            if math.isclose(got, nnz + rows * cols / 8 + 4 * rows) and got != want:
                raise Wrong(f"{where}: got {got:g} — a file holds whole bytes: round the bitmask up.")
            close(got, want, where)
        return run

    return run_cases("sparse_int8_bytes", [case(512, 40, 1024), case(512, 512, 26_214), case(3, 5, 7), case(10, 10, 0),
                                      case(7, 9, 63)],
                "three parts: one byte per non-zero value; one bit per position of the full matrix (rows × cols "
                "bits, rounded up to whole bytes with math.ceil); and 4 bytes of float32 scale per row.")


LOW_RANK_TOLERANCE = 0.0  # a count of weights: the prediction must be exact (up to float rounding)
LOW_RANK_RANKS = (64, 128, 192)  # the ranks lesson 08 factorises its teacher at


def _bert_shapes(layers: int, hidden: int, intermediate: int) -> list[tuple[int, int]]:
    """(out, in) of every encoder Linear of a BERT: query, key, value, attention output, feed-forward in and out."""
    return [(hidden, hidden)] * 4 * layers + [(intermediate, hidden), (hidden, intermediate)] * layers


def predicted_low_rank_weights(fn: Callable[[list, int], float]) -> CheckResult:
    """Check ``fn(linear_shapes, rank) -> predicted weights`` of the encoder's Linear layers (shapes ``(out, in)``)
    once ``lu.lowrank.factorize_linears`` has factorised, at ``rank``, every one where that saves weights, against
    models measured here: a small BERT factorised by the check, and the lesson's teacher at ranks 64, 128 and 192
    (measured and recorded by the notebook). A count: it must be exact."""
    from ..lowrank import encoder_linear_weights, factorize_linears

    def judge(shapes: list, rank: int, want: float, where: str):
        got = number(call(fn, [tuple(s) for s in shapes], rank), "predicted weights")
        if math.isclose(got, sum(rank * (o + i) for o, i in shapes), rel_tol=1e-9) and not math.isclose(got, want):
            raise Wrong(f"{where}, rank {rank}: {got:,.0f} factorises every layer, but a layer is replaced only "
                         "where the two thin matrices hold fewer weights than the original.")
        predicted(got, want, f"{where}, rank {rank}", LOW_RANK_TOLERANCE + 1e-9, "For each layer, compare the "
                  "weights of the two factors with the original's and keep whichever is smaller.")

    def small_bert():
        model = seeded_bert(50, 32, 2, 128, 16)
        shapes = _bert_shapes(2, 32, 128)
        for rank in (8, 16, 24):  # 32×32 breaks even at 16; 128×32 at 25.6
            judge(shapes, rank, encoder_linear_weights(factorize_linears(model, rank)), "a small BERT (hidden 32, "
                  "feed-forward 128, 2 layers) factorised by the check")

    def teacher_shapes() -> list[tuple[int, int]]:
        return _bert_shapes(*(int(measured(f"lowrank.teacher.{k}", f"the teacher's {k}"))
                              for k in ("layers", "hidden", "intermediate")))

    def lesson_teacher():
        shapes = teacher_shapes()
        for rank in LOW_RANK_RANKS:
            judge(shapes, rank, measured(f"lowrank.{rank}.encoder_linear_weights", f"the rank-{rank} model"),
                  "our teacher")

    def explain() -> str:
        shapes = teacher_shapes()
        dense = sum(o * i for o, i in shapes)
        parts = [f"rank {r}: {measured(f'lowrank.{r}.encoder_linear_weights', '') / 1e6:.2f} M"
                 for r in LOW_RANK_RANKS]
        return (f"our teacher's encoder Linear weights: {dense / 1e6:.2f} M dense; " + ", ".join(parts)
                + " — exactly as predicted: the biases and LayerNorms, outside this count, stay as they are.")

    return verdict("predicted_low_rank_weights", [small_bert, lesson_teacher],
                   "a factorised (out, in) layer holds rank × (in + out) weights instead of out × in; "
                   "factorize_linears replaces a layer only where that is fewer.", explain)


def predicted_low_rank_weights_reference(linear_shapes: list[tuple[int, int]], rank: int) -> int:
    """Weights of Linear layers of shapes (out, in) once each is factorised at ``rank`` where that saves weights
    (rank · (out + in) < out · in) and kept whole elsewhere: the reference answer of exercise
    ``predicted_low_rank_weights``."""
    return sum(min(rank * (o + i), o * i) for o, i in linear_shapes)


def _low_rank(w, r, part="both"):
    """The rank-r factors with a mistake switched on (no singular values, or the smallest ones)."""
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    if part == "no_s":
        return u[:, :r], vh[:r]
    if part == "smallest":
        return u[:, -r:] * s[-r:], vh[-r:]
    return u[:, :r] * s[:r], vh[:r]


# --- the exercises of lesson 08, declared once ---------------------------------------------------------------------
declare("08", low_rank, lowrank.low_rank_factors, wrong=(
    lambda w, r: _low_rank(w, r, "no_s"),
    lambda w, r: _low_rank(w, r, "smallest"),
    lambda w, r: (w[:, :r], torch.eye(r, w.shape[1])),  # the first columns, not the best rank r
    lambda w, r: _low_rank(w.T, r)),  # factors of the transpose: wrong shapes
    graded_wrong="return weight[:, :rank], torch.eye(rank, weight.shape[1])")
declare("08", sparse_int8_bytes, combine.sparse_int8_bytes, wrong=(
    lambda rows, cols, nnz: nnz + rows * cols / 8 + 4 * rows,  # bitmask not rounded up
    lambda rows, cols, nnz: nnz + math.ceil(rows * cols / 8),  # no scales
    lambda rows, cols, nnz: nnz + rows * cols + 4 * rows,  # a byte per position
    lambda rows, cols, nnz: 4 * nnz + math.ceil(rows * cols / 8) + 4 * rows),  # fp32 values
    graded_wrong="return nnz + rows * cols + 4 * rows")
declare("08", predicted_low_rank_weights, predicted_low_rank_weights_reference, wrong=(
    lambda shapes, r: sum(r * (o + i) for o, i in shapes),  # every layer factorised
    lambda shapes, r: sum(r * max(o, i) for o, i in shapes),
    lambda shapes, r: sum(r * r + r * (o + i) for o, i in shapes),  # a core S too
    lambda shapes, r: 5_308_416),  # one measurement typed in
    graded_wrong="return sum(rank * (o + i) for o, i in linear_shapes)")
