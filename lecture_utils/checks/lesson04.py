"""Checks of lesson 04, pruning weights: magnitude mask, sparsity of the weight matrices, CSR bytes, sparsity by
kind of layer; the whole model's size in CSR predicted against the measured files."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import measure, memory, prune
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
    tensor_like,
    verdict,
)

__all__ = ["magnitude_mask", "matrix_sparsity", "csr_nbytes", "sparsity_by_kind", "CSR_RATIO_TOLERANCE",
           "predicted_csr_ratio", "predicted_csr_ratio_reference"]


def magnitude_mask(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check ``fn(weight, sparsity) -> mask``: a mask of the weight's shape, 1/True where a weight survives,
    removing the ``round(sparsity × numel)`` entries with the smallest |weight| — the mask of
    ``torch.nn.utils.prune.l1_unstructured``."""
    from torch.nn.utils import prune as torch_prune

    gen = torch.Generator().manual_seed(4)

    def case(shape: tuple[int, ...], s: float, spread_rows: bool = False):
        def run():
            w = torch.randn(shape, generator=gen)
            if spread_rows:
                w = w * torch.logspace(-2, 1, shape[0]).unsqueeze(1)
            layer = torch.nn.Linear(shape[1], shape[0], bias=False)
            with torch.no_grad():
                layer.weight.copy_(w)
            want = torch_prune.l1_unstructured(layer, "weight", amount=s).weight_mask.bool()
            got = tensor_like(call(fn, w.clone(), s), w.shape, "mask")
            got = got.bool() if got.dtype == torch.bool else got != 0
            where = f"a {shape[0]}×{shape[1]} weight at sparsity {s}"
            removed, want_removed = int((~got).sum()), int((~want).sum())
            if removed != want_removed:
                raise Wrong(f"{where}: your mask removes {removed} weights, expected {want_removed}.")
            if not torch.equal(got, want):
                kept_small = (got & ~want).any()
                raise Wrong(f"{where}: " + ("you kept a weight smaller in magnitude than one you removed — rank by "
                                            "|w| over the whole matrix." if kept_small else
                                            "your mask differs from the expected one."))
        return run

    return run_cases("magnitude_mask", [case((6, 5), 0.5), case((20, 30), 0.9), case((40, 10), 0.3, spread_rows=True),
                                   case((8, 8), 0.0)],
                "count how many weights go (round(sparsity × number of weights)), find the threshold among the "
                "absolute values (torch.topk or sort on the flattened |w|), and keep everything above it.")


def matrix_sparsity(fn: Callable[[torch.nn.Module], float]) -> CheckResult:
    """Check ``fn(model) -> float``: the fraction of zeros over the model's weight matrices only (every module
    ``weight`` with 2+ dimensions; biases and LayerNorm parameters left out), in [0, 1]."""
    def case(seed: int, frac: float):
        def run():
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Linear(8, 16), torch.nn.LayerNorm(16),
                                        torch.nn.Linear(16, 4))
            with torch.no_grad():
                for m in (model[1], model[3]):
                    m.weight[torch.rand_like(m.weight) < frac] = 0
                    m.bias.zero_()  # zero biases must not count
            want = measure.sparsity(model)  # before the learner's function runs
            got = number(call(fn, model), "sparsity")
            if 1 < got <= 100:
                raise Wrong(f"got {got:.4g}: return a fraction in [0, 1], not a percentage.")
            close(got, want, f"a small model with {100 * frac:.0f}% of its Linear weights set to 0", rel=1e-5)
        return run

    return run_cases("matrix_sparsity", [case(0, 0.5), case(1, 0.9), case(2, 0.0)],
                "walk over model.modules(), keep the `weight` of those whose weight has 2 or more dimensions, and "
                "divide the number of zeros by the number of entries of those matrices together.")


def csr_nbytes(fn: Callable[[int, int, int, int, int], int]) -> CheckResult:
    """Check ``fn(rows, cols, nnz, value_bytes, index_bytes) -> int``: bytes of a (rows, cols) matrix with nnz
    non-zeros in CSR format — values, column indices and row pointers."""

    def case(rows: int, cols: int, nnz: int, vb: int, ib: int):
        def run():
            got = number(call(fn, rows, cols, nnz, vb, ib), "bytes")
            want = memory.csr_nbytes(rows, cols, nnz, vb, ib)
            close(got, want, f"{rows}×{cols}, {nnz} non-zeros, {vb}-byte values, {ib}-byte indices")
        return run

    return run_cases("csr_nbytes", [case(384, 384, 14_746, 4, 4), case(1536, 384, 58_982, 4, 8), case(3, 5, 0, 4, 8),
                               case(10, 1000, 10_000, 2, 4)],
                "CSR stores one value and one column index per non-zero, plus one row pointer per row and one more "
                "at the end. The number of columns does not appear.")


def sparsity_by_kind(fn: Callable[[dict[str, float]], dict[str, float]]) -> CheckResult:
    """Check ``fn(layers) -> {kind: mean sparsity}``: ``layers`` maps encoder Linear names
    (``bert.encoder.layer.3.attention.self.query``) to their sparsity; the kind is the part of the name after the
    layer number (``attention.self.query``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``),
    and each kind's value is the mean sparsity of its layers, a fraction in [0, 1]."""
    gen = torch.Generator().manual_seed(14)

    def case(prefix: str, kinds: tuple[str, ...], n_layers: int):
        def run():
            layers = {f"{prefix}.{i}.{k}": round(float(torch.rand((), generator=gen)), 4)
                      for i in range(n_layers) for k in kinds}
            want = prune.sparsity_by_kind(layers)
            got = call(fn, dict(layers))
            if not isinstance(got, dict):
                raise Wrong(f"return a dict {{kind: mean sparsity}}, got {type(got).__name__}.")
            where = f"{n_layers} layers named {prefix}.<i>.<kind>"
            if set(got) != set(want):
                raise Wrong(f"{where}: your kinds are {sorted(map(str, got))}, expected {sorted(want)} — the kind is "
                            "everything after the layer number.")
            for k in kinds:
                value = number(got[k], f"the value for {k!r}")
                if 1 < value <= 100:
                    raise Wrong(f"{where}: {k!r} is {value:.4g}; return a fraction in [0, 1], not a percentage.")
                close(value, want[k], f"{where}, kind {k!r}", rel=1e-6)
        return run

    bert = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "intermediate.dense", "output.dense")
    return run_cases("sparsity_by_kind", [case("bert.encoder.layer", bert, 6), case("bert.encoder.layer", bert, 2),
                                          case("distilbert.transformer.layer", ("attention.q_lin", "ffn.lin1",
                                                                                "ffn.lin2"), 3)],
                     "split each name at its dots, find the part that is a number (the layer index: "
                     "part.isdigit()), join what follows it with dots — that is the kind — and average the "
                     "sparsities of each kind. 'output.dense' and 'attention.output.dense' are different kinds.")


CSR_RATIO_TOLERANCE = 0.02  # the row pointers and each file's names and shapes are left out


def predicted_csr_ratio(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(pruned_share, sparsity) -> predicted dense size / size with the pruned weights in CSR`` (int32
    indices, fp32 values) for a whole model of which the pruned weight matrices are ``pruned_share`` of the bytes
    and lose ``sparsity`` of their entries. Judged against sizes computed here: a small BERT pruned by the check
    at two sparsities, and the lesson's teacher (recorded by the notebook), each within ``CSR_RATIO_TOLERANCE``."""
    def judge(share: float, s: float, want: float, where: str):
        got = number(call(fn, share, s), "predicted size ratio")
        if got < 1 / (1 + 1e-6) and want >= 1:
            raise Wrong(f"{where}: {got:.4g} is below 1, so the sparse file would be the larger one. A ratio here is "
                        "dense size / sparse size.")
        if math.isclose(got, 1 / (1 - s), rel_tol=1e-3) or math.isclose(got, 1 / (2 * (1 - s)), rel_tol=1e-3):
            raise Wrong(f"{where}: {got:.4g} treats the whole model as pruned weights; the embeddings and the rest "
                        "stay as they were.")
        if math.isclose(got, 1 / ((1 - share) + share * (1 - s)), rel_tol=1e-3):
            raise Wrong(f"{where}: {got:.4g} stores each kept weight in 4 bytes; CSR also stores its column index.")
        predicted(got, want, where, CSR_RATIO_TOLERANCE, "Split the dense file (call it 1) into the pruned weights "
                  "and the rest; count what one kept weight costs in CSR with int32 indices.")

    def small_bert(s: float):
        def run():
            model = seeded_bert(3000, 128, 4, 512, 64)
            dense = measure.state_dict_bytes(model)
            targets = prune.linear_targets(model, exclude=prune.HEAD)
            prune.prune_layerwise_(model, s, targets)
            prune.make_permanent_(model)
            store = prune.weight_storage(model, targets)
            judge(store["dense"] / dense, s, dense / (dense - store["dense"] + store["csr"]),
                  f"a small BERT built by the check, encoder Linear layers {s:.0%} sparse")
        return run

    def lesson_model():
        share = measured("prune.csr_whole.pruned_share", "the pruned weights' share of the file")
        s = measured("prune.csr_whole.sparsity", "the sparsity")
        judge(share, s, measured("prune.csr_whole.size_ratio", "the whole model's size ratio"), "our teacher")

    def explain() -> str:
        share, s = measured("prune.csr_whole.pruned_share", ""), measured("prune.csr_whole.sparsity", "")
        got, want = number(call(fn, share, s), ""), measured("prune.csr_whole.size_ratio", "")
        return (f"our teacher: predicted {got:.3f}×, measured {want:.3f}× ({100 * (want / got - 1):+.2f}%): the row "
                f"pointers are the rest. The pruned weights alone shrink {1 / (2 * (1 - s)):.2f}×.")

    return verdict("predicted_csr_ratio", [small_bert(0.9), small_bert(0.7), lesson_model],
                   "only the pruned weight matrices change; everything else in the file stays dense. In CSR with "
                   "int32 indices a kept weight costs its 4-byte value and a 4-byte column index.", explain)


def predicted_csr_ratio_reference(pruned_share: float, sparsity: float) -> float:
    """Dense file size / size with the pruned matrices (``pruned_share`` of the bytes, ``sparsity`` of their entries
    zero) in CSR with fp32 values and int32 column indices, row pointers left out: the reference answer of exercise
    ``predicted_csr_ratio``."""
    return 1 / ((1 - pruned_share) + pruned_share * 2 * (1 - sparsity))


def _magnitude_mask(w, s, per_row=False, largest=False):
    """A magnitude mask with a mistake switched on (per row, or keeping the smallest weights)."""
    if per_row:
        idx = w.abs().topk(round(s * w.shape[1]), dim=1, largest=largest).indices
        return ~torch.zeros_like(w, dtype=torch.bool).scatter(1, idx, True)
    mask = torch.ones(w.numel(), dtype=torch.bool)
    mask[w.abs().flatten().topk(round(s * w.numel()), largest=largest).indices] = False
    return mask.view_as(w)


def _by_kind(layers, key=lambda n: n.split(".", 4)[-1], how=lambda v: sum(v) / len(v)):
    groups: dict = {}
    for name, value in layers.items():
        groups.setdefault(key(name), []).append(value)
    return {k: how(v) for k, v in groups.items()}


def _all_param_sparsity(m):
    return sum((p == 0).sum().item() for p in m.parameters()) / sum(p.numel() for p in m.parameters())


# --- the exercises of lesson 04, declared once ---------------------------------------------------------------------
declare("04", magnitude_mask, prune.magnitude_mask, wrong=(
    lambda w, s: _magnitude_mask(w, s, largest=True),  # keeps the small ones
    lambda w, s: _magnitude_mask(w, s, per_row=True),  # per row, not per matrix
    lambda w, s: w.abs() > s),  # the sparsity is not a threshold
    graded_wrong="return w.abs() > sparsity")
declare("04", matrix_sparsity, measure.sparsity, wrong=(
    _all_param_sparsity,  # counts biases and LayerNorm
    lambda m: 100 * measure.sparsity(m)),
    graded_wrong="return sum(int((p == 0).sum()) for p in model.parameters()) / sum(p.numel() for p in "
                 "model.parameters())")
declare("04", csr_nbytes, memory.csr_nbytes, wrong=(
    lambda rows, cols, nnz, vb, ib: nnz * (vb + ib) + rows * ib,  # forgets the last row pointer
    lambda rows, cols, nnz, vb, ib: nnz * (vb + ib) + (cols + 1) * ib,
    lambda rows, cols, nnz, vb, ib: rows * cols * vb),
    graded_wrong="return nnz * (value_bytes + index_bytes) + rows * index_bytes")
declare("04", sparsity_by_kind, prune.sparsity_by_kind, wrong=(
    lambda layers: _by_kind(layers, key=lambda n: n.split(".")[-1]),  # "dense" lumps three kinds
    lambda layers: _by_kind(layers, how=max),  # the largest, not the mean
    lambda layers: {k: 100 * v for k, v in _by_kind(layers).items()},  # percentages
    lambda layers: sum(layers.values()) / len(layers)),  # one number, not a dict
    graded_wrong="return {name.split('.')[-1]: value for name, value in layers.items()}  # last part only")
declare("04", predicted_csr_ratio, predicted_csr_ratio_reference, wrong=(
    lambda share, s: 1 / ((1 - share) + share * (1 - s)),  # the column indices forgotten
    lambda share, s: 1 / (2 * (1 - s)),  # the whole model as if all of it were pruned
    lambda share, s: (1 - share) + share * 2 * (1 - s),  # sparse / dense
    lambda share, s: 1.59),  # our measurement typed in: the small BERT fails
    graded_wrong="return 1 / ((1 - pruned_share) + pruned_share * (1 - sparsity))  # indices forgotten")
