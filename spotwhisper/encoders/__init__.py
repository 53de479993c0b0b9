"""Stage 3 — image encoders (one registry) and tile features with an on-disk cache.

Typical use::

    enc = encoders.create_encoder("efficientnet_lite0")      # works offline
    adata = encoders.extract_features(adata, enc)            # obsm["features_efficientnet_lite0"], …_sub

``spotwhisper features models`` lists the registry. Models are added with ``@register_model``, as in
timm: :mod:`.backbones` and :mod:`.clip_backbones` register theirs when the package is imported.
Pathology foundation models (H-optimus-0, UNI, UNI2-h, Phikon, Phikon-v2, PLIP, CONCH) load from a
local path or their hub id.
"""

# The backbone modules register their models (``@register_model``) when imported; the registry
# itself imports none of them.
from . import backbones, clip_backbones, onepass, stain_stats  # noqa: F401
from .backbones import convert_efficientnet_lite_state_dict
from .feature_cache import FeatureCache, default_cache_dir
from .features import (
    FeatureConfig,
    extract_features,
    extract_grid_features,
    feature_key,
    grid_anndata,
    resampling_note,
    subtile_key,
)
from .registry import (
    DEFAULT_ENCODER,
    EncoderSpec,
    ImageEncoder,
    LoadedBackbone,
    create_encoder,
    get_spec,
    list_encoders,
    register_encoder,
    register_model,
)
from .runtime import fold_batchnorm, resolve_device
from .weights import EncoderWeightsError

__all__ = [
    "DEFAULT_ENCODER",
    "EncoderSpec",
    "EncoderWeightsError",
    "FeatureCache",
    "FeatureConfig",
    "ImageEncoder",
    "LoadedBackbone",
    "convert_efficientnet_lite_state_dict",
    "create_encoder",
    "default_cache_dir",
    "extract_features",
    "extract_grid_features",
    "fold_batchnorm",
    "feature_key",
    "get_spec",
    "grid_anndata",
    "list_encoders",
    "register_encoder",
    "register_model",
    "resampling_note",
    "resolve_device",
    "subtile_key",
]
