"""Lesson 07: lottery tickets. Masks for whole models, iterative magnitude pruning (IMP) with rewinding, the two
controls (same mask with a fresh initialisation; random mask with the original one) and SNIP.

A mask set is a plain dict ``{parameter name: bool tensor of the parameter's shape}`` over the model's weight
matrices (the ``weight`` of every module whose weight has 2 or more dimensions; biases are never pruned), True
where a weight survives. Plain dicts rather than ``torch.nn.utils.prune`` hooks, because lottery tickets move a
mask between models (the ticket, its reinitialised twin) and rewind weights underneath it; lesson 04 uses the
hooks. During training :func:`keep_masked` re-applies the mask after every optimiser step, so pruned weights stay
exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from . import validate as check
from .env import seed_everything, torch_threads
from .stats import paired_t
from .training import LossFn, cross_entropy_loss, evaluate, to_device, train

__all__ = ["prunable", "full_masks", "apply_masks_", "keep_masked", "fraction_remaining", "magnitude_masks", "rewind",
           "imp_round", "random_masks", "snip_scores", "snip_masks", "TensorBatches", "LotterySetup", "check_data",
           "make_model", "train_masked", "run_seed", "prune_and_rewind", "global_snip_masks", "paired_verdict",
           "accuracy", "SupermaskLinear", "supermask_model", "supermask_masks", "train_supermask", "linear_probe",
           "uniform_random_masks", "drop_and_regrow", "sparse_train", "run_sparse_seed"]

Masks = dict[str, torch.Tensor]


def _check_fraction(fraction: float, what: str = "prune fraction") -> float:
    return check.fraction(fraction, what, hint="0.2 prunes 20% of the remaining weights")


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's weight matrices by parameter name (``"0.weight"``, ...): every parameter named ``weight``
    with 2 or more dimensions. These are what the masks cover."""
    check.module(model)
    out = {name: p for name, p in model.named_parameters() if name.split(".")[-1] == "weight" and p.dim() >= 2}
    if not out:
        raise ValueError("the model has no weight matrices to prune (no parameter 'weight' with 2+ dimensions)")
    return out


def full_masks(model: nn.Module) -> Masks:
    """All-True masks (nothing pruned) for every weight matrix of ``model``."""
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable(model).items()}


def _check_mask_values(masks: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A non-empty dict of tensors holding only True/False (or 0/1): a mask keeps or removes, nothing between."""
    check.mapping(masks, "masks", non_empty=True, what="a dict {parameter name: bool tensor}")
    for name, m in masks.items():
        check.tensor(m, f"masks[{name!r}]")
        if m.dtype != torch.bool and not ((m == 0) | (m == 1)).all():
            raise ValueError(f"masks[{name!r}] must hold only True/False (or 0/1), got other values: a mask keeps "
                             "or removes a weight, it does not scale it")
    return masks


def _check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    params = prunable(model)
    _check_mask_values(masks)
    if set(masks) != set(params):
        raise ValueError(f"masks cover {sorted(masks)} but the model's weight matrices are {sorted(params)}")
    for name, m in masks.items():
        if m.shape != params[name].shape:
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, its weight {tuple(params[name].shape)}")
    return params


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set every masked-out weight of ``model`` to 0, in place."""
    for name, p in _check_masks(model, masks).items():
        p.mul_(masks[name].to(p.dtype))


def keep_masked(masks: Mapping[str, torch.Tensor]) -> Callable[[nn.Module], None]:
    """An ``after_step`` for :func:`lecture_utils.training.train` that re-applies ``masks`` after every step."""
    _check_mask_values(masks)
    return lambda model: apply_masks_(model, masks)


def fraction_remaining(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the covered weights that survive (True), in [0, 1]."""
    _check_mask_values(masks)
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("empty masks")
    return sum(int(m.sum()) for m in masks.values()) / total


def _top_k_mask(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask with True at the ``k`` largest ``scores`` among the ``allowed`` positions (ties: lowest index)."""
    flat = torch.where(allowed.flatten(), scores.flatten().double(), torch.tensor(float("-inf"), dtype=torch.double))
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view_as(scores)


@torch.no_grad()
def magnitude_masks(model: nn.Module, masks: Mapping[str, torch.Tensor], fraction: float) -> Masks:
    """Layer-wise magnitude pruning: in every weight matrix remove ``round(fraction × surviving)`` of the surviving
    weights, those with the smallest ``|w|``. ``fraction`` in [0, 1). Returns new masks; the model is unchanged."""
    fraction = _check_fraction(fraction)
    params = _check_masks(model, masks)
    new = {}
    for name, p in params.items():
        check.tensor(p, f"weight {name!r}")  # NaN magnitudes cannot be ranked
        alive = masks[name].bool()
        keep = int(alive.sum()) - round(fraction * int(alive.sum()))
        new[name] = _top_k_mask(p.detach().abs().cpu(), alive.cpu(), keep).to(alive.device)
    return new


@torch.no_grad()
def rewind(model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Load the saved weights ``state`` (a ``state_dict`` from initialisation, θ0, or from an early iteration)
    into ``model`` and zero the masked-out weights: afterwards a weight equals its saved value where the mask is
    True and 0 elsewhere. Biases are rewound too."""
    _check_masks(model, masks)
    check.mapping(state, "state", non_empty=True, what="a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"state does not fit the model (it must be a state_dict of the same architecture): "
                         f"{str(exc)[:300]}") from None
    apply_masks_(model, masks)


def imp_round(model: nn.Module, masks: Mapping[str, torch.Tensor], rewind_state: Mapping[str, torch.Tensor],
              fraction: float = 0.2) -> Masks:
    """One round of iterative magnitude pruning on a *trained* ``model``: prune ``fraction`` of each layer's
    surviving weights by magnitude, then rewind the survivors to ``rewind_state``. Returns the new masks; the
    model is left rewound and masked, ready to train again."""
    new = magnitude_masks(model, masks, fraction)
    rewind(model, rewind_state, new)
    return new


def random_masks(masks: Mapping[str, torch.Tensor], seed: int) -> Masks:
    """The random-mask control: in every layer, as many survivors as in ``masks`` but at uniformly random
    positions (seeded by ``seed``)."""
    _check_mask_values(masks)
    seed = check.integer(seed, "seed", 0)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in masks.items():
        scores = torch.rand(m.shape, generator=gen)
        out[name] = _top_k_mask(scores, torch.ones_like(m, dtype=torch.bool, device="cpu"), int(m.sum())).to(m.device)
    return out


def snip_scores(model: nn.Module, batch, loss_fn: LossFn | None = None) -> dict[str, torch.Tensor]:
    """SNIP's connection sensitivity (Lee et al. 2019, arXiv 1810.02340) of every weight matrix on one batch:
    ``|∂L/∂w ⊙ w|``, which equals ``|∂L/∂c|`` for a multiplicative mask ``c`` at 1. Same shapes as the weights.
    The model's weights and gradients are left as they were."""
    params = prunable(model)
    if loss_fn is not None:
        check.callable_(loss_fn, "loss_fn")
    one = isinstance(batch, Mapping) or (isinstance(batch, (tuple, list)) and len(batch) == 2
                                         and all(torch.is_tensor(t) for t in batch))
    if not one:
        raise check.BadType(f"batch must be one batch, a pair (x, y) of tensors or a dict, got {check.show(batch)} "
                            "(for a loader, pass one of its batches: next(iter(loader)))")
    loss_fn = loss_fn or cross_entropy_loss
    saved = {name: p.grad for name, p in params.items()}
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, to_device(batch, next(iter(params.values())).device))
    grads = torch.autograd.grad(loss, list(params.values()))
    for name, p in params.items():
        p.grad = saved[name]
    scores = {name: (g * p).abs().detach() for (name, p), g in zip(params.items(), grads, strict=True)}
    for name, sc in scores.items():
        check.tensor(sc, f"the SNIP scores of {name!r} (the loss or its gradient was not finite)")
    return scores


def snip_masks(scores: Mapping[str, torch.Tensor], keep: float) -> Masks:
    """Keep the globally top ``round(keep × total)`` weights by score (SNIP prunes over all layers at once);
    ``keep`` is the fraction remaining, in (0, 1]."""
    keep = check.fraction(keep, "keep", low_open=True, high_open=False, hint="the fraction of weights remaining")
    check.mapping(scores, "scores", non_empty=True, what="a dict {parameter name: score tensor}")
    for name, sc in scores.items():
        check.tensor(sc, f"scores[{name!r}]", non_empty=True)
    names = list(scores)
    flat = torch.cat([scores[n].flatten().cpu() for n in names])
    k = round(keep * flat.numel())
    mask = _top_k_mask(flat, torch.ones_like(flat, dtype=torch.bool), k)
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = mask[start:start + size].view_as(scores[n]).to(scores[n].device)
        start += size
    return out


# --------------------------------------------------------------------------------------------------------------
# The lesson's experiment: one seed, every method, every sparsity
# --------------------------------------------------------------------------------------------------------------

class TensorBatches:
    """Mini-batches ``(x, y)`` of in-memory tensors, reshuffled each pass with a seeded generator (so a rerun
    sees the same order). Cheaper than a DataLoader over a TensorDataset for tiny models. Iterable many times."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0, shuffle: bool = True):
        check.tensor(x, "x", dims=range(1, 9))
        check.tensor(y, "y", dims=range(1, 9))
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and equally long, got {len(x)} and {len(y)}")
        batch_size = check.integer(batch_size, "batch_size", 1)
        seed = check.integer(seed, "seed", 0)
        check.flag(shuffle, "shuffle")
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=self.gen) if self.shuffle else torch.arange(len(self.x))
        for i in range(0, len(self.x), self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.x[idx], self.y[idx]


@dataclass(frozen=True)
class LotterySetup:
    """What one lottery-ticket run trains: layer sizes, optimiser steps per training, Adam's learning rate,
    batch size, prune fraction per IMP round, number of rounds, and the rewind step (0 = θ0)."""

    sizes: tuple[int, ...] = (40, 300, 100, 10)
    steps: int = 1000
    lr: float = 1.2e-3
    batch_size: int = 100
    fraction: float = 0.2
    rounds: int = 10
    rewind_step: int = 0

    def __post_init__(self) -> None:
        sizes = check.integers(self.sizes, "sizes", 1)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least two layer sizes (input, ..., output), got {self.sizes!r}")
        object.__setattr__(self, "sizes", tuple(sizes))
        for name, low in (("steps", 1), ("batch_size", 1), ("rounds", 0), ("rewind_step", 0)):
            object.__setattr__(self, name, check.integer(getattr(self, name), name, low))
        object.__setattr__(self, "lr", check.positive(self.lr, "lr", "Adam's learning rate"))
        object.__setattr__(self, "fraction", _check_fraction(self.fraction))


def _check_setup(setup) -> LotterySetup:
    if not isinstance(setup, LotterySetup):
        raise check.BadType(f"setup must be a lu.lottery.LotterySetup, got {check.show(setup)}")
    return setup


def check_data(data: Mapping[str, torch.Tensor]) -> None:
    """Raise unless ``data`` is MNIST-1D-shaped: float ``x_train``/``x_test`` (N, features), ``y_train``/``y_test``
    (N,) class indices (what :func:`lecture_utils.data.load_mnist1d` returns)."""
    check.mapping(data, "data", what="a dict with x_train, y_train, x_test, y_test (lu.data.load_mnist1d())")
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data]
    if missing:
        raise ValueError(f"data lacks {missing}; it must hold x_train, y_train, x_test and y_test tensors")
    for k in ("x_train", "x_test"):
        check.tensor(data[k], f"data[{k!r}]", floating=True, dims=(2,), non_empty=True)
    for k in ("y_train", "y_test"):
        check.tensor(data[k], f"data[{k!r}]", dims=(1,), non_empty=True)


def make_model(setup: LotterySetup, seed: int) -> nn.Module:
    """A fresh MLP of ``setup.sizes`` initialised from ``seed``."""
    from .models import mlp

    _check_setup(setup)
    seed_everything(check.integer(seed, "seed", 0))
    return mlp(list(setup.sizes))


def train_masked(model: nn.Module, masks: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor],
                 setup: LotterySetup, seed: int, steps: int | None = None) -> float:
    """Train ``model`` with Adam (no weight decay, constant-then-decaying lr of the course loop) keeping the masked
    weights at 0; return its test accuracy (fraction). The batch order is seeded by ``seed``."""
    _check_setup(setup)
    check_data(data)
    steps = check.optional_integer(steps, "steps", 1)
    apply_masks_(model, masks)
    loader = TensorBatches(data["x_train"], data["y_train"], setup.batch_size, seed=seed)
    with torch_threads(1):  # a small MLP: one thread is faster than two
        train(model, loader, max_steps=steps or setup.steps, lr=setup.lr, weight_decay=0.0, warmup=0.0,
              max_grad_norm=None, after_step=keep_masked(masks), progress=False)
    return evaluate(model, [(data["x_test"], data["y_test"])], progress=False).accuracy


def run_seed(data: Mapping[str, torch.Tensor], setup: LotterySetup, seed: int,
             methods: Iterable[str] = ("ticket", "reinit", "random_mask", "snip"),
             control_rounds: Iterable[int] | None = None) -> list[dict]:
    """The whole lesson-07 experiment for one seed. Trains the dense network, then ``setup.rounds`` IMP rounds;
    at every round's sparsity it also trains the controls named in ``methods``: ``reinit`` (the ticket's mask on
    a fresh initialisation), ``random_mask`` (a random mask of the same per-layer sizes on the original
    initialisation) and ``snip`` (SNIP at initialisation, global, same fraction remaining). ``control_rounds``
    limits the controls to those rounds (None: every round); the ticket is trained at every round.

    Returns rows ``{"seed", "method", "round", "remaining" (fraction of weights), "accuracy" (test, fraction),
    "train_accuracy" (on the 4,000 training examples, fraction)}``; the dense network is method ``"dense"`` at
    round 0.
    """
    _check_setup(setup)
    check_data(data)
    seed = check.integer(seed, "seed", 0)
    methods = set(check.strings(methods, "methods", non_empty=False))
    unknown = methods - {"ticket", "reinit", "random_mask", "snip"}
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; allowed: ticket, reinit, random_mask, snip")
    wanted = (set(range(1, setup.rounds + 1)) if control_rounds is None
              else set(check.integers(control_rounds, "control_rounds", 1, setup.rounds)))
    model = make_model(setup, seed)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    masks = full_masks(model)
    if setup.rewind_step > 0:  # train briefly, remember θ_k, and carry on from there
        train_masked(model, masks, data, setup, seed, steps=setup.rewind_step)
        rewind_state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(init_state)
    else:
        rewind_state = init_state
    xs, ys = data["x_train"], data["y_train"]

    def fit(net: nn.Module, net_masks: Mapping[str, torch.Tensor]) -> dict:
        test = train_masked(net, net_masks, data, setup, seed)
        return {"accuracy": test, "train_accuracy": accuracy(net, xs, ys)}

    rows = [{"seed": seed, "method": "dense", "round": 0, "remaining": 1.0, **fit(model, masks)}]
    snip = None
    if "snip" in methods:
        snip = snip_scores(make_model(setup, seed), (data["x_train"][:setup.batch_size * 10],
                                                     data["y_train"][:setup.batch_size * 10]))
    for r in range(1, setup.rounds + 1):
        masks = imp_round(model, masks, rewind_state, setup.fraction)
        remaining = fraction_remaining(masks)
        row = {"seed": seed, "round": r, "remaining": remaining}
        controls = methods if r in wanted else set()
        if "reinit" in controls:
            rows.append({**row, "method": "reinit", **fit(make_model(setup, 10_000 + seed), masks)})
        if "random_mask" in controls:
            other = make_model(setup, seed)
            other.load_state_dict(rewind_state)
            rows.append({**row, "method": "random_mask", **fit(other, random_masks(masks, 20_000 + 100 * seed + r))})
        if snip is not None and "snip" in controls:
            rows.append({**row, "method": "snip", **fit(make_model(setup, seed), snip_masks(snip, remaining))})
        # the ticket itself is trained last: the next round prunes these trained weights
        rows.append({**row, "method": "ticket", **fit(model, masks)})
    return rows


# --------------------------------------------------------------------------------------------------------------
# Supermasks (edge-popup) and sparse training from scratch (SET)
# --------------------------------------------------------------------------------------------------------------

def _check_density(density: float) -> float:
    return check.fraction(density, "density", low_open=True, high_open=False,
                          hint="the fraction of weights kept, 0.5 keeps half")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` on the tensors ``x`` (N, features), ``y`` (N,), in one batch."""
    check.module(model)
    return evaluate(model, [(x, y)], progress=False).accuracy


class SupermaskLinear(nn.Module):
    """A linear layer without bias whose weights never change: ``y = x (W ⊙ M)ᵀ`` with ``W`` a frozen buffer and
    ``M`` the mask that keeps the ``round(density × W.numel())`` largest of a learned score per weight
    (ties: lowest index). The backward pass treats the top-k as the identity (the straight-through estimator of
    Ramanujan et al. 2020, arXiv 1911.13299): the score of weight ``w`` gets the gradient ``∂L/∂(w·m) · w``,
    whether or not ``w`` is currently kept, so a dropped weight whose use would lower the loss can climb back in."""

    def __init__(self, weight: torch.Tensor, scores: torch.Tensor, density: float):
        super().__init__()
        check.tensor(weight, "weight", floating=True, dims=(2,), non_empty=True)
        check.tensor(scores, "scores", floating=True, dims=(2,), non_empty=True)
        if scores.shape != weight.shape:
            raise ValueError(f"scores must have the weight's shape {tuple(weight.shape)}, got {tuple(scores.shape)}")
        self.density = _check_density(density)
        self.register_buffer("weight", weight.detach().clone())
        self.scores = nn.Parameter(scores.detach().clone())

    def mask(self) -> torch.Tensor:
        """The current bool mask (True = kept), exactly ``round(density × numel)`` True entries."""
        k = round(self.density * self.scores.numel())
        s = self.scores.detach().cpu()
        return _top_k_mask(s, torch.ones_like(s, dtype=torch.bool), k).to(self.scores.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask().to(self.scores.dtype)
        straight_through = m + self.scores - self.scores.detach()  # value m, gradient 1 with respect to the scores
        return nn.functional.linear(x, self.weight * straight_through)


def supermask_model(setup: LotterySetup, seed: int, density: float, weights: str = "signed_constant") -> nn.Module:
    """The network of ``setup.sizes`` with :class:`SupermaskLinear` layers (ReLU between), no biases, every layer at
    ``density``. Weights from the seed's θ0 (:func:`make_model`): ``"init"`` uses θ0 itself (PyTorch's default
    initialisation), ``"signed_constant"`` keeps only θ0's signs, ``± √(2 / (density × fan_in))`` — Ramanujan et
    al.'s signed Kaiming constant, scaled for the fan-in that survives the mask. Scores start uniformly random
    (seeded by ``seed``), so the untrained model is the random-mask control."""
    _check_setup(setup)
    seed = check.integer(seed, "seed", 0)
    density = _check_density(density)
    weights = check.choice(weights, "weights", ["signed_constant", "init"])
    dense = make_model(setup, seed)
    gen = torch.Generator().manual_seed(30_000 + seed)
    layers: list[nn.Module] = []
    linears = [m for m in dense if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        w = lin.weight.detach()
        if weights == "signed_constant":
            w = torch.sign(w) * (2.0 / (density * w.shape[1])) ** 0.5
        bound = (6.0 / w.shape[1]) ** 0.5  # Kaiming-uniform scores, as in the paper's code
        scores = (torch.rand(w.shape, generator=gen) * 2 - 1) * bound
        layers.append(SupermaskLinear(w, scores, density))
        if i < len(linears) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def supermask_masks(model: nn.Module) -> Masks:
    """The current masks of every :class:`SupermaskLinear` of ``model``, by module name."""
    check.module(model)
    out = {name: m.mask() for name, m in model.named_modules() if isinstance(m, SupermaskLinear)}
    if not out:
        raise ValueError("the model has no SupermaskLinear layers (build it with lu.lottery.supermask_model)")
    return out


def train_supermask(model: nn.Module, data: Mapping[str, torch.Tensor], setup: LotterySetup, seed: int,
                    lr: float = 0.01, steps: int | None = None) -> float:
    """Edge-popup: train only the scores of ``model`` (:func:`supermask_model`) with Adam at ``lr`` (the course
    loop's constant-then-decaying schedule, ``steps`` or ``setup.steps`` steps, batches seeded by ``seed``); the
    weights never change. Returns the test accuracy (fraction)."""
    _check_setup(setup)
    check_data(data)
    supermask_masks(model)
    lr = check.positive(lr, "lr", "Adam's learning rate for the scores")
    steps = check.optional_integer(steps, "steps", 1)
    loader = TensorBatches(data["x_train"], data["y_train"], setup.batch_size, seed=seed)
    with torch_threads(1):
        train(model, loader, max_steps=steps or setup.steps, lr=lr, weight_decay=0.0, warmup=0.0,
              max_grad_norm=None, progress=False)
    return accuracy(model, data["x_test"], data["y_test"])


def linear_probe(data: Mapping[str, torch.Tensor], setup: LotterySetup, seed: int) -> float:
    """The random-features control: the seed's θ0 network with every layer frozen except the last, which is
    trained like :func:`train_masked` (dense). Returns the test accuracy (fraction)."""
    model = make_model(setup, seed)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for lin in linears[:-1]:
        for p in lin.parameters():
            p.requires_grad_(False)
    return train_masked(model, full_masks(model), data, setup, seed)


def uniform_random_masks(model: nn.Module, density: float, seed: int) -> Masks:
    """Random masks with ``round(density × numel)`` survivors in every weight matrix of ``model`` (seeded)."""
    density = _check_density(density)
    counts = {}
    for name, p in prunable(model).items():  # how many survive per matrix; random_masks places them
        counts[name] = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
        counts[name][:round(density * p.numel())] = True
        counts[name] = counts[name].view(p.shape)
    return random_masks(counts, seed)


@torch.no_grad()
def drop_and_regrow(model: nn.Module, masks: Mapping[str, torch.Tensor], fraction: float,
                    generator: torch.Generator) -> Masks:
    """One SET update (Mocanu et al. 2018, Nature Communications 9:2383) in every weight matrix: drop
    ``round(fraction × active)`` of the active weights, those with the smallest ``|w|``, and regrow as many at
    uniformly random positions among those that were inactive before the drop (fewer if there are not enough).
    The regrown weights are set to 0 in ``model`` (they start from nothing, as in RigL) and the dropped ones too;
    each layer keeps its number of active weights. Returns the new masks."""
    fraction = _check_fraction(fraction, "drop fraction")
    params = _check_masks(model, masks)
    if not isinstance(generator, torch.Generator):
        raise check.BadType(f"generator must be a torch.Generator, got {check.show(generator)}")
    new = {}
    for name, p in params.items():
        alive = masks[name].bool().cpu()
        n_alive, n_dead = int(alive.sum()), int((~alive).sum())
        k = min(round(fraction * n_alive), n_dead)
        kept = _top_k_mask(p.detach().abs().cpu(), alive, n_alive - k)
        grow = _top_k_mask(torch.rand(p.shape, generator=generator), ~alive, k)
        m = (kept | grow).to(masks[name].device)
        p[grow.to(p.device)] = 0.0
        p.mul_(m.to(p.dtype))
        new[name] = m
    return new


def sparse_train(model: nn.Module, masks: Mapping[str, torch.Tensor], data: Mapping[str, torch.Tensor],
                 setup: LotterySetup, seed: int, drop_fraction: float = 0.3, interval: int = 50, stop: float = 0.75,
                 steps: int | None = None) -> tuple[float, Masks]:
    """Sparse training from scratch (SET): train like :func:`train_masked`, and every ``interval`` optimiser steps,
    up to the fraction ``stop`` of the steps, apply :func:`drop_and_regrow` with ``drop_fraction``. The density
    never changes. ``drop_fraction=0`` is static sparse training, bit for bit :func:`train_masked`. Adam's running
    moments are not reset for regrown weights (the gradient of a masked weight is computed all along). Returns
    (test accuracy as a fraction, the final masks)."""
    _check_setup(setup)
    check_data(data)
    drop_fraction = _check_fraction(drop_fraction, "drop fraction")
    interval = check.integer(interval, "interval", 1)
    stop = check.fraction(stop, "stop", high_open=False, hint="the share of the steps during which masks change")
    steps = check.optional_integer(steps, "steps", 1) or setup.steps
    current = {name: m.clone() for name, m in _check_mask_values(masks).items()}
    apply_masks_(model, current)
    gen = torch.Generator().manual_seed(40_000 + check.integer(seed, "seed", 0))
    count = [0]

    def after_step(m: nn.Module) -> None:
        count[0] += 1
        apply_masks_(m, current)
        if drop_fraction > 0 and count[0] % interval == 0 and count[0] <= stop * steps:
            current.update(drop_and_regrow(m, current, drop_fraction, gen))

    loader = TensorBatches(data["x_train"], data["y_train"], setup.batch_size, seed=seed)
    with torch_threads(1):
        train(model, loader, max_steps=steps, lr=setup.lr, weight_decay=0.0, warmup=0.0, max_grad_norm=None,
              after_step=after_step, progress=False)
    return accuracy(model, data["x_test"], data["y_test"]), current


def run_sparse_seed(data: Mapping[str, torch.Tensor], setup: LotterySetup, seed: int,
                    supermask_densities: Iterable[float] = (0.512, 0.107), set_density: float = 0.107,
                    drop_fraction: float = 0.3, interval: int = 50) -> list[dict]:
    """The lesson's random-network and sparse-from-scratch runs for one seed. Rows ``{"seed", "method",
    "remaining", "accuracy", "train_accuracy"}`` (fractions):

    - ``edge_popup``: supermask on frozen signed-constant weights, scores trained (:func:`train_supermask`);
    - ``random_supermask``: the same network with its random initial scores, nothing trained (chance control);
    - ``linear_probe``: random dense features, only the last layer trained (:func:`linear_probe`; remaining 1.0);
    - ``set`` and ``static_sparse``: :func:`sparse_train` with ``drop_fraction`` and with 0, from θ0 and the
      same uniform random mask at ``set_density``."""
    _check_setup(setup)
    check_data(data)
    seed = check.integer(seed, "seed", 0)
    densities = [_check_density(d) for d in supermask_densities]
    set_density = _check_density(set_density)
    xs, ys = data["x_train"], data["y_train"]
    rows = []
    for d in densities:
        model = supermask_model(setup, seed, d)
        remaining = fraction_remaining(supermask_masks(model))
        rows.append({"seed": seed, "method": "random_supermask", "remaining": remaining,
                     "accuracy": accuracy(model, data["x_test"], data["y_test"]),
                     "train_accuracy": accuracy(model, xs, ys)})
        acc = train_supermask(model, data, setup, seed)
        rows.append({"seed": seed, "method": "edge_popup", "remaining": fraction_remaining(supermask_masks(model)),
                     "accuracy": acc, "train_accuracy": accuracy(model, xs, ys)})
    rows.append({"seed": seed, "method": "linear_probe", "remaining": 1.0, "accuracy": linear_probe(data, setup, seed),
                 "train_accuracy": float("nan")})
    for method, frac in (("static_sparse", 0.0), ("set", drop_fraction)):
        model = make_model(setup, seed)
        masks = uniform_random_masks(model, set_density, 50_000 + seed)
        acc, final = sparse_train(model, masks, data, setup, seed, drop_fraction=frac, interval=interval)
        rows.append({"seed": seed, "method": method, "remaining": fraction_remaining(final), "accuracy": acc,
                     "train_accuracy": accuracy(model, xs, ys)})
    return rows


# Reference answers of lesson 07's exercises (used by the student copy until the learner's pass their check).

def prune_and_rewind(trained: torch.Tensor, init: torch.Tensor, mask: torch.Tensor,
                     fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One IMP round for one weight matrix: remove ``round(fraction × survivors)`` of the surviving weights with the
    smallest ``|trained|``; returns ``(new_mask, init × new_mask)``."""
    fraction = _check_fraction(fraction)
    if not (torch.is_tensor(trained) and torch.is_tensor(init) and torch.is_tensor(mask)):
        raise TypeError("trained, init and mask must be tensors")
    if not trained.shape == init.shape == mask.shape:
        raise ValueError(f"trained, init and mask must have one shape, got {tuple(trained.shape)}, "
                         f"{tuple(init.shape)} and {tuple(mask.shape)}")
    alive = mask.bool()
    keep = int(alive.sum()) - round(fraction * int(alive.sum()))
    new = _top_k_mask(trained.detach().abs(), alive, keep)
    return new, init * new


def global_snip_masks(weights: list[torch.Tensor], grads: list[torch.Tensor], keep: float) -> list[torch.Tensor]:
    """Global SNIP over lists of tensors (one per layer): keep the ``round(keep × total)`` connections with the
    largest ``|grad × weight|`` over all layers together; one bool mask per layer."""
    if len(weights) != len(grads) or not weights:
        raise ValueError(f"weights and grads must be non-empty lists of one length, got {len(weights)} and "
                         f"{len(grads)}")
    keep = check.fraction(keep, "keep", low_open=True, high_open=False, hint="the share of connections kept")
    scores = [(g * w).abs().detach() for g, w in zip(grads, weights, strict=True)]
    flat = torch.cat([s.flatten() for s in scores])
    kept = _top_k_mask(flat, torch.ones_like(flat, dtype=torch.bool), round(keep * flat.numel()))
    return [m.view_as(s) for m, s in zip(kept.split([s.numel() for s in scores]), scores, strict=True)]


def paired_verdict(ticket, control, level: float = 0.95) -> str:
    """Which of two methods is better over seeds, judged on the per-seed differences ``ticket − control`` (the same
    seed shares the data order and θ0) by a paired t test: ``"ticket"`` if their mean is more than ``c`` standard
    errors above 0 (standard deviation with n − 1, over √n), ``"control"`` if more than ``c`` below, else ``"tie"``,
    where ``c`` is Student's two-sided critical value for n − 1 degrees of freedom at ``level``
    (:func:`lecture_utils.stats.t_critical`: 4.30 for 3 seeds at 95%). Also ``"tie"`` with fewer than two seeds,
    where the noise cannot be estimated."""
    ticket, control = torch.as_tensor(ticket, dtype=torch.float64), torch.as_tensor(control, dtype=torch.float64)
    if ticket.dim() != 1 or ticket.shape != control.shape:
        raise ValueError(f"ticket and control must be 1-d with one entry per seed, in the same order; got shapes "
                         f"{tuple(ticket.shape)} and {tuple(control.shape)}")
    if len(ticket) < 2:
        return "tie"
    return {"a": "ticket", "b": "control", "tie": "tie"}[paired_t(ticket, control, level).winner]
