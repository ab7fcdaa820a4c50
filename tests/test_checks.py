"""Every check passes a correct answer, fails wrong ones with feedback, and never crashes."""

import pytest
import torch

import lecture_utils as lu
from lecture_utils import checks


def _not_done(*_args):
    raise NotImplementedError()


def _boom(*_args):
    raise RuntimeError("student bug")


CORRECT = {
    "accuracy": lambda logits, labels: (logits.argmax(-1) == labels).float().mean().item(),
    "predicted_size_mb": lambda n, b: n * b / 1e6,
    "speedup": lambda base, var: base / var,
    "weight_bytes": lambda n, bits: n * bits / 8,
    "adam_training_bytes": lambda n: 16 * n,
    "embedding_share": lambda m: sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n)
    / sum(p.numel() for p in m.parameters()),
    "affine_qparams": lambda lo, hi, bits: _ref_affine(lo, hi, bits),
    "quantize_dequantize": lambda x, s, z, bits: (torch.clamp(torch.round(x / s) + z, 0, 2**bits - 1) - z) * s,
    "symmetric_scales": lambda w, bits: 2 * w.abs().amax(dim=1) / (2**bits - 1),
}


def _ref_affine(lo, hi, bits):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (2**bits - 1)
    return scale, int(0 - round(lo / scale))


WRONG = {
    "accuracy": [lambda logits, labels: (logits.argmax(-1) == labels).sum().item(),  # a count, not a fraction
                 lambda logits, labels: (logits.argmin(-1) == labels).float().mean().item(),
                 lambda logits, labels: (logits.argmax(-1) == labels).float()],  # not reduced
    "predicted_size_mb": [lambda n, b: n * b / 2**20, lambda n, b: n * b],
    "speedup": [lambda base, var: var / base, lambda base, var: base - var],
    "weight_bytes": [lambda n, bits: n * bits, lambda n, bits: n * 4],
    "adam_training_bytes": [lambda n: 4 * n, lambda n: 12 * n],
    "embedding_share": [lambda m: m.bert.embeddings.word_embeddings.weight.numel()
                        / sum(p.numel() for p in m.parameters()),
                        lambda m: 100 * sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n)
                        / sum(p.numel() for p in m.parameters())],
    "affine_qparams": [lambda lo, hi, bits: ((hi - lo) / (2**bits - 1), 0),  # range not widened, no zero point
                       lambda lo, hi, bits: ((hi - lo) / 2**bits, round(-lo * 2**bits / (hi - lo)))],
    "quantize_dequantize": [lambda x, s, z, bits: torch.round(x / s) + z,  # never dequantized
                            lambda x, s, z, bits: (torch.round(x / s) + z - z) * s,  # no clamp
                            lambda x, s, z, bits: x],
    "symmetric_scales": [lambda w, bits: 2 * w.abs().max() / (2**bits - 1),  # per tensor
                         lambda w, bits: w.abs().amax(dim=1) / (2**bits - 1),
                         lambda w, bits: 2 * w.abs().amax(dim=0) / (2**bits - 1)],  # per column
}


@pytest.fixture(autouse=True)
def lenient(monkeypatch):
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


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv(checks.STRICT_ENV, "1")
    with pytest.raises(checks.CheckFailed):
        checks.speedup(_not_done)
    assert checks.speedup(CORRECT["speedup"])


def test_every_public_check_is_covered():
    public = {n for n in dir(checks) if not n.startswith("_") and callable(getattr(checks, n))
              and getattr(checks, n).__module__ == checks.__name__ and n[0].islower()}
    assert "CheckResult" in dir(checks)
    assert public == set(CORRECT), "add new checks to CORRECT and WRONG"
    assert lu.checks is checks and torch  # the notebooks call lu.checks.<name>
