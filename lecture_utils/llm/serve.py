"""Serving a language model on a CPU: prefill and decode timed the same way for every runtime, the machine's memory
bandwidth, and the bound it sets on decoding.

Decoding one token at batch 1 reads every weight once (and the KV cache), so tokens/s ≤ bandwidth ÷ bytes read per
token. Units: bandwidth in GB/s (10^9 bytes per second), bytes are bytes, times in milliseconds, rates in tokens/s.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import validate
from .footprint import bytes_per_weight
from .model import decoder_linears
from .ort import matmulnbits_arrays

__all__ = ["read_bytes_per_token", "decode_bound_tok_s", "decode_bound", "TorchDecoder",
           "GenaiDecoder", "DecodeRun", "time_decode", "DecodeTiming", "round_robin_decode", "chat_prompt_ids",
           "resident_mb", "PEAK_RUNTIMES", "peak_resident_mb", "PeakMemory", "peak_memory_mb", "DecodeProfile",
           "profile_decode_step", "gain_relation", "ProductRate", "products_graph", "product_rate"]


def read_bytes_per_token(model: nn.Module, bits: int | None = None, block_size: int | None = None,
                         scale_bytes: float = 4, zero_bytes: float = 0, float_bytes: float = 4,
                         kv_bytes: float = 0, head_bytes: float | None = None) -> float:
    """Bytes one decoding step at batch 1 must read from memory: every weight of the decoder linears and of the
    output layer (``lm_head``, counted even when tied to the embedding, since it is a full matrix product), stored
    at ``bits`` in blocks of ``block_size`` with ``scale_bytes`` + ``zero_bytes`` per block (ONNX Runtime's 4-bit
    format: float32 scales, no zero point), or at ``float_bytes`` per weight for ``bits=None``; plus ``kv_bytes``
    of KV cache. ``head_bytes``: bytes per output-layer weight when it is stored unlike the decoder linears (lesson
    09 quantizes the decoder linears only and keeps it in float32: 4); None stores it like them. The embedding
    lookup reads one row and the norms are tiny: both left out.

    Example: ``read_bytes_per_token(model, 4, 32)`` is ONNX Runtime's symmetric 4-bit graph, and
    ``read_bytes_per_token(model, 3, 64, scale_bytes=2, zero_bytes=2, head_bytes=4)`` lesson 09's 3-bit RTN."""
    head = getattr(model, "lm_head", None)
    linear = sum(m.weight.numel() for m in decoder_linears(model).values())
    n_head = head.weight.numel() if isinstance(head, nn.Linear) else 0
    if kv_bytes < 0:
        raise ValueError(f"kv_bytes must be >= 0, got {kv_bytes!r}")
    if bits is None:
        per = validate.positive(float_bytes, "float_bytes")
    else:
        validate.integer(block_size, "block_size", 1)
        per = bytes_per_weight(bits, block_size, scale_bytes, zero_bytes)
    head_per = per if head_bytes is None else validate.positive(head_bytes, "head_bytes", hint="e.g. 4 for float32")
    return linear * per + n_head * head_per + kv_bytes


def decode_bound_tok_s(bandwidth_gbs: float, bytes_per_token: float) -> float:
    """The memory-bandwidth bound on decoding: tokens/s ≤ bandwidth (GB/s) × 10^9 ÷ bytes read per token."""
    validate.positive(bandwidth_gbs, "bandwidth_gbs", hint="GB/s")
    validate.positive(bytes_per_token, "bytes_per_token", hint="bytes")
    return bandwidth_gbs * 1e9 / bytes_per_token


def decode_bound(bandwidth_gbs: float, n_weights: int, bits: int, block_size: int | None, scale_bytes: float,
                 kv_bytes: float) -> float:
    """Lesson 10's exercise 2, the course's reference: tokens/s ≤ bandwidth ÷ bytes read per token, where a token
    reads ``n_weights`` weights at ``bits``/8 bytes each, one ``scale_bytes``-byte scale per block of
    ``block_size`` weights (``None``: a float format, no scales) and ``kv_bytes`` of KV cache. Bandwidth in GB/s
    (10^9 bytes per second).

    Examples:
        >>> round(decode_bound(13.8, 134_000_000, 4, 32, 4, 2e6), 1)
        160.9
    """
    validate.integer(n_weights, "n_weights", 1)
    validate.integer(bits, "bits", 1)
    if block_size is not None:
        validate.integer(block_size, "block_size", 1)
    scale_bytes = validate.real(scale_bytes, "scale_bytes", 0, hint="bytes per block scale")
    kv_bytes = validate.real(kv_bytes, "kv_bytes", 0, hint="bytes")
    per_weight = bits / 8 + (scale_bytes / block_size if block_size else 0)
    return decode_bound_tok_s(bandwidth_gbs, n_weights * per_weight + kv_bytes)


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of one user message in the model's chat template, ready for generation."""
    validate.text(prompt, "prompt")
    enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_dict=True)
    return list(enc["input_ids"])


def _check_prompt(prompt_ids, batch: int) -> list[int]:
    ids = list(prompt_ids)
    if not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ValueError(f"prompt_ids must be a non-empty list of token ids, got {validate.show(prompt_ids)}")
    validate.integer(batch, "batch", 1)
    return ids


class TorchDecoder:
    """Greedy decoding with a transformers model and its KV cache (``DynamicCache``), one step per call, so that
    prefill and each decoding step can be timed separately. ``prefill(ids, batch)`` runs the prompt (repeated
    ``batch`` times) and returns the first new token of each sequence; ``step()`` feeds the last tokens and returns
    the next ones."""

    def __init__(self, model: nn.Module):
        self.model = validate.module(model).eval()
        self.cache = None
        self.last: torch.Tensor | None = None

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int], batch: int = 1) -> list[int]:
        from transformers import DynamicCache

        ids = torch.tensor([_check_prompt(prompt_ids, batch)] * batch, dtype=torch.int64)
        self.cache = DynamicCache()
        out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
        self.last = out.logits[:, -1].argmax(-1, keepdim=True)
        return self.last[:, 0].tolist()

    @torch.inference_mode()
    def step(self) -> list[int]:
        if self.last is None:
            raise RuntimeError("call prefill() before step()")
        out = self.model(input_ids=self.last, past_key_values=self.cache, use_cache=True)
        self.last = out.logits[:, -1].argmax(-1, keepdim=True)
        return self.last[:, 0].tolist()


class GenaiDecoder:
    """Greedy decoding with ``onnxruntime_genai`` (its own KV cache and sampling loop) from a built model folder,
    with the same ``prefill`` / ``step`` interface as :class:`TorchDecoder`. ``threads``: ONNX Runtime intra-op
    threads (default torch's), written into the model's session options; ``max_length``: prompt + new tokens the
    generator makes room for."""

    def __init__(self, folder: str | Path, threads: int | None = None, max_length: int = 512):
        import onnxruntime_genai as og

        self.folder = Path(folder)
        if not (self.folder / "genai_config.json").exists():
            raise FileNotFoundError(f"{self.folder} has no genai_config.json: build it with build_ort_llm()")
        self.threads = validate.integer(threads if threads is not None else torch.get_num_threads(), "threads", 1)
        self.max_length = validate.integer(max_length, "max_length", 2)
        config = og.Config(str(self.folder))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": self.threads, "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)
        self.generator = None

    def prefill(self, prompt_ids: list[int], batch: int = 1) -> list[int]:
        import numpy as np
        import onnxruntime_genai as og

        ids = _check_prompt(prompt_ids, batch)
        if len(ids) >= self.max_length:
            raise ValueError(f"the prompt has {len(ids)} tokens, max_length is {self.max_length}")
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.max_length, do_sample=False, batch_size=batch)
        self.generator = og.Generator(self.model, params)
        self.generator.append_tokens(np.array([ids] * batch, dtype=np.int32))
        return [int(t) for t in self.generator.get_next_tokens()]

    def step(self) -> list[int]:
        if self.generator is None:
            raise RuntimeError("call prefill() before step()")
        self.generator.generate_next_token()
        return [int(t) for t in self.generator.get_next_tokens()]


@dataclass(frozen=True)
class DecodeRun:
    """One timed greedy generation (:func:`time_decode`): ``ttft_ms`` (prefill of the prompt up to the first new
    token), ``decode_tok_s`` (the other new tokens: tokens per second summed over the ``batch`` sequences),
    ``step_ms`` (median milliseconds of one decoding step) and ``tokens`` (the first sequence's new token ids)."""

    ttft_ms: float
    decode_tok_s: float
    step_ms: float
    tokens: list[int]
    batch: int


def time_decode(decoder, prompt_ids: list[int], new_tokens: int, batch: int = 1) -> DecodeRun:
    """Time greedy generation of ``new_tokens`` tokens per sequence, ``batch`` copies of the prompt at once: a
    :class:`DecodeRun` (time to first token in ms, decode tokens/s, the new tokens)."""
    validate.integer(new_tokens, "new_tokens", 2)
    start = time.perf_counter()
    first = decoder.prefill(prompt_ids, batch)
    ttft = time.perf_counter() - start
    tokens, steps = [first[0]], []
    for _ in range(new_tokens - 1):
        t = time.perf_counter()
        tokens.append(decoder.step()[0])
        steps.append(time.perf_counter() - t)
    return DecodeRun(ttft_ms=ttft * 1000, decode_tok_s=batch * len(steps) / sum(steps),
                     step_ms=statistics.median(steps) * 1000, tokens=tokens, batch=batch)


@dataclass(frozen=True)
class DecodeTiming:
    """One decoder's result in :func:`round_robin_decode`: the medians over its ``runs`` (each a
    :class:`DecodeRun`) of the time to first token (``ttft_ms``) and of decode tokens/s (``decode_tok_s``), and the
    ``tokens`` its last run generated."""

    ttft_ms: float
    decode_tok_s: float
    runs: list[DecodeRun]
    tokens: list[int]


def round_robin_decode(decoders: Mapping[str, object], prompt_ids: list[int], new_tokens: int, repeats: int = 3,
                       batch: int = 1, warmup_tokens: int = 4) -> dict[str, DecodeTiming]:
    """:func:`time_decode` of every decoder, interleaved (one run of each in turn, ``repeats`` rounds, after a short
    warm-up of each) so that a change in the machine's load affects all of them alike, as lesson 06 times its
    models. Returns a :class:`DecodeTiming` per name."""
    validate.mapping(decoders, "decoders", non_empty=True)
    validate.integer(repeats, "repeats", 1)
    validate.integer(warmup_tokens, "warmup_tokens", 2)
    for d in decoders.values():
        time_decode(d, prompt_ids, warmup_tokens, batch)
    runs: dict[str, list[DecodeRun]] = {name: [] for name in decoders}
    for _ in range(repeats):
        for name, d in decoders.items():
            runs[name].append(time_decode(d, prompt_ids, new_tokens, batch))
    return {name: DecodeTiming(ttft_ms=statistics.median(r.ttft_ms for r in rs),
                               decode_tok_s=statistics.median(r.decode_tok_s for r in rs), runs=rs,
                               tokens=rs[-1].tokens)
            for name, rs in runs.items()}


def resident_mb(statm: str | Path = "/proc/self/statm") -> float:
    """This process's resident memory now, in MB (10^6 bytes), read from Linux's ``/proc/self/statm``; NaN where
    that file does not exist (macOS, Windows)."""
    import os

    try:
        pages = int(Path(statm).read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_resident_mb(status: str | Path = "/proc/self/status") -> float:
    """The most resident memory this process has held since it started its program, in MB (10^6 bytes): Linux's
    ``VmHWM`` from ``/proc/self/status``; NaN where that file does not exist (macOS, Windows).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``exec``, so a child started by a large process
    (a notebook kernel holding a model) reports its parent's peak instead of its own. ``VmHWM`` belongs to the
    process's own address space, which ``exec`` replaces."""
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # the file says kB (KiB)
    except (OSError, IndexError, ValueError):
        return float("nan")
    return float("nan")


PEAK_RUNTIMES = ("torch_fp32", "torch_ao_int8", "ort")  # what peak_memory_mb can load


def _peak_child() -> None:
    """The child process of :func:`peak_memory_mb`: its settings as JSON in ``argv[1]``, one JSON line out."""
    import sys

    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    import onnxruntime_genai  # noqa: F401 - imported before `before`: a library's code is not the model's memory
    import transformers  # noqa: F401

    from .model import load_llm

    before = resident_mb()
    if args["runtime"] == "ort":
        max_length = len(args["prompt_ids"]) + args["new_tokens"] + 8
        decoder = GenaiDecoder(args["folder"], args["threads"], max_length=max_length)
    else:
        model, _ = load_llm(layers=args["layers"])
        if args["runtime"] == "torch_ao_int8":
            from ..quantize import dynamic_int8

            model = dynamic_int8(model)  # built from the float model, as the lesson does: both exist for a moment
        decoder = TorchDecoder(model)
    time_decode(decoder, args["prompt_ids"], args["new_tokens"])
    print(json.dumps({"before_mb": before, "peak_mb": peak_resident_mb()}))


@dataclass(frozen=True)
class PeakMemory:
    """:func:`peak_memory_mb`'s measurement, in MB (10^6 bytes): the child's resident memory after its imports
    (``before_mb``), its peak (``peak_mb``), and ``model_peak_mb`` = peak − before, what the model and its decoding
    added at their worst. NaN where the OS cannot say."""

    before_mb: float
    peak_mb: float
    model_peak_mb: float


def peak_memory_mb(runtime: str, prompt_ids: list[int], new_tokens: int = 16, folder: str | Path | None = None,
                   layers: int | None = None, threads: int = 1, timeout_s: float = 600) -> PeakMemory:
    """Peak memory of loading one runtime and decoding with it, measured in a fresh Python process (a process's
    peak only ever grows, so each runtime needs its own): ``runtime`` one of :data:`PEAK_RUNTIMES` (``"ort"``: the
    genai model in ``folder``; the torch ones load the course's model, ``layers`` as in ``load_llm``). The child
    imports torch, transformers and onnxruntime-genai, reads its resident memory (``before_mb``), loads the model,
    generates ``new_tokens`` greedy tokens after ``prompt_ids``, and reports its peak resident memory
    (``peak_mb``, :func:`peak_resident_mb`). Returns a :class:`PeakMemory`; NaN where the OS has no ``/proc``
    (macOS, Windows)."""
    import subprocess
    import sys

    if runtime not in PEAK_RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(map(repr, PEAK_RUNTIMES))}, got {runtime!r}")
    ids = _check_prompt(prompt_ids, 1)
    validate.integer(new_tokens, "new_tokens", 2)
    validate.integer(threads, "threads", 1)
    if (runtime == "ort") != (folder is not None):
        raise ValueError(f"folder is needed for runtime 'ort' and only for it, got runtime {runtime!r} and "
                         f"folder {folder!r}")
    if folder is not None and not (Path(folder) / "genai_config.json").exists():
        raise FileNotFoundError(f"{folder} has no genai_config.json: build it with build_ort_llm()")
    if not sys.platform.startswith("linux"):
        return PeakMemory(before_mb=float("nan"), peak_mb=float("nan"), model_peak_mb=float("nan"))
    args = {"runtime": runtime, "prompt_ids": ids, "new_tokens": new_tokens, "layers": layers, "threads": threads,
            "folder": None if folder is None else str(folder)}
    proc = subprocess.run([sys.executable, "-c", "from lecture_utils.llm.serve import _peak_child; _peak_child()",
                           json.dumps(args)], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring the peak memory of {runtime!r} failed in its child process: "
                           f"{proc.stderr.strip()[-1500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return PeakMemory(before_mb=out["before_mb"], peak_mb=out["peak_mb"],
                      model_peak_mb=out["peak_mb"] - out["before_mb"])


@dataclass(frozen=True)
class DecodeProfile:
    """:func:`profile_decode_step`'s split of one decoding step: ``step_ms`` (median wall clock of a step, profiler
    on), ``by_op_ms`` (milliseconds per step inside each operator type), ``lm_head_ms`` (inside the output layer's
    matrix product) and the ``context`` (tokens in the cache)."""

    step_ms: float
    by_op_ms: dict[str, float]
    lm_head_ms: float
    context: int


def profile_decode_step(folder: str | Path, prompt_ids: list[int], threads: int | None = None, repeats: int = 5
                        ) -> DecodeProfile:
    """Where one decoding step of a built model spends its time, from ONNX Runtime's profiler: a session over the
    folder's ``model.onnx`` decodes one token after a cache of ``len(prompt_ids)`` tokens (zeros: the cost does not
    depend on the values), ``repeats`` times after a warm-up. Returns a :class:`DecodeProfile` (operator times
    averaged over the repeats)."""
    import numpy as np
    import onnxruntime as ort

    folder = Path(folder)
    ctx = len(_check_prompt(prompt_ids, 1))
    validate.integer(repeats, "repeats", 1)
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = validate.integer(threads or torch.get_num_threads(), "threads", 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # threads spin between operators, as in onnxruntime-genai's sessions
    past = np.zeros((1, int(decoder["num_key_value_heads"]), ctx, int(decoder["head_size"])), dtype=np.float32)
    feed = {"input_ids": np.array([[prompt_ids[-1]]], dtype=np.int64),
            "attention_mask": np.ones((1, ctx + 1), dtype=np.int64)}
    opts.enable_profiling = True
    opts.profile_file_prefix = str(folder.parent / f".profile-{folder.name}")
    session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    feed |= {i.name: past for i in session.get_inputs() if i.name.startswith("past_key_values")}
    session.run(["logits"], feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(["logits"], feed)
        times.append((time.perf_counter() - start) * 1000)
    trace_path = Path(session.end_profiling())
    try:
        events = json.loads(trace_path.read_text())
    finally:
        trace_path.unlink(missing_ok=True)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    keep_after = sorted(e["ts"] for e in runs)[1] if len(runs) > 1 else 0  # skip the warm-up run
    by_op: dict[str, float] = {}
    lm_head = 0.0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < keep_after:
            continue
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1000 / repeats
        if "lm_head" in e["name"]:
            lm_head += e["dur"] / 1000 / repeats
    return DecodeProfile(step_ms=statistics.median(times), by_op_ms=by_op, lm_head_ms=lm_head, context=ctx)


def gain_relation(gain: float, reference: float, margin: float = 1.15) -> str:
    """How a speed-up ``gain`` compares with a ``reference`` speed-up (both ratios > 0): ``"more"`` when it exceeds
    the reference by more than ``margin`` times, ``"less"`` when it falls short by more than that, else ``"same"`` —
    how lesson 10 reads what a second thread, or weights in cache, give the 4-bit products and the whole step.

    Examples:
        >>> gain_relation(1.9, 1.4), gain_relation(1.3, 1.6), gain_relation(1.5, 1.45)
        ('more', 'less', 'same')
        >>> gain_relation(1.24, 1.0, margin=1.5)  # from cache barely faster than from memory
        'same'
    """
    gain = validate.positive(gain, "gain", hint="a ratio of two speeds")
    reference = validate.positive(reference, "reference", hint="a ratio of two speeds")
    margin = validate.real(margin, "margin", 1, hint="how many times apart counts as different")
    if gain > margin * reference:
        return "more"
    return "less" if gain * margin < reference else "same"


@dataclass(frozen=True)
class ProductRate:
    """:func:`product_rate`'s measurement of the 4-bit matrix products alone: ``gbs`` (packed weight bytes —
    integers, scales and zero points — the products consume per second, in GB/s), ``megabytes`` (packed bytes in
    the graph, 10^6), ``products`` (how many ``MatMulNBits`` it ran), ``run_ms`` (median milliseconds to run them
    all once) and ``threads``."""

    gbs: float
    megabytes: float
    products: int
    run_ms: float
    threads: int


def products_graph(folder: str | Path, megabytes: float, accuracy_level: int | None = None, seed: int = 0):
    """The graph :func:`product_rate` times: only ``MatMulNBits`` nodes with the shapes and attributes of the
    folder's ``model.onnx`` (its products in order, repeated from the first until they hold ``megabytes`` MB of
    packed weights: integers, float32 scales and any zero points), random integers, every product fed its own
    input ``x<i>`` and writing its own output ``y<i>``. ``accuracy_level``: the arithmetic the kernels use, 0 or 1
    for float and 4 for int8 dot products (default: the model's own). Returns ``(onnx.ModelProto, packed bytes)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(folder) / "model.onnx"
    if not path.exists():
        raise FileNotFoundError(f"folder={str(folder)!r} has no model.onnx: build it with build_ort_llm()")
    megabytes = validate.real(megabytes, "megabytes", 0, 4096, low_open=True,
                              hint="MB of packed weights; building them takes about three times that in memory")
    if accuracy_level is not None:
        validate.choice(accuracy_level, "accuracy_level", [0, 1, 2, 3, 4])
    found = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            level = int(attrs.get("accuracy_level", 0)) if accuracy_level is None else accuracy_level
            if int(attrs.get("bits", 4)) != 4:
                raise ValueError(f"folder={str(folder)!r}: {node.name} has {attrs['bits']}-bit weights; "
                                 "products_graph builds 4-bit products only")
            found.append((int(attrs["K"]), int(attrs["N"]), int(attrs["block_size"]), level,
                          len(node.input) > 3 and bool(node.input[3])))
    if not found:
        raise ValueError(f"folder={str(folder)!r}: its model.onnx has no MatMulNBits products (a float model?); "
                         "give a 4-bit folder (build_ort_llm('int4') or ship_weights)")
    model = helper.make_model(helper.make_graph([], "products", [], []),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    gen, total, i = torch.Generator().manual_seed(seed), 0, 0
    while total < megabytes * 1e6:  # added in place, one product at a time: the graph holds the only copy
        k, n, block, level, zp = found[i % len(found)]
        blocks = k // block
        arrays = matmulnbits_arrays(torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen),
                                    torch.full((n, blocks), 0.01), torch.full((n, blocks), 8) if zp else None, block)
        names = [f"x{i}", f"b{i}", f"s{i}"] + ([f"z{i}"] if zp else [])
        for name, array in zip(names[1:], arrays, strict=False):
            model.graph.initializer.add().CopyFrom(numpy_helper.from_array(array, name))
        model.graph.node.add().CopyFrom(helper.make_node("MatMulNBits", names, [f"y{i}"], domain="com.microsoft", K=k,
                                                         N=n, bits=4, block_size=block, accuracy_level=level))
        model.graph.input.add().CopyFrom(helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [1, 1, k]))
        model.graph.output.add().CopyFrom(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 1, n]))
        total += sum(a.nbytes for a in arrays if a is not None)
        i += 1
    return model, total


def product_rate(folder: str | Path, megabytes: float, threads: int | None = None, repeats: int = 20,
                 accuracy_level: int | None = None, seed: int = 0) -> ProductRate:
    """How fast a built model's 4-bit matrix products run by themselves at batch 1, with nothing else of a decoding
    step around them: :func:`products_graph` (the model's own ``MatMulNBits`` shapes and attributes, repeated until
    they hold ``megabytes`` MB of packed weights, random integers: the kernel's work does not depend on their
    values). Small ``megabytes`` keep the weights in the CPU's caches between runs; large ones (far above the last
    cache) make every run read them from memory. Timed with I/O binding (no copies), the median of ``repeats``
    runs after a warm-up; ``threads``: ONNX Runtime intra-op threads (default torch's); ``accuracy_level``: as in
    :func:`products_graph`. Memory: about three times ``megabytes`` while the graph is built and loaded. Returns a
    :class:`ProductRate`.

    Example: ``lu.llm.product_rate(folder, 256).gbs`` — GB/s of packed weights the products consume."""
    import numpy as np
    import onnxruntime as ort

    validate.integer(repeats, "repeats", 1)
    threads = validate.integer(threads if threads is not None else torch.get_num_threads(), "threads", 1)
    model, total = products_graph(folder, megabytes, accuracy_level, seed)
    shapes = {v.name: v.type.tensor_type.shape.dim[-1].dim_value for v in [*model.graph.input, *model.graph.output]}
    products = len(model.graph.node)
    data = model.SerializeToString()
    del model  # one copy of the weights fewer while the session loads and packs them
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    del data
    rng = np.random.default_rng(seed + 1)
    binding = session.io_binding()
    for x in session.get_inputs():
        binding.bind_ortvalue_input(x.name, ort.OrtValue.ortvalue_from_numpy(
            (0.1 * rng.standard_normal((1, 1, shapes[x.name]))).astype(np.float32)))
    for y in session.get_outputs():
        binding.bind_ortvalue_output(y.name, ort.OrtValue.ortvalue_from_numpy(
            np.empty((1, 1, shapes[y.name]), dtype=np.float32)))
    session.run_with_iobinding(binding)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        times.append(time.perf_counter() - start)
    run = statistics.median(times)
    return ProductRate(gbs=total / run / 1e9, megabytes=total / 1e6, products=products, run_ms=run * 1000,
                       threads=threads)
