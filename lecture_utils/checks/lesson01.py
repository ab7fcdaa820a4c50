"""Checks of lesson 01, the size problem: bytes of weights, of Adam training, the embeddings' share; the predicted
size of int8 Linear layers against the measured file."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import measure, memory
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
    verdict,
)

__all__ = ["weight_bytes", "adam_training_bytes", "embedding_share", "INT8_TOLERANCE", "predicted_int8_mb",
           "predicted_int8_mb_reference"]


def weight_bytes(fn: Callable[[int, int], float]) -> CheckResult:
    """Check ``fn(n_params, bits) -> bytes`` needed to store the weights at ``bits`` bits each."""
    def case(n: int, bits: int):
        def run():
            close(number(call(fn, n, bits), "bytes"), memory.weight_bytes(n, bits), f"{n:,} parameters at {bits} bits")
        return run

    return run_cases("weight_bytes", [case(1000, 32), case(1000, 16), case(22_713_218, 8), case(7_000_000_000, 4),
                                 case(3, 1)],
                "a byte holds 8 bits; work out the bytes per parameter first.")


def adam_training_bytes(fn: Callable[[int], float]) -> CheckResult:
    """Check ``fn(n_params) -> bytes`` to train in fp32 with Adam (weights, gradients, two optimizer states)."""
    def case(n: int):
        def run():
            got = number(call(fn, n), "bytes")
            want = memory.training_bytes(n, "fp32", "adam")
            if math.isclose(got, n * 4, rel_tol=1e-6):
                raise Wrong(f"{got:.6g} bytes counts the weights only.")
            close(got, want, f"{n:,} parameters")
        return run

    return run_cases("adam_training_bytes", [case(1), case(1000), case(22_713_218), case(175_000_000_000)],
                "list every fp32 tensor training keeps per parameter: the weight, its gradient, and Adam's "
                "two running averages (first and second moment). Each fp32 value takes 4 bytes.")


def embedding_share(fn: Callable[[torch.nn.Module], float]) -> CheckResult:
    """Check ``fn(model) -> fraction of the model's parameters that sit in its embeddings`` on small BERTs."""
    def case(vocab: int, hidden: int, layers: int):
        def run():
            model = seeded_bert(vocab, hidden, layers, 2 * hidden, 32)
            want = measure.embedding_share(model)
            got = number(call(fn, model), "share")
            if 1 < got <= 100 and math.isclose(got / 100, want, rel_tol=1e-6):
                raise Wrong("return a fraction in [0, 1], not a percentage.")
            word = model.bert.embeddings.word_embeddings.weight.numel() / sum(p.numel() for p in model.parameters())
            if math.isclose(got, word, rel_tol=1e-6) and not math.isclose(word, want, rel_tol=1e-6):
                raise Wrong("you counted the word embeddings only; position and token-type embeddings "
                             "(and the embeddings' LayerNorm) belong to the embeddings too.")
            close(got, want, f"BERT with vocabulary {vocab}, hidden {hidden}, {layers} layers", rel=1e-6)
        return run

    return run_cases("embedding_share", [case(1000, 16, 2), case(30522, 32, 1), case(50, 64, 4)],
                "walk over model.named_parameters(); the embeddings' parameters have 'embeddings' in their name. "
                "Divide their element count (numel) by the total.")


INT8_TOLERANCE = 0.02  # the file also holds names, shapes and one scale and zero point per quantized matrix


def predicted_int8_mb(fn: Callable[[int, int], float]) -> CheckResult:
    """Check ``fn(linear_weights, other_params) -> predicted MB on disk`` once the ``nn.Linear`` weights are stored in
    int8 and every other parameter stays fp32, against files measured here: a small model quantized by the check,
    and the lesson's own model (measured and recorded by the notebook), each within ``INT8_TOLERANCE``."""
    from ..measure import size_mb
    from ..quantize import dynamic_int8

    def judge(linear: int, other: int, want: float, where: str):
        got = number(call(fn, linear, other), "predicted size")
        if math.isclose(got, (linear + other) / 1e6, rel_tol=1e-3):
            raise Wrong(f"{where}: {got:.4g} MB stores every parameter in one byte, but only the Linear layers' "
                         "weight matrices are quantized; the rest stays fp32.")
        if math.isclose(got, linear / 1e6, rel_tol=1e-3):
            raise Wrong(f"{where}: {got:.4g} MB counts the int8 weights only; the other parameters are still in "
                         "the file, in fp32.")
        if math.isclose(got, 4 * (linear + other) / 1e6, rel_tol=1e-3):
            raise Wrong(f"{where}: {got:.4g} MB is the fp32 size of the whole model.")
        predicted(got, want, where, INT8_TOLERANCE, "Count the bytes per parameter of each part (int8: 1, fp32: 4), "
                  "then convert to MB (10^6 bytes).")

    def small_model():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(3000, 64), torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                    torch.nn.Linear(256, 64))
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        other = sum(p.numel() for p in model.parameters()) - linear
        judge(linear, other, size_mb(dynamic_int8(model)), "a small model (an embedding table and two Linear "
              "layers) quantized by the check")

    def lesson_model():
        linear = int(measured("size.minilm.linear_weights", "the Linear weights of our model"))
        other = int(measured("size.minilm.other_params", "the other parameters of our model"))
        judge(linear, other, measured("size.minilm.int8_linear_mb", "the int8 file"), "our model")

    def explain() -> str:
        linear, other = int(measured("size.minilm.linear_weights", "")), int(measured("size.minilm.other_params", ""))
        got = number(call(fn, linear, other), "")
        want = measured("size.minilm.int8_linear_mb", "")
        return (f"our model: predicted {got:.2f} MB, measured {want:.2f} MB ({100 * (want / got - 1):+.2f}%): the "
                "file also stores each tensor's name and shape, and a scale and zero point per int8 matrix.")

    return verdict("predicted_int8_mb", [small_model, lesson_model],
                   "the file holds the int8 weight matrices at one byte per weight and every other parameter "
                   "(embeddings, biases, LayerNorm) at four; MB means 10^6 bytes.", explain)


def predicted_int8_mb_reference(linear_weights: int, other_params: int) -> float:
    """MB (10^6 bytes) of a model whose ``linear_weights`` are stored in int8 (1 byte) and whose ``other_params`` stay
    fp32 (4 bytes): the reference answer of exercise ``predicted_int8_mb``."""
    return memory.megabytes(linear_weights, 1) + memory.megabytes(other_params, 4)


# --- the exercises of lesson 01, declared once ---------------------------------------------------------------------
declare("01", weight_bytes, memory.weight_bytes, wrong=(lambda n, bits: n * bits, lambda n, bits: n * 4),
        graded_wrong="return n_params * bits")
declare("01", adam_training_bytes, memory.training_bytes, wrong=(lambda n: 4 * n, lambda n: 12 * n),
        graded_wrong="return n_params * 4")
declare("01", embedding_share, measure.embedding_share, wrong=(
    lambda m: m.bert.embeddings.word_embeddings.weight.numel() / sum(p.numel() for p in m.parameters()),
    lambda m: 100 * measure.embedding_share(m)),
    graded_wrong="return model.bert.embeddings.word_embeddings.weight.numel() / sum(p.numel() for p in "
                 "model.parameters())")
declare("01", predicted_int8_mb, predicted_int8_mb_reference, wrong=(
    lambda linear, other: (linear + other) / 1e6,  # everything in int8
    lambda linear, other: linear / 1e6,  # the rest forgotten
    lambda linear, other: (linear + 4 * other) / 2**20,  # MiB
    lambda linear, other: 58.63),  # our model's measurement, typed in: the small model fails
    graded_wrong="return (linear_weights + other_params) / 1e6")
