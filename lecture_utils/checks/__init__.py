"""Exercise checks. After each exercise a cell calls ``lu.checks.<name>(your_function)``.

A check runs hidden cases against a reference, prints ✅ or ❌ with a hint that points the way without giving the
answer, and returns a :class:`CheckResult` that is truthy when every case passed. It never crashes and never hangs
on a wrong answer: a ``NotImplementedError``, an exception in your code, a value of the wrong type, shape or device,
or a function that runs longer than ``harness.CASE_TIMEOUT_S`` seconds on one case becomes feedback. Your function
gets copies of the check's inputs, so changing them in place cannot change the expected answer.

In graded mode a failed check raises :class:`CheckFailed`, so its test cell earns no points and an executed notebook
whose solution is wrong fails loudly. Graded mode is on while nbgrader grades or validates a notebook (it sets
``NBGRADER_EXECUTION`` in the kernel's environment) and when ``LECTURE_UTILS_STRICT_CHECKS=1`` (set by the course
runner and the tests); ``LECTURE_UTILS_STRICT_CHECKS=0`` switches it off even under nbgrader.

Layout: ``harness`` holds the shared machinery (running cases, time limits, graded mode, :func:`use`); lesson NN's
checks live in ``lessonNN`` and import only what that lesson teaches. Notebook NN calls only lesson NN's checks and
``use`` (tests/test_structure.py keeps it so). Every check is re-exported here, so ``lu.checks.<name>`` works.

Each exercise is declared once, at the bottom of its lesson's module (:func:`harness.declare`): its check, the
course's reference solution and the plausible wrong answers that must fail it. ``lu.checks.exercise(name)`` returns
the declaration, :data:`EXERCISES` holds them all (in lesson order); the tests, the nbgrader grading test and
:func:`use`'s fallback read them from there. A new exercise is a check, one ``declare`` and the notebook's cells.
"""

from .harness import (
    CASE_TIMEOUT_S,
    EXERCISES,
    NBGRADER_ENV,
    STRICT_ENV,
    CheckFailed,
    CheckResult,
    Exercise,
    exercise,
    use,
)
from .lesson00 import accuracy, predicted_parameters, predicted_size_mb, speedup
from .lesson01 import adam_training_bytes, embedding_share, predicted_int8_mb, weight_bytes
from .lesson02 import effective_rank, mixture_kurtosis, xor_solved
from .lesson03 import kd_loss, layer_map, predicted_size_ratio
from .lesson04 import csr_nbytes, magnitude_mask, matrix_sparsity, predicted_csr_ratio, sparsity_by_kind
from .lesson05 import predicted_heads_speedup, predicted_speedup, symmetric_layers
from .lesson06 import affine_qparams, predicted_mse, quantize_dequantize, symmetric_scales
from .lesson07 import imp_round, paired_verdict, random_network_accuracy, snip_mask
from .lesson08 import low_rank, predicted_low_rank_weights, sparse_int8_bytes
from .lesson09 import awq_scales, kv_cache_bytes, predicted_cache_bytes, quantize_groups, smooth_scales, wanda_mask
from .lesson10 import decode_bound, faster_phase, kivi_quantize, pack_nibbles

__all__ = [
    "CASE_TIMEOUT_S", "NBGRADER_ENV", "STRICT_ENV", "CheckFailed", "CheckResult", "Exercise", "EXERCISES", "exercise",
    "use", "accuracy",
    "predicted_size_mb", "speedup", "weight_bytes", "adam_training_bytes", "embedding_share", "xor_solved",
    "effective_rank", "kd_loss", "layer_map", "magnitude_mask", "matrix_sparsity", "csr_nbytes", "sparsity_by_kind",
    "predicted_heads_speedup", "symmetric_layers", "predicted_speedup", "affine_qparams", "quantize_dequantize",
    "symmetric_scales", "imp_round",
    "snip_mask",
    "low_rank", "sparse_int8_bytes", "quantize_groups", "kv_cache_bytes", "wanda_mask", "smooth_scales",
    "decode_bound", "pack_nibbles", "kivi_quantize", "faster_phase",
    "awq_scales",
    # predict, then measure
    "predicted_int8_mb", "predicted_size_ratio", "paired_verdict", "random_network_accuracy", "predicted_cache_bytes",
    "predicted_mse", "predicted_low_rank_weights", "predicted_csr_ratio", "mixture_kurtosis", "predicted_parameters",
]
