"""Contract tests over every registered policy: observed site rates match probs()."""

import numpy as np
import pytest

from adalase_tune.config import ConfigError
from adalase_tune.policies import POLICIES, build_policy
from adalase_tune.sites import SiteInfo

from conftest import tiny_config

SITES = [SiteInfo(n, (1,)) for n in ("input", "stage1", "stage2", "stage3", "stage4")]
SETTINGS = {
    "none": {},
    "fixed": {"selection.site": "stage2"},
    "uniform": {},
    "probs": {"selection.weights": [0.0, 1.0, 2.0, 3.0, 4.0]},
    "adalase": {},
}


def test_every_registered_policy_has_a_setting():
    assert set(POLICIES.names()) == set(SETTINGS)


@pytest.mark.parametrize("name", POLICIES.names())
def test_observed_rates_match_probs(name):
    cfg = tiny_config(**{"selection.method": name, **SETTINGS[name]})
    policy = build_policy(cfg, SITES)
    rng = np.random.default_rng(0)
    draws = [policy.sample(rng) for _ in range(20000)]
    q = policy.probs()
    if q is None:
        assert set(draws) == {None}
        return
    assert q.sum() == pytest.approx(1.0)
    rates = np.bincount(draws, minlength=len(SITES)) / len(draws)
    np.testing.assert_allclose(rates, q, atol=0.015)


def test_probs_normalises_and_fixed_takes_an_index():
    q = build_policy(tiny_config(**{"selection.method": "probs", "selection.weights": [1, 1, 2, 0, 0]}), SITES).probs()
    np.testing.assert_allclose(q, [0.25, 0.25, 0.5, 0, 0])
    with pytest.raises(ConfigError, match=r"all weights are 0; for no latent DA use selection.method=none"):
        build_policy(tiny_config(**{"selection.method": "probs", "selection.weights": [0] * 5}), SITES)
    q1 = build_policy(tiny_config(**{"selection.method": "fixed", "selection.site": 3}), SITES).probs()
    np.testing.assert_allclose(q1, [0, 0, 0, 1, 0])


@pytest.mark.parametrize(
    "site, message",
    [
        (7, r"selection.site = 7, but cnn has sites 0..4 \(input, stage1, stage2, stage3, stage4\)"),
        ("layer9", r"selection.site = 'layer9', but cnn has sites"),
        (None, r"needs a site"),
    ],
)
def test_bad_site(site, message):
    with pytest.raises(ConfigError, match=message):
        build_policy(tiny_config(**{"selection.method": "fixed", "selection.site": site}), SITES)


def test_wrong_number_of_weights():
    with pytest.raises(ConfigError, match=r"selection.weights has 3 values, but cnn has 5 sites"):
        build_policy(tiny_config(**{"selection.method": "probs", "selection.weights": [1, 2, 3]}), SITES)


def test_adalase_q_stays_on_the_simplex_and_clipped():
    cfg = tiny_config(
        **{"selection.method": "adalase", "adalase.preset": "faithful", "adalase.eta": 0.5, "adalase.interval": 3}
    )
    policy = build_policy(cfg, SITES)
    rng = np.random.default_rng(0)
    eps = cfg.adalase.min_rate_sum / len(SITES)
    for _ in range(500):
        policy.observe(int(rng.integers(5)), float(rng.normal(0, 3)))
        q = policy.probs()
        assert q.sum() == pytest.approx(1.0, abs=1e-12)
        assert (q >= eps / (len(SITES) * (1 - eps)) - 1e-12).all()  # clipped to [eps, 1-eps], then renormalised
        assert (q > 0).all()


def test_adalase_update_rule_by_hand():
    cfg = tiny_config(
        **{"selection.method": "adalase", "adalase.preset": "faithful", "adalase.eta": 0.1, "adalase.interval": 2}
    )
    policy = build_policy(cfg, SITES)
    policy.observe(1, 0.5)
    np.testing.assert_allclose(policy.probs(), [0.2] * 5)  # pending until `interval` observations
    policy.observe(3, -0.2)
    q = np.array([0.2, 0.2 + 0.05 / 2, 0.2, 0.2 - 0.02 / 2, 0.2])
    np.testing.assert_allclose(policy.probs(), q / q.sum())
    state = policy.state_dict()
    other = build_policy(cfg, SITES)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.probs(), policy.probs())


def _normalized(**extra):
    cfg = tiny_config(**{"selection.method": "adalase", "adalase.update": "normalized", **extra})
    policy = build_policy(cfg, SITES)
    policy.start(400)
    return policy


def _feed(policy, dots):
    out = []
    for site, dot in dots:
        policy.observe(site, dot)
        out.append(policy.probs())
    return np.array(out)


def _signal(seed=0, n=400):
    """Site 3's hypergradients one standard deviation above the others', plus noise."""
    rng = np.random.default_rng(seed)
    sites = rng.integers(0, 5, n)
    return [(int(s), float(rng.normal(1.0 if s == 3 else 0.0, 1.0) + 5.0)) for s in sites]


def test_normalized_update_is_invariant_to_the_scale_of_the_hypergradient():
    dots = _signal()
    base = _feed(_normalized(), dots)
    for c in (1e-6, 100.0):  # a loss scaled by c scales every gradient by c, every dot by c^2
        scaled = _feed(_normalized(), [(s, c * c * d) for s, d in dots])
        np.testing.assert_allclose(scaled, base, rtol=0, atol=1e-9)
    raw = build_policy(tiny_config(**{"selection.method": "adalase", "adalase.update": "raw"}), SITES)
    raw_small = _feed(raw, [(s, 1e-4 * d) for s, d in dots])
    assert np.abs(raw_small[-1] - 0.2).max() < 1e-3  # the raw rule barely moves at a small gradient scale


def test_normalized_update_moves_q_by_eta_over_the_run_whatever_its_length():
    """eta is the log-odds a site gains over the run per standard deviation of advantage: the same
    final q after 400 or 4000 hypergradients (up to the noise), towards the right site. Here site
    3 is 0.93 (pooled) standard deviations above the others at the start, less as q concentrates
    on it and the running mean follows, so with eta = 2 it gains 1 to 2 nats over the others."""
    finals = []
    for n in (400, 4000):
        policy = _normalized(**{"adalase.eta": 2.0})
        policy.start(n)
        finals.append(_feed(policy, _signal(1, n))[-1])
    for q in finals:
        assert q.argmax() == 3
        others = np.delete(q, 3)
        assert 1.0 < np.log(q[3] / others.mean()) < 2.0, q
    assert abs(np.log(finals[0][3] / finals[1][3])) < 0.35


def test_a_non_finite_hypergradient_is_skipped_counted_and_warned():
    for form in ("raw", "normalized"):
        policy = build_policy(tiny_config(**{"selection.method": "adalase", "adalase.update": form}), SITES)
        policy.start(10)
        policy.observe(1, 2.0)
        policy.observe(2, 3.0)
        before = policy.probs()
        with pytest.warns(RuntimeWarning, match="non-finite hypergradient"):
            policy.observe(0, float("nan"))
        policy.observe(4, float("inf"))
        np.testing.assert_array_equal(policy.probs(), before)
        assert policy.skipped == 2 and np.isfinite(policy.state_dict()["stats"]).all()
        policy.observe(3, 1.0)
        assert np.isfinite(policy.probs()).all()


def test_normalized_state_round_trips():
    policy = _normalized()
    _feed(policy, _signal(2, 50))
    other = _normalized()
    other.load_state_dict(policy.state_dict())
    rest = _signal(3, 50)
    np.testing.assert_array_equal(_feed(other, rest), _feed(policy, rest))
