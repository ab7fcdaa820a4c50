"""Checks of lesson 07, lottery tickets: one round of iterative magnitude pruning, SNIP masks; a paired verdict over
seeds (is a difference more than the seed-to-seed noise, by Student's t?); a prediction of what a random network
with a random mask scores before anything is trained."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import lottery
from .harness import CheckResult, Wrong, call, declare, number, run_cases, tensor_like

__all__ = ["imp_round", "snip_mask", "paired_verdict", "random_network_accuracy", "random_network_accuracy_reference"]


def imp_round(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple]) -> CheckResult:
    """Check the learner's ``imp_round`` (lesson 07's exercise, one weight matrix) against the course's answer.

    The check is named after the learner's function, not after :func:`lecture_utils.lottery.imp_round`: that one
    is the library's round over a whole *model* (masks by layer name, the model rewound in place). The learner's
    ``imp_round`` is the same round for one matrix; it must agree with ``lottery.imp_round`` layer by layer, and the
    course's one-matrix answer (the fallback the notebook passes to :func:`use`) is
    :func:`lecture_utils.lottery.prune_and_rewind`.

    ``fn(trained (R, C), init (R, C), mask (R, C) bool, fraction) -> (new_mask, rewound)`` must prune
    ``round(fraction × survivors)`` of the surviving weights with the smallest ``|trained|``, then set the weights
    to ``init`` where the new mask is True and 0 elsewhere."""
    gen = torch.Generator().manual_seed(7)

    def case(shape: tuple[int, int], alive: float, fraction: float):
        def run():
            init = torch.randn(shape, generator=gen)
            mask = torch.rand(shape, generator=gen) < alive
            trained = (init + torch.randn(shape, generator=gen)) * mask
            out = call(fn, trained.clone(), init.clone(), mask.clone(), fraction)
            if not isinstance(out, tuple) or len(out) != 2:
                raise Wrong("return a pair (new_mask, rewound_weights).")
            new = tensor_like(out[0], trained.shape, "new_mask").bool()
            rewound = tensor_like(out[1], trained.shape, "rewound_weights")
            if not rewound.is_floating_point():
                raise Wrong(f"rewound_weights should be float weights like init ({init.dtype}), got {rewound.dtype}.")
            rewound = rewound.to(init.dtype)
            n_alive = int(mask.sum())
            want_keep = n_alive - round(fraction * n_alive)
            where = f"a {shape[0]}×{shape[1]} weight with {n_alive} survivors, fraction {fraction}"
            if (new & ~mask).any():
                raise Wrong(f"{where}: your new mask revives weights that were already pruned.")
            if int(new.sum()) != want_keep:
                raise Wrong(f"{where}: your mask keeps {int(new.sum())} weights, expected {want_keep}.")
            mags = trained.abs()
            if new.any() and (mask & ~new).any() and mags[new].min() < mags[mask & ~new].max():
                raise Wrong(f"{where}: you pruned a weight larger in magnitude than one you kept.")
            if torch.allclose(rewound, trained * new) and not torch.allclose(trained * new, init * new):
                raise Wrong(f"{where}: the survivors keep their trained values; rewind them to init.")
            if not torch.allclose(rewound, init * new):
                raise Wrong(f"{where}: rewound weights should equal init where the new mask is True and 0 "
                             "elsewhere.")
        return run

    return run_cases("imp_round", [case((4, 5), 1.0, 0.2), case((30, 20), 1.0, 0.5), case((50, 40), 0.41, 0.2),
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
            out = call(fn, [w.clone() for w in weights], [g.clone() for g in grads], keep)
            if not isinstance(out, (list, tuple)) or len(out) != len(shapes):
                raise Wrong(f"return a list of {len(shapes)} masks, one per layer.")
            masks = [tensor_like(m, w.shape, f"mask {i}").bool() for i, (m, w) in enumerate(zip(out, weights,
                                                                                                 strict=True))]
            scores = torch.cat([(g * w).abs().flatten() for g, w in zip(grads, weights, strict=True)])
            kept = torch.cat([m.flatten() for m in masks])
            want = round(keep * scores.numel())
            where = f"{len(shapes)} layers, {scores.numel()} weights, keep {keep}"
            if int(kept.sum()) != want:
                raise Wrong(f"{where}: you kept {int(kept.sum())} weights, expected {want}.")
            if kept.any() and (~kept).any() and scores[kept].min() < scores[~kept].max():
                layerwise = all(int(m.sum()) == round(keep * m.numel()) for m in masks)
                raise Wrong(f"{where}: you dropped a connection with a larger |g·w| than one you kept"
                             + (" — SNIP ranks all layers together, not each layer on its own." if layerwise
                                else "."))
        return run

    return run_cases("snip_mask", [case([(6, 4)], 0.5), case([(20, 10), (10, 3)], 0.2, scale_last=10.0),
                              case([(40, 30), (30, 20), (20, 10)], 0.1), case([(5, 5), (5, 2)], 1.0)],
                "score every connection by the absolute value of gradient times weight, put the scores of all "
                "layers in one long vector, keep the k largest (torch.topk), then cut the result back into one "
                "mask per layer with each layer's shape.")


def paired_verdict(fn: Callable[[torch.Tensor, torch.Tensor], str]) -> CheckResult:
    """Check ``fn(ticket, control) -> "ticket" | "control" | "tie"`` on per-seed accuracies: the mean of the paired
    differences against Student's t critical value (n − 1 degrees of freedom, 95%) times its standard error (see
    :func:`lecture_utils.lottery.paired_verdict`)."""
    def case(ticket: list[float], control: list[float], why: str = ""):
        def run():
            t, c = torch.tensor(ticket), torch.tensor(control)
            got = call(fn, t.clone(), c.clone())
            if not isinstance(got, str) or got.strip().lower() not in ("ticket", "control", "tie"):
                raise Wrong(f'return one of the strings "ticket", "control" or "tie", got {got!r}.')
            want = lottery.paired_verdict(t, c)
            if got.strip().lower() != want:
                diff = [round(100 * d, 1) for d in (t - c).tolist()]
                raise Wrong(f"ticket {ticket}, control {control} (differences {diff} points): you said {got!r}, "
                             f"expected {want!r}.{' ' + why if why else ''}")
        return run

    return run_cases("paired_verdict", [
        case([0.60, 0.62, 0.61], [0.50, 0.51, 0.52]),
        case([0.50, 0.52, 0.51], [0.60, 0.61, 0.62]),
        case([0.60, 0.55, 0.58], [0.55, 0.59, 0.57], "The differences change sign: that is noise."),
        case([0.50, 0.70, 0.60], [0.48, 0.675, 0.582], "The seeds differ a lot, but within each seed the ticket "
             "wins by about 2 points every time: compare seed by seed, not the two means."),
        case([0.63, 0.61, 0.62], [0.60, 0.60, 0.60], "The mean difference is 3.5 standard errors: more than 2, but "
             "with 3 seeds (2 degrees of freedom) chance alone exceeds 2 standard errors 18% of the time; Student's "
             "t needs 4.30 (lu.stats.t_critical(2))."),
        case([0.64, 0.60, 0.62, 0.63, 0.61], [0.60, 0.60, 0.60, 0.60, 0.60], "Use the standard *error* of the "
             "mean (standard deviation / √n), not the standard deviation."),
        case([0.7], [0.5], "One seed cannot show how large the noise is."),
        case([0.55, 0.57], [0.50, 0.51], "Two seeds: 1 degree of freedom, t critical 12.7."),
        case([0.65, 0.59, 0.62, 0.64, 0.60, 0.63, 0.61, 0.62, 0.58, 0.66], [0.6] * 10, "Ten seeds: 2.45 standard "
             "errors, and 9 degrees of freedom need only 2.26 (lu.stats.t_critical(9)); 4.30 is for 3 seeds."),
    ], "subtract seed by seed (ticket − control); their standard error is their standard deviation (n − 1) divided "
       "by √n; the mean must be more than lu.stats.t_critical(n − 1) standard errors away from 0 (Student's t for "
       'n − 1 degrees of freedom at 95%). With fewer than two seeds, say "tie".')


def random_network_accuracy(fn: Callable[[], float]) -> CheckResult:
    """Check ``fn() -> accuracy``: the predicted test accuracy (fraction) on MNIST-1D's ten balanced classes of a
    randomly initialised network with a random mask, nothing trained. Anything from 0.05 to 0.2 passes (chance is
    0.1; one random network lands a few points either side)."""

    def run():
        got = number(call(fn), "the predicted accuracy")
        if 1 < got <= 100:
            raise Wrong(f"you returned {got}: give the accuracy as a fraction in [0, 1], not in percent.")
        if not 0.05 <= got <= 0.2:
            raise Wrong(f"you predicted {got:.2f}. Nothing in this network has seen the training data: neither its "
                        "weights nor its mask.")

    return run_cases("random_network_accuracy", [run],
                     "a network that has learned nothing about the task guesses; with ten classes of about the same "
                     "size, how often is a guess right?")


def random_network_accuracy_reference() -> float:
    """Chance on ten balanced classes: the reference answer of exercise ``random_network_accuracy``."""
    return 0.1


def _imp_round(trained, init, mask, fraction, of_all=False, rewind=True, signed=False):
    """One round of iterative magnitude pruning with a mistake switched on."""
    alive = int(mask.sum())
    keep = alive - round(fraction * (mask.numel() if of_all else alive))
    score = torch.where(mask, trained if signed else trained.abs(), torch.tensor(float("-inf")))
    new = torch.zeros(mask.numel(), dtype=torch.bool)
    new[score.flatten().topk(max(keep, 0)).indices] = True
    new = new.view_as(mask)
    return new, (init if rewind else trained) * new


def _snip_mask(weights, grads, keep, layerwise=False):
    scores = [(g * w).abs() for g, w in zip(grads, weights, strict=True)]
    if layerwise:
        return [s >= s.flatten().topk(round(keep * s.numel())).values.min() for s in scores]
    return lottery.global_snip_masks(weights, grads, keep)


def _paired(t, c, noise):
    d = t - c
    if len(d) < 2:
        return "tie"
    return "ticket" if d.mean() > 2 * noise(d) else "control" if d.mean() < -2 * noise(d) else "tie"


def _unpaired_verdict(t, c):
    if len(t) < 2:
        return "tie"
    m, se = t.mean() - c.mean(), (t.var() / len(t) + c.var() / len(c)) ** 0.5
    return "ticket" if m > 2 * se else "control" if m < -2 * se else "tie"


# --- the exercises of lesson 07, declared once ---------------------------------------------------------------------
declare("07", imp_round, lottery.prune_and_rewind, wrong=(
    lambda t, i, m, f: _imp_round(t, i, m, f, of_all=True),
    lambda t, i, m, f: _imp_round(t, i, m, f, rewind=False),
    lambda t, i, m, f: _imp_round(t, i, m, f, signed=True),
    lambda t, i, m, f: _imp_round(t, i, m, f)[0]),
    graded_wrong="return mask, trained * mask")
declare("07", snip_mask, lottery.global_snip_masks, wrong=(
    lambda w, g, k: _snip_mask(w, g, k, layerwise=True),
    lambda w, g, k: _snip_mask([x.abs() for x in w], [torch.ones_like(x) for x in g], k)),
    graded_wrong="return [torch.ones_like(w, dtype=torch.bool) for w in weights]")
declare("07", paired_verdict, lottery.paired_verdict, wrong=(
    _unpaired_verdict,  # the two means against their own noise: blind to pairing
    lambda t, c: _paired(t, c, noise=lambda d: d.std() / len(d) ** 0.5),  # 2 SE, not Student's t
    lambda t, c: _paired(t, c, noise=lambda d: 4.303 / 2 * d.std() / len(d) ** 0.5),  # 3 seeds' t for every n
    lambda t, c: _paired(t, c, noise=lambda d: d.std()),  # standard deviation, not error
    lambda t, c: "ticket" if (t - c).mean() > 0 else "control",  # no noise at all
    lambda t, c: _paired(c, t, noise=lambda d: d.std() / len(d) ** 0.5),  # swapped
    lambda t, c: (t - c).mean()),  # a number, not a verdict
    graded_wrong="return 'ticket' if ticket.mean() > control.mean() else 'control'")
declare("07", random_network_accuracy, random_network_accuracy_reference, wrong=(
    lambda: 0.5, lambda: 10.0, lambda: 0.0, lambda: "chance"),
    graded_wrong="return 0.5  # half of the weights kept, so half right")
