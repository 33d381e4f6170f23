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
    q0 = build_policy(tiny_config(**{"selection.method": "probs", "selection.weights": [0] * 5}), SITES).probs()
    np.testing.assert_allclose(q0, [0.2] * 5)
    q1 = build_policy(tiny_config(**{"selection.method": "fixed", "selection.site": 3}), SITES).probs()
    np.testing.assert_allclose(q1, [0, 0, 0, 1, 0])


@pytest.mark.parametrize("site, message", [
    (7, r"selection.site = 7, but cnn has sites 0..4 \(input, stage1, stage2, stage3, stage4\)"),
    ("layer9", r"selection.site = 'layer9', but cnn has sites"),
    (None, r"needs a site"),
])
def test_bad_site(site, message):
    with pytest.raises(ConfigError, match=message):
        build_policy(tiny_config(**{"selection.method": "fixed", "selection.site": site}), SITES)


def test_wrong_number_of_weights():
    with pytest.raises(ConfigError, match=r"selection.weights has 3 values, but cnn has 5 sites"):
        build_policy(tiny_config(**{"selection.method": "probs", "selection.weights": [1, 2, 3]}), SITES)


def test_adalase_q_stays_on_the_simplex_and_clipped():
    cfg = tiny_config(**{"selection.method": "adalase", "adalase.eta": 0.5, "adalase.interval": 3})
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
    cfg = tiny_config(**{"selection.method": "adalase", "adalase.eta": 0.1, "adalase.interval": 2})
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
