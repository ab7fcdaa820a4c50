"""Checks of lesson 00, welcome: accuracy, model size in MB, speed-up."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import measure, memory, models
from .harness import CheckResult, Wrong, call, close, declare, number, run_cases

__all__ = ["accuracy", "predicted_size_mb", "speedup", "PARAMETERS_TOLERANCE", "predicted_parameters"]


def accuracy(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> CheckResult:
    """Check ``fn(logits (N, C), labels (N,)) -> fraction of rows whose largest logit is the label``."""
    gen = torch.Generator().manual_seed(1234)

    def case(n: int, c: int):
        def run():
            logits = torch.randn(n, c, generator=gen)
            labels = torch.randint(0, c, (n,), generator=gen)
            want = measure.accuracy(logits, labels)
            got = number(call(fn, logits.clone(), labels.clone()), "accuracy")
            if not 0 <= got <= 1:
                raise Wrong(f"accuracy must be a fraction in [0, 1], got {got:.4g} (did you forget to divide?)")
            close(got, want, f"{n} examples, {c} classes", rel=1e-5)
        return run

    def perfect():
        labels = torch.tensor([0, 1, 1, 0])
        got = number(call(fn, torch.nn.functional.one_hot(labels, 2).float(), labels), "accuracy")
        close(got, 1.0, "logits that always favour the right class")

    return run_cases("accuracy", [perfect, case(10, 2), case(33, 5), case(1, 3), case(500, 2)],
                "the predicted class of each row is the index of its largest logit (argmax over the last "
                "dimension); compare with the labels and take the mean as a float.")


def predicted_size_mb(fn: Callable[[int, float], float]) -> CheckResult:
    """Check ``fn(n_params, bytes_per_param) -> size in MB`` (MB = 10^6 bytes)."""
    def case(n: int, b: float):
        def run():
            got = number(call(fn, n, b), "size")
            want = memory.megabytes(n, b)
            if math.isclose(got, n * b / 2**20, rel_tol=1e-6) and not math.isclose(got, want, rel_tol=1e-6):
                raise Wrong(f"{got:.6g} is in MiB (2^20 bytes); the course uses MB = 10^6 bytes.")
            close(got, want, f"{n:,} parameters at {b} bytes each")
        return run

    return run_cases("predicted_size_mb", [case(1_000_000, 4), case(22_713_218, 4), case(110_000_000, 2), case(7, 1),
                                      case(123_456_789, 0.5)],
                "size in bytes is parameters × bytes per parameter; one MB is 10^6 bytes.")


def speedup(fn: Callable[[float, float], float]) -> CheckResult:
    """Check ``fn(baseline_ms, variant_ms) -> speed-up`` (baseline / variant: 2.0 means twice as fast)."""
    def case(base: float, var: float):
        def run():
            close(number(call(fn, base, var), "speed-up"), measure.speedup(base, var),
                  f"baseline {base} ms, variant {var} ms")
        return run

    return run_cases("speedup", [case(100, 50), case(50, 100), case(42.0, 42.0), case(3.3, 1.1), case(1e3, 7.5)],
                "a speed-up compares how long the baseline takes with how long the variant takes; a faster "
                "variant must give a number above 1.")


PARAMETERS_TOLERANCE = 0.005  # relative: the LayerNorms may be left out, not the biases, the pooler or a table


def predicted_parameters(fn: Callable[[object], int]) -> CheckResult:
    """Check ``fn(config) -> parameters`` of the BERT sequence classifier a ``transformers.BertConfig`` describes,
    against the count of the model built from that config (:func:`lecture_utils.models.config_parameters`), within
    ``PARAMETERS_TOLERANCE``: our model's shape and three others built by the check."""
    from transformers import BertConfig

    def case(vocab: int, hidden: int, layers: int, intermediate: int, positions: int, labels: int = 2):
        def run():
            config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=2, intermediate_size=intermediate,
                                max_position_embeddings=positions, num_labels=labels)
            want = models.config_parameters(config)
            got = number(call(fn, config), "parameters")
            where = (f"vocabulary {vocab}, hidden {hidden}, {layers} layers, feed-forward {intermediate}, "
                     f"{positions} positions, {labels} labels")
            if not math.isclose(got, want, rel_tol=PARAMETERS_TOLERANCE):
                raise Wrong(f"{where}: you predicted {got:,.0f} parameters, the model has {want:,} "
                            f"({100 * (got / want - 1):+.2f}%, more than ±{100 * PARAMETERS_TOLERANCE:g}%).")
        return run

    return run_cases("predicted_parameters", [case(30522, 384, 6, 1536, 512), case(3000, 32, 4, 100, 64),
                                              case(1000, 64, 2, 256, 128, labels=5), case(500, 48, 3, 96, 40)],
                     "count every weight matrix and every bias: three embedding tables (tokens, positions, segments: "
                     "config.type_vocab_size), per layer four hidden × hidden attention projections and a "
                     "feed-forward block hidden → intermediate → hidden, then the pooler (hidden → hidden) and the "
                     "classifier (hidden → num_labels). LayerNorms (a scale and a shift each) are a sliver.")


def _bert_parameters(cfg, biases: bool = True, pooler: bool = True) -> int:
    """A hand count of a BERT classifier's parameters (wrong answers leave parts out)."""
    h, i, b = cfg.hidden_size, cfg.intermediate_size, int(biases)
    emb = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + b * h) + (h * i + b * i) + (i * h + b * h) + 4 * h
    head = pooler * (h * h + b * h) + h * cfg.num_labels + b * cfg.num_labels
    return emb + cfg.num_hidden_layers * layer + head


# --- the exercises of lesson 00, declared once ---------------------------------------------------------------------
declare("00", accuracy, measure.accuracy, wrong=(
    lambda logits, labels: (logits.argmax(-1) == labels).sum().item(),  # a count, not a fraction
    lambda logits, labels: (logits.argmin(-1) == labels).float().mean().item(),
    lambda logits, labels: (logits.argmax(-1) == labels).float()),  # not reduced
    graded_wrong="return (logits.argmax(dim=-1) == labels).sum().item()")
declare("00", predicted_size_mb, memory.megabytes, wrong=(lambda n, b: n * b / 2**20, lambda n, b: n * b),
        graded_wrong="return n_params * bytes_per_param / 2**20")
declare("00", speedup, measure.speedup, wrong=(lambda base, var: var / base, lambda base, var: base - var),
        graded_wrong="return variant_ms / baseline_ms")
declare("00", predicted_parameters, models.config_parameters, wrong=(
    lambda cfg: _bert_parameters(cfg, biases=False), lambda cfg: _bert_parameters(cfg, pooler=False),
    lambda cfg: (cfg.vocab_size + cfg.max_position_embeddings) * cfg.hidden_size  # the 12h² rule: assumes 4h
    + cfg.num_hidden_layers * 12 * cfg.hidden_size**2),
    graded_wrong="h = config.hidden_size  # the 12·h² rule of thumb: no biases, pooler or segment table\n"
                 "return (config.vocab_size + config.max_position_embeddings) * h + "
                 "config.num_hidden_layers * 12 * h * h")
