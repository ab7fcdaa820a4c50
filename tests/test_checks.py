"""Every check passes a correct answer, fails wrong ones with feedback, and never crashes."""

import doctest
import time

import pytest
import torch

import lecture_utils as lu
from lecture_utils import checks


def _not_done(*_args):
    raise NotImplementedError()


def _boom(*_args):
    raise RuntimeError("student bug")


# Every exercise's reference and wrong answers come from its one declaration (lu.checks.EXERCISES); the references'
# own behaviour is tested against independent oracles in each technique's test module (torch's pruning, SVD, ...).
CORRECT = {name: ex.reference for name, ex in checks.EXERCISES.items()}
WRONG = {name: ex.wrong for name, ex in checks.EXERCISES.items()}


@pytest.fixture(autouse=True)
def lenient(monkeypatch, measured):  # `measured`: what the notebooks record before a prediction check runs
    monkeypatch.delenv(checks.STRICT_ENV, raising=False)


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_answer_passes(name, capsys):
    assert getattr(checks, name)(CORRECT[name]).passed is True
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(CORRECT))
def test_wrong_answers_scaffolds_and_crashes_fail_with_a_hint(name, capsys):
    for wrong in [*WRONG[name], _not_done, _boom, "not a function"]:
        assert getattr(checks, name)(wrong).passed is False
        out = capsys.readouterr().out
        assert "❌" in out and "Hint:" in out


def test_feedback_names_the_problem(capsys):
    checks.accuracy(_not_done)
    assert "not implemented yet" in capsys.readouterr().out
    checks.accuracy(_boom)
    assert "RuntimeError: student bug" in capsys.readouterr().out
    checks.predicted_size_mb(WRONG["predicted_size_mb"][0])
    assert "MiB" in capsys.readouterr().out
    checks.embedding_share(WRONG["embedding_share"][0])
    assert "word embeddings only" in capsys.readouterr().out
    checks.imp_round(WRONG["imp_round"][1])
    assert "rewind them to init" in capsys.readouterr().out
    checks.snip_mask(WRONG["snip_mask"][0])
    assert "all layers together" in capsys.readouterr().out
    checks.paired_verdict(WRONG["paired_verdict"][1])
    assert "Student's t needs 4.30" in capsys.readouterr().out
    checks.random_network_accuracy(WRONG["random_network_accuracy"][1])
    assert "not in percent" in capsys.readouterr().out
    checks.effective_rank(WRONG["effective_rank"][0])
    assert "not their squares" in capsys.readouterr().out
    checks.low_rank(WRONG["low_rank"][0])
    assert "missing the singular values" in capsys.readouterr().out
    checks.low_rank(WRONG["low_rank"][1])
    assert "smallest singular values" in capsys.readouterr().out
    checks.sparse_int8_bytes(WRONG["sparse_int8_bytes"][0])
    assert "round the bitmask up" in capsys.readouterr().out
    checks.sparse_int8_bytes(WRONG["sparse_int8_bytes"][1])
    assert "scale of every row is missing" in capsys.readouterr().out
    checks.symmetric_layers(WRONG["symmetric_layers"][0])
    assert "bottom should keep the extra one" in capsys.readouterr().out
    checks.symmetric_layers(WRONG["symmetric_layers"][1])
    assert "count layers from 0" in capsys.readouterr().out
    checks.predicted_heads_speedup(WRONG["predicted_heads_speedup"][0])
    assert "feed-forward block" in capsys.readouterr().out
    checks.predicted_heads_speedup(WRONG["predicted_heads_speedup"][1])
    assert "the attention itself" in capsys.readouterr().out
    checks.predicted_heads_speedup(WRONG["predicted_heads_speedup"][2])
    assert "old time / new time" in capsys.readouterr().out
    checks.predicted_speedup(WRONG["predicted_speedup"][0])
    assert "the rest (1 − share) stays" in capsys.readouterr().out
    checks.predicted_speedup(WRONG["predicted_speedup"][1])
    assert "old time / new time" in capsys.readouterr().out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    with pytest.raises(checks.CheckFailed):
        checks.speedup(_not_done)
    assert checks.speedup(CORRECT["speedup"])


def test_every_public_check_is_covered():
    public = {n for n in dir(checks) if not n.startswith("_") and callable(getattr(checks, n))
              and getattr(checks, n).__module__.startswith(f"{checks.__name__}.lesson") and n[0].islower()}
    assert "CheckResult" in dir(checks)
    assert public == set(checks.EXERCISES), "declare every check (harness.declare) at the bottom of its lesson module"
    assert lu.checks is checks and torch  # the notebooks call lu.checks.<name>


def test_use_returns_the_students_function_only_after_its_check_passed(capsys):
    def speed(a, b):
        return CORRECT["speedup"](a, b)

    ref = lu.measure.speedup  # called like the student's function (use() refuses one that is not)
    assert checks.use(speed, ref) is ref  # never checked
    assert "has not passed its check" in capsys.readouterr().out
    assert checks.speedup(speed)
    assert checks.use(speed, ref) is speed
    assert not checks.speedup(_not_done)
    assert checks.use(_not_done, ref) is ref
    with pytest.raises(TypeError, match="reference"):
        checks.use(speed, 3)


# --- graded mode, time limits, unusable results, inputs changed in place ------------------------------------------

def test_graded_mode_is_on_while_nbgrader_executes(monkeypatch):
    monkeypatch.setenv(checks.NBGRADER_ENV, "autograde")  # what nbgrader 0.9's autograde sets in the kernel
    with pytest.raises(checks.CheckFailed, match="not implemented"):
        checks.speedup(_not_done)
    monkeypatch.setenv(checks.NBGRADER_ENV, "validate")  # what `nbgrader validate` (the Validate button) sets
    with pytest.raises(checks.CheckFailed):
        checks.weight_bytes(WRONG["weight_bytes"][0])
    assert checks.speedup(CORRECT["speedup"])  # a right answer still passes quietly
    monkeypatch.setenv(checks.STRICT_ENV, "0")  # an explicit 0 wins
    assert not checks.speedup(_not_done)
    monkeypatch.delenv(checks.NBGRADER_ENV)
    monkeypatch.delenv(checks.STRICT_ENV)
    assert not checks.speedup(_not_done)  # interactive: feedback only


def _forever(*_args):
    while True:
        pass


def test_a_function_that_never_returns_is_given_up_on(monkeypatch, capsys):
    monkeypatch.setattr(checks.harness, "CASE_TIMEOUT_S", 0.3)
    assert not checks.accuracy(_forever)
    out = capsys.readouterr().out
    assert "did not return within 0.3 s" in out and "Hint:" in out
    assert checks.accuracy(CORRECT["accuracy"])  # the timer is gone: a later check runs normally


def test_the_time_limit_also_works_outside_the_main_thread(monkeypatch, capsys):
    import threading

    monkeypatch.setattr(checks.harness, "CASE_TIMEOUT_S", 0.3)
    box = {}
    worker = threading.Thread(target=lambda: box.update(result=checks.speedup(lambda a, b: time.sleep(5))))
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and not box["result"]
    assert "did not return within" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(CORRECT))
def test_numpy_and_meta_results_are_feedback_not_a_crash(name, capsys):
    import numpy as np

    for returned in (np.zeros((3, 2)), np.float64("nan"), torch.empty(3, 2, device="meta"),
                     (torch.empty(2, device="meta"), torch.empty(2, device="meta")), [np.ones(2), np.ones(2)]):
        result = getattr(checks, name)(lambda *_a, r=returned: r)
        assert result.passed is False
        assert "❌" in capsys.readouterr().out


TENSOR_CHECKS = ["xor_solved", "imp_round", "snip_mask", "magnitude_mask", "quantize_dequantize", "low_rank",
                 "quantize_groups", "pack_nibbles", "kivi_quantize", "wanda_mask", "smooth_scales", "awq_scales"]


def _reshaped(reference, change):
    """The correct answer with every returned tensor changed by ``change``; ``given`` lists the shapes returned."""
    given = []

    def fn(*args):
        out = reference(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        changed = [change(o) if torch.is_tensor(o) else o for o in outs]
        given.extend(tuple(o.shape) for o in changed if torch.is_tensor(o))
        return type(out)(changed) if isinstance(out, (tuple, list)) else changed[0]

    return fn, given


@pytest.mark.parametrize("change", [lambda t: t.reshape(1, -1), lambda t: t[:1], lambda t: t.unsqueeze(0),
                                    lambda t: t.flatten()[:0]], ids=["flat-row", "first-row", "extra-dim", "empty"])
@pytest.mark.parametrize("name", TENSOR_CHECKS)
def test_a_result_of_the_wrong_shape_gets_a_cross_naming_the_shapes(name, change, capsys):
    """Never broadcast, never a traceback: a wrong shape is a ❌ whose text names the shape given and the expected
    one."""
    fn, given = _reshaped(CORRECT[name], change)
    result = getattr(checks, name)(fn)
    out = capsys.readouterr().out
    assert result.passed is False and "❌" in out and "could not compare" not in out, out
    assert "shape" in out or " should be (" in out, out
    assert str(given[-1]) in out, (given, out)  # the shape returned in the case that failed


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.int32, torch.complex64])
def test_a_result_of_another_dtype_is_compared_or_named_never_uncomparable(dtype, capsys):
    """imp_round used to answer "the check could not compare your result (Half did not match Float)"."""
    for name in TENSOR_CHECKS:
        fn, _ = _reshaped(CORRECT[name], lambda t: t.to(dtype))
        getattr(checks, name)(fn)
        out = capsys.readouterr().out
        assert "❌" in out or "✅" in out
        assert "could not compare" not in out, out
    checks.imp_round(_reshaped(CORRECT["imp_round"], lambda t: t if t.dtype == torch.bool else t.int())[0])
    assert "rewound_weights should be float weights" in capsys.readouterr().out


def test_meta_and_numpy_messages_say_what_to_return(capsys):
    checks.quantize_dequantize(lambda x, *_: torch.empty_like(x, device="meta"))
    assert "'meta' device" in capsys.readouterr().out
    checks.symmetric_scales(lambda w, bits: (2 * w.abs().amax(dim=1) / (2**bits - 1)).numpy())
    assert "numpy array" in capsys.readouterr().out


def test_changing_the_input_in_place_cannot_make_a_wrong_answer_pass(capsys):
    def zero_everything(model):  # makes the model 100% sparse, then reports it
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return 1.0

    assert not checks.matrix_sparsity(zero_everything)

    def overwrite_labels(logits, labels):  # makes every prediction "right"
        labels.copy_(logits.argmax(-1))
        return 1.0

    assert not checks.accuracy(overwrite_labels)

    def flatten_singular_values(s, energy):
        s.fill_(1.0)
        return CORRECT["effective_rank"](s, energy)

    assert not checks.effective_rank(flatten_singular_values)
    capsys.readouterr()


@pytest.mark.parametrize("call", [
    lambda: lu.memory.megabytes(-1, 4), lambda: lu.memory.megabytes(10, 0), lambda: lu.memory.weight_bytes(10, 0),
    lambda: lu.measure.accuracy(torch.zeros(3), torch.zeros(3)),
    lambda: lu.measure.accuracy(torch.zeros(3, 2), torch.zeros(4)), lambda: lu.measure.speedup(1.0, 0),
    lambda: lu.measure.embedding_share(torch.nn.ReLU()), lambda: lu.prune.magnitude_mask(torch.ones(3, 3), 1.5),
    lambda: lu.memory.csr_nbytes(2, 2, 5, 4, 4), lambda: lu.memory.csr_nbytes(2, 2, -1, 4, 4),
    lambda: lu.prune.sparsity_by_kind({}), lambda: lu.prune.sparsity_by_kind({"layer.0.query": 1.5}),
    lambda: lu.surgery.predicted_speedup(1.2, 0.5), lambda: lu.surgery.predicted_speedup(1.0, 0.0),
    lambda: lu.heads.predicted_heads_speedup(384, 1536, 64, 1.5), lambda: lu.heads.head_flop_share(0, 1536, 64),
    lambda: lu.quantize.quantize_dequantize(torch.ones(2), 0.0, 0, 8),
    lambda: lu.quantize.quantize_dequantize(torch.ones(2), 0.1, 300, 8),
    lambda: lu.quantize.quantize_dequantize(torch.ones(2), 0.1, 1.5, 8),
    lambda: lu.lottery.prune_and_rewind(torch.ones(2, 2), torch.ones(2, 3), torch.ones(2, 2, dtype=torch.bool), 0.2),
    lambda: lu.lottery.global_snip_masks([torch.ones(2)], [], 0.5),
    lambda: lu.lottery.global_snip_masks([torch.ones(2)], [torch.ones(2)], 0.0),
    lambda: lu.lottery.paired_verdict([0.5, 0.6], [0.5]), lambda: lu.lottery.paired_verdict([[0.5]], [[0.5]]),
])
def test_references_reject_bad_input_with_a_clear_error(call):
    with pytest.raises(ValueError, match="must"):
        call()


def test_use_announces_the_fallback_once_per_cell_run_even_in_a_loop(capsys):
    def mine(a, b):
        raise NotImplementedError()

    checks.speedup(mine)
    capsys.readouterr()
    assert [checks.use(mine, lu.measure.speedup)(4.0, 2.0) for _ in range(3)] == [2.0, 2.0, 2.0]
    out = capsys.readouterr().out
    assert out.count("has not passed its check") == 1 and "`lecture_utils.measure.speedup`" in out


def test_a_graded_failure_shows_the_verdict_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    with pytest.raises(checks.CheckFailed) as info:
        checks.weight_bytes(_not_done)
    assert info.value._render_traceback_() == ["❌ CheckFailed: weight_bytes: hidden case 1 of 5: not implemented yet: "
                                               "replace `raise NotImplementedError()` with your code."]


def test_the_harness_docstring_examples_run():
    result = doctest.testmod(checks.harness)
    assert result.attempted >= 1 and result.failed == 0


def test_a_prediction_check_needs_the_measurement_and_explains_the_gap(monkeypatch, measured, capsys):
    monkeypatch.setattr(lu.results, "_recorded", {})
    assert not checks.predicted_int8_mb(CORRECT["predicted_int8_mb"])
    assert "has not been measured yet" in capsys.readouterr().out
    monkeypatch.setattr(lu.results, "_recorded", measured)
    assert checks.predicted_int8_mb(CORRECT["predicted_int8_mb"])
    assert "measured 58.63 MB" in capsys.readouterr().out
    assert not checks.predicted_int8_mb(WRONG["predicted_int8_mb"][0])
    assert "only the Linear layers' weight matrices" in capsys.readouterr().out
    assert not checks.predicted_cache_bytes(WRONG["predicted_cache_bytes"][0])
    assert "grouped-query attention" in capsys.readouterr().out


def test_use_refuses_a_reference_that_cannot_be_called_like_the_students_function():
    def wanda_mask(w, x_norm, sparsity):
        raise NotImplementedError()

    with pytest.raises(TypeError, match=r"use\(wanda_mask, kv_cache_bytes\).*takes wanda_mask\(w, x_norm, "
                                        r"sparsity\)"):
        lu.checks.use(wanda_mask, lu.llm.kv_cache_bytes)  # five required arguments: another exercise's reference
    assert lu.checks.use(wanda_mask, lu.llm.wanda_mask) is lu.llm.wanda_mask


def test_use_without_a_reference_falls_back_on_the_declared_one(capsys):
    def csr_nbytes(rows, cols, nnz, value_bytes, index_bytes):
        raise NotImplementedError()

    assert checks.use(csr_nbytes) is checks.exercise("csr_nbytes").reference is lu.memory.csr_nbytes
    assert "lecture_utils.memory.csr_nbytes" in capsys.readouterr().out

    def my_own_name(rows, cols, nnz, value_bytes, index_bytes):
        raise NotImplementedError()

    with pytest.raises(TypeError, match="no exercise is called 'my_own_name'.*pass the reference"):
        checks.use(my_own_name)
    with pytest.raises(KeyError, match="no exercise is called 'nope'"):
        checks.exercise("nope")


def test_a_declaration_needs_every_part_and_a_new_name():
    ex = checks.exercise("speedup")
    with pytest.raises(ValueError, match="declared twice"):
        checks.harness.declare("00", ex.check, ex.reference, ex.wrong, ex.graded_wrong)
    with pytest.raises(ValueError, match="at least one wrong answer"):
        checks.Exercise("x", "00", ex.check, ex.reference, (), "return 0")
    assert list(checks.EXERCISES) == sorted(checks.EXERCISES, key=lambda n: checks.EXERCISES[n].lesson)
