"""``asha`` (random search, weak trials stopped early) and ``pbt`` (Population Based Training
over the per-site weights, as Population Based Augmentation does)."""
from ._base import SearchMethod, SearchPlan, Uniform, weight_space


class ASHA(SearchMethod):
    name = "asha"
    defaults = {"num_samples": 12, "grace_period": 1, "reduction_factor": 3}
    per_seed = True

    def plan(self, sites, seeds, budget):
        (seed,) = seeds
        n = budget["num_samples"]
        space = {"selection/method": "probs", "train/seed": seed, **weight_space(sites)}
        sched = {"grace_period": budget["grace_period"], "reduction_factor": budget["reduction_factor"]}
        return SearchPlan(space, num_samples=n, searcher=("random", seed), scheduler=("asha", sched),
                          per_seed=True, expected_trials=n)


class PBT(SearchMethod):
    name = "pbt"
    defaults = {"population": 4, "perturbation_interval": 3, "resample_probability": 0.25}
    per_seed = True

    def plan(self, sites, seeds, budget):
        (seed,) = seeds
        n = budget["population"]
        space = {"selection/method": "probs", "train/seed": seed, **weight_space(sites)}
        sched = {"perturbation_interval": budget["perturbation_interval"],
                 "resample_probability": budget["resample_probability"],
                 "hyperparam_mutations": {f"da_prob/{s}": Uniform(0.0, 1.0) for s in sites},
                 "seed": seed}
        return SearchPlan(space, num_samples=n, searcher=("random", seed), scheduler=("pbt", sched),
                          per_seed=True, expected_trials=n)
