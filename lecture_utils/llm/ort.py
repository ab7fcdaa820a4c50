"""The language model in ONNX Runtime: graphs built once by ``onnxruntime-genai``'s model builder and cached, 4-bit
weights packed into ``MatMulNBits`` by hand, and the runtime's logits behind a torch-model interface.

Two formats come out of the builder (``python -m onnxruntime_genai.models.builder``, run offline on the cached
safetensors folder): ``fp32`` (every weight in float32) and ``int4`` (every linear layer, the tied output layer
included, as ``MatMulNBits``: 4-bit integers in blocks of ``block_size`` weights along a row, one float32 scale per
block, symmetric, and ``accuracy_level=4``, which lets the CPU kernels quantize the activations to int8 per block and
use integer dot products). :func:`ship_weights` then replaces those integers and scales with the course's own
(lesson 09's RTN or GPTQ), so the runtime executes exactly the grid the torch simulation used.

Layout of a ``MatMulNBits`` weight (ONNX Runtime's contrib operator): ``B`` is uint8 ``(N, K / block, block / 2)``
— for each output row and block, two 4-bit integers per byte, the even-indexed weight in the low nibble;
``scales`` is float32 ``(N, K / block)``; the optional ``zero_points`` is uint8 ``(N, ceil((K / block) / 2))`` with
two 4-bit zero points per byte in the same order. Without zero points the zero point is 8: an integer q in
[0, 15] stands for (q − 8) × scale.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import validate
from ..config import Scale, atomic_folder, cache_dir, cache_lock
from .model import decoder_layers, llm_dir
from .rtn import _check_group, group_qparams, quantize_groupwise

__all__ = ["GENAI_REQUIREMENT", "ORT_PRECISIONS", "ort_llm_settings", "ort_llm_dir", "ort_llm_meta", "build_ort_llm",
           "pack_int4", "unpack_int4", "block_integers", "matmulnbits_arrays", "dequantize_matmulnbits",
           "rtn_head_", "graph_weights", "load_shipped_weights_", "ship_weights", "SHIPPED_METHODS", "shipped_options",
           "shipped_settings",
           "shipped_ort_llm", "OrtCausalLM", "onnx_folder_mb"]

GENAI_REQUIREMENT = "onnxruntime-genai==0.18.0"
ORT_PRECISIONS = ("fp32", "int4")


def _source_sha256(src: Path) -> str:
    """sha256 of a Hugging Face folder's weights (from its meta.json when the course wrote one)."""
    meta = src / "meta.json"
    if meta.exists():
        sha = json.loads(meta.read_text()).get("sha256")
        if sha:
            return sha
    from ..fetch import sha256_of

    weights = src / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{src} has no model.safetensors: pass a folder written by save_pretrained")
    return sha256_of(weights)


def _source(src: str | Path | None, layers: int | None) -> Path:
    """The Hugging Face folder a build reads: ``src``, or the course's cached model (its first ``layers``)."""
    if src is not None and layers is not None:
        raise ValueError(f"give src or layers, not both (got src={src!r}, layers={layers!r})")
    if src is not None:
        return Path(src)
    from .model import prepare_llm

    return prepare_llm(layers=layers) if layers is not None else llm_dir()


def ort_llm_settings(precision: str, block_size: int = 32, accuracy_level: int = 4, src: str | Path | None = None
                     ) -> dict:
    """Everything that determines a built ONNX model: the source weights' sha256, the precision, the block size and
    accuracy level of 4-bit weights, and the versions of the builder and the runtime. Its hash names the cache."""
    import onnxruntime
    import onnxruntime_genai

    validate.choice(precision, "precision", ORT_PRECISIONS)
    validate.choice(block_size, "block_size", (16, 32, 64, 128, 256))
    validate.choice(accuracy_level, "accuracy_level", (0, 1, 2, 3, 4))
    src = Path(src) if src is not None else llm_dir()
    settings = {"source_sha256": _source_sha256(src), "precision": precision,
                "genai": onnxruntime_genai.__version__, "onnxruntime": onnxruntime.__version__}
    if precision == "int4":
        settings.update(block_size=block_size, symmetric=True, accuracy_level=accuracy_level)
    return settings


def ort_llm_dir(settings: dict) -> Path:
    """The cache folder of a built model with these :func:`ort_llm_settings` (it may not exist yet)."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "llm-ort" / f"{settings.get('method', settings['precision'])}-{key}"


def ort_llm_meta(settings: dict) -> dict | None:
    """The cached model's metadata if its folder is complete (graph, weights, genai config), was built with
    ``settings``, its graph file's sha256 and its weight file's size match the recorded ones; otherwise None, so
    the caller rebuilds it instead of loading a stale or half-written cache."""
    folder = ort_llm_dir(settings)
    meta_path, data = folder / "meta.json", folder / "model.onnx.data"
    if not all(p.exists() for p in (meta_path, data, folder / "genai_config.json", folder / "model.onnx")):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return None
    if meta.get("settings") != settings or meta.get("sha256") != _hash_graph(folder) \
            or meta.get("data_bytes") != data.stat().st_size:
        return None
    return meta


def _hash_graph(folder: Path) -> str:
    from ..fetch import sha256_of

    return sha256_of(folder / "model.onnx")


def _write_meta(folder: Path, meta: dict) -> None:
    meta = {**meta, "sha256": _hash_graph(folder), "data_bytes": (folder / "model.onnx.data").stat().st_size}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


BUILD_GUARD_S = 3600  # a hang guard for one builder run (about 30 s for SmolLM2 on 2 cores), not a budget


def build_ort_llm(precision: str = "int4", block_size: int = 32, accuracy_level: int = 4,
                  src: str | Path | None = None, force: bool = False, layers: int | None = None) -> Path:
    """Build (once) and cache the ONNX Runtime model of the Hugging Face folder ``src`` (default: the course's
    SmolLM2 cache, or its first ``layers`` decoder layers: :func:`lecture_utils.llm.prepare_llm`) with
    ``onnxruntime-genai``'s model builder, offline. Returns the folder, which holds
    ``model.onnx`` (+ ``model.onnx.data``), ``genai_config.json`` and the tokenizer: what ``onnxruntime_genai.Model``
    loads. Atomic: an interrupted build leaves no folder behind. Takes about 15-30 s for SmolLM2 on 2 cores."""
    import time

    src = _source(src, layers)
    settings = ort_llm_settings(precision, block_size, accuracy_level, src)
    folder = ort_llm_dir(settings)
    with cache_lock(folder):  # another process building the same model: wait, then find it ready
        if not force and ort_llm_meta(settings) is not None:
            return folder
        start = time.perf_counter()
        with atomic_folder(folder) as tmp:
            scratch = tmp / "builder-cache"
            cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(tmp),
                   "-p", precision, "-e", "cpu", "-c", str(scratch)]
            if precision == "int4":
                cmd += ["--extra_options", f"block_size={block_size}", f"accuracy_level={accuracy_level}",
                        "is_symmetric=true"]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp,
                                      timeout=BUILD_GUARD_S)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"onnxruntime-genai's model builder ran past {BUILD_GUARD_S} s on {src} "
                                   f"({precision}) and was stopped; nothing was cached") from exc
            if done.returncode != 0 or not (tmp / "model.onnx").exists():
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
                raise RuntimeError(f"onnxruntime-genai's model builder failed on {src} ({precision}):\n{tail}")
            shutil.rmtree(scratch, ignore_errors=True)
            _write_meta(tmp, {"settings": settings, "source": str(src),
                              "build_seconds": round(time.perf_counter() - start, 1)})
        return folder


def onnx_folder_mb(folder: str | Path) -> float:
    """Size on disk of a built model's graph and weights (``*.onnx`` and ``*.onnx.data``), MB = 10^6 bytes."""
    folder = Path(folder)
    files = [f for f in folder.iterdir() if f.name.endswith((".onnx", ".onnx.data"))]
    if not files:
        raise FileNotFoundError(f"{folder} holds no .onnx file")
    return sum(f.stat().st_size for f in files) / 1e6


# --------------------------------------------------------------------------------------------------------------
# 4-bit integers: recover them from a torch model, pack two per byte
# --------------------------------------------------------------------------------------------------------------

def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit integers per byte along the last dimension: element 2i in the low nibble, 2i+1 in the high one.
    ``q``: integers in [0, 15] with an even last dimension; returns uint8 with half that last dimension."""
    if not torch.is_tensor(q) or q.dim() < 1 or q.shape[-1] % 2 or q.dtype.is_floating_point:
        raise ValueError(f"q must be an integer tensor with an even last dimension, got "
                         f"{getattr(q, 'dtype', type(q).__name__)} {tuple(getattr(q, 'shape', ()))}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError(f"q must hold 4-bit integers in [0, 15], got values from {int(q.min())} to {int(q.max())}")
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: uint8 bytes to twice as many integers in [0, 15] (uint8)."""
    if not torch.is_tensor(packed) or packed.dtype != torch.uint8:
        raise ValueError(f"packed must be a uint8 tensor, got {getattr(packed, 'dtype', type(packed).__name__)}")
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def block_integers(w_hat: torch.Tensor, reference: torch.Tensor, block_size: int = 32, symmetric: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 4-bit integers, scales and zero points behind a dequantized weight ``w_hat`` ``(N, K)``.

    Each block of ``block_size`` consecutive weights of a row gets lesson 09's grid computed from ``reference``
    (the weights *before* quantization, as RTN and GPTQ with static groups compute it: :func:`group_qparams`):
    symmetric (scale = max|w| / 7, zero point 8) or affine (unsigned, integer zero point). Returns ``q`` uint8
    ``(N, K)`` in [0, 15], ``scale`` float32 ``(N, K / block)`` and ``zero`` uint8 ``(N, K / block)``, with
    (q − zero) × scale = ``w_hat``. Raises ValueError if ``w_hat`` is not on that grid (a weight quantized with
    other settings, or not quantized at all)."""
    for name, t in (("w_hat", w_hat), ("reference", reference)):
        if not torch.is_tensor(t) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D weight (N, K), got {tuple(getattr(t, 'shape', ()))}")
    if w_hat.shape != reference.shape:
        raise ValueError(f"w_hat {tuple(w_hat.shape)} and reference {tuple(reference.shape)} must have one shape")
    validate.flag(symmetric, "symmetric")
    n, k = w_hat.shape
    g = _check_group(k, block_size)
    scale, zero = group_qparams(reference.detach().float().reshape(-1, g), 4, symmetric)
    rows = w_hat.detach().float().reshape(-1, g)
    zero = torch.full_like(scale, 8.0) if symmetric else zero.float()
    q = torch.round(rows / scale) + zero
    back = (q - zero) * scale
    err = ((back - rows).abs() / scale).max().item() if rows.numel() else 0.0
    if err > 1e-3 or q.min() < 0 or q.max() > 15:
        raise ValueError(f"w_hat is not on the {'symmetric' if symmetric else 'affine'} 4-bit grid of blocks of "
                         f"{g} computed from reference (off by {err:.3g} steps): quantize it with the same bits, "
                         "blocks and symmetry first")
    return (q.reshape(n, k).to(torch.uint8), scale.reshape(n, k // g).float(),
            zero.reshape(n, k // g).to(torch.uint8))


def matmulnbits_arrays(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, block_size: int = 32
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``MatMulNBits``'s initializers for integers ``q`` (N, K) in [0, 15] with ``scale`` and ``zero`` (N, K/block):
    ``B`` uint8 (N, K/block, block/2), ``scales`` float32 (N, K/block) and packed ``zero_points`` uint8
    (N, ceil(K/block / 2)), or None for ``zero=None`` (the operator's default zero point, 8)."""
    if not torch.is_tensor(q) or q.dim() != 2:
        raise ValueError(f"q must be a 2-D integer tensor (N, K), got {tuple(getattr(q, 'shape', ()))}")
    n, k = q.shape
    g = _check_group(k, block_size)
    if g % 2:
        raise ValueError(f"block_size must be even to pack two 4-bit values per byte, got {g}")
    blocks = k // g
    if not torch.is_tensor(scale) or tuple(scale.shape) != (n, blocks):
        raise ValueError(f"scale must be ({n}, {blocks}), got {tuple(getattr(scale, 'shape', ()))}")
    b = pack_int4(q.reshape(n, blocks, g)).numpy()
    zp = None
    if zero is not None:
        if not torch.is_tensor(zero) or tuple(zero.shape) != (n, blocks):
            raise ValueError(f"zero must be ({n}, {blocks}), got {tuple(getattr(zero, 'shape', ()))}")
        z = zero.to(torch.int64)
        if blocks % 2:
            z = torch.cat([z, torch.full((n, 1), 8, dtype=torch.int64)], dim=1)
        zp = pack_int4(z).numpy()
    return np.ascontiguousarray(b), scale.detach().float().numpy().copy(), zp


def dequantize_matmulnbits(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, k: int) -> torch.Tensor:
    """The float weight (N, K) a ``MatMulNBits`` node multiplies by, from its initializers (the inverse of
    :func:`matmulnbits_arrays`)."""
    b = torch.from_numpy(np.array(b, dtype=np.uint8))
    n, blocks, half = b.shape
    q = unpack_int4(b).reshape(n, blocks, 2 * half).float()
    s = torch.from_numpy(np.array(scales, dtype=np.float32)).reshape(n, blocks, 1)
    if zero_points is None:
        z = torch.full((n, blocks, 1), 8.0)
    else:
        z = unpack_int4(torch.from_numpy(np.array(zero_points, dtype=np.uint8)).reshape(n, -1))[:, :blocks]
        z = z.float().reshape(n, blocks, 1)
    return ((q - z) * s).reshape(n, blocks * 2 * half)[:, :k]


def rtn_head_(model: nn.Module, block_size: int = 32) -> nn.Module:
    """Round the output layer (``lm_head``, tied to the embedding in SmolLM2) to symmetric 4-bit blocks of
    ``block_size`` in place, as the 4-bit ONNX graph stores it; returns ``model``. With tied weights the embedding
    lookup then reads the same 4-bit values, as the graph's ``GatherBlockQuantized`` does."""
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"expected a *ForCausalLM with an nn.Linear lm_head, got {type(model).__name__}")
    with torch.no_grad():
        head.weight.copy_(quantize_groupwise(head.weight, 4, block_size, symmetric=True))
    return model


def graph_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight (N, K) of each ``MatMulNBits`` node of the builder's graph, taken from a torch Llama model, by
    node name: per layer ``qkv_proj`` (q, k and v rows stacked, as the builder fuses them), ``o_proj``,
    ``gate_proj``, ``up_proj``, ``down_proj``, and ``/lm_head/MatMul_Q4``."""
    out: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(decoder_layers(model)):
        att, mlp = layer.self_attn, layer.mlp
        out[f"/model/layers.{i}/attn/qkv_proj/MatMul_Q4"] = torch.cat(
            [att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])
        out[f"/model/layers.{i}/attn/o_proj/MatMul_Q4"] = att.o_proj.weight
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[f"/model/layers.{i}/mlp/{name}/MatMul_Q4"] = getattr(mlp, name).weight
    out["/lm_head/MatMul_Q4"] = model.lm_head.weight
    return {k: v.detach() for k, v in out.items()}


def _nbits_graph(folder: Path, names, why: str):
    """The ONNX graph in ``folder``, its initializers and its ``MatMulNBits`` nodes by name; refuses a graph that
    lacks a node of ``names`` (``why`` finishes the message)."""
    import onnx

    proto = onnx.load(str(folder / "model.onnx"), load_external_data=True)
    inits = {t.name: t for t in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node if n.op_type == "MatMulNBits"}
    missing = sorted(set(names) - set(nodes))
    if missing:
        raise ValueError(f"{folder}'s graph has no MatMulNBits nodes {missing[:3]}: {why}")
    return proto, inits, nodes


def ship_weights(model: nn.Module, reference: nn.Module, base: str | Path, dst: str | Path, symmetric: bool = True,
                 head_symmetric: bool = True, overwrite: bool = False) -> Path:
    """Write the 4-bit weights of a torch model into a copy of the builder's 4-bit graph ``base`` at folder ``dst``.

    ``model``'s decoder linears (and ``lm_head``) must hold dequantized 4-bit weights on lesson 09's grid with the
    graph's block size (RTN or GPTQ with static groups); ``reference`` is the same model before quantization, from
    which the grid (scales, zero points) is recomputed (:func:`block_integers`). ``symmetric`` says which grid the
    decoder linears use (affine adds a ``zero_points`` input to their nodes), ``head_symmetric`` the output
    layer's. Everything else of ``base`` (norms, rotary tables, the genai config, the tokenizer) is copied.
    Written atomically; an existing ``dst`` is replaced only with ``overwrite=True``. Returns ``dst``."""
    import onnx
    from onnx import numpy_helper

    base, dst = Path(base), Path(dst)
    if not (base / "model.onnx").exists():
        raise FileNotFoundError(f"{base} has no model.onnx: build one with build_ort_llm('int4')")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    weights, originals = graph_weights(model), graph_weights(reference)
    proto, inits, nodes = _nbits_graph(base, weights, "is it the builder's int4 model of this architecture?")
    for name, w_hat in weights.items():
        node = nodes[name]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        block = int(attrs["block_size"])
        if (int(attrs["N"]), int(attrs["K"])) != tuple(w_hat.shape):
            raise ValueError(f"{name}: the graph multiplies by ({attrs['N']}, {attrs['K']}), the model has "
                             f"{tuple(w_hat.shape)}")
        sym = head_symmetric if name == "/lm_head/MatMul_Q4" else symmetric
        q, scale, zero = block_integers(w_hat, originals[name], block, sym)
        b, s, zp = matmulnbits_arrays(q, scale, None if sym else zero, block)
        old_b, old_s = inits[node.input[1]], inits[node.input[2]]
        s = s.reshape(tuple(old_s.dims))
        for old, new in ((old_b, b), (old_s, s)):
            if tuple(old.dims) != new.shape:
                raise ValueError(f"{name}: initializer {old.name} is {tuple(old.dims)}, the new one {new.shape}")
            old.CopyFrom(numpy_helper.from_array(new, old.name))
        if zp is not None:
            zp_name = f"{node.input[1]}_zero_points"
            proto.graph.initializer.append(numpy_helper.from_array(zp, zp_name))
            while len(node.input) < 4:
                node.input.append("")
            node.input[3] = zp_name
    with atomic_folder(dst) as tmp:
        for f in base.iterdir():
            if f.is_file() and not f.name.startswith("model.onnx") and f.name != "meta.json":
                shutil.copy2(f, tmp / f.name)
        onnx.save(proto, str(tmp / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=1024)
        _write_meta(tmp, {"base": str(base), "symmetric": symmetric, "head_symmetric": head_symmetric})
    return dst



def load_shipped_weights_(model: nn.Module, folder: str | Path) -> nn.Module:
    """Write into ``model`` (a torch Llama of the graph's architecture, changed in place and returned) the float
    weights that the 4-bit graph in ``folder`` really multiplies by: every ``MatMulNBits`` node's integers, scales and
    zero points, dequantized (:func:`dequantize_matmulnbits`), split back into q/k/v where the builder fused them.
    The torch model then simulates exactly what was shipped (the runtime differs only in its arithmetic, e.g. the
    int8 activations of accuracy level 4).

    Examples:
        >>> sim = load_shipped_weights_(copy.deepcopy(model), shipped_ort_llm("gptq"))  # doctest: +SKIP
        >>> perplexity(sim, windows)  # GPTQ's weights as shipped, evaluated in torch  # doctest: +SKIP
    """
    import onnx
    from onnx import numpy_helper

    validate.module(model)
    folder = Path(folder)
    if not (folder / "model.onnx").exists():
        raise FileNotFoundError(f"{folder} has no model.onnx: build one with build_ort_llm() or shipped_ort_llm()")
    targets = graph_weights(model)
    _, inits, nodes = _nbits_graph(folder, targets, f"not a 4-bit graph of {type(model).__name__}'s architecture "
                                   "(a float32 build has none)")
    weights = {}
    for name, want in targets.items():
        node = nodes[name]
        k = int(next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "K"))
        zp = (numpy_helper.to_array(inits[node.input[3]]) if len(node.input) > 3 and node.input[3] else None)
        w = dequantize_matmulnbits(numpy_helper.to_array(inits[node.input[1]]),
                                   numpy_helper.to_array(inits[node.input[2]]), zp, k)
        if tuple(w.shape) != tuple(want.shape):
            raise ValueError(f"{name}: the graph multiplies by {tuple(w.shape)}, the model has {tuple(want.shape)}")
        weights[name] = w
    with torch.no_grad():
        for i, layer in enumerate(decoder_layers(model)):
            att, mlp = layer.self_attn, layer.mlp
            qkv = weights[f"/model/layers.{i}/attn/qkv_proj/MatMul_Q4"]
            sizes = [att.q_proj.weight.shape[0], att.k_proj.weight.shape[0], att.v_proj.weight.shape[0]]
            for lin, part in zip((att.q_proj, att.k_proj, att.v_proj), qkv.split(sizes), strict=True):
                lin.weight.copy_(part)
            att.o_proj.weight.copy_(weights[f"/model/layers.{i}/attn/o_proj/MatMul_Q4"])
            for name in ("gate_proj", "up_proj", "down_proj"):
                getattr(mlp, name).weight.copy_(weights[f"/model/layers.{i}/mlp/{name}/MatMul_Q4"])
        model.lm_head.weight.copy_(weights["/lm_head/MatMul_Q4"])  # tied: the embedding lookup reads it too
    return model

SHIPPED_METHODS = ("rtn_sym", "rtn", "gptq")


def shipped_options(scale: Scale) -> dict:
    """The arguments of :func:`shipped_ort_llm` (and :func:`shipped_settings`) at one course scale, so that the
    preparation and lesson 10 build and find the same models: GPTQ on ``scale.serve_gptq_calib_tokens`` tokens in
    lesson 09's windows, the scale's layers.

    Example: ``shipped_ort_llm("gptq", **shipped_options(get_scale("laptop")))``"""
    if not isinstance(scale, Scale):
        raise TypeError(f"scale must be a lecture_utils.config.Scale (get_scale('laptop')), got {validate.show(scale)}")
    return {"calib_tokens": scale.serve_gptq_calib_tokens, "seq_len": scale.llm_seq_len,
            "gptq_layers": scale.llm_gptq_layers, "layers": scale.llm_layers}


def shipped_settings(method: str, calib_tokens: int = 4096, seq_len: int = 128, gptq_layers: int | None = None,
                     block_size: int = 32, layers: int | None = None) -> dict:
    """Everything that determines a shipped 4-bit model (see :func:`shipped_ort_llm`); its hash names the cache."""
    validate.choice(method, "method", SHIPPED_METHODS)
    settings = {**ort_llm_settings("int4", block_size, 4, _source(None, layers)), "method": method}
    if method == "gptq":
        settings.update(calib_tokens=validate.integer(calib_tokens, "calib_tokens", 1),
                        seq_len=validate.integer(seq_len, "seq_len", 2),
                        gptq_layers=validate.optional_integer(gptq_layers, "gptq_layers", 1),
                        damp=0.01, act_order=True, sequential=True, calib_split="train", calib_seed=0)
    return settings


def shipped_ort_llm(method: str, calib_tokens: int = 4096, seq_len: int = 128, gptq_layers: int | None = None,
                    block_size: int = 32, force: bool = False, layers: int | None = None) -> Path:
    """Build (once) and cache the course's SmolLM2 with lesson 09's 4-bit weights shipped into the runtime's graph
    (:func:`ship_weights`), blocks of ``block_size``; the output layer (tied embedding) always symmetric RTN.

    ``method``: ``"rtn_sym"`` symmetric round-to-nearest (the format of the builder's graph); ``"rtn"`` affine
    round-to-nearest; ``"gptq"`` affine GPTQ (:func:`lecture_utils.llm.gptq_model_`, act order, sequential) on
    ``calib_tokens`` training-review tokens in windows of ``seq_len`` (``gptq_layers``: only the first layers,
    for quick tests). ``layers``: the course's model cut to its first decoder layers (the smoke scale). Returns the
    folder (genai config and tokenizer included)."""
    import copy
    import time

    from .gptq import gptq_model_
    from .model import load_llm, review_windows
    from .rtn import rtn_model_

    settings = shipped_settings(method, calib_tokens, seq_len, gptq_layers, block_size, layers)
    folder = ort_llm_dir(settings)
    with cache_lock(folder):  # another process building the same model: wait, then find it ready
        if not force and ort_llm_meta(settings) is not None:
            return folder
        start = time.perf_counter()
        base = build_ort_llm("int4", block_size, layers=layers)
        model, tokenizer = load_llm(layers=layers)
        quantized = copy.deepcopy(model)
        if method == "gptq":
            calib = review_windows(tokenizer, "train", calib_tokens, seq_len, seed=0)
            gptq_model_(quantized, calib, 4, block_size, act_order=True, sequential=True, max_layers=gptq_layers)
            if gptq_layers is not None:  # the layers GPTQ left alone still need the runtime's grid
                for layer in decoder_layers(quantized)[gptq_layers:]:
                    for m in layer.modules():
                        if isinstance(m, nn.Linear):
                            with torch.no_grad():
                                m.weight.copy_(quantize_groupwise(m.weight, 4, block_size))
        else:
            rtn_model_(quantized, 4, block_size, symmetric=method == "rtn_sym")
        rtn_head_(quantized, block_size)
        with atomic_folder(folder) as tmp:
            out = ship_weights(quantized, model, base, tmp / "model", symmetric=method == "rtn_sym")
            for f in out.iterdir():
                if f.name != "meta.json":
                    os.replace(f, tmp / f.name)
            shutil.rmtree(out)
            _write_meta(tmp, {"settings": settings, "base": str(base),
                              "build_seconds": round(time.perf_counter() - start, 1)})
        return folder


# --------------------------------------------------------------------------------------------------------------
# The runtime's logits behind a torch-model interface (for perplexity)
# --------------------------------------------------------------------------------------------------------------

class _Output:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class OrtCausalLM(nn.Module):
    """The builder's ``model.onnx`` run by an ONNX Runtime session, callable like a transformers causal LM without
    a cache: ``model(input_ids=ids, use_cache=False).logits`` (float32, (batch, tokens, vocabulary)). So
    :func:`lecture_utils.llm.perplexity` measures the runtime with the same code as the torch model. ``threads``:
    intra-op threads (default torch's). Feeds an empty KV cache: every call is a fresh prefill."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        super().__init__()
        from ..runtime import ort_session

        self.folder = Path(folder)
        self.session = ort_session(self.folder / "model.onnx", threads)
        self.past = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values")]
        decoder = json.loads((self.folder / "genai_config.json").read_text())["model"]["decoder"]
        self.kv_shape = (int(decoder["num_key_value_heads"]), int(decoder["head_size"]))
        names = {i.name for i in self.session.get_inputs()}
        if "input_ids" not in names or "attention_mask" not in names:
            raise ValueError(f"{self.folder}/model.onnx is not a genai builder's decoder (inputs {sorted(names)})")

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False, **_ignored) -> _Output:
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got {tuple(getattr(input_ids, 'shape', ()))}")
        ids = input_ids.cpu().numpy().astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        empty = np.zeros((ids.shape[0], self.kv_shape[0], 0, self.kv_shape[1]), dtype=np.float32)
        for name in self.past:
            feed[name] = empty
        return _Output(torch.from_numpy(self.session.run(["logits"], feed)[0]))

    def size_on_disk_bytes(self) -> int:
        """Bytes of the graph and its weights on disk."""
        return round(onnx_folder_mb(self.folder) * 1e6)

    def extra_repr(self) -> str:
        return f"folder={str(self.folder)!r}"
