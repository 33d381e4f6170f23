"""Run a sweep on a three-node Ray cluster on this machine (head + two workers); print JSON.

Run by tests/test_tuning.py in its own process, since a process joins one Ray cluster only.
"""

import json
import sys

import ray
from ray.cluster_utils import Cluster

from adalase_tune.experiment import sweep
from adalase_tune.tuning import SweepOptions

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import tiny_config  # noqa: E402

storage = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
for _ in range(2):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
    cfg = tiny_config(**{"data.n_train": 300, "train.epochs": 3})  # long enough to overlap on three nodes
    rows = sweep(
        cfg,
        "random",
        SweepOptions(seeds=[0], num_samples=6, address=cluster.address, storage=storage, max_concurrent=3),
        tracking_uri=None,
    ).rows.to_dict("records")
    nodes = {r["node_id"] for r in rows}
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    print(
        "RESULT "
        + json.dumps(
            {
                "trials": len(rows),
                "errors": sum(r["status"] != "TERMINATED" for r in rows),
                "nodes_used": len(nodes),
                "nodes_alive": alive,
            }
        )
    )
finally:
    ray.shutdown()
    cluster.shutdown()
