"""The shared argument checks: what they accept, what they refuse, and what their messages say."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lecture_utils import validate as check


@given(st.integers(-10**6, 10**6))
def test_integer_accepts_python_numpy_and_tensor_ints(n):
    for value in (n, np.int64(n), np.int32(max(min(n, 2**31 - 1), -2**31)), torch.tensor(n)):
        got = check.integer(value, "k")
        assert type(got) is int and got == int(value)


@pytest.mark.parametrize("bad", [2.0, 2.5, True, "3", None, [3], torch.tensor([1, 2]), float("nan")])
def test_integer_refuses_what_is_not_an_int(bad):
    with pytest.raises(TypeError, match=r"k must be an int .*got") as info:
        check.integer(bad, "k", 0, 9)
    assert isinstance(info.value, ValueError)  # BadType is both: `except ValueError` catches every bad argument


@given(st.integers(-50, 50))
def test_integer_range_message_names_parameter_value_and_range(n):
    if 0 <= n <= 9:
        assert check.integer(n, "layer", 0, 9) == n
    else:
        with pytest.raises(ValueError, match=rf"layer must be an int from 0 to 9, got {n}"):
            check.integer(n, "layer", 0, 9)


@given(st.sampled_from([math.nan, math.inf, -math.inf]))
def test_real_refuses_nan_and_infinity(x):
    with pytest.raises(ValueError, match="lr must be a finite number"):
        check.real(x, "lr")
    with pytest.raises(ValueError):
        check.real(np.float32(x), "lr")


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_fraction_accepts_exactly_the_half_open_unit_interval(x):
    if 0 <= x < 1:
        assert check.fraction(x, "sparsity") == pytest.approx(x)
        assert check.fraction(np.float32(x), "sparsity") == pytest.approx(x)
    else:
        with pytest.raises(ValueError, match=r"sparsity must be a finite number in \[0, 1\)"):
            check.fraction(x, "sparsity")


@pytest.mark.parametrize("bad", ["abc", {"a": 1}, 3, iter([1, 2])])
def test_items_refuses_strings_dicts_numbers_and_one_pass_iterators(bad):
    with pytest.raises(TypeError, match="xs must be a list"):
        check.items(bad, "xs")


def test_items_accepts_lists_tuples_ranges_and_1d_tensors():
    assert check.items((1, 2), "xs") == [1, 2]
    assert check.items(range(3), "xs") == [0, 1, 2]
    assert check.items(torch.tensor([4, 5]), "xs") == [4, 5]
    assert check.items(np.array([6]), "xs") == [6]
    with pytest.raises(ValueError, match="must not be empty"):
        check.items([], "xs")


def test_strings_refuses_a_single_string_and_non_strings():
    with pytest.raises(TypeError, match=r"single string 'a review'.*\['a review'\]"):
        check.strings("a review", "texts")
    with pytest.raises(TypeError, match="list of strings"):
        check.strings(["ok", 3], "texts")
    assert check.strings(("a", "b"), "texts") == ["a", "b"]


def test_tensor_checks_kind_dtype_dims_values():
    with pytest.raises(TypeError, match="x must be a torch tensor.*torch.as_tensor"):
        check.tensor(np.zeros(3), "x")
    with pytest.raises(TypeError, match="floating-point"):
        check.tensor(torch.arange(3), "x", floating=True)
    with pytest.raises(ValueError, match="must be 2-D, got shape"):
        check.tensor(torch.zeros(3), "x", dims=(2,))
    with pytest.raises(ValueError, match="1 of its 3 values are NaN or infinite"):
        check.tensor(torch.tensor([0.0, float("nan"), 1.0]), "x")
    with pytest.raises(ValueError, match="meta tensor"):
        check.tensor(torch.zeros(2, device="meta"), "x")
    with pytest.raises(ValueError, match="must not be empty"):
        check.tensor(torch.zeros(0), "x", non_empty=True)


def test_loader_refuses_empty_and_single_batches():
    with pytest.raises(ValueError, match="loader is empty"):
        check.loader([])
    with pytest.raises(TypeError, match=r"wrap it as \[batch\]"):
        check.loader({"input_ids": torch.zeros(1, 2)})
    with pytest.raises(TypeError):
        check.loader("batches")
    gen = (b for b in [1])
    assert check.loader(gen) is gen  # a generator cannot be checked without using it up


def test_choice_flag_device_and_scale():
    with pytest.raises(ValueError, match=r"got 'fp8'\. Allowed: fp32, int8"):
        check.choice("fp8", "dtype", ["fp32", "int8"])
    with pytest.raises(ValueError, match="Allowed"):
        check.choice(["fp32"], "dtype", ["fp32"])  # unhashable: refused, not a crash
    with pytest.raises(TypeError, match="True or False"):
        check.flag("no", "embeddings")
    assert check.flag(np.bool_(True), "embeddings") is True
    with pytest.raises(ValueError, match="device name"):
        check.device("gpu")
    with pytest.raises(TypeError, match="scale must be one of"):
        check.scale(3)
    assert check.scale("smoke").name == "smoke"


def test_result_checks_what_a_students_function_returned():
    def mine(w):
        return w

    good = torch.ones(2, 3)
    assert check.result(good, mine, (2, 3)) is good
    with pytest.raises(ValueError, match=r"`.*mine` must return the weight of shape \(2, 3\), but it returned shape "
                                         r"\(1, 3\) \(results are never broadcast\)"):
        check.result(torch.ones(1, 3), mine, (2, 3), what="the weight")
    with pytest.raises(TypeError, match="mine.*returned None"):
        check.result(None, mine, (2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        check.result(torch.ones(2, 3, dtype=torch.int64), mine, (2, 3))
    with pytest.raises(ValueError, match="1 of its 6 values are NaN"):
        check.result(torch.tensor([[1.0, 2, math.nan], [1, 2, 3]]), mine, (2, 3))
    with pytest.raises(ValueError, match="> 0"):
        check.result(torch.zeros(3), mine, (3,), positive=True)
    assert check.result(torch.tensor([0, 1, 1]), mine, (3,), mask=True).dtype == torch.bool
    with pytest.raises(ValueError, match="True/False"):
        check.result(torch.tensor([0.0, 0.5, 1.0]), mine, (3,), mask=True)


def test_linear_model_refuses_conv1d_layers_by_name():
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    plain = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert check.linear_model(plain, "helper") is plain and check.conv1d_layers(plain) == []
    mixed = nn.Sequential(Conv1D(4, 3), nn.Linear(4, 2))
    assert check.conv1d_layers(mixed) == ["0"]
    with pytest.raises(ValueError, match=r"my_helper acts on nn.Linear layers.*1 of its linear layers as "
                                         r"transformers Conv1D \(0; GPT-2"):
        check.linear_model(mixed, "my_helper")
    with pytest.raises(TypeError, match="nn.Module"):
        check.linear_model("model", "my_helper")
