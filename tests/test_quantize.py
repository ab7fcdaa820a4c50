"""Quantization helpers against PyTorch's own quantizer, plus the invariants the lesson relies on."""

import copy
import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

import lecture_utils as lu
from lecture_utils import quantize as Q


def _weights(seed=0, shape=(16, 32)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.1 + 0.02


def test_affine_per_tensor_equals_torch_quint8():
    x = _weights()
    scale, zp = Q.tensor_qparams(x, bits=8, scheme="affine")
    obs = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    obs(x)
    ref_scale, ref_zp = obs.calculate_qparams()
    assert scale.item() == pytest.approx(ref_scale.item(), rel=1e-6) and zp.item() == ref_zp.item()
    ours = Q.quantize(x, scale, zp, bits=8, signed=False)
    ref = torch.quantize_per_tensor(x, ref_scale.item(), int(ref_zp.item()), torch.quint8)
    assert torch.equal(ours, ref.int_repr().to(torch.int64))
    assert torch.allclose(Q.dequantize(ours, scale, zp), ref.dequantize())


def _per_channel_reference(x, dtype, qscheme):
    """PyTorch's own per-channel (row) scale and zero point for ``x``."""
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=dtype, qscheme=qscheme)
    obs(x)
    return obs.calculate_qparams()


def test_symmetric_per_channel_equals_torch_qint8():
    x = _weights(1)
    scale, zp = Q.tensor_qparams(x, bits=8, scheme="symmetric", per_channel=True)
    ref_scale, _ = _per_channel_reference(x, torch.qint8, torch.per_channel_symmetric)
    assert torch.allclose(scale.flatten(), ref_scale.float(), rtol=1e-6) and (zp.flatten() == 0).all()
    ours = Q.quantize(x, scale, zp, bits=8, signed=True)
    ref = torch.quantize_per_channel(x, scale.flatten().double(), zp.flatten(), axis=0, dtype=torch.qint8)
    assert torch.equal(ours, ref.int_repr().to(torch.int64))


def test_affine_per_channel_equals_torch():
    x = _weights(2)
    scale, zp = Q.tensor_qparams(x, bits=8, scheme="affine", per_channel=True)
    ref_scale, ref_zp = _per_channel_reference(x, torch.quint8, torch.per_channel_affine)
    assert torch.allclose(scale.flatten(), ref_scale.float(), rtol=1e-6)
    assert torch.equal(zp.flatten(), ref_zp.to(torch.int64))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 16), scheme=st.sampled_from(Q.SCHEMES),
       per_channel=st.booleans(), spread=st.floats(1e-3, 1e3), offset=st.floats(-10, 10))
def test_roundtrip_error_is_at_most_half_a_step(seed, bits, scheme, per_channel, spread, offset):
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(seed)) * spread + offset
    scale, zp = Q.tensor_qparams(x, bits, scheme, per_channel)
    signed = scheme == "symmetric"
    err = (Q.dequantize(Q.quantize(x, scale, zp, bits, signed), scale, zp) - x).abs()
    assert (err <= scale / 2 * (1 + 1e-4) + 1e-6 * x.abs()).all()


def test_constant_and_zero_tensors_are_documented_behaviour():
    for value in (0.0, 5.0, -3.0):
        x = torch.full((4, 4), value)
        scale, zp = Q.tensor_qparams(x, bits=8, scheme="affine")
        assert scale.item() > 0  # never a division by zero
        back = Q.dequantize(Q.quantize(x, scale, zp, 8), scale, zp)
        assert torch.allclose(back, x, atol=scale.item() / 2)


@pytest.mark.parametrize("bits", [0, 1, 17, 4.0])
def test_bits_out_of_range_are_refused(bits):
    with pytest.raises(ValueError, match="from 2 to 16"):
        Q.qrange(bits, signed=True)
    with pytest.raises(ValueError):
        Q.fake_quantize(torch.randn(3, 3), bits=bits)


def test_bad_scheme_and_shapes():
    with pytest.raises(ValueError, match="Allowed: affine, symmetric"):
        Q.qparams(-1.0, 1.0, scheme="log")
    with pytest.raises(ValueError, match="rows"):
        Q.tensor_qparams(torch.randn(5), per_channel=True)


def test_ste_gradient_is_one_inside_and_zero_outside_the_range():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0], requires_grad=True)
    scale, zp = torch.tensor(0.25), torch.tensor(0)
    qmin, qmax = Q.qrange(3, signed=True)  # [-4, 3] → representable [-1.0, 0.75]
    y = Q._FakeQuantSTE.apply(x, scale, zp, qmin, qmax)
    assert torch.allclose(y, torch.tensor([-1.0, -0.5, 0.0, 0.25, 0.75]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def test_fake_quantize_linears_matches_frozen_weights_and_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    fq = Q.fake_quantize_linears(model, bits=4)
    assert all(isinstance(m, Q.FakeQuantLinear) for m in (fq[0], fq[2]))
    assert isinstance(model[0], nn.Linear) and not isinstance(model[0], Q.FakeQuantLinear)  # original untouched
    x = torch.randn(5, 8)
    frozen = Q.freeze_fake_quant(fq)
    assert type(frozen[0]) is nn.Linear
    assert torch.allclose(fq(x), frozen(x), atol=1e-6)
    levels = {round(v, 6) for v in (frozen[0].weight[0] / Q.tensor_qparams(
        fq[0].weight, 4, "symmetric", per_channel=True)[0][0]).tolist()}
    assert len(levels) <= 16  # 4 bits: at most 16 distinct values per row
    loss = nn.functional.cross_entropy(fq(x), torch.tensor([0, 1, 0, 1, 0]))
    loss.backward()
    assert fq[0].weight.grad is not None and fq[0].weight.grad.abs().sum() > 0  # the STE lets gradients through
    with pytest.raises(ValueError, match="no nn.Linear"):
        Q.fake_quantize_linears(nn.Sequential(nn.ReLU()), bits=4)


def test_dynamic_int8_shrinks_and_stays_close(tiny_bert):
    batch = {"input_ids": torch.randint(0, 100, (3, 8)), "attention_mask": torch.ones(3, 8, dtype=torch.long),
             "token_type_ids": torch.zeros(3, 8, dtype=torch.long)}  # 8-bit embeddings need contiguous ids
    q_lin = Q.dynamic_int8(tiny_bert)
    q_all = Q.dynamic_int8(tiny_bert, embeddings=True)
    assert lu.measure.size_mb(q_all) < lu.measure.size_mb(q_lin) < lu.measure.size_mb(tiny_bert)
    with torch.no_grad():
        ref = tiny_bert(**batch).logits
        assert torch.allclose(q_lin(**batch).logits, ref, atol=0.05)
        assert torch.allclose(q_all(**batch).logits, ref, atol=0.05)
    assert isinstance(tiny_bert.classifier, nn.Linear)  # the original is not modified


def test_roundtrip_error_report_shrinks_with_bits():
    w = _weights(3)
    errs = [Q.roundtrip_error(w, b, "symmetric", per_channel=True).mse for b in (2, 4, 8)]
    assert errs[0] > errs[1] > errs[2]
    tensor = Q.roundtrip_error(w, 4, "symmetric", per_channel=False).mse
    assert Q.roundtrip_error(w, 4, "symmetric", per_channel=True).mse <= tensor


def test_compare_latency_times_every_model(tiny_bert):
    batch = {"input_ids": torch.randint(0, 100, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    res = lu.measure.compare_latency({"a": tiny_bert, "b": Q.dynamic_int8(tiny_bert)}, batch, repeats=3)
    assert set(res) == {"a", "b"} and all(r.median_ms > 0 and r.batch_size == 2 for r in res.values())


# --------------------------------------------------------------------------------------------------------------
# Bad input: no silent wrong scales or integers
# --------------------------------------------------------------------------------------------------------------

@given(st.floats(-100, 100), st.floats(0.001, 100))
def test_x_min_above_x_max_is_refused_before_the_range_is_widened(x, gap):
    # both positive or both negative used to pass: widening to include 0 hid the swap
    with pytest.raises(ValueError, match="x_min must not exceed x_max"):
        Q.qparams(x + gap, x)


@given(st.sampled_from([float("nan"), float("inf"), -float("inf")]), st.booleans())
def test_non_finite_ranges_and_tensors_are_refused(bad, per_channel):
    with pytest.raises(ValueError, match="finite"):
        Q.qparams(bad, 1.0)
    x = torch.randn(4, 3)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="x must be finite"):
        Q.tensor_qparams(x, per_channel=per_channel)
    with pytest.raises(ValueError, match="x must be finite"):
        Q.fake_quantize(x)
    with pytest.raises(ValueError, match="x must be finite"):
        Q.quantize(x, 0.1, 0)


@given(st.sampled_from([0.0, -0.1, float("nan"), float("inf")]))
def test_quantize_refuses_a_scale_that_is_not_positive_and_finite(scale):
    with pytest.raises(ValueError, match="scale must be"):
        Q.quantize(torch.randn(5), scale, 0)
    with pytest.raises(ValueError, match="scale must be"):
        Q.quantize(torch.randn(5), torch.tensor([scale]), 0)
    with pytest.raises(ValueError, match="scale must be"):
        Q.dequantize(torch.arange(5), scale, 0)


@given(st.integers(8, 10), st.booleans(), st.integers(1, 300))
def test_zero_points_outside_the_integer_range_are_refused(bits, signed, beyond):
    qmin, qmax = Q.qrange(bits, signed)
    for zp in (qmin - beyond, qmax + beyond):
        with pytest.raises(ValueError, match=rf"zero_point must lie in the integer range \[{qmin}, {qmax}\]"):
            Q.quantize(torch.randn(5), 0.1, zp, bits, signed)
        with pytest.raises(ValueError, match="zero_point must lie"):
            Q.quantize(torch.randn(5), 0.1, torch.tensor(zp), bits, signed)


def test_fractional_zero_points_levels_and_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="zero_point must hold whole numbers"):
        Q.quantize(torch.randn(5), 0.1, 3.5)
    with pytest.raises(ValueError, match="q must hold integer levels"):
        Q.dequantize(torch.tensor([0.5, 1.0]), 0.1, 0)
    with pytest.raises(ValueError, match="does not broadcast to the tensor's shape"):
        Q.quantize(torch.randn(4, 3), torch.full((3, 1), 0.1), 0)
    with pytest.raises(ValueError, match="does not broadcast"):
        Q.quantize(torch.randn(4), torch.full((2, 4), 0.1), 0)  # would silently return a (2, 4) tensor
    with pytest.raises(ValueError, match="x_min and x_max must have one shape"):
        Q.qparams(torch.zeros(3), torch.ones(4))
    with pytest.raises(ValueError, match="x must not be empty"):
        Q.tensor_qparams(torch.zeros(0))


def test_numpy_bits_and_numbers_are_accepted_with_the_same_result():
    np = pytest.importorskip("numpy")
    x = torch.randn(6, 4)
    s, z = Q.tensor_qparams(x, np.int64(4), per_channel=True)
    s2, z2 = Q.tensor_qparams(x, 4, per_channel=True)
    assert torch.equal(s, s2) and torch.equal(z, z2)
    assert torch.equal(Q.quantize(x, np.float32(0.1), np.int64(3)), Q.quantize(x, 0.1, 3))
    assert Q.qrange(np.int32(8), True) == (-128, 127)
    with pytest.raises(TypeError, match="signed must be True or False"):
        Q.qrange(8, "yes")
    with pytest.raises(ValueError, match="bits must be an int from 2 to 16"):
        Q.qrange(np.int64(1), True)


def test_model_level_arguments():
    model = lu.models.mlp([4, 8, 2])
    with pytest.raises(TypeError, match="skip must be a list of strings, got the single string"):
        Q.fake_quantize_linears(model, 4, skip="classifier")  # used to skip every name containing c, l, a, ...
    with pytest.raises(ValueError, match="no FakeQuantLinear layers to freeze"):
        Q.freeze_fake_quant(model)
    with pytest.raises(TypeError, match="embeddings must be True or False"):
        Q.dynamic_int8(model, embeddings="no")
    with pytest.raises(ValueError, match="no nn.Linear layers to quantize"):
        Q.dynamic_int8(Q.dynamic_int8(model))
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        Q.FakeQuantLinear(0, 4)
    with pytest.raises(TypeError, match="floating-point"):
        Q.fake_quantize(torch.arange(6).reshape(2, 3))


def test_docstring_examples_run():
    result = doctest.testmod(Q)
    assert result.attempted >= 5 and result.failed == 0


def test_dynamic_int8_halves_reproduce_torch_ao_and_refuse_what_they_cannot_do():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    int8 = Q.dynamic_int8(model)
    weights = Q.dynamic_int8_weights_(copy.deepcopy(model), int8)
    for name in ("0", "2"):  # the stored integers times their scale, exactly
        assert torch.equal(weights.get_submodule(name).weight, int8.get_submodule(name).weight().dequantize())
    x = torch.randn(8, 16) * torch.linspace(0.1, 4, 16)  # channels of very different size
    with torch.no_grad():
        want = int8(x)
        both = Q.round_linear_inputs_(weights, Q.DYNAMIC_INT8_ACTIVATION_BITS)(x)
        rounded = Q.round_linear_inputs_(copy.deepcopy(model), 8)
        first = rounded[0](x)  # the hook rounds the input the layer sees
        assert torch.allclose(first, model[0](Q.fake_quantize(x, 8, "affine", per_channel=False)))
    # both halves together reproduce torch.ao's kernels (float rounding apart); 8-bit inputs or float weights do not
    scale = want.abs().max()
    assert (both - want).abs().max() < 1e-4 * scale
    with torch.no_grad():
        eight = Q.round_linear_inputs_(Q.dynamic_int8_weights_(copy.deepcopy(model), int8), 8)(x)
        assert (eight - want).abs().max() > 1e-3 * scale and (model(x) - want).abs().max() > 1e-3 * scale
    with pytest.raises(ValueError, match="no dynamic int8 layer"):
        Q.dynamic_int8_weights_(nn.Sequential(nn.Linear(16, 4)),
                                Q.dynamic_int8(nn.Sequential(nn.ReLU(), nn.Linear(16, 4))))
    with pytest.raises(ValueError, match="no nn.Linear"):
        Q.round_linear_inputs_(nn.ReLU())
    with pytest.raises(ValueError, match="bits"):
        Q.round_linear_inputs_(copy.deepcopy(model), 0)
    with pytest.raises(TypeError, match="quantized"):
        Q.dynamic_int8_weights_(copy.deepcopy(model), "int8")
