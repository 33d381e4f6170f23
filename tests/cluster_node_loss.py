"""A sweep on a three-node cluster on this machine, losing a worker node mid-sweep; print JSON.

Run by tests/test_reliability.py in its own process.
"""

import json
import sys
import threading

import ray
from ray import tune
from ray.cluster_utils import Cluster

from adalase_tune.experiment import sweep
from adalase_tune.tuning import SweepOptions

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from conftest import tiny_config  # noqa: E402

storage = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()


REQUESTS: list = []  # node ids to remove; the callback must not hold the cluster (Tune pickles it)
WORKER_IDS = [w.node_id for w in workers]


class RemoveWorker(tune.Callback):
    """After the first epoch-2 result from a trial on a worker node, ask for that node's removal."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not REQUESTS and result.get("epoch") == 2 and result["node_id"] in WORKER_IDS:
            REQUESTS.append(result["node_id"])


def remover_loop(stop: threading.Event, removed: list) -> None:
    while not stop.is_set():
        for node in workers:
            if REQUESTS and node.node_id == REQUESTS[0] and not removed:
                cluster.remove_node(node, allow_graceful=False)
                removed.append(node.node_id)
        stop.wait(0.1)


stop, removed = threading.Event(), []
thread = threading.Thread(target=remover_loop, args=(stop, removed), daemon=True)
thread.start()
try:
    cfg = tiny_config(**{"data.n_train": 60, "train.epochs": 4})
    ray.init(address=cluster.address)
    rows = sweep(
        cfg,
        "uniform",
        SweepOptions(seeds=[0, 1, 2, 3], address=cluster.address, storage=storage, max_failures=3, checkpoint_s=0),
        tracking_uri=None,
        callbacks=[RemoveWorker()],
    ).rows
    reports = tune.ExperimentAnalysis(f"{storage}/uniform").trial_dataframes.values()  # every report, replays too
    print(
        "RESULT "
        + json.dumps(
            {
                "removed": bool(removed),
                "trials": len(rows),
                "errors": int((rows["status"] != "TERMINATED").sum()),
                "final_epochs": [int(e) for e in rows["epochs"]],
                "epoch1_counts": [int((df["epoch"] == 1).sum()) for df in reports],
            }
        )
    )
finally:
    stop.set()
    ray.shutdown()
    cluster.shutdown()
