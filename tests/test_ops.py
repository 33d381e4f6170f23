"""Contract tests over every registered op: every op the registry holds is tested the same way."""

import warnings

import numpy as np
import pytest
import torch

from adalase_tune.ops import OPS, get_op
from adalase_tune.sites import DAContext, Site

SHAPES = [(6, 3, 8, 8), (6, 20), (6, 5, 12)]


@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_and_dtype_kept(name, shape):
    h = torch.randn(shape, dtype=torch.float64)
    out, mix = get_op(name)(h, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert out.shape == h.shape and out.dtype == h.dtype
    assert not torch.equal(out, h), f"{name} left {shape} unchanged"
    assert (mix is not None) == OPS.get(name).mixes_targets


@pytest.mark.parametrize("name", OPS.names())
def test_site_is_exact_identity_when_off(name):
    site = Site(1, "stage1")
    h = torch.randn(4, 3, 8, 8)
    assert site(h) is h  # no context at all
    with DAContext(site=0, op=get_op(name), rng=np.random.default_rng(0)) as ctx:
        assert site(h) is h  # another site was selected
    assert not ctx.applied
    y = torch.eye(3)[[0, 1, 2, 0]]
    assert torch.equal(ctx.mix_targets(y), y)


@pytest.mark.parametrize("name", [n for n in OPS.names() if OPS.get(n).mixes_targets])
@pytest.mark.parametrize("shape", SHAPES)
def test_mixed_targets_sum_to_one(name, shape):
    h = torch.randn(shape)
    y = torch.nn.functional.one_hot(torch.arange(shape[0]) % 3, 3).float()
    with DAContext(site=0, op=get_op(name), rng=np.random.default_rng(1)) as ctx:
        Site(0, "input")(h)
    mixed = ctx.mix_targets(y)
    assert torch.allclose(mixed.sum(1), torch.ones(shape[0]))
    assert (mixed >= 0).all() and (mixed <= 1).all()


def test_same_seed_same_draws():
    for name in OPS.names():
        h = torch.randn(5, 2, 8, 8)
        a, _ = get_op(name)(h, np.random.default_rng(7), torch.Generator().manual_seed(7))
        b, _ = get_op(name)(h, np.random.default_rng(7), torch.Generator().manual_seed(7))
        assert torch.equal(a, b), name


def test_mixup_is_the_convex_combination():
    h = torch.randn(8, 4)
    out, (partner, lam) = get_op("mixup")(h, np.random.default_rng(0))
    expect = lam.view(-1, 1) * h + (1 - lam.view(-1, 1)) * h[partner]
    assert torch.allclose(out, expect)
    assert ((lam > 0) & (lam < 1)).all()


def test_cutmix_target_weight_is_the_true_box_area():
    # half the batch is 0, half is 1: where the partner differs, every pasted pixel changes
    src = torch.cat([torch.zeros(32, 1, 8, 8), torch.ones(32, 1, 8, 8)])
    out, (partner, lam) = get_op("cutmix")(src, np.random.default_rng(3))
    changed = (out != src).float().mean(dim=(1, 2, 3))
    differs = (src[partner] != src).view(64, -1).any(1)
    assert differs.sum() > 10
    assert torch.allclose(changed[differs], (1 - lam)[differs], atol=1e-6)


def test_cutout_zeroes_a_half_side_square():
    h = torch.ones(50, 2, 8, 8)
    out, _ = get_op("cutout")(h, np.random.default_rng(0))
    zeroed = (out == 0).all(1).float().sum(dim=(1, 2))  # pixels zeroed on all channels
    assert zeroed.max() == 16 and zeroed.min() >= 4  # 4x4 box, clipped at the borders
    assert torch.equal((out == 0)[:, 0], (out == 0)[:, 1])


def test_translate_shifts_within_reach_with_zero_fill():
    h = torch.arange(1, 11, dtype=torch.float32).repeat(200, 1)  # (N, 10) features, reach 2
    out, _ = get_op("translate")(h, np.random.default_rng(0))
    for row in out:
        nz = row[row != 0]
        first = int(nz[0]) - 1
        assert abs(int((row != 0).nonzero()[0]) - first) <= 2 or first == 0
        assert torch.equal(nz, torch.arange(nz[0], nz[0] + len(nz)))  # contiguous, order kept


def test_translate_warns_once_on_small_maps():
    op = get_op("translate")
    h = torch.randn(3, 4, 4, 4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out1, _ = op(h, np.random.default_rng(0))
        out2, _ = op(h, np.random.default_rng(0))
    assert torch.equal(out1, h) and torch.equal(out2, h)
    assert sum("no-op" in str(w.message) for w in seen) == 1


def test_unknown_op_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"augment.op = 'mixpu'.*did you mean 'mixup'"):
        get_op("mixpu")
