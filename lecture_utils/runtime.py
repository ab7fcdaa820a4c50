"""Shipping a model on the CPU: ONNX export, ONNX Runtime sessions and int8.

- What the CPU can do for int8 (VNNI, AMX ...) is :mod:`lecture_utils.hardware`'s; :func:`ort_int8_settings`
  reads it.
- :func:`export_onnx` writes a model with ``torch.onnx.export`` — torch 2.13's default exporter, which traces the
  model with ``torch.export`` and writes the graph with onnxscript. Weights go to an external ``.data`` file next to
  the ``.onnx`` graph; :func:`onnx_size_mb` counts both.
- :func:`quantize_onnx_dynamic` is ONNX Runtime's post-training dynamic int8 (weights of MatMul/Gemm and, by
  default, of the embedding lookups in int8; activations quantized on the fly), with 7-bit weights on x86 CPUs
  without VNNI, where the u8 × s8 kernels saturate (:func:`ort_int8_settings`).
- :class:`OrtModel` runs an ONNX file in ONNX Runtime behind the interface of a course model: ``model(**batch)``
  returns an object with ``.logits`` (a torch tensor), so ``lu.training.evaluate``, ``lu.measure.latency_ms``,
  ``compare_latency`` and ``benchmark`` take it like any ``nn.Module``; ``lu.measure.size_mb`` reports its files.

Thread policy (the course's): ONNX Runtime gets as many intra-op threads as torch (``torch.get_num_threads()``,
which ``lu.setup()`` sets to the cores the process may use), one inter-op thread, and no spin-waiting, so that in a
round-robin timing an idle runtime does not keep a core busy while the next model runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import hardware, validate
from .measure import BYTES_PER_MB
from .training import model_inputs, predict

__all__ = ["DYNAMIC_DIMS", "scratch_dir", "external_data_files", "onnx_size_mb", "export_onnx", "optimize_onnx",
           "session_op_counts", "ort_int8_settings", "quantize_onnx_dynamic", "ort_session", "OrtOutput", "OrtModel",
           "Agreement", "logits_agreement", "agreement"]

DYNAMIC_DIMS = ("batch", "sequence")
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "tensor(double)": np.float64, "tensor(bool)": np.bool_}

# ----------------------------------------------------------------------------------------------------------------
# Files: checks and size on disk
# ----------------------------------------------------------------------------------------------------------------

def _onnx_path(path: str | Path, what: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"{what} must end in .onnx, got {str(path)!r}")
    return path


def _existing_onnx(path: str | Path, what: str = "path") -> Path:
    path = _onnx_path(path, what)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no ONNX file at {str(path)!r} (export one with lu.runtime.export_onnx).")
    return path


def _writable_onnx(path: str | Path, overwrite: bool, what: str = "path") -> Path:
    path = _onnx_path(path, what)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what}: the folder {str(path.parent)!r} does not exist; create it first.")
    overwrite = validate.flag(overwrite, "overwrite")
    taken = [p for p in (path, path.with_name(path.name + ".data")) if p.exists()]
    folders = [str(p) for p in taken if p.is_dir()]
    if folders:
        raise IsADirectoryError(f"{what}: {', '.join(folders)} is a folder; choose another file name.")
    if taken and not overwrite:
        raise FileExistsError(f"{what}: {', '.join(map(str, taken))} already exist(s); pass overwrite=True to "
                              "replace, or choose another path.")
    return path


@contextlib.contextmanager
def _atomic_onnx(path: Path) -> Iterator[Path]:
    """Yields ``<temporary folder beside path>/<path.name>`` to write an ONNX model (and its ``.data``, which the
    graph names by file name) into. When the block succeeds, the new ``.data`` and then the new graph replace the
    old files in one rename each (an old ``.data`` the new model does not use is removed); when it fails, the old
    files are left exactly as they were and the temporary folder is removed."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield tmp / path.name
        if not (tmp / path.name).is_file():
            raise RuntimeError(f"the ONNX writer produced no file {path.name}")
        data = path.with_name(path.name + ".data")
        for f in sorted(tmp.iterdir(), key=lambda f: f.suffix == ".onnx"):  # weights first, the graph last
            os.replace(f, path.parent / f.name)
        if data.exists() and data not in external_data_files(path):  # a stale weights file of the old model
            data.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _src_and_dst(src: str | Path, dst: str | Path, overwrite: bool, why_differ: str) -> tuple[Path, Path]:
    """A readable ONNX model ``src`` (with its weights) and a writable, different ``dst``, or a clear error."""
    src = _existing_onnx(src, "src")
    external_data_files(src)
    dst = _onnx_path(dst, "dst")
    if dst.resolve() == src.resolve():
        raise ValueError(f"dst must differ from src ({str(src)!r}): {why_differ}")
    return src, _writable_onnx(dst, overwrite, "dst")


def scratch_dir(prefix: str = "onnx-") -> Path:
    """A new empty temporary folder for exported files, removed when Python exits (a notebook's kernel stops), so
    lessons never write into the learner's folders nor leave 100 MB files behind."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def external_data_files(path: str | Path) -> list[Path]:
    """The external weight files (``.data``) that the ONNX graph at ``path`` refers to, in the same folder."""
    import onnx

    path = _existing_onnx(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a corrupt file must say so, whatever onnx raised
        raise ValueError(f"{str(path)!r} is not a readable ONNX model: {exc}") from exc
    names: set[str] = set()
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in t.external_data if e.key == "location")
    files = [path.parent / n for n in sorted(names)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{str(path)!r} keeps its weights in {missing}, which is missing: copy it next to "
                                "the .onnx file (the two travel together).")
    return files


def onnx_size_mb(path: str | Path) -> float:
    """Size on disk in MB (10^6 bytes) of an ONNX model: the graph file plus its external weight files."""
    path = _existing_onnx(path)
    return (path.stat().st_size + sum(f.stat().st_size for f in external_data_files(path))) / BYTES_PER_MB


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------

class _Positional(nn.Module):
    """Calls ``model(**dict(zip(names, args)))`` and returns the logits tensor: the exporter wants tensors in and
    tensors out, a Hugging Face model takes keywords and returns an output object."""

    def __init__(self, model: nn.Module, names: list[str] | None):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, args, strict=True))) if self.names else self.model(*args)
        return out.logits if hasattr(out, "logits") else out


def _check_exportable(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if isinstance(model, OrtModel):
        raise TypeError("model is already an ONNX Runtime model (OrtModel): its file is at model.path.")
    for name, module in model.named_modules():
        if type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.nn.quantized")):
            raise TypeError(f"model contains a torch.ao quantized module ({name}: {type(module).__name__}), which "
                            "the ONNX exporter does not support. Export the float model, then quantize the ONNX "
                            "file with lu.runtime.quantize_onnx_dynamic.")
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if type(t) not in (torch.Tensor, nn.Parameter):
            raise TypeError(f"model has a {type(t).__name__} tensor ({name}), e.g. from torchao's quantize_: the "
                            "exporter needs plain tensors. Export the float model, then quantize the ONNX file with "
                            "lu.runtime.quantize_onnx_dynamic.")


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's notes that are noise here (no torchvision, axis names merged, deprecations)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # the exporter colours its messages
    return text.splitlines()[0] if text else type(exc).__name__


def _check_runs(model: nn.Module, names: list[str] | None, args: tuple[torch.Tensor, ...]) -> None:
    """Run ``model`` once in torch on the example inputs: the exporter traces with fake tensors and so writes a graph
    that ONNX Runtime refuses to load when the inputs' dtypes do not fit the model (integer features into a float
    Linear, float token ids into an embedding). Refuse such inputs here, naming them and their dtypes."""
    given = ", ".join(f"{n} {a.dtype} {tuple(a.shape)}" for n, a in zip(names or ["inputs"], args, strict=True))
    weights = sorted({str(p.dtype) for p in model.parameters()})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _Positional(model, names)(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the inputs, the cause attached
        cause = _first_line(exc)
        dtype_problem = re.search(r"dtype|scalar type|Expected tensor for argument|not implemented for", cause)
        kind = TypeError if dtype_problem else RuntimeError
        raise kind(f"torch.onnx.export could not export {type(model).__name__}: it does not run in torch on these "
                   f"inputs ({cause}). Given: {given}; the model's weights are {', '.join(weights) or 'none'}"
                   + (" — a float model takes float features (inputs.float()); token ids must be integers (int64, "
                      "as a tokenizer returns them)" if dtype_problem else "")) from exc
    finally:
        model.train(was_training)


def export_onnx(model: nn.Module, inputs: Mapping[str, torch.Tensor] | torch.Tensor, path: str | Path,
                overwrite: bool = False) -> Path:
    """Export ``model`` (float) to the ONNX file ``path`` with torch 2.13's default exporter; returns the path.

    ``inputs`` is an example batch: a dict of tensors such as a tokenizer's output (``labels`` is left out) or one
    tensor. The batch dimension, and for a dict the second (sequence) dimension too, are exported as dynamic, so
    the file runs on any batch size and text length. The output is the logits. Weights go to ``<path>.data`` beside the
    graph. Existing files are replaced only with ``overwrite=True``, and only once the export has succeeded: the model
    is written to a temporary folder beside ``path`` and then moved into place, so a failed export leaves the old
    ``.onnx`` and ``.data`` as they were.

    The model is first run once in torch on ``inputs``: inputs it cannot take (integer features for a float model,
    float token ids) are refused before anything is written, since the exporter would write a graph ONNX Runtime
    refuses to load.

    Raises ``TypeError`` for a model the exporter cannot take (torch.ao or torchao quantized: export the float
    model and quantize with :func:`quantize_onnx_dynamic`) or for inputs of a dtype the model cannot take,
    ``FileNotFoundError``/``FileExistsError``/``ValueError`` for a bad path, and ``RuntimeError`` naming the model
    when the model fails in torch or the exporter fails.
    """
    _check_exportable(model)
    if isinstance(inputs, Mapping):
        names = list(model_inputs(inputs))
        if not names or not all(torch.is_tensor(inputs[k]) for k in names):
            raise TypeError("inputs must be a dict of tensors (a tokenizer's batch) or a tensor, got a dict with "
                            f"keys {list(inputs)} and non-tensor values")
        args = tuple(inputs[k] for k in names)
    elif torch.is_tensor(inputs):
        names, args = None, (inputs,)
    else:
        raise TypeError(f"inputs must be a dict of tensors or a tensor, got {type(inputs).__name__}")
    path = _writable_onnx(path, overwrite)
    device = next(model.parameters(), torch.empty(0)).device
    args = tuple(a.to(device) for a in args)
    _check_runs(model, names, args)
    input_names = names or ["input"]
    dims = 2 if names else 1  # token inputs: (batch, sequence); one tensor: (batch, features...)
    dynamic = [{i: DYNAMIC_DIMS[i] for i in range(min(a.dim(), dims))} for a in args]
    was_training = model.training
    model.eval()
    try:
        with _atomic_onnx(path) as tmp, _quiet_export():
            torch.onnx.export(_Positional(model, names), args, str(tmp), input_names=input_names,
                              output_names=["logits"], dynamic_shapes=(tuple(dynamic),), external_data=True,
                              verbose=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with the model's name and the cause attached
        raise RuntimeError(f"torch.onnx.export could not export {type(model).__name__}: {_first_line(exc)}"
                           + (f" — because: {_first_line(exc.__cause__)}" if exc.__cause__ else "")) from exc
    finally:
        model.train(was_training)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Graph fusion
# ----------------------------------------------------------------------------------------------------------------

def optimize_onnx(src: str | Path, dst: str | Path, overwrite: bool = False) -> tuple[Path, dict[str, int]]:
    """Fuse a BERT-style encoder's small operators into ONNX Runtime's larger CPU kernels; write the graph to ``dst``.

    ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``, model type ``bert``) rewrites
    patterns of many small nodes into one fused node each: the bias add + GELU of the feed-forward layer into
    ``BiasGelu``, the residual add + layer norm into ``SkipLayerNormalization``, and, when it recognises the
    pattern, the whole attention block into ``Attention``. Fewer nodes means fewer passes over memory and less
    per-node overhead, which matters most at batch 1. The arithmetic is the same up to float rounding. Fuse the
    float model, then quantize it with :func:`quantize_onnx_dynamic` (the order ONNX Runtime recommends).

    Head counts are detected from the graph, so a model with heads removed (layers with different head counts)
    is never fused with a wrong count. Returns ``(dst, fused)`` where ``fused`` counts the fused nodes by type
    (an empty dict when nothing matched). The result is one file (the teacher's 90 MB fit in one protobuf).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    src, dst = _src_and_dst(src, dst, overwrite, "the unfused model is kept.")
    logger = logging.getLogger("onnxruntime.transformers")  # it logs every fusion pass at INFO/WARNING
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
        before = {n.op_type for n in _load_graph_nodes(src)}
        fused = {}
        for node in optimized.model.graph.node:
            if node.op_type not in before and node.domain == "com.microsoft":
                fused[node.op_type] = fused.get(node.op_type, 0) + 1
        with _atomic_onnx(dst) as tmp:
            optimized.save_model_to_file(str(tmp), use_external_data_format=False)
    finally:
        logger.setLevel(level)
    return dst, fused


def session_op_counts(path: str | Path) -> dict[str, int]:
    """How many nodes of each operator type the graph at ``path`` has *after* ONNX Runtime's own optimisations,
    the ones an :func:`ort_session` applies when it loads a model (all levels, CPU). Comparing this for a graph with
    and without :func:`optimize_onnx` shows whether the offline fusion adds anything the session does not."""
    import tempfile

    import onnx
    import onnxruntime as ort

    path = _existing_onnx(path)
    external_data_files(path)
    with tempfile.TemporaryDirectory(prefix="ort-optimized-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3  # errors only (it warns that the saved graph is specific to this CPU)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        counts: dict[str, int] = {}
        for node in onnx.load(opts.optimized_model_filepath, load_external_data=False).graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _load_graph_nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


# ----------------------------------------------------------------------------------------------------------------
# ONNX Runtime int8
# ----------------------------------------------------------------------------------------------------------------

def ort_int8_settings(features: hardware.CpuFeatures | None = None) -> dict:
    """The ``reduce_range`` setting for ONNX Runtime's u8 × s8 int8 on the CPU described by ``features`` (default:
    this one, :func:`lecture_utils.hardware.cpu_features`), and why: ``{"reduce_range": bool, "why": str}``.

    ONNX Runtime's documentation of ``quantize_static`` ("Choosing parameters for CPU inference", onnxruntime 1.2x)
    advises signed int8 weights with ``reduce_range=True`` (7-bit weights, −64…64) on x86 CPUs without VNNI — their
    u8 × s8 kernels add pairs of products in 16 bits (``vpmaddubsw``), which saturates — and ``reduce_range=False``
    (full 8 bits) on x86 with VNNI (products summed in 32 bits) and on ARM. An x86 CPU whose VNNI is unknown gets the
    safe 7 bits."""
    if features is None:
        features = hardware.cpu_features()
    elif not isinstance(features, hardware.CpuFeatures):
        raise validate.BadType(f"features must be a CpuFeatures (lu.hardware.cpu_features()), got "
                               f"{validate.show(features)}")
    arm = features.arm_dot is not None or features.machine.lower() in ("aarch64", "arm64")
    if arm:
        return {"reduce_range": False, "why": "ARM: ONNX Runtime's int8 kernels do not saturate here, so the weights "
                                              "keep all 8 bits (reduce_range=False)"}
    if features.vnni or features.amx:
        return {"reduce_range": False, "why": "VNNI: u8 × s8 products are summed in 32 bits without saturating, so "
                                              "the weights keep all 8 bits (reduce_range=False)"}
    known = "no VNNI" if features.vnni is False else "VNNI unknown"
    return {"reduce_range": True, "why": f"{known}: ONNX Runtime's u8 × s8 kernels add pairs of products in 16 bits "
                                         "(vpmaddubsw), which can saturate, so the weights get 7 bits "
                                         "(reduce_range=True), as ONNX Runtime advises for such CPUs"}


def quantize_onnx_dynamic(src: str | Path, dst: str | Path, embeddings: bool = True, per_channel: bool = False,
                          overwrite: bool = False, reduce_range: bool | None = None) -> Path:
    """ONNX Runtime's post-training dynamic int8 quantization of the model at ``src``, written to ``dst``.

    The weights of every MatMul and Gemm (the Linear layers) are stored as signed int8 (``per_channel``: one scale
    per output column, else one per tensor) and run through ``MatMulInteger`` with activations quantized on the fly
    (uint8, one scale per tensor and call). With ``embeddings=True`` the embedding tables (``Gather``) are int8 too.
    Attention's activation × activation products stay in float. ``reduce_range`` True stores 7-bit weights
    (−64…64), False all 8 bits (−127…127); None (the default) chooses for this CPU with :func:`ort_int8_settings`
    (7 bits on x86 without VNNI, whose u8 × s8 kernels saturate). Returns ``dst``; the result is one file.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    embeddings = validate.flag(embeddings, "embeddings")
    per_channel = validate.flag(per_channel, "per_channel")
    if reduce_range is None:
        reduce_range = ort_int8_settings()["reduce_range"]
    reduce_range = validate.flag(reduce_range, "reduce_range")
    src, dst = _src_and_dst(src, dst, overwrite, "the float model is kept.")
    ops = ["MatMul", "Gemm"] + (["Gather"] if embeddings else [])
    logger = logging.getLogger()  # ORT advises pre-processing through the root logger on every call
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with _atomic_onnx(dst) as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=ops)
    finally:
        logger.setLevel(level)
    return dst


# ----------------------------------------------------------------------------------------------------------------
# Running: an ONNX Runtime session behind a course-model interface
# ----------------------------------------------------------------------------------------------------------------

def _check_threads(threads: int | None) -> int:
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int (or None for torch.get_num_threads()), got {threads!r}")
    return threads


def ort_session(path: str | Path, threads: int | None = None, spinning: bool = False):
    """An ``onnxruntime.InferenceSession`` on the CPU for the ONNX file ``path``, with the course's thread policy:
    ``threads`` intra-op threads (default ``torch.get_num_threads()``), one inter-op thread, sequential execution,
    all graph optimisations, and spin-waiting off unless ``spinning`` (spinning threads would take CPU from the
    next model in a round-robin timing)."""
    import onnxruntime as ort

    path = _existing_onnx(path)
    external_data_files(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _check_threads(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types; say which file and why
        raise ValueError(f"ONNX Runtime could not load {str(path)!r}: {exc}") from exc


@dataclass
class OrtOutput:
    """What :class:`OrtModel` returns: the logits as a torch tensor, like a Hugging Face model's output."""

    logits: torch.Tensor


class OrtModel(nn.Module):
    """An ONNX file run by ONNX Runtime, usable wherever the course takes a model.

    ``model(**batch)`` (or ``model(tensor)`` for a single-input graph) feeds the tensors the graph declares (others,
    such as ``labels``, are ignored) and returns :class:`OrtOutput` with ``.logits``. It has no torch parameters and
    runs on the CPU; ``lu.measure.size_mb`` reports its files on disk (:meth:`size_on_disk_bytes`) and
    ``lu.measure.count_parameters`` the numbers stored in its weights (:meth:`count_parameters`).
    """

    def __init__(self, path: str | Path, threads: int | None = None, spinning: bool = False):
        super().__init__()
        self.path = _existing_onnx(path)
        self.threads = _check_threads(threads)
        self.spinning = validate.flag(spinning, "spinning")
        self._open()

    def _open(self) -> None:
        self.session = ort_session(self.path, self.threads, self.spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._types = {i.name: _NUMPY_TYPES.get(i.type) for i in self.session.get_inputs()}
        self._shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}

    def __deepcopy__(self, memo: dict) -> OrtModel:
        """A copy with its own ONNX Runtime session on the same file (a session cannot be copied; the file is only
        read). ``copy.deepcopy(model)`` works as it does for any course model."""
        return type(self)(self.path, self.threads, self.spinning)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("session", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def _check_input(self, name: str, array: np.ndarray) -> None:
        shape = self._shapes.get(name)
        if shape is None:
            return
        want = "(" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in shape) + ")"
        if array.ndim != len(shape):
            raise ValueError(f"input {name!r} must have {len(shape)} dimensions {want}, the first one the batch, got "
                             f"shape {tuple(array.shape)}" + (" (add the batch dimension: x[None])"
                                                              if array.ndim == len(shape) - 1 else ""))
        for i, (d, got) in enumerate(zip(shape, array.shape, strict=True)):
            if isinstance(d, int) and d != got:
                raise ValueError(f"input {name!r} must have shape {want}, got {tuple(array.shape)} (dimension {i} "
                                 f"is {got}, the exported model takes {d})")

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor) -> OrtOutput:
        if args:
            if inputs or len(args) != len(self.input_names):
                raise TypeError(f"pass the inputs by name {self.input_names} (or one tensor for a one-input graph)")
            inputs = dict(zip(self.input_names, args, strict=True))
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"the ONNX model needs inputs {self.input_names}; missing {missing}")
        feed = {}
        for n in self.input_names:
            value = inputs[n]
            array = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            self._check_input(n, array)
            want = self._types[n]
            if want is not None and np.issubdtype(want, np.integer) and not (
                    np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
                raise validate.BadType(f"input {n!r} must hold integers (token ids, {np.dtype(want).name}), got dtype "
                                       f"{array.dtype}: casting would cut off the fractions (use .long() only if they "
                                       "really are ids)")
            not_real = array.dtype == np.bool_ or np.issubdtype(array.dtype, np.complexfloating)
            if want is not None and np.issubdtype(want, np.floating) and not_real:
                raise validate.BadType(f"input {n!r} must hold real numbers ({np.dtype(want).name}), got dtype "
                                       f"{array.dtype}")
            feed[n] = array.astype(self._types[n], copy=False) if self._types[n] is not None else array
        return OrtOutput(logits=torch.from_numpy(self.session.run(None, feed)[0]))

    def size_on_disk_bytes(self) -> int:
        """Bytes of the ONNX graph file plus its external weight files."""
        return round(onnx_size_mb(self.path) * BYTES_PER_MB)

    def count_parameters(self) -> int:
        """Numbers stored in the graph's initializers: weights, biases, for int8 their scales and zero points, and
        the exporter's constants. Identical tensors that the exporter merged (e.g. all-zero biases) count once."""
        import onnx

        proto = onnx.load(str(self.path), load_external_data=False)
        return sum(int(np.prod(t.dims)) for t in proto.graph.initializer)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, threads={self.threads}"


@dataclass(frozen=True)
class Agreement:
    """How closely one model's logits reproduce another's: ``max_abs_diff`` (the largest |difference| of any logit,
    in logits), ``mean_abs_diff``, ``same_prediction`` (fraction of examples with the same argmax) and
    ``examples``."""

    max_abs_diff: float
    mean_abs_diff: float
    same_prediction: float
    examples: int


def logits_agreement(reference: torch.Tensor, other: torch.Tensor) -> Agreement:
    """The :class:`Agreement` of the logits ``other`` (N, C) with ``reference`` (N, C)."""
    if not (torch.is_tensor(reference) and torch.is_tensor(other)) or reference.shape != other.shape:
        raise ValueError("reference and other must be logits tensors of the same shape, got "
                         f"{getattr(reference, 'shape', type(reference).__name__)} and "
                         f"{getattr(other, 'shape', type(other).__name__)}")
    for name, t in (("reference", reference), ("other", other)):
        validate.tensor(t, f"{name} (logits)", floating=True, non_empty=True)
    diff = (reference.float() - other.float()).abs()
    return Agreement(max_abs_diff=diff.max().item(), mean_abs_diff=diff.mean().item(),
                     same_prediction=(reference.argmax(-1) == other.argmax(-1)).float().mean().item(),
                     examples=len(reference))


def agreement(reference: nn.Module, other: nn.Module, loader: Iterable) -> Agreement:
    """:func:`logits_agreement` of two models' logits on the batches of ``loader``."""
    loader = list(loader)
    return logits_agreement(predict(reference, loader)[0], predict(other, loader)[0])
