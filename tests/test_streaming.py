"""ImageFolder streamed batch by batch (data.stream): the same splits as in memory, images decoded
the same way, augmentation in the DataLoader's workers and independent of their number, exact
resume, and peak memory bounded well below the data's decoded size."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adalase_tune.config import ConfigError, from_dict
from adalase_tune.data import build_data
from adalase_tune.data._stream import crop_flip
from adalase_tune.engine import Trainer

from conftest import override


def write_folder(root: Path, per_class: int, side: int = 12, classes=("a", "b", "c"), seed: int = 0) -> Path:
    """train/<class>/*.png and test/<class>/*.png: each class a bright stripe at its own row, plus noise."""
    rng = np.random.default_rng(seed)
    for part, n in (("train", per_class), ("test", max(4, per_class // 4))):
        for label, cls in enumerate(classes):
            (root / part / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 120, (side, side, 3), dtype=np.uint8)
                img[2 + 3 * label : 4 + 3 * label] = 250
                Image.fromarray(img).save(root / part / cls / f"{i:05d}.png")
    return root


def _tree(root: Path, stream, **over) -> dict:
    tree: dict = {
        "data": {"name": "imagefolder", "path": str(root), "image_size": 12, "stream": stream, "n_train": 30},
        "model": {"name": "cnn", "width": 4},
        "selection": {"method": "adalase"},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.05, "seed": 1, "device": "cpu"},
    }
    return override(tree, over)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images"), per_class=20)


def test_streamed_splits_are_the_in_memory_splits_and_decode_alike(folder):
    memory, stream = build_data(from_dict(_tree(folder, False)).data), build_data(from_dict(_tree(folder, True)).data)
    assert stream.train.streams and not memory.train.streams
    for part in ("train", "val", "test"):
        a, b = getattr(memory, part), getattr(stream, part)
        np.testing.assert_array_equal(a.ids, b.ids)  # stratified subset and fixed splits: the same samples
        assert torch.equal(a.y, b.y)
    x_mem, _ = memory.train.take([0, 5])
    x_str, _ = stream.train.take([0, 5])
    # the same decoding; normalisation from a sample of the training split rather than all of it
    np.testing.assert_allclose(x_str.std(dim=(0, 2, 3)), x_mem.std(dim=(0, 2, 3)), rtol=0.2)
    assert torch.corrcoef(torch.stack([x_mem.flatten(), x_str.flatten()]))[0, 1] > 0.999


def test_augmentation_is_seeded_per_sample_and_independent_of_the_workers(folder):
    data = build_data(from_dict(_tree(folder, True)).data)
    order = np.random.default_rng(0).permutation(len(data.train))
    batches = {}
    for workers in (0, 2):
        data.train.workers = workers
        batches[workers] = [x for x, _ in data.train.batches(order, 8, augment_seed=123)]
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a, b)
    plain = [x for x, _ in data.train.batches(order, 8)]
    assert not torch.equal(plain[0], batches[0][0])  # the seed does augment
    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    moved = crop_flip(x, np.random.default_rng(3))
    assert moved.shape == x.shape and (moved == 0).any()  # a shift leaves zero fill


@pytest.mark.slow  # the fast tier's budget (issue 22)
def test_a_streamed_run_learns_and_resumes_exactly(folder, tmp_path):
    over = {"data.num_workers": 2, "data.n_train": None, "train.epochs": 10, "model.width": 8}
    cfg = from_dict(_tree(folder, True, **over))
    whole = Trainer(cfg).run()
    assert whole["best_val_acc"] > 0.6  # the stripes are learnable: the pipeline feeds real images
    first = Trainer(cfg)
    for _ in range(4):  # killed after epoch 4
        first.run_epoch()
    state = first.state_dict()
    resumed = Trainer(cfg)
    resumed.load_state_dict(state)
    rest = resumed.run()
    assert [m["val/loss"] for m in rest["history"]] == [m["val/loss"] for m in whole["history"]]
    assert rest["q_history"] == whole["q_history"]


def test_the_automatic_switch_streams_above_the_threshold_and_says_so(folder, capsys):
    data = build_data(from_dict(_tree(folder, None, **{"data.stream_above_mb": 0.01})).data)
    assert data.train.streams and "streaming it" in capsys.readouterr().err
    assert not build_data(from_dict(_tree(folder, None)).data).train.streams  # 4096 MB by default


def test_stream_on_data_that_cannot_stream_is_refused():
    with pytest.raises(ConfigError, match="data.stream = True: only imagefolder data streams"):
        from_dict({"data": {"name": "digits", "stream": True}})


PEAK = textwrap.dedent(
    """
    import glob, json, os, sys, threading, time
    import torch
    from adalase_tune.config import from_dict
    from adalase_tune.engine import Trainer

    def rss():  # this process's resident memory, bytes
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))

    def private(pid):  # a child's own pages (its unique set), bytes: not what it shares with us
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                return sum(int(l.split()[1]) * 1024 for l in f if l.startswith(("Private_Clean", "Private_Dirty")))
        except OSError:
            return 0

    def children():
        pids = []
        for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
            with open(path) as f:
                pids += f.read().split()
        return pids

    torch.set_num_threads(1)
    trainer = Trainer(from_dict(json.loads(sys.argv[1])))  # lists the files (streaming) or reads them all
    # one step first: the allocator's and the kernels' one-time workspaces are not data
    x, y = trainer.data.train.take(range(trainer.cfg.train.batch_size))
    trainer._loss(trainer.model, x, y).backward()
    trainer.model.zero_grad(set_to_none=True)
    del x, y
    base = rss()
    peak, main, workers, done = [0], [0], [0], threading.Event()

    def sample():
        while not done.is_set():
            own, theirs = rss() - base, sum(private(p) for p in children())
            peak[0], main[0], workers[0] = max(peak[0], own + theirs), max(main[0], own), max(workers[0], theirs)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    trainer.run()
    done.set()
    t.join()
    mb = {"peak_mb": peak[0], "main_mb": main[0], "workers_mb": workers[0], "base_mb": base}
    print(json.dumps({k: v / 2**20 for k, v in mb.items()}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="reads memory from Linux's /proc")
def test_peak_memory_of_a_streamed_run_stays_under_a_fifth_of_the_decoded_data(tmp_path):
    root = write_folder(tmp_path / "big", per_class=4000, side=16)  # 12,000 training PNGs, 3,000 test
    size = 80  # decoded float32: 15,000 images x 3 x 80 x 80 x 4 bytes = 1,099 MB; the run's own needs stay ~100 MB
    decoded_mb = sum(1 for _ in root.rglob("*.png")) * 3 * size * size * 4 / 2**20
    cap_mb = decoded_mb / 5
    tree = _tree(root, True, **{"data.image_size": size, "data.n_train": None, "data.num_workers": 2})
    tree["train"].update(epochs=1, batch_size=32)
    tree["selection"]["method"] = "uniform"
    out = subprocess.run([sys.executable, "-c", PEAK, json.dumps(tree)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    streamed = json.loads(out.stdout.strip().splitlines()[-1])
    assert streamed["peak_mb"] < cap_mb, (streamed, cap_mb, decoded_mb)
    # the same data in memory does not fit under the cap: the bound above measures something
    tree["data"]["stream"] = False
    out = subprocess.run([sys.executable, "-c", PEAK, json.dumps(tree)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["base_mb"] > streamed["base_mb"] + cap_mb


@pytest.mark.parametrize("source", ["train", "holdout"])
def test_streamed_pseudo_validation_comes_only_from_the_runs_training_subset(folder, source):
    cfg = from_dict(_tree(folder, True, **{"adalase.val_source": source, "adalase.retrain": False}))
    subset = set(build_data(cfg.data).for_seed(cfg.subset_seed()).train.ids.tolist())  # the run seed's subset
    trainer = Trainer(cfg)
    trained = set(trainer.data.train.ids.tolist())
    allowed = subset if source == "train" else subset - trained
    pv = trainer.pseudo_val
    for seed in range(5):
        pv.new_epoch(np.random.default_rng(seed))
        assert set(pv.ids.tolist()) <= allowed and not set(pv.ids.tolist()) & set(trainer.data.val.ids.tolist())
    if source == "holdout":  # no augmentation there: the batch is exactly the decoded held-out images
        position = {i: p for p, i in enumerate(pv.split.ids.tolist())}
        x, _ = pv.split.take([position[i] for i in pv.ids.tolist()])
        assert torch.equal(pv.x, x)
