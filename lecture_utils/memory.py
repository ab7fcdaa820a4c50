"""Memory arithmetic: how many bytes a model needs to run or to train, and whether it fits on a device.

Units: bytes, and GB = 10^9 bytes. Activations and framework overhead are left out on purpose: these are the
floors set by the parameters alone, which is where the size problem starts.
"""

from __future__ import annotations

from . import validate as check

__all__ = ["BYTES_PER_PARAM", "OPTIMIZER_STATES", "BYTES_PER_GB", "DEVICES", "weights_bytes", "training_bytes", "fits",
           "describe_fit", "megabytes", "bytes_at_bits"]

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


def weights_bytes(n_params: float, dtype: str = "fp32", sparsity: float = 0.0) -> float:
    """Bytes to store ``n_params`` weights in ``dtype``. With ``sparsity`` (fraction of zeros, in [0, 1)) only the
    non-zero values are counted: an idealised floor, since a real sparse format also stores their positions.

    Examples:
        >>> weights_bytes(1_000_000, "fp16")  # 2 bytes per weight
        2000000.0
        >>> weights_bytes(1_000_000, "int8", sparsity=0.5)  # half of them zero: only the other half counted
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


def fits(n_params: float, device_gb: float, dtype: str = "fp32", mode: str = "inference",
         optimizer: str = "adam") -> dict:
    """Does a model of ``n_params`` parameters fit in ``device_gb`` GB for ``mode`` "inference" or "training"?

    Returns ``{"needed_gb", "device_gb", "fits", "share"}`` where share = needed / available.

    Examples:
        >>> fits(7e9, 16, "fp16")  # a 7-billion-parameter model on a 16 GB GPU, for inference
        {'needed_gb': 14.0, 'device_gb': 16.0, 'fits': True, 'share': 0.875}
        >>> fits(7e9, 16, "fp16", mode="training")["needed_gb"]  # 16 bytes per parameter with Adam
        112.0
    """
    device_gb = check.positive(device_gb, "device_gb", "GB of device memory")
    check.choice(mode, "mode", ["inference", "training"])
    if mode == "inference":
        needed = weights_bytes(n_params, dtype)
    elif mode == "training":
        needed = training_bytes(n_params, dtype, optimizer)
    else:
        raise ValueError(f"Unknown mode {mode!r}. Allowed: inference, training.")
    needed_gb = needed / BYTES_PER_GB
    return {"needed_gb": needed_gb, "device_gb": float(device_gb), "fits": needed_gb <= device_gb,
            "share": needed_gb / device_gb}


def describe_fit(n_params: float, device_gb: float, dtype: str = "fp32", mode: str = "inference") -> str:
    """One sentence saying whether the model fits (the text the widget shows).

    Examples:
        >>> describe_fit(7e9, 16, "fp16")
        '7 B parameters, inference in fp16: needs 14.0 GB of 16 GB (88%) → fits ✅'
    """
    r = fits(n_params, device_gb, dtype, mode)
    verdict = "fits ✅" if r["fits"] else "does not fit ❌"
    return (f"{n_params / 1e9:,.3g} B parameters, {mode} in {dtype}: needs {r['needed_gb']:,.1f} GB of "
            f"{r['device_gb']:,.0f} GB ({100 * r['share']:,.0f}%) → {verdict}")


# Reference answers of lesson 00's and 01's exercises (used by the student copy until the learner's pass their check).

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


def bytes_at_bits(n_params: float, bits: int) -> float:
    """Bytes to store ``n_params`` weights of ``bits`` bits each (8 bits per byte).

    Examples:
        >>> bytes_at_bits(1000, 4)
        500.0
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, float)) or n_params < 0:
        raise ValueError(f"n_params must be a non-negative number of parameters, got {n_params!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits <= 0:
        raise ValueError(f"bits must be a positive int, got {bits!r}")
    return n_params * bits / 8
