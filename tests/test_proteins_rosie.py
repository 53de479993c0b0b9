"""Route A: the ROSIE ConvNeXt — construction, weight loading, sliding window, training (masked MSE).

Small ConvNeXt configurations stand in for ConvNeXt-Small where a forward pass is needed, so the
tests run in seconds on a CPU; they check the mechanics, not ROSIE's (unavailable) weights.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torchvision.models.convnext import CNBlockConfig

from spotwhisper import keys
from spotwhisper.io.slide import ArraySlide
from spotwhisper.proteins import RosieConfig, RosieTrainConfig, export_ome_tiff, read_ome_tiff
from spotwhisper.proteins.from_image import map_to_anndata, proteins_from_image
from spotwhisper.proteins.rosie import (
    RosieWeightsError,
    build_rosie_model,
    load_rosie_weights,
    predict_map,
    predict_windows,
    save_rosie_checkpoint,
)
from spotwhisper.proteins.train_rosie import (
    PairedImage,
    PairedWindows,
    centre_targets,
    evaluate,
    masked_mse,
    train_rosie,
)

TINY = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
FAST = RosieConfig(input_px=32, batch_size=8)


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0, n_outputs: int = 50) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_rosie_model(n_outputs, block_setting=TINY).eval()


def test_production_model_is_convnext_small_with_50_outputs():
    model = build_rosie_model()
    n_params = sum(p.numel() for p in model.parameters())
    assert 49e6 < n_params < 51e6  # ConvNeXt-Small ≈ 49.5M
    assert model.classifier[2].out_features == 50 and model.classifier[2].in_features == 768
    assert [len(stage) for stage in model.features[1::2]] == [3, 3, 27, 3]  # ConvNeXt-S depths


def test_load_rosie_checkpoint_format(tmp_path):
    src = tiny_model(1)
    # the released checkpoint: {"model_state_dict": ...} saved from nn.DataParallel ("module." prefix)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 3}, tmp_path / "best_model_single.pth")
    dst = load_rosie_weights(tiny_model(2), tmp_path / "best_model_single.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(dst(x), src(x))
    # our own checkpoints load the same way
    save_rosie_checkpoint(src, tmp_path / "ours.pth", {"history": [{"epoch": 1, "train_loss": 0.5}]})
    again = load_rosie_weights(tiny_model(3), tmp_path / "ours.pth")
    with torch.inference_mode():
        torch.testing.assert_close(again(x), src(x))


def test_load_rosie_refuses_wrong_or_unsafe_files(tmp_path):
    with pytest.raises(RosieWeightsError, match="no such ROSIE weights"):
        load_rosie_weights(tiny_model(), tmp_path / "missing.pth")
    torch.save(tiny_model(n_outputs=10).state_dict(), tmp_path / "ten.pth")
    with pytest.raises(RosieWeightsError, match="wrong shape"):
        load_rosie_weights(tiny_model(), tmp_path / "ten.pth")
    torch.save({"model_state_dict": tiny_model().state_dict(), "path": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(RosieWeightsError, match="weights_only=False"):
        load_rosie_weights(tiny_model(), tmp_path / "pickled.pth")
    assert load_rosie_weights(tiny_model(), tmp_path / "pickled.pth", weights_only=False) is not None


def he_strip(width: int = 256, height: int = 128, glass_from: int = 128, seed: int = 0) -> np.ndarray:
    """H&E-like tissue on the left, white glass from column ``glass_from`` on."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal((200, 120, 170), 25, (height, width, 3)), 0, 255).astype(np.uint8)
    img[:, glass_from:] = 255
    return img


def test_sliding_window_map_three_windows():
    model, img = tiny_model(), he_strip()
    slide = ArraySlide(img, mpp=FAST.mpp)  # one slide pixel = one ROSIE pixel
    pmap = predict_map(model, slide, FAST, region=(64, 64, 192, 64))
    assert pmap.values.shape == (50, 1, 3) and pmap.step == FAST.stride_px and pmap.origin == (64.0, 64.0)
    direct = predict_windows(model, np.stack([img[:, 0:128], img[:, 64:192]]), FAST)
    np.testing.assert_allclose(pmap.values[:, 0, :2].T, direct, rtol=1e-4, atol=1e-5)
    assert np.isnan(pmap.values[:, 0, 2]).all()  # the window over glass is skipped
    # sampling: at a window centre → that window; over glass → nearest computed window
    sampled = pmap.sample(np.array([[128.0, 64.0], [250.0, 64.0]]))
    np.testing.assert_allclose(sampled, direct[[1, 1]], rtol=1e-5)


def test_sliding_window_respects_slide_resolution():
    model = tiny_model()
    img = he_strip(width=512, height=256, glass_from=512)
    slide = ArraySlide(img, mpp=FAST.mpp / 2)  # twice ROSIE's resolution: windows are 256 slide px
    pmap = predict_map(model, slide, FAST, region=(128, 128, 384, 128))
    assert pmap.step == 2 * FAST.stride_px and pmap.values.shape == (50, 1, 3)
    from PIL import Image

    first = np.asarray(Image.fromarray(img[:, 0:256]).resize((128, 128), Image.BILINEAR))
    np.testing.assert_allclose(pmap.values[:, 0, 0], predict_windows(model, first[None], FAST)[0], rtol=1e-4, atol=1e-5)


def test_proteins_from_image_on_spots_and_export(tmp_path):
    model, img = tiny_model(), he_strip(width=384, height=256, glass_from=384)
    slide = ArraySlide(img, mpp=FAST.mpp)
    coords = np.array([[96.0, 96.0], [224.0, 96.0], [96.0, 192.0], [224.0, 192.0]])
    adata = ad.AnnData(obs={keys.ARRAY_X: [0, 1, 0, 1], keys.ARRAY_Y: [0, 0, 1, 1]})
    adata.obs_names = [f"s{i}" for i in range(4)]
    adata.obsm[keys.SPATIAL] = coords
    adata.uns[keys.SPATIAL] = {
        "toy": {"images": {}, "scalefactors": {keys.SPOT_DIAMETER: 140.0, keys.MPP: FAST.mpp}, "metadata": {}}
    }
    _, pmap = proteins_from_image(adata, model, FAST, slide=slide, scale=1.0)
    raw = adata.obsm[keys.PROTEINS_RAW]
    assert raw.shape == (4, 50) and np.isfinite(raw).all()
    assert adata.uns[keys.PROTEIN_INFO]["route"] == "rosie"
    # each spot = mean of the computed windows within its 70 px radius
    tree = cKDTree(pmap.centres)
    flat = pmap.values.reshape(50, -1).T
    hits = [h for h in tree.query_ball_point(coords[0], r=70.0) if np.isfinite(flat[h]).all()]
    assert len(hits) >= 2
    np.testing.assert_allclose(raw[0], flat[hits].mean(axis=0), rtol=1e-5)
    path = export_ome_tiff(adata, tmp_path / "toy.ome.tif")
    image, names, size = read_ome_tiff(path)
    assert image.shape == (50, 2, 2) and names[0] == "DAPI"
    np.testing.assert_allclose(image[:, 1, 1], adata.obsm[keys.PROTEINS][3])
    grid = map_to_anndata(pmap, FAST)
    assert grid.n_obs == int(np.isfinite(pmap.values[0]).sum()) and grid.obsm[keys.PROTEINS].shape[1] == 50


def test_masked_mse_ignores_masked_markers():
    pred = torch.tensor([[1.0, 5.0], [2.0, -3.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[True, False], [True, False]])
    loss = masked_mse(pred, target, mask)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert torch.all(pred.grad[:, 1] == 0)


def test_centre_target_is_mean_of_centre_8x8():
    mif = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32)
    t = centre_targets(mif, np.array([[16, 10]]), 8)
    np.testing.assert_allclose(t[0], mif[:, 6:14, 12:20].mean(axis=(1, 2)))


def synthetic_pair(seed: int, size: int = 192, n_markers: int = 50) -> PairedImage:
    """Voronoi patches of random colour; every marker a fixed linear function of the pixel RGB.

    Odd seeds did not stain the first 10 markers (NaN, masked), as panels differ between studies.
    """
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(123).normal(0, 1, (n_markers, 3))
    yy, xx = np.mgrid[:size, :size]
    _, region = cKDTree(rng.uniform(0, size, (8, 2))).query(np.column_stack([xx.ravel(), yy.ravel()]))
    colours = rng.uniform(40, 240, (8, 3))
    he = np.clip(colours[region.reshape(size, size)] + rng.normal(0, 4, (size, size, 3)), 0, 255).astype(np.uint8)
    mif = np.einsum("ck,hwk->chw", weights, he / 255.0).astype(np.float32)
    stained = np.ones(n_markers, dtype=bool)
    if seed % 2:
        stained[:10] = False
        mif[:10] = np.nan
    return PairedImage(he=he, mif=mif, stained=stained, name=f"pair{seed}")


def test_training_learns_markers_that_are_functions_of_the_image():
    train = PairedWindows([synthetic_pair(i) for i in range(6)], FAST, windows_per_image=32, seed=0)
    val = PairedWindows([synthetic_pair(100 + i) for i in range(2)], FAST, windows_per_image=32, seed=1)
    model = tiny_model()
    before = evaluate(model, val)["loss"]
    history = train_rosie(model, train, RosieTrainConfig(epochs=3, batch_size=16, lr=3e-3, weight_decay=0.0), val)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    result = evaluate(model, val)
    assert result["loss"] < 0.5 * before
    mask = result["mask"]
    assert mask[:32].all() and not mask[32:, :10].any()  # pair101 did not stain the first 10 markers
    r = np.corrcoef(result["pred"][mask], result["target"][mask])[0, 1]
    assert r > 0.7


def test_load_pair_matches_channels_by_synonym(tmp_path):
    from PIL import Image

    from spotwhisper.proteins import write_ome_tiff
    from spotwhisper.proteins.train_rosie import load_pair

    he = he_strip(width=160, height=160, glass_from=160)
    Image.fromarray(he).save(tmp_path / "a_he.png")
    mif = np.random.default_rng(0).random((3, 160, 160)).astype(np.float32)
    write_ome_tiff(tmp_path / "a_mif.ome.tif", mif, ["Pan-Cytokeratin", "CD3", "Caveolin"])
    pair = load_pair(tmp_path / "a_he.png", tmp_path / "a_mif.ome.tif")
    assert pair.stained.sum() == 2 and pair.stained[8] and pair.stained[9]  # PanCK, CD3e
    np.testing.assert_array_equal(pair.mif[8], mif[0])
    assert np.isnan(pair.mif[0]).all()  # DAPI not stained


@pytest.mark.slow
def test_cli_rosie_route_on_image(tmp_path):
    """End to end with the real ConvNeXt-Small architecture (random weights: mechanics only)."""
    from PIL import Image

    from spotwhisper.cli import main

    torch.manual_seed(0)
    torch.save({"model_state_dict": build_rosie_model().state_dict()}, tmp_path / "rosie.pth")
    Image.fromarray(he_strip(width=256, height=128, glass_from=192)).save(tmp_path / "he.png")
    out = tmp_path / "he_proteins.h5ad"
    args = ["predict", "proteins", str(tmp_path / "he.png"), "--rosie-weights", str(tmp_path / "rosie.pth"),
            "--mpp", "0.3775", "--stride", "128", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    res = ad.read_h5ad(out)
    assert res.uns[keys.PROTEIN_INFO]["route"] == "rosie" and res.obsm[keys.PROTEINS_RAW].shape[1] == 50
    assert 1 <= res.n_obs <= 6 and np.isfinite(res.obsm[keys.PROTEINS_RAW]).all()
    image, names, size = read_ome_tiff(tmp_path / "he_proteins.ome.tif")
    assert names[8] == "PanCK" and size == pytest.approx((128 * 0.3775, 128 * 0.3775))
