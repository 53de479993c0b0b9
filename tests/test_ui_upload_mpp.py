"""µm/px of an upload: file metadata, else the spot table's pitch, else asked for (never a silent default)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from spotwhisper.ui.upload_mpp import ASK, lattice, resolve_mpp


def test_her2st_jpeg_gets_its_mpp_from_the_spot_pitch(data_dir):
    from spotwhisper.io.her2st import image_path

    table = pd.read_csv(data_dir / "her2st" / "data" / "ST-spotfiles" / "C5_selection.tsv", sep="\t")
    xy = table[["pixel_x", "pixel_y"]].to_numpy()
    choice = resolve_mpp(image_path(data_dir, "C5"), xy)
    assert choice.source == "spot pitch" and choice.value == pytest.approx(0.73, abs=0.01)  # not the old silent 0.5
    assert "square lattice, read as ST (200 µm pitch)" in choice.sentence() and "0.730 µm per pixel" in choice.sentence()
    assert resolve_mpp(image_path(data_dir, "C5"), None).value is None  # the JPEG itself does not say


def test_hexagonal_lattice_is_read_as_visium(tmp_path, he_image):
    rows, cols, pitch = 12, 14, 40.0  # Visium: 100 µm pitch on a hexagonal lattice -> 2.5 µm/px
    xy = np.array([[c * pitch + (r % 2) * pitch / 2, r * pitch * np.sqrt(3) / 2] for r in range(rows) for c in range(cols)])
    assert lattice(xy)[1] == "hexagonal"
    Image.fromarray(he_image).save(tmp_path / "hires.png")
    choice = resolve_mpp(tmp_path / "hires.png", xy + 50)
    assert choice.value == pytest.approx(2.5, rel=1e-6) and "Visium" in choice.note


def test_file_metadata_wins_and_a_typed_value_is_checked(tmp_path, he_image):
    path = tmp_path / "scan.ome.tif"
    tifffile.imwrite(path, he_image, ome=True, photometric="rgb",
                     metadata={"PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.25})
    assert (resolve_mpp(path).value, resolve_mpp(path).source) == (0.25, "file")
    typed = resolve_mpp(path, None, 0.5)  # the file wins; the disagreement is said
    assert typed.value == 0.25 and typed.source == "file" and "the 0.5 you entered was not used" in typed.note
    png = tmp_path / "bare.png"
    Image.fromarray(he_image).save(png)
    xy = np.array([[x * 270.0, y * 270.0] for x in range(5) for y in range(5)])
    mine = resolve_mpp(png, xy, 0.7)  # a typed value wins over the spot-pitch estimate
    assert (mine.value, mine.source) == (0.7, "you")
    with pytest.raises(ValueError, match="not a plausible"):
        resolve_mpp(path, None, 500.0)


def test_unknown_is_asked_for_with_the_reason(tmp_path, he_image):
    Image.fromarray(he_image).save(tmp_path / "bare.png")
    choice = resolve_mpp(tmp_path / "bare.png")
    assert choice.value is None and choice.sentence() == ASK
    assert "wrong magnification" in ASK and "40x ≈ 0.25" in ASK
