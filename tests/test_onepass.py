"""One-pass sub-tiles (``efficientnet_lite0_onepass``): the tile feature is the ten-pass encoder's, sub-tiles are
box means of the feature map, and ``extract_features`` stores them where the ten-pass layout does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spotwhisper.encoders import create_encoder, extract_features, feature_key, subtile_key
from spotwhisper.encoders.onepass import OnePassSubtiles, box_pooling_matrix


def test_box_pooling_matrix_splits_the_map_by_area():
    p = box_pooling_matrix(7, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [3 / 7, 3 / 7, 1 / 7, 0, 0, 0, 0])  # cells 0–2⅓ of 7
    np.testing.assert_allclose(p[1, 3], 3 / 7) and np.testing.assert_allclose(p, p[::-1, ::-1])
    np.testing.assert_allclose(box_pooling_matrix(6, 3), np.kron(np.eye(3), [0.5, 0.5]))
    with pytest.raises(ValueError):
        box_pooling_matrix(0, 3)


def test_pooling_is_the_mean_of_each_sub_tile_of_the_map():
    class Map(torch.nn.Module):  # a "backbone" whose feature map is the input's first 2 channels
        def forward_features(self, x):
            return x[:, :2]

    x = torch.randn(2, 3, 6, 6)
    out = OnePassSubtiles(Map(), image_size=6, grid=3)(x).reshape(2, 10, 2)
    torch.testing.assert_close(out[:, 0], x[:, :2].mean(dim=(2, 3)))
    torch.testing.assert_close(out[:, 1 + 3 * 1 + 2], x[:, :2, 2:4, 4:6].mean(dim=(2, 3)))  # row 1, column 2


def test_one_pass_features_on_real_spots(c2):
    idx = [0, 40, 80]
    ten = extract_features(c2, create_encoder("efficientnet_lite0", runtime="torch"), indices=idx, use_cache=False,
                           progress=False)
    one = extract_features(c2, create_encoder("efficientnet_lite0_onepass", runtime="torch"), indices=idx,
                           use_cache=False, progress=False)
    name = "efficientnet_lite0_onepass"
    assert one.obsm[subtile_key(name)].shape == (3, 9, 1280)
    np.testing.assert_allclose(one.obsm[feature_key(name)], ten.obsm[feature_key("efficientnet_lite0")], atol=1e-4)
    assert "pooled from one pass" in one.uns["features"][name]["resampling"]
    # sub-tiles differ from each other and from the tile: they are local
    sub = one.obsm[subtile_key(name)]
    assert np.abs(sub - sub.mean(axis=1, keepdims=True)).mean() > 0.01
