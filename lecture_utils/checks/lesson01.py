"""Checks of lesson 01, the size problem: bytes of weights, of Adam training, the embeddings' share."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import memory
from .harness import CheckResult, Wrong, call, close, number, run_cases


def weight_bytes(fn: Callable[[int, int], float]) -> CheckResult:
    """Check ``fn(n_params, bits) -> bytes`` needed to store the weights at ``bits`` bits each."""
    def case(n: int, bits: int):
        def run():
            close(number(call(fn, n, bits), "bytes"), n * bits / 8, f"{n:,} parameters at {bits} bits")
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
    from transformers import BertConfig, BertForSequenceClassification

    def case(vocab: int, hidden: int, layers: int):
        def run():
            cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                             intermediate_size=2 * hidden, max_position_embeddings=32)
            torch.manual_seed(0)
            model = BertForSequenceClassification(cfg)
            emb = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." in f".{n}")
            want = emb / sum(p.numel() for p in model.parameters())
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
