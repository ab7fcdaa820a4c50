import doctest

import pytest
import torch

from lecture_utils import memory


def test_bytes_per_parameter():
    assert memory.stored_bytes(1000, "fp32") == 4000
    assert memory.stored_bytes(1000, "fp16") == 2000
    assert memory.stored_bytes(1000, "int8") == 1000
    assert memory.stored_bytes(1000, "int4") == 500


def test_sparsity_counts_only_nonzeros_and_is_validated():
    assert memory.stored_bytes(1000, "fp32", sparsity=0.9) == pytest.approx(400)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            memory.stored_bytes(1000, "fp32", sparsity=bad)


def test_training_memory_is_16_bytes_per_parameter_with_adam():
    assert memory.training_bytes(10, "fp32", "adam") == 160
    assert memory.training_bytes(10, "bf16", "adam") == 160  # 2 + 2 + 4 master + 8 states
    assert memory.training_bytes(10, "fp32", "sgd") == 80
    assert memory.training_bytes(10, "fp32", "momentum") == 120


def test_bad_inputs_say_what_is_allowed():
    with pytest.raises(ValueError, match="Allowed: fp32"):
        memory.stored_bytes(10, "fp8")
    with pytest.raises(ValueError, match="Allowed: sgd"):
        memory.training_bytes(10, "fp32", "lion")
    with pytest.raises(ValueError, match="int types"):
        memory.training_bytes(10, "int8")
    with pytest.raises(ValueError, match="non-negative"):
        memory.stored_bytes(-5)
    with pytest.raises(ValueError, match="mode"):
        memory.fits(10, 8, mode="serving")


def test_fits():
    seven_b = 7e9
    assert not memory.fits(seven_b, 8, "fp16").fits  # 14 GB
    assert memory.fits(seven_b, 8, "int4").fits  # 3.5 GB
    assert memory.fits(seven_b, 16, "fp16").needed_gb == pytest.approx(14)
    assert "does not fit" in memory.describe_fit(seven_b, 8, "fp16")


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.sampled_from([float("nan"), float("inf"), -1.0, True, "7e9", None]))
def test_non_finite_or_non_numeric_parameter_counts_are_refused(n):
    with pytest.raises(ValueError, match="n_params must be"):  # BadType is a ValueError too
        memory.stored_bytes(n)
    with pytest.raises(ValueError, match="n_params must be"):
        memory.fits(n, 16)


@given(st.integers(0, 10**12))
def test_numpy_parameter_counts_give_the_same_bytes(n):
    np = pytest.importorskip("numpy")
    assert memory.stored_bytes(np.int64(n), "fp16") == memory.stored_bytes(n, "fp16") == 2 * n
    assert memory.training_bytes(np.int64(n)) == memory.training_bytes(n)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: memory.fits(1e9, float("nan")), "device_gb must be a finite number > 0"),
    (lambda: memory.fits(1e9, 0), "device_gb must be"), (lambda: memory.fits(1e9, 16, mode="train"), "Allowed"),
    (lambda: memory.stored_bytes(1e9, ["fp32"]), "dtype must be one of"),
    (lambda: memory.stored_bytes(1e9, sparsity=float("nan")), "sparsity must be"),
    (lambda: memory.stored_bytes(1e9, sparsity=True), "sparsity must be"),
    (lambda: memory.training_bytes(1e9, optimizer=None), "optimizer must be one of"),
])
def test_other_bad_arguments_name_themselves(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_docstring_examples_run():
    result = doctest.testmod(memory)
    assert result.attempted >= 5 and result.failed == 0


def test_sparse_formats_are_smaller_than_dense_only_when_sparse():
    torch.manual_seed(0)
    w = torch.randn(64, 48)
    assert memory.csr_bytes(w, torch.int64) > memory.dense_bytes(w)  # dense data in CSR costs more
    w[torch.rand_like(w) < 0.9] = 0
    nnz = int((w != 0).sum())
    assert memory.csr_bytes(w) == nnz * 4 + nnz * 4 + 65 * 4
    assert memory.csr_bytes(w, torch.int64) == nnz * 4 + nnz * 8 + 65 * 8
    assert memory.csr_bytes(w) < memory.dense_bytes(w) / 3
    assert memory.compressed_bytes([w]) < memory.dense_bytes(w) / 2
    with pytest.raises(ValueError, match="2-D"):
        memory.csr_bytes(torch.zeros(3))
    with pytest.raises(ValueError, match="index_dtype"):
        memory.csr_bytes(torch.eye(3), torch.float32)
    with pytest.raises(ValueError, match="level must be an int from 0 to 9"):
        memory.compressed_bytes([torch.eye(3)], level=12)
    with pytest.raises(TypeError, match="weights must be a list of tensors"):
        memory.compressed_bytes(torch.eye(3).numpy())


def test_csr_bytes_equal_scipys_csr_arrays_and_the_formula():
    from scipy import sparse

    torch.manual_seed(1)
    for shape, density in (((64, 48), 0.1), ((7, 300), 0.5), ((5, 5), 0.0)):
        w = torch.randn(shape) * (torch.rand(shape) < density)
        ref = sparse.csr_matrix(w.numpy())  # float32 values, int32 indices and row pointers
        assert memory.csr_bytes(w) == ref.data.nbytes + ref.indices.nbytes + ref.indptr.nbytes
        assert memory.csr_bytes(w) == memory.csr_nbytes(*shape, int((w != 0).sum()), 4, 4)
