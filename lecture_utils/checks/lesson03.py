"""Checks of lesson 03, distillation: Hinton's loss, the student-to-teacher layer map; the student's predicted size
ratio against the measured files."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import distill
from .harness import (
    CheckResult,
    Wrong,
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

__all__ = ["kd_loss", "layer_map", "SIZE_RATIO_TOLERANCE", "predicted_size_ratio", "predicted_size_ratio_reference"]


def kd_loss(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(student_logits, teacher_logits, labels, temperature, alpha) -> scalar`` (Hinton's loss)."""
    gen = torch.Generator().manual_seed(3)

    def case(n: int, c: int, temperature: float, alpha: float):
        def run():
            s, t = torch.randn(n, c, generator=gen) * 2, torch.randn(n, c, generator=gen) * 2
            y = torch.randint(0, c, (n,), generator=gen)
            got = number(call(fn, s.clone(), t.clone(), y.clone(), temperature, alpha), "loss")
            want = distill.kd_loss(s, t, y, temperature, alpha).item()
            soft = distill.kd_loss(s, t, y, temperature, 1.0).item()
            if alpha > 0 and math.isclose(got, want - alpha * soft * (1 - 1 / temperature**2), rel_tol=1e-4) \
                    and temperature != 1:
                raise Wrong(f"T = {temperature}: the soft term is missing its T² factor.")
            if alpha > 0 and math.isclose(got, want + alpha * soft * (n - 1), rel_tol=1e-4) and n > 1:
                raise Wrong("the KL term is summed over the batch; average it per example (reduction 'batchmean').")
            close(got, want, f"{n} examples, {c} classes, T = {temperature}, alpha = {alpha}", rel=1e-4, abs_tol=1e-6)
        return run

    return run_cases("kd_loss", [case(4, 2, 1.0, 0.5), case(8, 2, 2.0, 0.5), case(5, 3, 4.0, 0.9), case(6, 2, 8.0, 1.0),
                            case(3, 4, 2.0, 0.0)],
                "soft part: KL divergence between the teacher's and the student's softmax at temperature T (use "
                "log_softmax for the student, reduction='batchmean'), times T²; hard part: cross-entropy with the "
                "labels at T = 1; mix them as alpha · soft + (1 − alpha) · hard.")


def layer_map(fn: Callable[[int, int], list]) -> CheckResult:
    """Check ``fn(n_student, n_teacher) -> teacher layer (0-based) for each student layer`` (uniform mapping)."""
    def case(n_student: int, n_teacher: int):
        def run():
            got = call(fn, n_student, n_teacher)
            try:
                got = [int(v) for v in got]
            except (TypeError, ValueError):
                raise Wrong(f"return a list of ints, got {got!r}") from None
            want = distill.uniform_layer_map(n_student, n_teacher)
            if got != want:
                raise Wrong(f"{n_student} student layers from {n_teacher} teacher layers: got {got}.")
        return run

    return run_cases("layer_map", [case(3, 6), case(1, 6), case(4, 12), case(6, 6), case(2, 8)],
                "the teacher has k = n_teacher / n_student layers per student layer; student layer m (counting from "
                "0) learns from the last teacher layer of its block of k.")


SIZE_RATIO_TOLERANCE = 0.02  # the head (pooler and classifier) and each file's names and shapes are left out


def predicted_size_ratio(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(embedding_share, kept_fraction) -> predicted teacher size / student size`` for a student that keeps
    the embeddings and a fraction of the encoder's layers, against sizes on disk measured here: a small BERT and its
    student built by the check, and the lesson's teacher and 3-layer student (recorded by the notebook), each within
    ``SIZE_RATIO_TOLERANCE``."""
    from ..distill import student_from_teacher
    from ..measure import parameters_by_component, size_mb

    def judge(share: float, kept: float, want: float, where: str):
        got = number(call(fn, share, kept), "predicted size ratio")
        if math.isclose(got, 1 / kept, rel_tol=1e-3):
            raise Wrong(f"{where}: {got:.4g} assumes the whole model shrinks with its layers; the embeddings "
                         "stay whole.")
        if got < 1:
            raise Wrong(f"{where}: {got:.4g} is below 1, so the smaller student would be the larger file. A ratio "
                         "here is teacher size / student size.")
        if math.isclose(got, 1 / ((1 - share) + share * kept), rel_tol=1e-3):
            raise Wrong(f"{where}: {got:.4g} shrinks the embeddings with the layers and keeps the encoder whole; "
                         "it is the other way round.")
        predicted(got, want, where, SIZE_RATIO_TOLERANCE, "Split the teacher (call its size 1) into the part the "
                  "student keeps whole and the part that shrinks with the layers kept.")

    def small_bert():
        teacher = seeded_bert(3000, 32, 4, 128, 64)
        parts = parameters_by_component(teacher)
        want = size_mb(teacher) / size_mb(student_from_teacher(teacher, [0, 2]))
        judge(parts["embeddings"] / parts["total"], 0.5, want, "a small BERT (4 layers) and a 2-layer student built "
              "by the check")

    def lesson_students():
        share = measured("distill.teacher.embedding_share", "the teacher's embedding share")
        kept = measured("distill.student3.kept_fraction", "the student's fraction of layers")
        judge(share, kept, measured("distill.student3.size_ratio", "the size ratio"), "our teacher and student")

    def explain() -> str:
        share = measured("distill.teacher.embedding_share", "")
        kept = measured("distill.student3.kept_fraction", "")
        got, want = number(call(fn, share, kept), ""), measured("distill.student3.size_ratio", "")
        return (f"our student: predicted {got:.3f}×, measured {want:.3f}× ({100 * (want / got - 1):+.2f}%): the "
                "pooler and classifier, which the student also keeps whole, are a sliver of the model.")

    return verdict("predicted_size_ratio", [small_bert, lesson_students],
                   "the student copies the embeddings (and the small head) whole and keeps only some of the encoder's "
                   "layers. Work out the student's size as a fraction of the teacher's, then invert it.", explain)


def predicted_size_ratio_reference(embedding_share: float, kept_fraction: float) -> float:
    """Teacher size / student size when the embeddings (``embedding_share`` of the teacher) stay whole and the rest
    shrinks to ``kept_fraction``: the reference answer of exercise ``predicted_size_ratio``."""
    return 1 / (embedding_share + (1 - embedding_share) * kept_fraction)


def _kd(s, t, y, temperature, alpha, reduction="batchmean", t_squared=True):
    """Hinton's loss with a mistake switched on (the KL summed over the batch, or without its T² factor)."""
    from torch.nn import functional as F

    soft = F.kl_div(torch.log_softmax(s / temperature, -1), torch.softmax(t / temperature, -1), reduction=reduction)
    return alpha * (temperature**2 if t_squared else 1) * soft + (1 - alpha) * F.cross_entropy(s, y)


# --- the exercises of lesson 03, declared once ---------------------------------------------------------------------
declare("03", kd_loss, distill.kd_loss, wrong=(
    lambda s, t, y, T, a: _kd(s, t, y, T, a, t_squared=False),
    lambda s, t, y, T, a: _kd(s, t, y, T, a, reduction="sum"),
    lambda s, t, y, T, a: torch.nn.functional.cross_entropy(s, y)),
    graded_wrong="return F.cross_entropy(student_logits, labels)")
declare("03", layer_map, distill.uniform_layer_map, wrong=(
    lambda n_s, n_t: [m * (n_t // n_s) for m in range(n_s)],  # the first of each block
    lambda n_s, n_t: list(range(n_s))),
    graded_wrong="return list(range(n_student))")
declare("03", predicted_size_ratio, predicted_size_ratio_reference, wrong=(
    lambda share, kept: 1 / kept,  # everything shrinks with the layers
    lambda share, kept: share + (1 - share) * kept,  # student / teacher
    lambda share, kept: 1 / ((1 - share) + share * kept),  # the shares swapped
    lambda share, kept: 1.31),  # our measurement typed in: the small BERT fails
    graded_wrong="return 1 / kept_fraction")
