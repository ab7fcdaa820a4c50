"""Checks of lesson 03, distillation: Hinton's loss, the student-to-teacher layer map."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .harness import CheckResult, Wrong, call, close, number, run_cases


def kd_loss(fn: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``fn(student_logits, teacher_logits, labels, temperature, alpha) -> scalar`` (Hinton's loss)."""
    from .. import distill

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
    from .. import distill

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
