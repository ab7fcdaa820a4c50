"""Lottery-ticket helpers: exact prune counts, exact rewinding, masks that survive training, SNIP's top-k."""

import pytest
import torch

import lecture_utils as lu
from lecture_utils import lottery as lt


def small_mlp(seed=0):
    lu.seed_everything(seed)
    return lu.models.mlp([8, 20, 10, 3])


def test_masks_cover_weight_matrices_only():
    model = small_mlp()
    masks = lt.full_masks(model)
    assert set(masks) == {"0.weight", "2.weight", "4.weight"}
    assert all(m.dtype == torch.bool and m.all() for m in masks.values())
    assert lt.fraction_remaining(masks) == 1.0


def _counts(masks):
    return {name: int(m.sum()) for name, m in masks.items()}


def test_each_round_prunes_exactly_the_fraction_of_survivors_with_the_smallest_magnitude():
    model = small_mlp()
    masks = lt.full_masks(model)
    for _ in range(4):
        before = _counts(masks)
        new = lt.magnitude_masks(model, masks, 0.2)
        after = _counts(new)
        for name, n in before.items():
            assert after[name] == n - round(0.2 * n)
            assert not (new[name] & ~masks[name]).any()  # a pruned weight never comes back
            w = dict(model.named_parameters())[name].detach().abs()
            assert w[new[name]].min() >= w[masks[name] & ~new[name]].max()  # the smallest were removed
        masks = new
    total = sum(m.numel() for m in masks.values())
    assert lt.fraction_remaining(masks) == sum(_counts(masks).values()) / total
    assert abs(lt.fraction_remaining(masks) - 0.8**4) < 0.02


def test_zero_fraction_keeps_everything_and_bad_fractions_raise():
    model = small_mlp()
    masks = lt.full_masks(model)
    assert _counts(lt.magnitude_masks(model, masks, 0.0)) == _counts(masks)
    for bad in (1.0, -0.1, 1.5, "0.2", True):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            lt.magnitude_masks(model, masks, bad)
    with pytest.raises(ValueError, match="rounds"):
        lt.LotterySetup(rounds=-1)


def test_masks_must_match_the_model():
    model = small_mlp()
    masks = lt.full_masks(model)
    with pytest.raises(ValueError, match="cover"):
        lt.apply_masks_(model, {"0.weight": masks["0.weight"]})
    with pytest.raises(ValueError, match="shape"):
        lt.apply_masks_(model, {**masks, "0.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no weight matrices"):
        lt.full_masks(torch.nn.ReLU())


def test_imp_round_rewinds_survivors_to_their_saved_values_and_zeroes_the_rest():
    model = small_mlp()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # stands in for training
    masks = lt.imp_round(model, lt.full_masks(model), init, 0.2)
    state = model.state_dict()
    for name, m in masks.items():
        assert torch.equal(state[name][m], init[name][m])
        assert (state[name][~m] == 0).all()
    assert torch.equal(state["0.bias"], init["0.bias"])


def test_masked_weights_stay_zero_through_training():
    model = small_mlp()
    masks = lt.magnitude_masks(model, lt.full_masks(model), 0.5)
    lt.apply_masks_(model, masks)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lu.training.train(model, lt.TensorBatches(x, y, 16), max_steps=20, lr=1e-2, warmup=0.0, weight_decay=0.0,
                      after_step=lt.keep_masked(masks), progress=False)
    state = model.state_dict()
    for name, m in masks.items():
        assert (state[name][~m] == 0).all()
        assert not torch.equal(state[name][m], before[name][m])  # the survivors did train


def test_random_masks_keep_the_per_layer_counts_at_other_positions():
    model = small_mlp()
    masks = lt.magnitude_masks(model, lt.full_masks(model), 0.7)
    rand = lt.random_masks(masks, seed=1)
    assert _counts(rand) == _counts(masks)
    assert any(not torch.equal(rand[n], masks[n]) for n in masks)
    assert all(torch.equal(a, b) for a, b in zip(rand.values(), lt.random_masks(masks, seed=1).values(),
                                                 strict=True))


def test_snip_keeps_the_global_top_k_of_gradient_times_weight():
    model = small_mlp()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    scores = lt.snip_scores(model, (x, y))
    # by hand: gradients of the mean cross-entropy, times the weights
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [model[0].weight, model[2].weight, model[4].weight])
    hand = {n: (g * w).abs() for n, g, w in zip(["0.weight", "2.weight", "4.weight"], grads,
                                                [model[0].weight, model[2].weight, model[4].weight], strict=True)}
    for n in hand:
        assert torch.allclose(scores[n], hand[n])
    all_scores = torch.cat([hand[n].flatten() for n in hand])
    k = round(0.25 * all_scores.numel())
    masks = lt.snip_masks(scores, 0.25)
    kept = torch.cat([masks[n].flatten() for n in hand])
    assert int(kept.sum()) == k
    assert all_scores[kept].min() >= all_scores[~kept].max()
    assert all(p.grad is None for p in model.parameters())  # scoring leaves no gradients behind
    for bad in (0, 1.5, -1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            lt.snip_masks(scores, bad)


def test_tensor_batches_cover_every_example_once_per_pass():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    loader = lt.TensorBatches(x, y, 4, seed=0)
    assert len(loader) == 3
    seen = torch.cat([b[1] for b in loader])
    assert sorted(seen.tolist()) == list(range(10))
    with pytest.raises(ValueError):
        lt.TensorBatches(x, y[:5], 4)


def test_run_seed_on_a_tiny_problem_returns_every_method_at_every_round():
    gen = torch.Generator().manual_seed(0)
    data = {"x_train": torch.randn(200, 40, generator=gen), "y_train": torch.randint(0, 10, (200,), generator=gen),
            "x_test": torch.randn(50, 40, generator=gen), "y_test": torch.randint(0, 10, (50,), generator=gen)}
    setup = lt.LotterySetup(sizes=(40, 16, 10), steps=5, batch_size=50, rounds=2, rewind_step=2)
    rows = lt.run_seed(data, setup, seed=0)
    assert [r["method"] for r in rows].count("dense") == 1
    for method in ("ticket", "reinit", "random_mask", "snip"):
        got = [r for r in rows if r["method"] == method]
        assert [r["round"] for r in got] == [1, 2]
        assert got[1]["remaining"] == pytest.approx(0.8**2, abs=0.01)
        assert all(0 <= r["accuracy"] <= 1 for r in got)
    assert all(0 <= r["train_accuracy"] <= 1 for r in rows)
    with pytest.raises(ValueError, match="unknown methods"):
        lt.run_seed(data, setup, 0, methods=["magic"])
    some = lt.run_seed(data, setup, seed=0, control_rounds=[2])
    assert [r["round"] for r in some if r["method"] == "ticket"] == [1, 2]
    assert [r["round"] for r in some if r["method"] == "reinit"] == [2]
    assert [(r["method"], r["accuracy"]) for r in some if r["round"] == 2] == [
        (r["method"], r["accuracy"]) for r in rows if r["round"] == 2]  # the same runs, bit for bit
    with pytest.raises(ValueError, match="control_rounds"):
        lt.run_seed(data, setup, 0, control_rounds=[3])


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _mlp():
    torch.manual_seed(0)
    return lu.models.mlp([4, 6, 3])


def test_masks_must_keep_or_remove_not_scale():
    model = _mlp()
    masks = {k: torch.full_like(v, 0.5, dtype=torch.float32) for k, v in lt.full_masks(model).items()}
    with pytest.raises(ValueError, match="must hold only True/False"):
        lt.apply_masks_(model, masks)  # used to halve every weight
    ok = {k: v.float() for k, v in lt.full_masks(model).items()}  # 0/1 floats are fine
    lt.apply_masks_(model, ok)
    with pytest.raises(TypeError, match=r"masks must be a dict"):
        lt.fraction_remaining([torch.ones(3, dtype=torch.bool)])
    with pytest.raises(ValueError, match="masks must not be empty"):
        lt.fraction_remaining({})


@given(st.sampled_from([float("nan"), float("inf")]))
def test_nan_weights_and_scores_cannot_be_ranked(bad):
    model = _mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = bad
    with pytest.raises(ValueError, match="must be finite"):
        lt.magnitude_masks(model, lt.full_masks(model), 0.2)
    scores = {k: torch.rand(v.shape) for k, v in lt.full_masks(_mlp()).items()}
    next(iter(scores.values()))[0, 0] = bad
    with pytest.raises(ValueError, match="must be finite"):
        lt.snip_masks(scores, 0.5)


def test_fractions_rounds_and_setups():
    np = pytest.importorskip("numpy")
    assert lt.LotterySetup(fraction=np.float32(0.5), rounds=np.int64(2)).fraction == pytest.approx(0.5)
    for bad in (float("nan"), 1.0, -0.1, True):
        with pytest.raises(ValueError, match="prune fraction must be"):
            lt.LotterySetup(fraction=bad)
    with pytest.raises(ValueError, match="keep must be"):
        lt.snip_masks({"w": torch.rand(2, 2)}, 0.0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        lt.LotterySetup(steps=0)
    with pytest.raises(ValueError, match="lr must be"):
        lt.LotterySetup(lr=float("nan"))
    with pytest.raises(ValueError, match="sizes must list at least two"):
        lt.LotterySetup(sizes=(40,))
    assert lt.LotterySetup(sizes=[np.int64(4), 3]).sizes == (4, 3)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        lt.TensorBatches(torch.randn(4, 2), torch.zeros(4), 2.5)
    with pytest.raises(TypeError, match="setup must be a lu.lottery.LotterySetup"):
        lt.make_model({"sizes": (4, 2)}, 0)


def test_experiment_arguments():
    data = {"x_train": torch.randn(20, 4), "y_train": torch.randint(0, 3, (20,)),
            "x_test": torch.randn(10, 4), "y_test": torch.randint(0, 3, (10,))}
    setup = lt.LotterySetup(sizes=(4, 6, 3), steps=2, batch_size=5, rounds=1)
    with pytest.raises(TypeError, match="methods must be a list of strings, got the single string"):
        lt.run_seed(data, setup, 0, methods="ticket")
    with pytest.raises(ValueError, match=r"data lacks \['y_test'\]"):
        lt.run_seed({k: v for k, v in data.items() if k != "y_test"}, setup, 0)
    with pytest.raises(ValueError, match="state does not fit the model"):
        model = _mlp()
        lt.rewind(model, {"0.weight": torch.zeros(6, 4)}, lt.full_masks(model))


# --------------------------------------------------------------------------------------------------------------
# The paired verdict, supermasks (edge-popup) and SET
# --------------------------------------------------------------------------------------------------------------

def test_paired_verdict_uses_the_t_critical_value_of_its_degrees_of_freedom():
    control = torch.tensor([0.60, 0.61, 0.62])
    # differences 3, 1, 2 points: mean 2 = 3.46 standard errors, above 2 but below t(2 df) = 4.30
    assert lt.paired_verdict(control + torch.tensor([0.03, 0.01, 0.02]), control) == "tie"
    assert lt.paired_verdict(control + torch.tensor([0.10, 0.11, 0.09]), control) == "ticket"
    assert lt.paired_verdict(control, control + torch.tensor([0.10, 0.11, 0.09])) == "control"
    # ten seeds: the same 3.46 standard errors exceed t(9 df) = 2.26
    d = torch.tensor([0.03, 0.01, 0.02] * 3 + [0.02])
    se = (d.double().std() / 10**0.5).item()
    assert lt.paired_verdict(0.6 + d, torch.full((10,), 0.6)) == ("ticket" if d.double().mean() > 2.2622 * se
                                                                  else "tie") == "ticket"
    assert lt.paired_verdict([0.9], [0.1]) == "tie"


def _tiny_data(n=200, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"x_train": torch.randn(n, 40, generator=gen), "y_train": torch.randint(0, 10, (n,), generator=gen),
            "x_test": torch.randn(50, 40, generator=gen), "y_test": torch.randint(0, 10, (50,), generator=gen)}


@pytest.mark.parametrize("density", [1.0, 0.5, 0.107, 0.01])
def test_edge_popup_masks_have_exactly_the_requested_density_in_every_layer(density):
    setup = lt.LotterySetup(sizes=(40, 30, 20, 10), steps=3, batch_size=50)
    model = lt.supermask_model(setup, seed=1, density=density)
    for name, m in lt.supermask_masks(model).items():
        assert int(m.sum()) == round(density * m.numel()), name
        layer = model.get_submodule(name)
        top = layer.scores.detach().flatten().topk(int(m.sum())).indices
        assert m.flatten()[top].all()  # the kept weights are the highest scores
    lt.train_supermask(model, _tiny_data(), setup, seed=0)
    for name, m in lt.supermask_masks(model).items():
        assert int(m.sum()) == round(density * m.numel()), name


def test_edge_popup_trains_the_scores_only_with_the_straight_through_gradient():
    setup = lt.LotterySetup(sizes=(40, 30, 10), steps=20, batch_size=50)
    model = lt.supermask_model(setup, seed=0, density=0.5)
    weights = [m.weight.clone() for m in model if isinstance(m, lt.SupermaskLinear)]
    scores = [m.scores.detach().clone() for m in model if isinstance(m, lt.SupermaskLinear)]
    assert [n for n, _ in model.named_parameters()] == ["0.scores", "2.scores"]  # weights are buffers, no biases
    # the signed Kaiming constant, scaled for the surviving fan-in
    assert torch.allclose(weights[0].abs(), torch.full_like(weights[0], (2 / (0.5 * 40)) ** 0.5))
    theta0 = lt.make_model(setup, 0)
    assert torch.equal(torch.sign(weights[0]), torch.sign(theta0[0].weight.detach()))
    # straight-through: d loss / d score = d loss / d (effective weight) × weight, for kept and dropped weights alike
    x, y = torch.randn(8, 40), torch.randint(0, 10, (8,))
    layer = model[0]
    eff = (layer.weight * layer.mask()).requires_grad_(True)
    out = model[2](torch.relu(torch.nn.functional.linear(x, eff)))
    torch.nn.functional.cross_entropy(out, y).backward()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert torch.allclose(layer.scores.grad, eff.grad * layer.weight, atol=1e-7)
    assert (layer.scores.grad[~layer.mask()] != 0).any()
    lt.train_supermask(model, _tiny_data(), setup, seed=0)
    after = [m for m in model if isinstance(m, lt.SupermaskLinear)]
    assert all(torch.equal(w, m.weight) for w, m in zip(weights, after, strict=True))  # weights never change
    assert not all(torch.equal(s, m.scores.detach()) for s, m in zip(scores, after, strict=True))
    with pytest.raises(ValueError, match="density"):
        lt.supermask_model(setup, 0, density=0.0)
    with pytest.raises(ValueError, match="weights"):
        lt.supermask_model(setup, 0, 0.5, weights="ones")
    with pytest.raises(ValueError, match="SupermaskLinear"):
        lt.supermask_masks(lt.make_model(setup, 0))


def test_set_keeps_the_density_of_every_layer_after_each_drop_and_regrow():
    setup = lt.LotterySetup(sizes=(40, 30, 10), steps=5)
    model = lt.make_model(setup, 0)
    masks = lt.uniform_random_masks(model, 0.2, seed=3)
    lt.apply_masks_(model, masks)
    gen = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    for _ in range(5):
        before = {n: p.detach().clone() for n, p in params.items()}
        new = lt.drop_and_regrow(model, masks, 0.3, gen)
        for name, m in new.items():
            old = masks[name]
            assert int(m.sum()) == int(old.sum()) == round(0.2 * m.numel())
            dropped, grown = old & ~m, m & ~old
            assert int(dropped.sum()) == int(grown.sum()) == round(0.3 * int(old.sum()))
            w = before[name].abs()
            assert w[old & m].min() >= w[dropped].max()  # the smallest active weights were dropped
            assert (params[name][grown] == 0).all() and (params[name][~m] == 0).all()  # regrown from 0
            assert torch.equal(params[name][old & m], before[name][old & m])  # the rest untouched
        masks = new


def test_set_with_drop_fraction_zero_is_static_sparse_training_bit_for_bit():
    data = _tiny_data()
    setup = lt.LotterySetup(sizes=(40, 16, 10), steps=30, batch_size=50)
    a, b = lt.make_model(setup, 0), lt.make_model(setup, 0)
    masks = lt.uniform_random_masks(a, 0.3, seed=1)
    acc_a, final = lt.sparse_train(a, masks, data, setup, seed=0, drop_fraction=0.0, interval=5)
    acc_b = lt.train_masked(b, masks, data, setup, seed=0)
    assert acc_a == acc_b and all(torch.equal(final[n], masks[n]) for n in masks)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = lt.make_model(setup, 0)
    _, moved = lt.sparse_train(c, masks, data, setup, seed=0, drop_fraction=0.3, interval=5)
    assert any(not torch.equal(moved[n], masks[n]) for n in masks)  # the mask did move
    assert lt.fraction_remaining(moved) == lt.fraction_remaining(masks)
    assert all((p[~moved[n]] == 0).all() for n, p in c.named_parameters() if n in moved)


def test_run_sparse_seed_returns_every_method():
    setup = lt.LotterySetup(sizes=(40, 16, 10), steps=5, batch_size=50)
    rows = lt.run_sparse_seed(_tiny_data(), setup, seed=0, supermask_densities=(0.5,), set_density=0.2)
    assert sorted(r["method"] for r in rows) == ["edge_popup", "linear_probe", "random_supermask", "set",
                                                 "static_sparse"]
    for r in rows:
        assert 0 <= r["accuracy"] <= 1
    assert [r["remaining"] for r in rows if r["method"] == "set"] == [pytest.approx(0.2, abs=0.01)]
    with pytest.raises(ValueError, match="density"):
        lt.run_sparse_seed(_tiny_data(), setup, 0, set_density=1.5)
