"""Byte arithmetic, in one place: how many bytes a model needs to run or to train and whether it fits on a device
(from parameter counts), and how many bytes tensors take in a format — dense, CSR, zlib-compressed, or held in
memory with pruning masks (from the tensors themselves). The language model's own (KV cache, group constants)
is :mod:`lecture_utils.llm.footprint`; a saved file's size is :func:`lecture_utils.measure.size_mb`.

Units: bytes, and GB = 10^9 bytes. Activations and framework overhead are left out on purpose: these are the
floors set by the parameters alone, which is where the size problem starts.
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from . import validate as check

__all__ = ["BYTES_PER_PARAM", "OPTIMIZER_STATES", "BYTES_PER_GB", "DEVICES", "stored_bytes", "training_bytes", "Fit",
           "fits", "describe_fit", "dense_bytes", "csr_bytes", "compressed_bytes", "held_bytes", "megabytes",
           "weight_bytes", "csr_nbytes"]

BYTES_PER_PARAM: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}
OPTIMIZER_STATES: dict[str, int] = {"sgd": 0, "momentum": 1, "adam": 2}  # fp32 tensors kept per parameter
BYTES_PER_GB = 1_000_000_000

# Nominal memory of some devices, in GB, as sold. Add your own: the functions take any number.
DEVICES: dict[str, float] = {
    "phone 8GB": 8, "Pi 5 8GB": 8, "laptop 16GB": 16, "T4 16GB": 16, "RTX4090 24GB": 24, "A100 80GB": 80,
    "H100 80GB": 80,
}


def _check(n_params: float, dtype: str) -> float:
    check.choice(dtype, "dtype", list(BYTES_PER_PARAM))
    return check.real(n_params, "n_params", 0, hint="a number of parameters")


def stored_bytes(n_params: float, dtype: str = "fp32", sparsity: float = 0.0) -> float:
    """Bytes to store ``n_params`` weights in ``dtype``. With ``sparsity`` (fraction of zeros, in [0, 1)) only the
    non-zero values are counted: an idealised floor, since a real sparse format also stores their positions.

    Examples:
        >>> stored_bytes(1_000_000, "fp16")  # 2 bytes per weight
        2000000.0
        >>> stored_bytes(1_000_000, "int8", sparsity=0.5)  # half of them zero: only the other half counted
        500000.0
    """
    n_params = _check(n_params, dtype)
    sparsity = check.fraction(sparsity, "sparsity", hint="the fraction of zero weights")
    return n_params * (1 - sparsity) * BYTES_PER_PARAM[dtype]


def training_bytes(n_params: float, dtype: str = "fp32", optimizer: str = "adam") -> float:
    """Bytes to train ``n_params`` parameters, activations excluded.

    fp32 training keeps weights + gradients + the optimizer's states (Adam: two, the running mean and variance),
    all in fp32: 4 + 4 + 8 = 16 bytes per parameter. Mixed precision (``dtype`` fp16/bf16) keeps half-precision
    weights and gradients plus an fp32 master copy and fp32 optimizer states: 2 + 2 + 4 + 8 = 16 bytes with Adam.

    Examples:
        >>> training_bytes(1_000_000)  # fp32 with Adam: 16 bytes per parameter
        16000000.0
        >>> training_bytes(1_000_000, "bf16", "sgd")  # 2 + 2 + 4 (master copy), no optimizer state
        8000000.0
    """
    n_params = _check(n_params, dtype)
    check.choice(optimizer, "optimizer", list(OPTIMIZER_STATES))
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"Training is done in fp32, fp16 or bf16, not {dtype!r} (int types are for inference).")
    b = BYTES_PER_PARAM[dtype]
    master = 0.0 if dtype == "fp32" else 4.0
    return n_params * (b + b + master + 4.0 * OPTIMIZER_STATES[optimizer])


@dataclass(frozen=True)
class Fit:
    """Whether a model fits a device: ``needed_gb`` and ``device_gb`` (GB = 10^9 bytes), ``fits`` and ``share``
    (needed ÷ available)."""

    needed_gb: float
    device_gb: float
    fits: bool
    share: float


def fits(n_params: float, device_gb: float, dtype: str = "fp32", mode: str = "inference",
         optimizer: str = "adam") -> Fit:
    """Does a model of ``n_params`` parameters fit in ``device_gb`` GB for ``mode`` "inference" or "training"?
    Returns a :class:`Fit`.

    Examples:
        >>> fits(7e9, 16, "fp16")  # a 7-billion-parameter model on a 16 GB GPU, for inference
        Fit(needed_gb=14.0, device_gb=16.0, fits=True, share=0.875)
        >>> fits(7e9, 16, "fp16", mode="training").needed_gb  # 16 bytes per parameter with Adam
        112.0
    """
    device_gb = check.positive(device_gb, "device_gb", "GB of device memory")
    check.choice(mode, "mode", ["inference", "training"])
    if mode == "inference":
        needed = stored_bytes(n_params, dtype)
    elif mode == "training":
        needed = training_bytes(n_params, dtype, optimizer)
    else:
        raise ValueError(f"Unknown mode {mode!r}. Allowed: inference, training.")
    needed_gb = needed / BYTES_PER_GB
    return Fit(needed_gb=needed_gb, device_gb=float(device_gb), fits=needed_gb <= device_gb,
               share=needed_gb / device_gb)


def describe_fit(n_params: float, device_gb: float, dtype: str = "fp32", mode: str = "inference") -> str:
    """One sentence saying whether the model fits (the text the widget shows).

    Examples:
        >>> describe_fit(7e9, 16, "fp16")
        '7 B parameters, inference in fp16: needs 14.0 GB of 16 GB (88%) → fits ✅'
    """
    r = fits(n_params, device_gb, dtype, mode)
    verdict = "fits ✅" if r.fits else "does not fit ❌"
    return (f"{n_params / 1e9:,.3g} B parameters, {mode} in {dtype}: needs {r.needed_gb:,.1f} GB of "
            f"{r.device_gb:,.0f} GB ({100 * r.share:,.0f}%) → {verdict}")


def dense_bytes(weight: torch.Tensor) -> int:
    """Bytes of ``weight`` stored densely: numel × bytes per element (zeros cost as much as any value)."""
    check.tensor(weight, "weight", finite=False)
    return weight.numel() * weight.element_size()


def csr_bytes(weight: torch.Tensor, index_dtype: torch.dtype = torch.int32) -> int:
    """Bytes of a 2-D ``weight`` (rows, cols) in CSR format: the non-zero values (nnz × value bytes), their
    column indices (nnz × index bytes) and the row pointers ((rows + 1) × index bytes). Counted from
    ``Tensor.to_sparse_csr()``; torch stores the indices as int64, scipy and most runtimes as int32 when they fit
    (``index_dtype``)."""
    check.tensor(weight, "weight", finite=False)
    if weight.dim() != 2:
        raise ValueError(f"CSR needs a 2-D matrix, got shape {tuple(weight.shape)}")
    if index_dtype not in (torch.int32, torch.int64):
        raise ValueError(f"index_dtype must be torch.int32 or torch.int64, got {check.show(index_dtype)}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        csr = weight.detach().to_sparse_csr()
    index_size = torch.empty((), dtype=index_dtype).element_size()
    n_index = csr.col_indices().numel() + csr.crow_indices().numel()
    return dense_bytes(csr.values()) + n_index * index_size


def compressed_bytes(weights: Iterable[torch.Tensor], level: int = 6) -> int:
    """Bytes of the tensors' dense bytes after ``zlib`` compression (what a compressed archive such as a
    ``.zip`` with deflate or a ``.gz`` file would hold): runs of zeros compress well, random floats do not."""
    level = check.integer(level, "level", 0, 9)
    weights = check.items(weights, "weights", non_empty=False, what="a list of tensors")
    for i, w in enumerate(weights):
        check.tensor(w, f"weights[{i}]", finite=False)
    buf = io.BytesIO()
    for w in weights:
        buf.write(w.detach().contiguous().cpu().numpy().tobytes())
    return len(zlib.compress(buf.getvalue(), level))


def held_bytes(model: nn.Module) -> int:
    """Bytes of the tensors a model keeps in memory: parameters, buffers (pruning masks included) and, for a
    pruned module, the recomputed ``weight`` that the pruning hook stores next to ``weight_orig``."""
    check.module(model)
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    for module in model.modules():
        for name, _ in module.named_buffers(recurse=False):
            if name.endswith("_mask"):
                w = getattr(module, name[: -len("_mask")], None)
                if isinstance(w, torch.Tensor):
                    tensors[id(w)] = w
    return sum(dense_bytes(t) for t in tensors.values())


# Reference answers of lesson 00's, 01's and 04's exercises (used by the student copy until the learner's pass
# their check).

def megabytes(n_params: float, bytes_per_param: float) -> float:
    """MB (10^6 bytes) needed to store ``n_params`` values of ``bytes_per_param`` bytes each.

    Examples:
        >>> megabytes(22_713_218, 4)  # MiniLM-L6's encoder in fp32
        90.852872
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, float)) or n_params < 0:
        raise ValueError(f"n_params must be a non-negative number of parameters, got {n_params!r}")
    if isinstance(bytes_per_param, bool) or not isinstance(bytes_per_param, (int, float)) or bytes_per_param <= 0:
        raise ValueError(f"bytes_per_param must be a positive number of bytes, got {bytes_per_param!r}")
    return n_params * bytes_per_param / 1e6


def weight_bytes(n_params: float, bits: int) -> float:
    """Bytes to store ``n_params`` weights of ``bits`` bits each (8 bits per byte).

    Examples:
        >>> weight_bytes(1000, 4)
        500.0
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, float)) or n_params < 0:
        raise ValueError(f"n_params must be a non-negative number of parameters, got {n_params!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        raise ValueError(f"bits must be a positive int, got {bits!r}")
    return n_params * bits / 8


def csr_nbytes(rows: int, cols: int, nnz: int, value_bytes: int, index_bytes: int) -> int:
    """Bytes of a (rows, cols) matrix with ``nnz`` non-zeros in CSR: values, column indices, ``rows + 1`` row
    pointers (the number of columns does not appear). :func:`csr_bytes` counts the same from a tensor.

    Examples:
        >>> csr_nbytes(2, 3, 4, 4, 4)  # 4 values and 4 column indices of 4 bytes, 3 row pointers
        44
    """
    for name, value in (("rows", rows), ("cols", cols), ("nnz", nnz), ("value_bytes", value_bytes),
                        ("index_bytes", index_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if nnz > rows * cols:
        raise ValueError(f"nnz must be at most rows × cols = {rows * cols}, got {nnz}")
    return nnz * value_bytes + nnz * index_bytes + (rows + 1) * index_bytes
