"""In-process registration, as a user's own module would do it: importing this registers the names.
(Only the subprocess of tests/test_user_code.py imports it: the test session's registries stay clean.)"""

from adalase_tune.data import DATASETS
from adalase_tune.models import MODELS

from .data import build_images
from .models import build_cnn

MODELS.register("userpkg_cnn")(build_cnn)
DATASETS.register("userpkg_patches")(build_images)
