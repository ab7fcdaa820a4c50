"""Every number a lesson records with ``lu.record``, declared once, lesson by lesson, with its unit.

The notebook tests (a smoke run records exactly its lesson's keys), lesson 08's catalogue of the course's variants
(``combine.COURSE_VARIANTS`` reads only declared keys) and the key tables in ``lecture_utils/README.md`` (written by
:func:`markdown_table`, kept in step by a test) all read this declaration. A key a loop records holds placeholders
in braces, written in the cell's f-string the same way (``f"layers.{strategy}.k3.test_accuracy"``), so a search for
the declared text finds the cell; every other key is a literal in its cell.

Units (see :data:`UNITS`): accuracies are fractions in [0, 1], latencies ms, sizes MB (10^6 bytes), speed-ups and
size ratios baseline / variant, a key ending in ``_drop`` is in percentage points.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["UNITS", "Key", "LESSON_KEYS", "PREPARATION_KEYS", "lesson_keys", "find", "lesson_of", "markdown_table"]

UNITS: dict[str, str] = {
    "fraction": "a share in [0, 1] (accuracies, sparsities, shares of a model)",
    "ratio": "baseline / variant (speed-ups, size ratios), or measured / bound",
    "ms": "milliseconds", "s": "seconds", "MB": "10^6 bytes", "bytes": "bytes", "count": "a whole number",
    "points": "percentage points", "perplexity": "exp(mean cross-entropy per token)", "tokens/s": "tokens per second",
    "GB/s": "10^9 bytes per second", "mse": "mean squared error, in the weights' units squared",
    "logit": "a difference of logits",
}


@dataclass(frozen=True)
class Key:
    """One recorded number: ``name`` (dotted, lower case; ``{placeholders}`` stand for one part a loop fills in),
    its ``unit`` (a key of :data:`UNITS`) and what it is. ``optional``: recorded only at some scales or outcomes."""

    name: str
    unit: str
    meaning: str
    optional: bool = False

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"key {self.name!r}: unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if not re.fullmatch(r"[a-z0-9_{}]+(\.[a-z0-9_{}]+)+", self.name):
            raise ValueError(f"key {self.name!r} must be dotted lower-case words (placeholders in braces)")

    @property
    def pattern(self) -> re.Pattern:
        """The names this key stands for: each ``{placeholder}`` matches one run of ``[a-z0-9_]``."""
        return re.compile(re.sub(r"\\\{\w+\\\}", "[a-z0-9_]+", re.escape(self.name)))

    @property
    def is_pattern(self) -> bool:
        return "{" in self.name


_k = Key  # short, for the tables below


# The one-time preparation `make course` runs before the lessons (recorded by the course runner, not a notebook).
PREPARATION_KEYS: tuple[Key, ...] = (
    _k("teacher.train_seconds", "s", "fine-tuning the course's teacher, once"),
    _k("layers.meanpool.teacher.train_seconds", "s", "fine-tuning lesson 05's mean-pooled teacher, once"),
)

LESSON_KEYS: dict[str, tuple[Key, ...]] = {
    "00": (
        _k("teacher.test_accuracy", "fraction", "the fine-tuned teacher on the test split"),
        _k("teacher.train_seconds", "s", "the teacher's fine-tuning (as recorded when it was trained)"),
        _k("teacher.params", "count", "the teacher's parameters"),
        _k("teacher.size_mb", "MB", "the teacher's state dict"),
        _k("teacher.latency_ms", "ms", "one batch through the teacher, median"),
    ),
    "01": (
        _k("size.minilm.params", "count", "MiniLM's parameters"),
        _k("size.minilm.embedding_share", "fraction", "share of the parameters in the embeddings"),
        _k("size.minilm.linear_weights", "count", "weights of the nn.Linear layers"),
        _k("size.minilm.other_params", "count", "every other parameter"),
        _k("size.minilm.int8_linear_mb", "MB", "the file with int8 Linear weights, measured"),
        _k("size.minilm.int8_linear_bound", "ratio", "fp32 size / int8-Linear size"),
    ),
    "02": (
        _k("overparam.xor.success.w2", "fraction", "XOR solved by 2-wide networks"),
        _k("overparam.xor.success.w16", "fraction", "XOR solved by 16-wide networks"),
    ),
    "03": (
        _k("distill.teacher.embedding_share", "fraction", "the teacher's bytes in the embeddings"),
        _k("distill.student3.kept_fraction", "fraction", "encoder layers the 3-layer student keeps"),
        _k("distill.student3.size_ratio", "ratio", "teacher file / 3-layer student file"),
        _k("distill.scratch.test_accuracy", "fraction", "3-layer student from random weights"),
        _k("distill.hard_only.test_accuracy", "fraction", "student from teacher layers, labels only"),
        _k("distill.kd.test_accuracy", "fraction", "student from teacher layers, Hinton's loss"),
        _k("distill.kd_intermediate.test_accuracy", "fraction", "KD plus hidden-state and attention losses"),
        _k("distill.small.test_accuracy", "fraction", "1-layer student with KD"),
        _k("distill.retention", "fraction", "the KD student's accuracy / the teacher's"),
        _k("distill.speedup", "ratio", "teacher latency / 3-layer student latency"),
        _k("distill.kd.above_chance", "fraction", "the KD student's share of the teacher's gain over the majority",
           optional=True),
        _k("distill.scratch.above_chance", "fraction", "the scratch student's share of the teacher's gain",
           optional=True),
    ),
    "04": (
        _k("prune.dense.test_accuracy", "fraction", "the dense teacher"),
        _k("prune.global90_oneshot.test_accuracy", "fraction", "90% global magnitude pruning, no training"),
        _k("prune.layerwise90_ft.test_accuracy", "fraction", "90% layer-wise, then fine-tuned on labels"),
        _k("prune.layerwise90_kd.test_accuracy", "fraction", "90% layer-wise, then fine-tuned on soft targets"),
        _k("prune.layerwise90_gradual.test_accuracy", "fraction", "gradual pruning to 90% on soft targets"),
        _k("prune.iterative_gap.sparsity", "fraction", "the sparsity of the one-shot vs gradual comparison"),
        _k("prune.iterative_gap.iterative_accuracy", "fraction", "gradual pruning at that sparsity"),
        _k("prune.iterative_gap.oneshot_accuracy", "fraction", "one cut at that sparsity"),
        _k("prune.latency_ratio_90", "ratio", "90%-sparse latency / dense latency (masked weights)"),
        _k("prune.sparse_size_ratio_90", "ratio", "dense bytes / CSR bytes of the pruned matrices"),
        _k("prune.csr_whole.pruned_share", "fraction", "the pruned matrices' share of the file"),
        _k("prune.csr_whole.sparsity", "fraction", "their sparsity"),
        _k("prune.csr_whole.size_ratio", "ratio", "dense file / file with the pruned matrices in CSR"),
    ),
    "05": (
        _k("heads.removed50.test_accuracy", "fraction", "half the heads removed by importance"),
        _k("heads.removed50.validation_accuracy", "fraction", "the same on the validation split"),
        _k("heads.random50.validation_accuracy", "fraction", "half the heads removed at random (median order)"),
        _k("heads.removed50.speedup", "ratio", "teacher / pruned latency at the headline batch"),
        _k("heads.removed50.speedup_b1", "ratio", "the same at batch 1"),
        _k("heads.removed50.size_mb", "MB", "the pruned model's state dict"),
        _k("layers.top.k2.test_accuracy", "fraction", "the top 2 layers dropped, then fine-tuned"),
        _k("layers.top.k3.speedup_b1", "ratio", "6-layer / 3-layer latency at batch 1"),
        _k("layers.{strategy}.k3.test_accuracy", "fraction",
           "3 layers dropped by a strategy (top, bottom, alternate, symmetric, contribution), then fine-tuned"),
        _k("layers.{strategy}.k3.speedup", "ratio", "6-layer / 3-layer latency (the same for every strategy)"),
        _k("layers.{strategy}.k3.size_ratio", "ratio", "teacher file / 3-layer file"),
        _k("layers.meanpool.teacher.test_accuracy", "fraction", "the mean-pooled teacher"),
        _k("layers.meanpool.{strategy}.k3.test_accuracy", "fraction", "the mean-pooled teacher, 3 layers dropped"),
    ),
    "06": (
        _k("quant.roundtrip.mse_b{bits}", "mse", "round trip of a weight matrix at that many bits (affine)"),
        _k("quant.int8_dynamic.size_ratio", "ratio", "fp32 file / int8-Linear file"),
        _k("quant.int8_all.size_ratio", "ratio", "fp32 file / file with int8 Linear and embeddings"),
        _k("quant.int8_dynamic.test_accuracy", "fraction", "dynamic int8 Linear layers"),
        _k("quant.int8_dynamic.speedup", "ratio", "fp32 / int8 latency at the headline batch"),
        _k("quant.int8_dynamic.speedup_b1", "ratio", "the same at batch 1"),
        _k("quant.int8_all.test_accuracy", "fraction", "int8 Linear layers and embeddings"),
        _k("runtime.ort_int8.speedup_b1", "ratio", "torch fp32 / ONNX Runtime int8 at batch 1"),
        _k("runtime.ort_int8.speedup_b32", "ratio", "the same at batch 32"),
        _k("runtime.ort_fp32.speedup_b1", "ratio", "torch fp32 / ONNX Runtime fp32 at batch 1"),
        _k("runtime.torch_ao_int8.speedup_b1", "ratio", "torch fp32 / torch.ao int8 at batch 1"),
        _k("runtime.torchao_int8.speedup_b1", "ratio", "torch fp32 / torchao int8 at batch 1"),
        _k("quant.torchao_int8.speedup", "ratio", "torch fp32 / torchao int8 at the headline batch"),
        _k("runtime.ort_int8.test_accuracy", "fraction", "the teacher in ONNX Runtime int8"),
        _k("runtime.ort_int8.size_ratio", "ratio", "fp32 ONNX file / int8 ONNX file"),
        _k("runtime.ort_fp32.max_abs_logit_diff", "logit", "largest |ONNX Runtime fp32 − torch| logit"),
        _k("runtime.ort_int8.fusion_gain_b1", "ratio", "unfused / fused int8 graph latency at batch 1"),
        _k("quant.ptq4.test_accuracy", "fraction", "4-bit weights, post-training (simulated)"),
        _k("quant.ptq3.test_accuracy", "fraction", "3-bit weights, post-training (simulated)"),
        _k("quant.ptq2.test_accuracy", "fraction", "2-bit weights, post-training (simulated)"),
        _k("quant.qat3.test_accuracy", "fraction", "3-bit weights, quantization-aware training"),
        _k("quant.ft_ptq3.test_accuracy", "fraction", "QAT's control: fp32 fine-tune, then 3-bit PTQ"),
    ),
    "07": (
        _k("lottery.dense.train_accuracy", "fraction", "the dense MLP on its training set"),
        _k("lottery.dense_long.test_accuracy", "fraction", "the dense MLP trained longer"),
        _k("lottery.seeds", "count", "seeds of every comparison"),
        _k("lottery.dense.test_accuracy", "fraction", "the dense MLP, mean over seeds"),
        _k("lottery.ticket_beats_dense_levels", "count", "sparsity levels where the ticket beats dense (paired t)"),
        _k("lottery.{method}_{percent}.test_accuracy", "fraction",
           "a sparse network (ticket, reinit, random_mask, snip) keeping that percent of the weights"),
        _k("lottery.supermask.remaining", "fraction", "weights the edge-popup supermask keeps"),
        _k("lottery.supermask.test_accuracy", "fraction", "a random network's edge-popup subnetwork"),
        _k("lottery.supermask.random_mask.test_accuracy", "fraction", "the same network, a random mask"),
        _k("lottery.supermask.test_accuracy_10", "fraction", "edge-popup keeping 10% of the weights"),
        _k("lottery.supermask.linear_probe.test_accuracy", "fraction", "a linear probe on the random features"),
        _k("lottery.sparse_training.remaining", "fraction", "weights SET and its static control keep"),
        _k("lottery.sparse_training.set.test_accuracy", "fraction", "SET, sparse from the start"),
        _k("lottery.sparse_training.static.test_accuracy", "fraction", "the same sparsity, connections fixed"),
        _k("lottery.sparse_training.set_minus_static", "points", "SET − static, mean over seeds"),
    ),
    "08": (
        _k("lowrank.teacher.{dimension}", "count", "the teacher's layers, hidden and intermediate sizes"),
        _k("lowrank.{rank}.encoder_linear_weights", "count", "encoder Linear weights factorised at that rank"),
        _k("lowrank.{rank}.test_accuracy", "fraction", "every Linear factorised at that rank, no training"),
        _k("lowrank.{rank}.params", "count", "parameters of the factorised model"),
        _k("lowrank.{rank}.encoder_params", "count", "parameters of its encoder"),
        _k("lowrank.128_ft.test_accuracy", "fraction", "rank 128, then fine-tuned"),
        _k("sharing.pairs.test_accuracy", "fraction", "layers shared in pairs, then fine-tuned"),
        _k("sharing.pairs.size_mb", "MB", "its state dict"),
        _k("combined.test_accuracy", "fraction", "the KD student in int8"),
        _k("combined.size_mb", "MB", "its state dict"),
        _k("combined.size_ratio", "ratio", "teacher file / combined file"),
        _k("combined.speedup", "ratio", "teacher / combined latency at the headline batch"),
        _k("combined.accuracy_drop", "points", "teacher − combined accuracy"),
        _k("combined.latency_ms", "ms", "the combined model's latency"),
        _k("combined.teacher_latency_ms", "ms", "the teacher's, in the same run"),
        _k("combined.speedup_b1", "ratio", "teacher / combined latency at batch 1"),
        _k("combined.ort.speedup_b1", "ratio", "teacher / the student in ONNX Runtime int8, batch 1"),
        _k("combined.ort.speedup", "ratio", "the same at the headline batch"),
        _k("combined.ort.size_ratio", "ratio", "teacher file / ONNX int8 student file"),
        _k("combined.ort.size_mb", "MB", "the ONNX int8 student file"),
        _k("combined.ort.test_accuracy", "fraction", "the student in ONNX Runtime int8"),
        _k("combined.ort.accuracy_drop", "points", "teacher − that accuracy"),
        _k("trainlarge.large_compressed.test_accuracy", "fraction", "large MLP pruned and int8 (MNIST-1D)"),
        _k("trainlarge.small_light.test_accuracy", "fraction", "small MLP in int8 at the same bytes"),
        _k("trainlarge.large_compressed.bytes", "bytes", "the large compressed model's weights"),
        _k("trainlarge.small_light.bytes", "bytes", "the small model's weights"),
        _k("trainlarge.large_dense.test_accuracy", "fraction", "the large MLP before compression"),
    ),
    "09": (
        _k("llm.kv_cache.bytes_per_token", "bytes", "KV cache per token, from the config"),
        _k("llm.kv_cache.measured_bytes_per_token", "bytes", "the same, measured on a real cache"),
        _k("llm.kv_cache.batch", "count", "sequences of the measured cache"),
        _k("llm.kv_cache.tokens", "count", "tokens per sequence of the measured cache"),
        _k("llm.kv_cache.bytes_per_number", "bytes", "bytes per cached number"),
        _k("llm.kv_cache.batch_bytes", "bytes", "the measured cache"),
        _k("llm.config.{name}", "count", "SmolLM2's config (layers, heads, key/value heads, hidden size, head size)"),
        _k("llm.baseline.ppl", "perplexity", "SmolLM2 in fp32 on the test windows"),
        _k("llm.rtn.w8_channel.ppl", "perplexity", "8-bit weights, one scale per row"),
        _k("llm.rtn.w4_g64.ppl", "perplexity", "4-bit round-to-nearest, groups of 64"),
        _k("llm.rtn.w3_g64.ppl", "perplexity", "3-bit round-to-nearest, groups of 64"),
        _k("llm.w8a8_naive.ppl", "perplexity", "8-bit weights and activations"),
        _k("llm.w8a8_smoothquant.ppl", "perplexity", "the same after SmoothQuant"),
        _k("llm.gptq.w3_g64_oneshot.ppl", "perplexity", "GPTQ at 3 bits, every layer calibrated on fp32 inputs"),
        _k("llm.gptq.w4_g64.ppl", "perplexity", "GPTQ at 4 bits, groups of 64"),
        _k("llm.gptq.w3_g64.ppl", "perplexity", "GPTQ at 3 bits, groups of 64"),
        _k("llm.salient1.activation.ppl", "perplexity", "3-bit, the 1% of channels with the largest inputs kept"),
        _k("llm.salient1.weight.ppl", "perplexity", "3-bit, the 1% with the largest weights kept"),
        _k("llm.salient1.random.ppl", "perplexity", "3-bit, a random 1% kept"),
        _k("llm.awq.w3_g64.ppl", "perplexity", "AWQ at 3 bits"),
        _k("llm.awq.w4_g64.ppl", "perplexity", "AWQ at 4 bits"),
        _k("llm.awq.w3_g64_scales_only.ppl", "perplexity", "AWQ's scales without its clipping"),
        _k("llm.awq.w3_g64_clip_only.ppl", "perplexity", "AWQ's clipping without its scales"),
        _k("llm.magnitude50.ppl", "perplexity", "50% magnitude pruning"),
        _k("llm.wanda50.ppl", "perplexity", "50% Wanda pruning"),
        _k("llm.wanda_2of4.ppl", "perplexity", "Wanda, 2 of every 4 weights"),
    ),
    "10": (
        _k("serve.bandwidth_gbs", "GB/s", "memory read bandwidth, measured"),
        _k("serve.bandwidth_copy_gbs", "GB/s", "copy bandwidth (bytes read + written)"),
        _k("serve.{runtime}.decode_tok_s", "tokens/s",
           "decoding at batch 1 (torch_fp32, torch_ao_int8, ort_fp32, ort_int4)"),
        _k("serve.{runtime}.ttft_ms", "ms", "time to the first token"),
        _k("serve.{runtime}.size_mb", "MB", "the model on disk"),
        _k("serve.{runtime}.ppl", "perplexity", "on lesson 09's test windows (also builder_int4, rtn_int4, "
           "gptq_int4)"),
        _k("serve.{runtime}.memory_mb", "MB", "peak memory of a fresh process running it"),
        _k("serve.ort_int4.speedup", "ratio", "ONNX Runtime int4 / torch fp32 decode tokens/s"),
        _k("serve.best.bound_fraction", "ratio", "the fastest runtime's tokens/s / its bandwidth bound"),
        _k("serve.threads.t{n}.decode_tok_s", "tokens/s", "4-bit decoding at 1 and at the lesson's threads"),
        _k("serve.threads.t{n}.bandwidth_gbs", "GB/s", "read bandwidth at 1 and at the lesson's threads"),
        _k("serve.threads.t{n}.products_gbs", "GB/s",
           "the 4-bit products alone, weights from memory, at 1 and at the lesson's threads"),
        _k("serve.products.cache_gbs", "GB/s", "the 4-bit products alone with their weights in cache"),
        _k("serve.products.float_cache_gbs", "GB/s", "the same in cache, with float arithmetic (accuracy level 0)"),
        _k("serve.products.cache_gain", "ratio", "the products' speed from cache / from memory"),
        _k("serve.products.step_share", "fraction", "share of a 4-bit decoding step the products take",
           optional=True),
        _k("serve.threads.bandwidth_gain", "ratio", "read bandwidth at the lesson's threads / at 1 thread",
           optional=True),
        _k("serve.threads.decode_gain", "ratio", "4-bit decode tokens/s at the lesson's threads / at 1 thread",
           optional=True),
        _k("serve.torch_ao_int8.weights_only_ppl", "perplexity", "torch.ao's int8 weights with float activations"),
        _k("serve.torch_ao_int8.acts7_only_ppl", "perplexity", "float weights with 7-bit per-tensor activations"),
        _k("serve.ort_int4.sim_ppl", "perplexity", "the torch simulation of the shipped 4-bit format"),
        _k("serve.gptq_int4.sim_ppl", "perplexity", "the torch simulation of the shipped GPTQ weights"),
        _k("serve.gptq_int4.gain_kept", "fraction", "share of GPTQ's gain over RTN the runtime keeps"),
        _k("serve.batch.{runtime}.b{batch}.decode_tok_s", "tokens/s", "decoding, summed over the batch"),
        _k("serve.kv.{cache}.ppl", "perplexity", "long-window perplexity with the cache in fp or b8, b4, b2"),
        _k("serve.drop.{strategy}.k{k}.ppl", "perplexity", "k layers dropped by bi, top or random (median draw)"),
    ),
}


def lesson_keys(lesson: str) -> tuple[Key, ...]:
    """The keys notebook ``lesson`` ("00" … "10") records."""
    if lesson not in LESSON_KEYS:
        raise KeyError(f"lesson must be one of {', '.join(LESSON_KEYS)}, got {lesson!r}")
    return LESSON_KEYS[lesson]


def find(name: str, lesson: str | None = None) -> Key | None:
    """The declared key that ``name`` is (a literal first, then a pattern), in ``lesson`` or any lesson (and the
    preparation's); None when it is not declared."""
    pools = [lesson_keys(lesson)] if lesson is not None else [*LESSON_KEYS.values(), PREPARATION_KEYS]
    keys = [k for pool in pools for k in pool]
    return next((k for k in keys if not k.is_pattern and k.name == name), None) or \
        next((k for k in keys if k.is_pattern and k.pattern.fullmatch(name)), None)


def lesson_of(name: str) -> str | None:
    """The lesson whose declaration holds ``name`` (None if none does)."""
    return next((lesson for lesson in LESSON_KEYS if find(name, lesson) is not None), None)


def markdown_table(lesson: str) -> str:
    """Lesson ``lesson``'s keys as a Markdown table (key, unit, meaning), as ``lecture_utils/README.md`` shows it."""
    rows = [f"| `{k.name}` | {k.unit} | {k.meaning}{' (not always)' if k.optional else ''} |"
            for k in lesson_keys(lesson)]
    return "\n".join(["| key | unit | what |", "|---|---|---|", *rows])
