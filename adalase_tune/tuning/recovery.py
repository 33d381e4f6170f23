"""Resume, end to end, and the one module that touches Ray's internals.

Tested on Ray 2.60.0, and pyproject pins ``ray[tune]>=2.60,<2.61`` for it: a newer Ray needs this
module checked first. What it reaches into, and what to check when Ray changes: the file names of
a Tune experiment (``experiment_state-*.json``, ``searcher-state-*``, ``basic-variant-state-*``,
``*.pkl``), the ``trial_data`` entries of the experiment state and their pickled
``checkpoint_manager`` (``_checkpoint_results``, ``_latest_checkpoint_result``,
``ray.train._internal.session._TrainingResult``), and ``ray._private.utils.set_sigterm_handler``.

How ``--resume`` works:

1. Before Ray starts (``experiment.prepare``): each Tuner's folder must exist, its meta file
   (``storage.save_meta``) must hold the same config, and :func:`check_pickles` must find every
   pickle the one Ray wrote while adalase-tune watched (``Tuner.restore`` unpickles them).
2. While a Tuner runs, :class:`StateGuard` keeps the last set of state files that all parse in
   ``<experiment>/.adalase_tune_state/states.json`` and the sha256 of every pickle (``pickles.json``).
3. :func:`prepare_restore` (called by the Tuner's builder): a state that holds no trial yet is
   dropped, and the job starts afresh; otherwise, when a state file is torn, the last good set
   replaces them all (:func:`repair_state`), and trials whose latest checkpoint Ray had already deleted are
   pointed at their newest one on storage (:func:`repair_checkpoints`); a trial's result.json that
   a full disk cut off is cut back to its whole lines (:func:`repair_results`). Then ``Tuner.restore``
   (errored trials retried) with the callbacks pickled in ``tuner.pkl``.
4. Each trial restores from its checkpoint (``trainable``); on the driver its MLflow run is found
   by its Ray trial id and continued, epochs already logged skipped, and the method's parent run
   is reused (``tracking.trials``). ``settle_runs`` ends the runs that Tune ended but the store
   could not (it had gone away).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ray import tune

from ..config import ConfigError
from .storage import is_uri, join

STATE_BACKUP = ".adalase_tune_state"
DIGESTS = "pickles.json"  # in STATE_BACKUP: sha256 of every pickle Ray wrote during our fits
BUNDLE = "states.json"  # in STATE_BACKUP: the last set of state files that all parsed


def keep_sigterm() -> None:
    """``ray.init`` puts a SIGTERM handler of its own (``sys.exit``) on the main thread while it
    starts: a SIGTERM in those seconds then raised SystemExit wherever the driver was (even in a
    logging lock, where it is ignored, and the sweep ran on). The handler in place stays instead
    (the command's, which stops the work at its next safe point); ``Signals.reclaim`` takes back what
    Ray's core installs later."""
    import ray._private.utils as ray_utils

    if hasattr(ray_utils, "set_sigterm_handler"):
        ray_utils.set_sigterm_handler = lambda handler: None


class StateGuard(tune.Callback):
    """A guard against a torn experiment state. Ray rewrites ``experiment_state-*.json`` (and the
    searcher's state) in place, so a driver killed at that instant leaves a truncated file and
    ``Tuner.restore`` fails on it. After each step this callback keeps the state files, when all
    of them parse, as one set in ``<experiment>/.adalase_tune_state/``; :func:`repair_state` puts
    the last good set back before a restore. Local storage only (an object store's upload is atomic).

    Example::

        tune.RunConfig(callbacks=[StateGuard(root, "motifs-grid")])
    """

    def __init__(self, root: str, name: str):
        self.folder = None if is_uri(root) else str(Path(root) / name)
        self.seen: dict = {}
        self.hashed: dict = {}  # the pickles' stamps when last hashed (record_pickles)
        self.last = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.folder is None or time.monotonic() - self.last < 1.0:
            return
        self.last = time.monotonic()
        snapshot(Path(self.folder), self.seen)
        record_pickles(Path(self.folder), self.hashed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.folder is not None:
            snapshot(Path(self.folder), self.seen)
            record_pickles(Path(self.folder), self.hashed)


def prepare_restore(root: str, name: str) -> bool:
    """Whether the Tuner ``root/name`` is to be restored (Tune state with at least one trial),
    its state repaired first; False: it starts afresh."""
    if not tune.Tuner.can_restore(join(root, name)) or no_trial_yet(root, name):
        return False
    repair_state(root, name)
    repair_checkpoints(root, name)
    repair_results(root, name)
    return True


def repair_results(root: str, name: str) -> list[str]:
    """Cut each trial's ``result.json`` (one JSON line per result) back to its last whole line: a
    full disk can leave the last one cut off, and Tune, reading it on resume, stops the fit. Local
    storage only; returns the files it cut."""
    from ..checkpoint import atomic_write  # here: checkpoint loads torch

    if is_uri(root):
        return []
    cut = []
    for path in Path(root, name).glob("*/result.json"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            lines = path.read_text().splitlines(keepends=True)
            whole = 0
            for line in lines:
                try:
                    json.loads(line)
                except ValueError:
                    break
                whole += 1
            if whole < len(lines):
                atomic_write(path, "".join(lines[:whole]))
                cut.append(str(path))
    return cut


def _state_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.glob("*")
        if p.is_file() and p.name.startswith(("experiment_state", "searcher-state", "basic-variant-state"))
    ]


def _readable(path: Path) -> bool:
    """Whether a state file parses: the experiment state is JSON; the searchers' states are pickles
    (``basic-variant-state-*.json`` too, whatever its name says)."""
    try:
        if path.name.startswith("experiment_state"):
            json.loads(path.read_text())
        else:
            import ray.cloudpickle as cloudpickle

            cloudpickle.loads(path.read_bytes())
        return True
    except Exception:
        return False


def snapshot(folder: Path, seen: dict) -> None:
    """Keep the state files of ``folder`` as one set (``BUNDLE``, written atomically), whenever one
    changed and all of them parse.

    A set, not a copy per file: Ray writes the experiment state, then the searcher's. On a full
    disk the first can be torn while the second is written whole, so a newer searcher state beside
    an older experiment state would say that trials were made which that state does not list, and
    the restore would never run them."""
    if not folder.is_dir():
        return
    files = _state_files(folder)
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in files}
    if not files or stamps == seen.get("states") or not all(_readable(p) for p in files):
        return
    from ..checkpoint import atomic_write  # here: checkpoint loads torch

    kept = {p.name: [base64.b64encode(p.read_bytes()).decode(), stamps[p.name][0]] for p in files}
    atomic_write(folder / STATE_BACKUP / BUNDLE, json.dumps(kept))  # the last good set stays whole
    seen["states"] = stamps


def pickles(folder: Path) -> list[Path]:
    """The files of an experiment that ``Tuner.restore`` unpickles (tuner.pkl, searcher states...)."""
    return sorted(p for p in folder.glob("*.pkl") if p.is_file())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_pickles(folder: Path, seen: dict) -> None:
    """Remember the digest of every pickle in ``folder`` (written by Ray during this process's fit);
    ``seen``: their (mtime, size) when last hashed, so an unchanged file is not read again."""
    if not folder.is_dir():
        return
    found = pickles(folder)
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in found}
    if stamps == seen.get("stamps"):
        return
    seen["stamps"] = stamps
    from ..checkpoint import atomic_write

    digests = {p.name: _sha256(p) for p in found}
    atomic_write(folder / STATE_BACKUP / DIGESTS, json.dumps(digests, sort_keys=True))


def check_pickles(root: str, name: str) -> None:
    """Before ``--resume`` lets Ray unpickle an experiment's state (and a pickle runs code as it
    loads): the folder and its pickles must be this user's and writable by no one else, and
    every pickle must be the one adalase-tune saw Ray write. Local storage only (a bucket's
    access is the bucket's policy: SECURITY.md)."""
    if is_uri(root):
        return
    folder = Path(root) / name
    fix = "resume only from a folder that only you can write, or start the sweep again under another --name"
    for path in [folder, *pickles(folder)]:
        st = path.stat()
        if st.st_uid not in (os.getuid(), 0):
            raise ConfigError(
                f"--resume: {path} belongs to another user (uid {st.st_uid}); Ray would unpickle it. {fix}"
            )
        if st.st_mode & 0o022:
            raise ConfigError(
                f"--resume: {path} can be written by others (mode {st.st_mode & 0o777:o}), and Ray unpickles "
                f"what it holds, which can run code as you. {fix}"
            )
    recorded = folder / STATE_BACKUP / DIGESTS
    if not recorded.is_file():
        return  # an experiment of an earlier version (nothing recorded to compare with)
    known = json.loads(recorded.read_text())
    for path in pickles(folder):
        if known.get(path.name) != _sha256(path):
            raise ConfigError(
                f"--resume: {path} is not the file Ray wrote during this experiment (its sha256 differs from the "
                f"one recorded in {recorded}); Ray would unpickle it, which can run code. If you trust it, delete "
                f"{recorded}; else {fix}"
            )


def no_trial_yet(root: str, name: str) -> bool:
    """A local experiment whose saved state holds no trial (stopped before Tune made one): restoring
    it would run nothing, since its searcher's state says the trials were made. Its Ray state goes
    (our own meta stays) and the job starts afresh."""
    if is_uri(root):
        return False
    folder = Path(root) / name
    states = sorted(folder.glob("experiment_state-*.json"))
    try:
        if not states or json.loads(states[-1].read_text()).get("trial_data"):
            return False
    except (OSError, ValueError):
        return False
    searchers = [*folder.glob("basic-variant-state-*.json"), *folder.glob("searcher-state-*")]
    for path in [*states, *searchers, *pickles(folder)]:
        path.unlink(missing_ok=True)
    return True


def repair_state(root: str, name: str) -> list[str]:
    """Before a restore: when a state file does not parse (the driver was killed, or the disk was
    full, while Ray wrote it), put back the whole last good set, so that the experiment's and the
    searcher's state agree. Returns the files put back."""
    if is_uri(root):
        return []
    folder = Path(root) / name
    bundle = folder / STATE_BACKUP / BUNDLE
    if all(_readable(p) for p in _state_files(folder)) or not bundle.is_file():
        return []
    kept = json.loads(bundle.read_text())
    for path in _state_files(folder):
        if path.name not in kept:  # newer than the set: it would be read instead of it
            path.unlink()
    for file, (data, mtime_ns) in kept.items():  # with its time: Ray reads the newest searcher state
        (folder / file).write_bytes(base64.b64decode(data))
        os.utime(folder / file, ns=(mtime_ns, mtime_ns))
    record_pickles(folder, {})  # the searcher's pickle put back is one Ray wrote here: a later resume reads it
    repaired = sorted(kept)
    print(
        f"  {name}: restored Ray Tune's state ({', '.join(repaired)}) from the last good copy (the driver was "
        "killed, or the disk was full, while Ray wrote it); trials resume from their latest checkpoints",
        file=sys.stderr,
    )
    return repaired


def repair_checkpoints(root: str, name: str) -> list[str]:
    """Before a restore: point every trial whose recorded latest checkpoint no longer exists at the
    newest checkpoint of that trial still on storage (or at none: the trial starts over), and
    forget the older checkpoints it records that no longer exist.

    Ray deletes a trial's old checkpoints (``num_to_keep``) as new ones arrive, and saves its
    experiment state separately; on cloud storage the state's upload lags. A driver killed in
    between leaves a state whose latest checkpoint is gone, and Tune's restore of that trial fails;
    a state that a full disk kept from being saved can list an older checkpoint that Ray deleted
    since, and Ray's deletion of it, once the resumed trial's next checkpoint arrives, fails.
    Returns the ids of the trials it repointed."""
    import pyarrow.fs as pafs

    fs, folder = (
        pafs.FileSystem.from_uri(join(root, name)) if is_uri(root) else (pafs.LocalFileSystem(), join(root, name))
    )
    listing = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    states = sorted(
        f.path for f in listing if f.base_name.startswith("experiment_state") and f.base_name.endswith(".json")
    )
    if not states:
        return []
    with fs.open_input_stream(states[-1]) as f:
        data = json.loads(f.read().decode())
    repointed = [found for entry in data.get("trial_data", []) for found in [_repoint(entry)] if found]
    if repointed:
        with fs.open_output_stream(states[-1]) as f:
            f.write(json.dumps(data).encode())
        print(
            f"  {name}: {len(repointed)} trial(s) recorded a checkpoint that Ray had already deleted when the "
            "driver was killed; they resume from their newest checkpoint on storage",
            file=sys.stderr,
        )
    return repointed


def _repoint(entry: list) -> str:
    """One ``trial_data`` entry of Tune's state, repointed in place at the trial's newest checkpoint
    on storage when its recorded latest one is gone, its recorded checkpoints that are gone
    forgotten; returns the trial's folder name, or "" when it needed neither."""
    import pyarrow.fs as pafs
    import ray.cloudpickle as cloudpickle
    from ray.train._internal.session import _TrainingResult

    meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
    blob = meta.get("checkpoint_manager")
    if not (isinstance(blob, dict) and "value" in blob):
        return ""
    manager = cloudpickle.loads(bytes.fromhex(blob["value"]))
    latest = manager.latest_checkpoint_result
    kept = [r for r in manager._checkpoint_results if r.checkpoint is not None and _exists(r.checkpoint)]
    latest_gone = latest is not None and not _exists(latest.checkpoint)
    if not latest_gone and len(kept) == len(manager._checkpoint_results):
        return ""
    # an older checkpoint gone too: Ray would delete it again as the next one arrives, and fail
    manager._checkpoint_results = kept
    ckpt = (latest or kept[0]).checkpoint
    if latest_gone:
        trial_dir = ckpt.path.rstrip("/").rsplit("/", 1)[0]
        found = ckpt.filesystem.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        newest = sorted(
            f.path for f in found if f.base_name.startswith("checkpoint_") and f.type == pafs.FileType.Directory
        )
        manager._latest_checkpoint_result = None
        if newest:
            result = _TrainingResult(checkpoint=type(ckpt)(newest[-1], ckpt.filesystem), metrics=dict(latest.metrics))
            manager._latest_checkpoint_result = result
            if newest[-1] not in {r.checkpoint.path for r in manager._checkpoint_results}:
                manager._checkpoint_results.append(result)
    blob["value"] = cloudpickle.dumps(manager).hex()
    entry[1] = json.dumps(meta) if isinstance(entry[1], str) else meta
    trial: str = ckpt.path.rstrip("/").rsplit("/", 2)[-2]
    return trial


def _exists(checkpoint: Any) -> bool:
    import pyarrow.fs as pafs

    exists: bool = checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound
    return exists
