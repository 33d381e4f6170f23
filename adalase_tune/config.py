"""Typed experiment configuration: frozen dataclasses at the core, YAML and ``--set`` at the edge.

Every section validates itself in ``__post_init__``; unknown keys are rejected with a
did-you-mean. Cross-section checks that need the data or the model (a site index in range,
the number of weights) happen when those are built, still before any training step.

Example::

    cfg = load_config("search_spaces/digits.yaml", ["selection.method=adalase", "train.epochs=5"])
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar, Union

import yaml


class ConfigError(ValueError):
    """A bad configuration value; the message names the field, the value and the fix."""


MAX_ECHO = 200  # characters of a bad value an error message repeats


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_ECHO` characters: an error names a value, never floods."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO else f"{text[: MAX_ECHO - 30]}... ({len(text):,} characters)"


def _fail(key: str, value: Any, fix: str) -> NoReturn:
    raise ConfigError(f"{key} = {shown(value)}: {fix}")


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(key, value, f"choose one of {', '.join(map(str, choices))}{_did_you_mean(str(value), choices)}")


def _check_range(
    key: str,
    value: float,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        _fail(key, value, f"must lie in {span}")


@dataclass(frozen=True)
class DataConfig:
    """Which data, which subset, which split. ``n_train`` is the paper's sample-size axis.
    ``name``: a built-in name, an installed entry point or ``module:builder`` (docs/extending.md)."""

    name: str = "digits"
    path: Optional[str] = None  # npz file or ImageFolder root
    root: str = "./data"  # torchvision download folder
    download: bool = False
    n_train: Optional[int] = None  # class-stratified subset of the training split
    subset_seed: Optional[int] = None  # None: each run seed (train.seed) draws its own subset; a number fixes it
    val_fraction: float = 0.2  # held out of the training data when the dataset has no val split
    test_fraction: float = 0.3  # only for datasets without a test split (digits)
    classes: Optional[tuple[int, ...]] = None  # keep these labels, relabelled 0..k-1 in this order
    input_augment: Optional[bool] = None  # None: the dataset's usual one (crop+flip for CIFAR/SVHN)
    image_size: int = 32  # ImageFolder images are resized to this side
    num_workers: int = 0  # DataLoader workers (ImageFolder: reading it, or streaming it)
    stream: Optional[bool] = None  # ImageFolder read batch by batch; None: when larger than stream_above_mb decoded
    stream_above_mb: float = 4096.0  # the automatic switch: decoded float32 size of all ImageFolder images
    read_on_nodes: bool = False  # sweeps: every node reads path/root itself (shared storage); else shipped once

    def __post_init__(self) -> None:
        _check_range("data.val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)
        _check_range("data.test_fraction", self.test_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.n_train is not None:
            _check_range("data.n_train", self.n_train, 1)
        if self.subset_seed is not None:
            _check_range("data.subset_seed", self.subset_seed, 0, MAX_SEED)
        _check_range("data.image_size", self.image_size, 1)
        _check_range("data.num_workers", self.num_workers, 0)
        if self.classes is not None and len(self.classes) < 2:
            _fail("data.classes", list(self.classes), "list at least two labels to classify, or null for all")
        if self.name in ("npz", "imagefolder") and not self.path:
            _fail("data.path", self.path, f"data.name={self.name} needs data.path (the {self.name} location)")
        if self.stream and self.name != "imagefolder":
            _fail("data.stream", True, f"only imagefolder data streams ({self.name} is read into memory); use null")
        _check_range("data.stream_above_mb", self.stream_above_mb, 0.0, lo_open=True)


@dataclass(frozen=True)
class ModelConfig:
    """Which network: a built-in name, an installed entry point or ``module:builder`` (docs/extending.md).
    Sites are published by the model itself (``Site`` modules) or named in ``sites``."""

    name: str = "cnn"
    hidden: tuple[int, ...] = (1000,)  # mlp widths
    width: int = 32  # cnn base width
    stem: str = "cifar"  # resnet: cifar (3x3, no max-pool) or imagenet (7x7 + max-pool)
    pretrained: Optional[str] = None  # torchvision weights name, e.g. IMAGENET1K_V1
    checkpoint: Optional[str] = None  # a state dict written by adalase_tune (--save-model)
    # DA sites at the outputs of these submodules (names as in named_modules(), e.g. layer1), plus
    # the input: for a model without Site modules of its own, e.g. a torchvision ResNet
    sites: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.sites is not None:
            if not self.sites or not all(self.sites):
                _fail("model.sites", list(self.sites), "list submodule names, e.g. [layer1, layer2], or null")
            if len(set(self.sites)) != len(self.sites):
                _fail("model.sites", list(self.sites), "a module is listed twice")
        _check_choice("model.stem", self.stem, ("cifar", "imagenet"))
        _check_range("model.width", self.width, 1)
        for w in self.hidden:
            _check_range("model.hidden", w, 1)
        if self.checkpoint and not Path(self.checkpoint).is_file():
            _fail(
                "model.checkpoint",
                self.checkpoint,
                "no such file; write one with `adalase-tune train ... --save-model PATH`",
            )


@dataclass(frozen=True)
class AugmentConfig:
    """The latent DA op and its strength (None: the op's default, see ``adalase_tune.ops``).

    ``ops`` (several ops, each at its default strength) or ``strengths`` (several strengths of
    ``op``) make the policy choose a (site, op) pair rather than a site (docs/joint.md).
    """

    op: str = "mixup"
    strength: Optional[float] = None
    ops: Optional[tuple[str, ...]] = None  # joint: a (site, op) pair per step; replaces ``op``
    strengths: Optional[tuple[float, ...]] = None  # joint: a (site, strength of ``op``) pair per step

    def __post_init__(self) -> None:
        if self.strength is not None:
            _check_range("augment.strength", self.strength, 0.0, lo_open=True)
        if self.ops is not None:
            if not self.ops:
                _fail("augment.ops", [], "list at least one op, or leave augment.ops unset and use augment.op")
            if len(set(self.ops)) != len(self.ops):
                _fail("augment.ops", list(self.ops), "an op is listed twice")
            if self.strengths is not None:
                _fail(
                    "augment.strengths",
                    list(self.strengths),
                    "strengths are for one op (augment.op); with augment.ops each op runs at its default "
                    "strength; remove one of the two",
                )
            if self.strength is not None:
                _fail(
                    "augment.strength",
                    self.strength,
                    "with augment.ops each op runs at its default strength (strengths mean different "
                    "things per op); remove augment.strength, or search strengths of one op with augment.strengths",
                )
        if self.strengths is not None:
            if not self.strengths:
                _fail("augment.strengths", [], "list at least one strength, or leave augment.strengths unset")
            for s in self.strengths:
                _check_range("augment.strengths", s, 0.0, lo_open=True)
            if len(set(self.strengths)) != len(self.strengths):
                _fail("augment.strengths", list(self.strengths), "a strength is listed twice")
            if self.strength is not None:
                _fail("augment.strength", self.strength, "give augment.strength or augment.strengths, not both")


@dataclass(frozen=True)
class SelectionConfig:
    """The layer-selection policy: none, fixed, uniform, probs or adalase."""

    method: str = "uniform"
    site: Optional[Union[int, str]] = None  # fixed: index or name
    weights: Optional[tuple[float, ...]] = None  # probs: one per site, normalised

    def __post_init__(self) -> None:
        if self.weights is not None:
            for w in self.weights:
                _check_range("selection.weights", w, 0.0)


# Named settings of AdaLASE: the update form, how often a hypergradient is taken, and the
# pseudo-validation batch as a multiple of the training batch (docs/adalase.md; measured in
# benchmarks/results/presets.md and overhead.md).
#   faithful: the paper's rule exactly (raw update, a pseudo-validation gradient every step, batch 8x).
#   normalized: the scale-free update at the faithful cost.
#   fast: the scale-free update; a pseudo-validation gradient (batch 2x) every 10 steps, reused
#         for the hypergradients of the 9 steps after it: at most 1.2x the passes of a plain run.
@dataclass(frozen=True)
class Preset:
    update: str
    every: int
    val_batch_multiple: int
    credit: str


ADALASE_PRESETS = {
    "faithful": Preset(update="raw", every=1, val_batch_multiple=8, credit="step"),
    "normalized": Preset(update="normalized", every=1, val_batch_multiple=8, credit="step"),
    "fast": Preset(update="normalized", every=10, val_batch_multiple=2, credit="reuse"),
}
DEFAULT_ETA = {"raw": 0.01, "normalized": 10.0}
UPDATES = ("raw", "normalized")
CREDITS = ("step", "reuse", "window")


@dataclass(frozen=True)
class AdalaseConfig:
    """AdaLASE settings. ``preset`` (default ``fast``) names the update form and the cost settings; any of
    ``update``, ``every``, ``val_batch_size`` and ``eta`` set explicitly wins over the preset.

    ``update: raw`` is the paper's ``q_l += eta * <g_val, g_l>``; ``update: normalized`` is the
    scale-free exponentiated step of docs/adalase.md, where ``eta`` is the log-odds a site gains
    over the whole run if its hypergradient is one standard deviation above the average at
    every update.
    """

    eta: Optional[float] = None  # None: 0.01 for raw, 10 for normalized
    min_rate_sum: float = 0.1
    interval: int = 1  # apply pending q updates every `interval` hypergradients
    preset: str = "fast"  # see ADALASE_PRESETS
    update: Optional[str] = None  # raw | normalized (None: the preset's)
    every: Optional[int] = None  # a pseudo-validation gradient every `every` training steps (None: the preset's)
    credit: Optional[str] = None  # which steps get a hypergradient: step, reuse or window (adalase.Hypergradient)
    val_batch_size: Optional[int] = None  # None: the preset's multiple of the mean train batch, capped at the source
    val_source: str = "holdout"  # holdout: a part of the training subset held out of training; train: the subset
    holdout_fraction: float = 0.2  # val_source=holdout: this share of the training subset is not trained on
    val_rotate: float = 10.0  # degrees of random rotation on image pseudo-val batches (val_source=train)
    norm_decay: float = 0.99  # normalized: decay of the running mean and variance of the hypergradient
    # search, then retrain (docs/adalase.md): AdaLASE runs first as a probe of ``probe`` x train.epochs
    # epochs; then a fresh network, from the same initialisation, trains train.epochs epochs on all
    # training samples with q fixed at the probe's final q, sharpened (``sharpen``). Both phases count
    # in the cost. The defaults (retrain, probe 0.5, holdout, sharpen 8) were chosen on validation
    # figures of the development tasks (benchmarks/results/retrain.md); retrain=false,
    # val_source=train is the paper's one-run form.
    retrain: bool = True
    probe: float = 0.5  # the probe's length, as a share of train.epochs (at least one epoch)
    sharpen: float = 8.0  # the retrain's q is the probe's q to this power, renormalised (1: as learned)

    def retrain_q(self, q: Sequence[float]) -> list[float]:
        """The q the retrain runs with: the probe's final ``q`` raised to ``sharpen`` and
        renormalised (``sharpen`` 1 keeps it; larger values move it toward the probe's top arm,
        0 makes it uniform)."""
        if self.sharpen == 1.0:
            return [float(v) for v in q]
        w = [float(v) ** self.sharpen for v in q]
        total = sum(w)
        return [v / total for v in w]

    def probe_epochs(self, epochs: int) -> int:
        """The probe's epochs for a run of ``epochs`` epochs (``retrain``; else 0)."""
        return max(1, round(self.probe * epochs)) if self.retrain else 0

    def update_form(self) -> str:
        return self.update if self.update is not None else ADALASE_PRESETS[self.preset].update

    def every_steps(self) -> int:
        return self.every if self.every is not None else ADALASE_PRESETS[self.preset].every

    def credit_mode(self) -> str:
        return self.credit if self.credit is not None else ADALASE_PRESETS[self.preset].credit

    def eta_value(self) -> float:
        return self.eta if self.eta is not None else DEFAULT_ETA[self.update_form()]

    def val_batch(self, mean_batch: float) -> int:
        """The pseudo-validation batch: ``val_batch_size``, or the preset's multiple of the *mean*
        training batch (``n_train / steps per epoch``: the nominal batch when it divides the
        training set), so that the preset's cost ratio holds whatever the last batch's size."""
        if self.val_batch_size is not None:
            return self.val_batch_size
        return max(1, int(ADALASE_PRESETS[self.preset].val_batch_multiple * mean_batch + 1e-9))

    def __post_init__(self) -> None:
        if self.eta is not None:
            _check_range("adalase.eta", self.eta, 0.0, float("inf"), hi_open=True)
        _check_range("adalase.min_rate_sum", self.min_rate_sum, 0.0, 1.0, hi_open=True)
        _check_range("adalase.interval", self.interval, 1)
        _check_choice("adalase.preset", self.preset, tuple(ADALASE_PRESETS))
        if self.update is not None:
            _check_choice("adalase.update", self.update, UPDATES)
        if self.every is not None:
            _check_range("adalase.every", self.every, 1)
        if self.credit is not None:
            _check_choice("adalase.credit", self.credit, CREDITS)
        if self.val_batch_size is not None:
            _check_range("adalase.val_batch_size", self.val_batch_size, 1)
        _check_choice("adalase.val_source", self.val_source, ("train", "holdout"))
        _check_range("adalase.holdout_fraction", self.holdout_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        _check_range("adalase.val_rotate", self.val_rotate, 0.0, 180.0)
        _check_range("adalase.norm_decay", self.norm_decay, 0.0, 1.0, hi_open=True)
        _check_range("adalase.probe", self.probe, 0.0, 1.0, lo_open=True)
        _check_range("adalase.sharpen", self.sharpen, 0.0, MAX_SHARPEN)


OPTIMIZERS = ("sgd", "adam", "adamw")  # AdaLASE differentiates each one's step (adalase.StepDirection)
MAX_SEED = 2**32 - 1  # numpy and torch both take seeds in this range
MAX_LR = 100.0  # larger learning rates diverge at once with SGD; they are typos, not settings
MAX_WEIGHT_DECAY = 1.0
MAX_SHARPEN = 50.0  # q's clip keeps every arm at or above eps, so eps**50 stays a normal float


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, seed and device. SGD + Nesterov by default (or Adam, AdamW), cosine to 0
    stepped per iteration."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.02
    optimizer: str = "sgd"  # sgd (momentum, nesterov), adam or adamw (weight_decay: L2 for adam, decoupled for adamw)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    amp: Union[bool, str] = "auto"  # bf16 autocast: auto = on CUDA only; true = on every device (CPU too)
    channels_last: Union[bool, str] = "auto"  # for image inputs: auto = on CUDA only; true = everywhere
    # torch's CPU threads. Float sums depend on it, so one config gives one result only at one
    # setting: train, sweep and benchmark trials and data-parallel workers all run with this one
    threads: int = 1

    def __post_init__(self) -> None:
        _check_range("train.epochs", self.epochs, 1)
        _check_range("train.batch_size", self.batch_size, 1)
        _check_range("train.lr", self.lr, 0.0, MAX_LR, lo_open=True)
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_range("train.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        _check_range("train.weight_decay", self.weight_decay, 0.0, MAX_WEIGHT_DECAY)
        _check_range("train.seed", self.seed, 0, MAX_SEED)
        _check_range("train.threads", self.threads, 1, 1024)
        if self.nesterov and self.momentum == 0:
            _fail("train.nesterov", True, "Nesterov needs train.momentum > 0; set train.nesterov=false")
        for key in ("amp", "channels_last"):
            if getattr(self, key) not in (True, False, "auto"):
                _fail(f"train.{key}", getattr(self, key), "use auto (on CUDA only), true (every device) or false")

    def uses(self, key: str, cuda: bool) -> bool:
        """Whether the switch ``amp`` or ``channels_last`` is on for a run on CUDA (``cuda``) or not."""
        value = getattr(self, key)
        return cuda if value == "auto" else bool(value)


@dataclass(frozen=True)
class ExperimentConfig:
    """One training run: data, model, augment, selection, adalase and train sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    adalase: AdalaseConfig = field(default_factory=AdalaseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    def subset_seed(self) -> int:
        """The seed of the training subset (and of AdaLASE's holdout): ``data.subset_seed``, or the
        run's ``train.seed`` when that is None, so that seeds differ in their data as well."""
        return self.data.subset_seed if self.data.subset_seed is not None else self.train.seed

    def with_absolute_paths(self) -> ExperimentConfig:
        """Relative file paths made absolute: trials run in their own working folders. Paths the
        run never reads stay as given (so that a resume from another folder compares alike)."""
        fix = {}
        unused = unused_keys(self.to_dict())
        for key, value in (
            ("data.path", self.data.path),
            ("data.root", self.data.root),
            ("model.checkpoint", self.model.checkpoint),
        ):
            if value and "://" not in value and key not in unused:
                fix[key] = str(Path(value).expanduser().resolve())
        return self.replace(**fix)

    def replace(self, **overrides: Any) -> ExperimentConfig:
        """A copy with dotted-key overrides, e.g. ``cfg.replace(**{"train.seed": 3})``."""
        tree = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(tree, key, value)
        return from_dict(tree)


@dataclass(frozen=True)
class SweepConfig:
    """The YAML's ``sweep:`` section: seeds, resources per trial, and the methods a benchmark
    runs (in order) with their budgets (checked by each method: ``adalase_tune.search``).

    ``seeds: 3`` means seeds 0, 1, 2; a list gives them explicitly. The CLI's flags win over it.
    """

    seeds: Union[int, tuple[int, ...]] = (0,)
    max_concurrent: Optional[int] = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1  # > 1: data-parallel Ray Train workers per trial (resources are per worker)
    methods: dict = field(default_factory=dict)  # method name -> budget mapping

    def __post_init__(self) -> None:
        seeds = self.seeds
        if isinstance(seeds, int):
            _check_range("sweep.seeds", seeds, 1, 10_000)
            seeds = tuple(range(seeds))
            object.__setattr__(self, "seeds", seeds)
        if not seeds:
            _fail("sweep.seeds", [], "give a count >= 1 or a list of seeds")
        for seed in seeds:
            _check_range("sweep.seeds", seed, 0, MAX_SEED)
        if len(set(seeds)) != len(seeds):
            _fail("sweep.seeds", list(seeds), "a seed is listed twice")
        if self.max_concurrent is not None:
            _check_range("sweep.max_concurrent", self.max_concurrent, 1)
        _check_range("sweep.cpus_per_trial", self.cpus_per_trial, 0.0, lo_open=True)
        _check_range("sweep.gpus_per_trial", self.gpus_per_trial, 0.0)
        _check_range("sweep.workers_per_trial", self.workers_per_trial, 1, 100_000)


def load_sweep(path: str | Path) -> SweepConfig:
    """The ``sweep:`` section of a YAML file (defaults when it has none)."""
    return _build_section("sweep", SweepConfig, read_yaml(path).get("sweep"))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dict to ``{"a.b": v}``: the key scheme of ``--set``, MLflow params and Tune configs."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# How a run reads its data, not what it computes: a resume may change these.
HOW_KEYS = frozenset({"data.num_workers", "data.download", "data.read_on_nodes"})
_ROOT_UNUSED = {"digits", "motifs", "motifs_scrambled", "npz", "imagefolder"}  # data.root: torchvision's folder
_PATH_UNUSED = {"digits", "motifs", "motifs_scrambled", "cifar10", "cifar100", "svhn", "mnist", "fashion_mnist"}


def unused_keys(tree: dict) -> set:
    """Keys this config's run never reads (``data.root`` of motifs...): a user's own data builder
    may read any of them, so only built-in names leave some out."""
    name = tree.get("data", {}).get("name")
    return {k for k, unused in (("data.root", _ROOT_UNUSED), ("data.path", _PATH_UNUSED)) if name in unused}


def differing_keys(old: dict, new: dict) -> list[str]:
    """The keys in which two configs (as dicts) differ, among those that change what a run
    computes: not :data:`HOW_KEYS`, not keys the run never reads (:func:`unused_keys`)."""
    o, n = flatten(old), flatten(new)
    skip = HOW_KEYS | unused_keys(old) | unused_keys(new)
    return [k for k in sorted(set(o) | set(n)) if k not in skip and o.get(k) != n.get(k)]


def describe_differences(old: dict, new: dict, keys: Sequence[str]) -> str:
    """``key: value now, value before`` for the first five of ``keys``."""
    o, n = flatten(old), flatten(new)
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    return "; ".join(f"{k}: {shown(n.get(k))} now, {shown(o.get(k))} before" for k in keys[:5]) + more


# --- building from plain data ------------------------------------------------------------------

_SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``, converting the harmless cases (int->float)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg)
            except ConfigError as err:
                errors.append(err)
        _fail(key, value, f"expected {_type_name(tp)}")
    if origin is tuple:
        (item, _) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            _fail(key, value, f"expected a list of {_type_name(item)}")
        return tuple(_coerce(key, v, item) for v in value)
    if tp is dict:
        if not isinstance(value, dict) or not all(v is None or isinstance(v, dict) for v in value.values()):
            _fail(key, value, "expected a mapping of names to mappings (or nothing)")
        return {str(k): dict(v or {}) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(key, value, "expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _fail(key, value, "expected a whole number")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                _fail(key, value, "expected a number")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value:
                _fail(key, value, "expected a number, not NaN")
            return float(value)
        _fail(key, value, "expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        _fail(key, value, "expected a string")
    raise AssertionError(f"unhandled annotation {tp}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Union:
        args = typing.get_args(tp)
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        return names + (" or null" if type(None) in args else "")
    if typing.get_origin(tp) is tuple:
        return f"a list of {_PLURAL.get(typing.get_args(tp)[0], _type_name(typing.get_args(tp)[0]))}"
    return {int: "a whole number", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


_PLURAL = {int: "whole numbers", float: "numbers", str: "strings"}
_Section = TypeVar("_Section")


def _build_section(name: str, cls: type[_Section], values: Any) -> _Section:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        _fail(name, values, f"expected a mapping of {name}.* keys")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"unknown config key {shown(f'{name}.{key}')}{_did_you_mean(str(key), hints)}; "
                f"valid {name}.* keys: {', '.join(hints)}"
            )
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def from_dict(tree: dict) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested dict (e.g. parsed YAML)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"config = {shown(tree)}: expected a mapping with sections {', '.join(_SECTIONS)}")
    sections = {}
    hints = typing.get_type_hints(ExperimentConfig)
    for key, values in tree.items():
        if key not in hints:
            raise ConfigError(
                f"unknown config section '{key}'{_did_you_mean(key, hints)}; valid sections: {', '.join(hints)}"
            )
        sections[key] = _build_section(key, hints[key], values)
    return ExperimentConfig(**sections)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {key}: keys have the form section.name, e.g. train.epochs")
    tree.setdefault(parts[0], {})
    if not isinstance(tree[parts[0]], dict):
        raise ConfigError(f"--set {key}: '{parts[0]}' is not a section")
    tree[parts[0]][parts[1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=1e-3"`` -> ``("a.b", 0.001)``; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: expected key=value, e.g. --set train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (YAML keeps only the last); remove one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


MAX_YAML_NODES = 100_000  # a config has hundreds; aliases may not expand past this


def _config_text(path: Path) -> str:
    """The file as UTF-8 text, or an error naming it (a binary file, another encoding)."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ConfigError(f"config file {str(path)!r} is UTF-16 text; save it as UTF-8")
    if b"\x00" in data[:8192]:
        raise ConfigError(f"config file {str(path)!r} is a binary file, not YAML; pass a YAML text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {err.start}: {data[err.start : err.start + 1]!r}); "
            "save it as UTF-8"
        ) from None


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (memoised: linear time)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError("the YAML refers to itself through an alias (a recursive structure); remove the alias")
    open_.add(key)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes, open_) + _expanded_size(v, sizes, open_) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, sizes, open_) for v in node.value)
    else:
        size = 1
    open_.discard(key)
    sizes[key] = size
    return size


def _load_bounded(text: str) -> Any:
    """``safe_load`` with unique keys that refuses aliases expanding past :data:`MAX_YAML_NODES`
    nodes (a "billion laughs" file of a few hundred bytes would otherwise expand to gigabytes)."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"its aliases expand to {size:,} values (at most {MAX_YAML_NODES:,}); "
                "write the values out or use fewer aliases"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file and the line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; pass a YAML file such as search_spaces/digits.yaml")
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass a YAML file such as search_spaces/digits.yaml"
        )
    try:
        text = _config_text(path)
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({err.strerror}); check its permissions") from None
    try:
        tree = _load_bounded(text)
    except ConfigError as err:
        raise ConfigError(f"config file {str(path)!r}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r}{where}: YAML syntax error: {problem}; fix the YAML") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of sections, got {type(tree).__name__}")
    return tree


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), extra_sections: Sequence[str] = ("sweep",)
) -> ExperimentConfig:
    """Load YAML (optional), apply ``key=value`` overrides, validate.

    ``extra_sections`` names top-level YAML keys owned by other layers that are ignored here
    rather than rejected: by default the ``sweep:`` section (read by :func:`load_sweep`).
    """
    tree = read_yaml(path) if path is not None else {}
    tree = {k: v for k, v in tree.items() if k not in extra_sections}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    return from_dict(tree)
