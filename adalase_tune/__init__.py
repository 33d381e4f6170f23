"""adalase_tune: learn where to apply latent data augmentation (AdaLASE), at cluster scale.

The public surface::

    from adalase_tune import load_config, Trainer, train
    summary = train(load_config("search_spaces/digits.yaml", ["selection.method=adalase"]))
"""
from .config import ConfigError, ExperimentConfig, load_config
from .data import build_data
from .engine import NonFiniteLossError, Trainer, train
from .models import MODELS, build_model
from .ops import OPS, get_op
from .policies import POLICIES, build_policy
from .sites import DAContext, Site, SiteInfo, attach_sites

__version__ = "0.1.0"

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "build_data", "Trainer", "train",
           "NonFiniteLossError", "MODELS", "build_model", "OPS", "get_op", "POLICIES", "build_policy",
           "DAContext", "Site", "SiteInfo", "attach_sites"]
