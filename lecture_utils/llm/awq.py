"""AWQ (Lin et al. 2024, arXiv 2306.00978): protect the weights that meet large activations by scaling, not by
mixed precision.

The observation first: keeping 1% of each linear layer's *input channels* in full precision, chosen by the mean
|x| of their activations, recovers most of what round-to-nearest loses (:func:`salient_channels`,
:func:`full_precision_channels`). AWQ gets the same protection without a mixed format: multiply input channel j of
the weight by s_j before rounding and divide the input by s_j (:func:`scaled_quantize`); the division is folded
into the layer that produces the input, an RMSNorm or a linear (:func:`fold_scales_`), so nothing is added at run
time. Per block it searches s = (mean |x|)^α over a grid of α for the lowest error of the block's output
(:func:`awq_scales`, :func:`search_scale`), then a clipping range per output channel and group
(:func:`search_clip`); :func:`awq_model_` runs both on a whole model, as the reference code mit-han-lab/llm-awq
does (``auto_scale.py``, ``auto_clip.py``), and rounds with :func:`~.rtn.quantize_groupwise`.

Units: scales and errors are plain numbers (errors: mean squared difference of outputs); α is an exponent in [0, 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import validate
from .calibration import InputStats, _check_windows, decoder_inputs
from .model import check_float, decoder_layers, decoder_linears, mark_quantized_
from .rtn import _check_bits, _check_group, quantize_groupwise

__all__ = ["SALIENT_BY", "mean_abs", "salient_channels", "full_precision_channels", "scaled_quantize",
           "scaled_rtn_model_", "awq_scales", "ScaleSearch", "search_scale", "fold_scales_", "search_clip",
           "apply_clip", "AWQResult", "awq_model_", "step_growth"]

SALIENT_BY = ("activation", "weight", "random")
SCALE_FLOOR = 1e-4  # the reference code's clamp of (mean |x|)^α before normalising


# --------------------------------------------------------------------------------------------------------------
# The observation: 1% of the input channels kept in full precision
# --------------------------------------------------------------------------------------------------------------

def mean_abs(stats: InputStats) -> torch.Tensor:
    """Mean |x_j| over the calibration tokens of each input channel (float32, (in,)), from :func:`calibrate`'s
    statistics: the activation statistic AWQ ranks and scales by."""
    if not isinstance(stats, InputStats) or stats.abs_sum is None or stats.tokens < 1:
        raise ValueError("stats must be an InputStats from lu.llm.calibrate (with abs_sum and at least one token), "
                         f"got {validate.show(stats)}")
    return stats.abs_sum.float() / stats.tokens


def _count(fraction: float, cols: int) -> int:
    return max(1, round(fraction * cols))


def salient_channels(model: nn.Module, stats: dict[str, InputStats], fraction: float = 0.01,
                     by: str = "activation", seed: int = 0) -> dict[str, torch.Tensor]:
    """For every decoder linear, the indices (int64, sorted) of ``max(1, round(fraction × in))`` input channels:
    those with the largest mean |x| on the calibration tokens (``by="activation"``), the largest mean |W_ij| over
    the layer's rows (``"weight"``), or drawn at random with ``seed`` (``"random"``)."""
    fraction = validate.fraction(fraction, "fraction", low_open=True)
    validate.choice(by, "by", SALIENT_BY)
    validate.integer(seed, "seed", 0)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, lin in decoder_linears(model).items():
        cols = lin.in_features
        k = _count(fraction, cols)
        if by == "random":
            idx = torch.randperm(cols, generator=gen)[:k]
        else:
            if by == "activation":
                if name not in stats:
                    raise ValueError(f"stats has no entry {name!r}: run lu.llm.calibrate on this model first")
                score = mean_abs(stats[name])
            else:
                score = lin.weight.detach().abs().mean(0)
            if score.shape != (cols,):
                raise ValueError(f"{name}: the statistics have shape {tuple(score.shape)}, the layer {cols} inputs")
            idx = score.topk(k).indices
        out[name] = idx.sort().values
    return out


@contextlib.contextmanager
def full_precision_channels(quantized: nn.Module, original: nn.Module, channels: dict[str, torch.Tensor]
                            ) -> Iterator[nn.Module]:
    """Inside the ``with`` block, the input channels ``channels[name]`` of every decoder linear of ``quantized``
    hold ``original``'s weights again (1% in full precision, the rest rounded); on exit the rounded values return.
    Yields ``quantized``."""
    q_lin, o_lin = decoder_linears(quantized), decoder_linears(original)
    missing = sorted(set(q_lin) - set(channels))
    if missing or set(q_lin) != set(o_lin):
        raise ValueError(f"channels and both models must name the same decoder linears; missing {missing[:3]}")
    saved = {}
    try:
        with torch.no_grad():
            for name, lin in q_lin.items():
                idx = channels[name]
                saved[name] = lin.weight[:, idx].clone()
                lin.weight[:, idx] = o_lin[name].weight[:, idx].to(lin.weight.dtype)
        yield quantized
    finally:
        with torch.no_grad():
            for name, cols in saved.items():
                q_lin[name].weight[:, channels[name]] = cols


# --------------------------------------------------------------------------------------------------------------
# Scaling instead of mixed precision
# --------------------------------------------------------------------------------------------------------------

def _check_scales(s: torch.Tensor, cols: int, name: str = "s") -> torch.Tensor:
    validate.tensor(s, name, floating=True, dims=(1,))
    if s.shape[0] != cols or not bool((s > 0).all()):
        raise ValueError(f"{name} must hold {cols} positive factors (one per input channel), got shape "
                         f"{tuple(s.shape)}" + ("" if s.shape[0] != cols else f", minimum {s.min().item():g}"))
    return s


def _rtn(w: torch.Tensor, bits: int, g: int) -> torch.Tensor:
    """:func:`quantize_groupwise`'s affine rounding of a float32 ``w`` (rows of groups of ``g``), the same
    arithmetic in fewer passes and without re-validating: AWQ's searches call it thousands of times."""
    from ..quantize import EPS

    rows = w.reshape(-1, g)
    qmax = 2**bits - 1
    lo = rows.amin(1, keepdim=True).clamp_(max=0.0)
    hi = rows.amax(1, keepdim=True).clamp_(min=0.0)
    scale = ((hi - lo) / qmax).clamp_(min=EPS)
    zero = torch.round(lo / scale).neg_().clamp_(0, qmax)
    q = torch.round(rows * (1.0 / scale)).add_(zero).clamp_(0, qmax).sub_(zero).mul_(scale)
    return q.reshape(w.shape)


def scaled_quantize(w: torch.Tensor, s: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Round-to-nearest of ``w`` (out, in) with input channel j multiplied by ``s_j`` first, divided again after:
    Q(W·diag(s))·diag(s)⁻¹. Multiplying the layer's input by this equals dividing the input by s and multiplying
    by the rounded, scaled weights, which is what the folded model computes. ``s`` = 1 is plain RTN."""
    if not torch.is_tensor(w) or w.dim() != 2:
        raise ValueError(f"w must be a 2-D weight matrix (out, in), got {tuple(getattr(w, 'shape', ()))}")
    _check_scales(s, w.shape[1])
    _check_bits(bits)
    g = _check_group(w.shape[1], group_size)
    s = s.to(torch.float32).unsqueeze(0)
    return (_rtn(w.detach().float() * s, bits, g) / s).to(w.dtype)


@torch.no_grad()
def scaled_rtn_model_(model: nn.Module, bits: int, group_size: int | None, scales: dict[str, torch.Tensor]
                     ) -> nn.Module:
    """Every decoder linear of ``model`` rounded in place by :func:`scaled_quantize` with ``scales[name]`` (plain
    RTN for a linear without an entry); returns ``model``. The division of the input is simulated in the weights."""
    linears = decoder_linears(model)
    check_float(model, "scaled_rtn_model_")
    _check_bits(bits)
    validate.mapping(scales, "scales", what="a dict from linear name to its factors (one per input channel)")
    unknown = sorted(set(scales) - set(linears))
    if unknown:
        raise ValueError(f"scales has {len(unknown)} entries that name no decoder linear of the model, e.g. "
                         f"{unknown[0]!r}; the names look like {next(iter(linears))!r}")
    for name, lin in linears.items():  # every layer is checked before any weight changes
        _check_group(lin.in_features, group_size)
        if name in scales:
            _check_scales(scales[name], lin.in_features, f"scales[{name!r}]")
    for name, lin in linears.items():
        s = scales.get(name)
        lin.weight.copy_(quantize_groupwise(lin.weight, bits, group_size) if s is None
                         else scaled_quantize(lin.weight, s, bits, group_size))
    return mark_quantized_(model, "scaled_rtn_model_", bits, group_size)


def awq_scales(x_mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """AWQ's factors s = (mean |x|)^α (each at least 1e-4), divided by √(max s · min s) so that they straddle 1.
    α = 0 gives s = 1 (plain RTN); larger α protects the channels with large activations more."""
    alpha = validate.fraction(alpha, "alpha", high_open=False)
    validate.tensor(x_mean_abs, "x_mean_abs", floating=True, dims=(1,), non_empty=True)
    if bool((x_mean_abs < 0).any()):
        raise ValueError("x_mean_abs must be mean |x| per channel (>= 0), got negative entries")
    s = x_mean_abs.float().pow(alpha).clamp(min=SCALE_FLOOR)
    return s / (s.max() * s.min()).sqrt()


@dataclass
class ScaleSearch:
    """What :func:`search_scale` found: the α grid, the block-output error at each α, the best α and its factors."""

    alphas: list[float]
    errors: list[float]
    alpha: float
    scales: torch.Tensor

    @property
    def rtn_error(self) -> float:
        """The error at α = 0, i.e. with plain round-to-nearest."""
        return self.errors[0]


def _mse(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    total = sum(float((o.float() - r.float()).pow(2).sum()) for o, r in zip(outputs, reference, strict=True))
    return total / sum(r.numel() for r in reference)


@torch.no_grad()
def search_scale(run: Callable[[], list[torch.Tensor]], linears: list[nn.Linear], x_mean_abs: torch.Tensor,
                 bits: int, group_size: int | None = None, grid: int = 20,
                 scale_fn: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> ScaleSearch:
    """AWQ's search for one group of ``linears`` that read the same input: for α = 0, 1/grid, …, (grid−1)/grid,
    round each weight with :func:`scaled_quantize` and the factors ``scale_fn(x_mean_abs, α)`` (default
    :func:`awq_scales`), rerun the block (``run()`` returns its outputs, a list of tensors) and measure the mean
    squared difference from its output before rounding. The weights are restored afterwards. α = 0 is on the
    grid, so the best error is never above round-to-nearest's."""
    validate.integer(grid, "grid", 1)
    _check_bits(bits)
    if not linears:
        raise ValueError("linears must list at least one nn.Linear")
    cols = linears[0].in_features
    if any(lin.in_features != cols for lin in linears):
        raise ValueError("the linears of one group must read the same input (same in_features)")
    _check_group(cols, group_size)
    fn = scale_fn or awq_scales
    reference = run()
    originals = [lin.weight.detach().clone() for lin in linears]
    alphas, errors, best = [k / grid for k in range(grid)], [], None
    try:
        for alpha in alphas:
            s = fn(x_mean_abs, alpha)
            for lin, w in zip(linears, originals, strict=True):
                lin.weight.copy_(scaled_quantize(w, _check_scales(torch.as_tensor(s), cols), bits, group_size))
            errors.append(_mse(run(), reference))
            if best is None or errors[-1] < errors[best[0]]:
                best = (len(errors) - 1, s)
    finally:
        for lin, w in zip(linears, originals, strict=True):
            lin.weight.copy_(w)
    return ScaleSearch(alphas, errors, alphas[best[0]], best[1].detach().float())


@torch.no_grad()
def fold_scales_(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """Make the model compute the same function with the inputs of ``linears`` divided by ``s`` and their weight
    columns multiplied by it: ``prev``, the module that produces that input, is an RMSNorm/LayerNorm (its weight,
    and bias if any, divided by s) or a linear (its output rows divided by s). In place; no operation is added."""
    cols = linears[0].in_features
    _check_scales(s, cols)
    s = s.double()
    if isinstance(prev, nn.Linear):
        if prev.out_features != cols:
            raise ValueError(f"prev has {prev.out_features} outputs but the linears read {cols} inputs")
        prev.weight.copy_((prev.weight.double() / s.unsqueeze(1)).to(prev.weight.dtype))
        if prev.bias is not None:
            prev.bias.copy_((prev.bias.double() / s).to(prev.bias.dtype))
    else:
        weight = getattr(prev, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.shape != (cols,):
            raise ValueError(f"prev must be a linear or a norm with a weight of {cols} entries, got "
                             f"{type(prev).__name__}")
        weight.copy_((weight.double() / s).to(weight.dtype))
        bias = getattr(prev, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.copy_((bias.double() / s).to(bias.dtype))
    for lin in linears:
        lin.weight.copy_((lin.weight.double() * s.unsqueeze(0)).to(lin.weight.dtype))


# --------------------------------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def search_clip(w: torch.Tensor, xtx: torch.Tensor, bits: int, group_size: int | None = None, grid: int = 20,
                max_shrink: float = 0.5) -> torch.Tensor:
    """AWQ's clipping search for one weight ``(out, in)`` given its inputs' ``xtx`` = XᵀX ``(in, in)``: for every
    output channel and group, the range m·(1 − i/grid), i = 0 … ⌊max_shrink·grid⌋ − 1 (m = the group's max |w|),
    whose clipped and rounded weights give the smallest squared error of that group's share of the output,
    Σ_tokens (x_g·(q_g − w_g))². That sum is d_gᵀ (XᵀX)_gg d_g, so only the diagonal blocks of ``xtx`` are read.
    Returns the chosen range (out, groups). i = 0 (no clipping) is on the grid, so each group's error is never
    above round-to-nearest's."""
    if not torch.is_tensor(w) or w.dim() != 2:
        raise ValueError(f"w must be a 2-D weight matrix (out, in), got {tuple(getattr(w, 'shape', ()))}")
    rows, cols = w.shape
    g = _check_group(cols, group_size)
    validate.tensor(xtx, "xtx", floating=True, dims=(2,), non_empty=True)
    if xtx.shape != (cols, cols):
        raise ValueError(f"xtx must be ({cols}, {cols}) for a weight with {cols} inputs, got {tuple(xtx.shape)}")
    validate.integer(grid, "grid", 1)
    max_shrink = validate.fraction(max_shrink, "max_shrink", low_open=True)
    steps = max(1, int(max_shrink * grid))
    n = cols // g
    blocks = xtx.float().reshape(n, g, n, g).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (groups, g, g)
    wg = w.detach().float().reshape(rows, n, g)
    top = wg.abs().amax(-1)  # (out, groups)
    best_err = torch.full_like(top, float("inf"))
    best = top.clone()
    for i in range(steps):
        limit = top * (1 - i / grid)
        clipped = torch.maximum(torch.minimum(wg, limit.unsqueeze(-1)), -limit.unsqueeze(-1))
        d = _rtn(clipped.reshape(rows, cols), bits, g).reshape(rows, n, g) - wg
        err = (torch.einsum("ogk,gkl->ogl", d, blocks) * d).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, limit, best)
    return best


@torch.no_grad()
def apply_clip(w: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """``w`` (out, in) with every group clamped to ±``limit`` (out, groups) from :func:`search_clip`."""
    rows, cols = w.shape
    if limit.dim() != 2 or limit.shape[0] != rows or cols % limit.shape[1]:
        raise ValueError(f"limit must be (out, groups) for a weight {tuple(w.shape)}, got {tuple(limit.shape)}")
    wg = w.reshape(rows, limit.shape[1], -1)
    lim = limit.to(w.dtype).unsqueeze(-1)
    return torch.maximum(torch.minimum(wg, lim), -lim).reshape(rows, cols)


# --------------------------------------------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------------------------------------------

@dataclass
class AWQResult:
    """:func:`awq_model_`'s model and what it found: per scaled group (named by its first linear) the chosen α and
    the error curve over the grid; per clipped linear the mean range kept (1 = not clipped)."""

    model: nn.Module
    alphas: dict[str, float] = field(default_factory=dict)
    errors: dict[str, list[float]] = field(default_factory=dict)
    clip_kept: dict[str, float] = field(default_factory=dict)


class _Inputs:
    """Catches what named linears of one decoder layer receive, batch by batch."""

    def __init__(self, linears: dict[str, nn.Linear]):
        self.caught: dict[str, list[torch.Tensor]] = {n: [] for n in linears}
        self.handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in linears.items()]

    def _hook(self, name: str):
        def fn(_module, args):
            self.caught[name].append(args[0].detach())
        return fn

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _flat(batches: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([b.reshape(-1, b.shape[-1]) for b in batches]).float()


def _scale_groups(layer: nn.Module, x: dict[str, list[torch.Tensor]], kwargs: list[dict]) -> list[tuple]:
    """AWQ's groups of one Llama decoder layer: (the first linear's name, which names the caught input, the module
    producing that input, the linears reading it, a function that reruns the block whose output error counts)."""
    attn, mlp = layer.self_attn, layer.mlp

    def attention() -> list[torch.Tensor]:
        return [attn(hidden_states=h, **kw)[0] for h, kw in zip(x["self_attn.q_proj"], kwargs, strict=True)]

    groups = [("self_attn.q_proj", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], attention),
              ("mlp.gate_proj", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj],
               lambda: [mlp(h) for h in x["mlp.gate_proj"]]),
              ("mlp.down_proj", mlp.up_proj, [mlp.down_proj], lambda: [mlp.down_proj(h) for h in x["mlp.down_proj"]])]
    if attn.v_proj.out_features == attn.o_proj.in_features:  # no grouped-query attention: v_proj feeds o_proj
        groups.insert(1, ("self_attn.o_proj", attn.v_proj, [attn.o_proj],
                          lambda: [attn.o_proj(h) for h in x["self_attn.o_proj"]]))
    return groups


# Linears clipped, with the linear whose input they read; q and k are not: their error passes through the scores.
CLIPPED = [("self_attn.v_proj", "self_attn.q_proj"), ("self_attn.o_proj", "self_attn.o_proj"),
           ("mlp.gate_proj", "mlp.gate_proj"), ("mlp.up_proj", "mlp.gate_proj"), ("mlp.down_proj", "mlp.down_proj")]


@torch.no_grad()
def awq_model_(model: nn.Module, windows: torch.Tensor, bits: int, group_size: int | None = None, *,
              stats: dict[str, InputStats] | None = None, grid: int = 20, alphas: dict[str, float] | None = None,
              clip: bool = True, clip_grid: int = 20, max_shrink: float = 0.5, quantize: bool = True,
              batch_size: int = 8, max_layers: int | None = None,
              scale_fn: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> AWQResult:
    """AWQ on a Llama-style model, in place, one decoder layer at a time on the calibration ``windows`` (int64,
    (n, seq_len)), from the unquantized model's inputs to each layer, as the reference code does.

    Per layer: (1) :func:`search_scale` for q/k/v (the error of the attention's output), gate/up (the MLP's
    output), down_proj (its own output) and, where v_proj's output has o_proj's width (no grouped-query
    attention), o_proj; (2) the factors folded into input_layernorm, post_attention_layernorm, up_proj and v_proj
    (:func:`fold_scales_`); (3) with ``clip``, :func:`search_clip` for every linear except q and k (their error
    passes through the attention scores) on the scaled inputs; (4) with ``quantize``, every linear of the layer
    rounded by :func:`quantize_groupwise`; ``quantize=False`` leaves the scaled and clipped float model (for
    another quantizer, e.g. GPTQ).

    ``stats`` (from :func:`calibrate` on the same model, possibly on more tokens than ``windows``): the mean |x|
    of the scales and the XᵀX of the clipping search come from it; ``windows`` then only serve the block-output
    errors of the α search. Without it both come from ``windows``. ``alphas``: use these α per group (the keys
    of :attr:`AWQResult.alphas`, e.g. from a run at another bit width) instead of searching. ``grid`` α values
    and ``clip_grid`` shrink steps (the reference: 20 and 20 with ``max_shrink`` 0.5, i.e. 10 ranges from 1.0
    down to 0.55). ``scale_fn(x_mean_abs, α)``: the factors (default :func:`awq_scales`). ``max_layers``: only
    the first layers (a shortcut for tests).
    """
    _check_windows(windows)
    _check_bits(bits)
    validate.integer(grid, "grid", 1)
    validate.integer(clip_grid, "clip_grid", 1)
    validate.integer(batch_size, "batch_size", 1)
    validate.flag(clip, "clip")
    validate.flag(quantize, "quantize")
    if max_layers is not None:
        validate.integer(max_layers, "max_layers", 1)
    if scale_fn is not None:
        validate.callable_(scale_fn, "scale_fn")
    if stats is not None:
        validate.mapping(stats, "stats")
    if alphas is not None:
        validate.mapping(alphas, "alphas")
    all_linears = decoder_linears(model)
    check_float(model, "awq_model_")
    for lin in all_linears.values():
        _check_group(lin.in_features, group_size)
    if stats is not None and (missing := sorted(set(all_linears) - set(stats))):
        raise ValueError(f"stats has no entry {missing[0]!r}: run lu.llm.calibrate on this model first")
    result = AWQResult(model)
    inputs = decoder_inputs(model, windows, batch_size)
    for i, layer in enumerate(decoder_layers(model)[:max_layers]):
        prefix = f"model.layers.{i}."
        attn, mlp = layer.self_attn, layer.mlp
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        catch = _Inputs({"self_attn.q_proj": attn.q_proj, "self_attn.o_proj": attn.o_proj,
                         "mlp.gate_proj": mlp.gate_proj, "mlp.down_proj": mlp.down_proj})
        try:
            outputs = [layer(h, **kw) for h, kw in inputs]
        finally:
            catch.remove()
        x = catch.caught
        if stats is not None:
            mean_x = {src: mean_abs(stats[prefix + src]) for src in x}
            xtx = {src: stats[prefix + src].xtx.float() for src in x}
        else:
            flat = {src: _flat(b) for src, b in x.items()}
            mean_x = {src: f.abs().mean(0) for src, f in flat.items()}
            xtx = {src: f.T @ f for src, f in flat.items()}
        found = []
        for key, prev, group, run in _scale_groups(layer, x, [kw for _, kw in inputs]):
            if alphas is not None:
                if prefix + key not in alphas:
                    raise ValueError(f"alphas has no entry {prefix + key!r}")
                alpha = validate.fraction(alphas[prefix + key], f"alphas[{prefix + key!r}]", high_open=False)
                s = _check_scales(torch.as_tensor((scale_fn or awq_scales)(mean_x[key], alpha)).float(),
                                  group[0].in_features)
            else:
                search = search_scale(run, group, mean_x[key], bits, group_size, grid, scale_fn)
                alpha, s = search.alpha, search.scales
                result.errors[prefix + key] = search.errors
            result.alphas[prefix + key] = alpha
            found.append((key, prev, group, s))
        for key, prev, group, s in found:
            fold_scales_(prev, group, s)
            xtx[key] = xtx[key] / (s.unsqueeze(0) * s.unsqueeze(1))
        if clip:
            for name, src in CLIPPED:
                lin = linears[name]
                limit = search_clip(lin.weight, xtx[src], bits, group_size, clip_grid, max_shrink)
                top = lin.weight.detach().float().reshape(limit.shape[0], limit.shape[1], -1).abs().amax(-1)
                result.clip_kept[prefix + name] = float((limit / top.clamp(min=1e-12)).mean())
                lin.weight.copy_(apply_clip(lin.weight, limit))
        if quantize:
            for lin in linears.values():
                lin.weight.copy_(quantize_groupwise(lin.weight, bits, group_size))
        inputs = [(out, kw) for out, (_, kw) in zip(outputs, inputs, strict=True)]
    if quantize:
        mark_quantized_(model, "awq_model_", bits, group_size)
    return result


def step_growth(w: torch.Tensor, s: torch.Tensor, bits: int, group_size: int | None = None) -> tuple[int, int]:
    """Of the groups of ``w`` (out, in) that hold an input channel with ``s_j`` ≠ 1, how many get a larger
    rounding step when the columns are multiplied by ``s`` (the scaled weight became the group's extreme), and how
    many there are: ``(grown, groups)``."""
    from .rtn import group_qparams

    if not torch.is_tensor(w) or w.dim() != 2:
        raise ValueError(f"w must be a 2-D weight matrix (out, in), got {tuple(getattr(w, 'shape', ()))}")
    _check_bits(bits)
    g = _check_group(w.shape[1], group_size)
    _check_scales(s, w.shape[1])
    wf = w.detach().float()
    before, _ = group_qparams(wf.reshape(-1, g), bits)
    after, _ = group_qparams((wf * s.float().unsqueeze(0)).reshape(-1, g), bits)
    touched = (s != 1).reshape(-1, g).any(1).repeat(w.shape[0])
    grown = (after.squeeze(1) > before.squeeze(1) * (1 + 1e-6)) & touched
    return int(grown.sum()), int(touched.sum())
