"""``spotwhisper tiles preview`` on the real C2 section and on a bare image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from spotwhisper.cli import main


def test_preview_c2_draws_tiles_on_the_spots(data_dir, tmp_path, capsys):
    out = tmp_path / "c2.png"
    assert main(["tiles", "preview", "C2", "--data-dir", str(data_dir), "--out", str(out), "--max-side", "1000"]) == 0
    text = capsys.readouterr().out
    assert "187 spot tiles of 200 µm" in text and str(out) in text
    img = np.asarray(Image.open(out))
    assert max(img.shape[:2]) == 1000
    # spot centres are drawn as yellow dots at their scaled positions
    from spotwhisper.io import read_her2st

    c2 = read_her2st(data_dir, "C2", with_image=False)
    s = 1000 / 9911
    yellow = 0
    for x, y in c2.obsm["spatial"]:
        r, g, b = img[int(round(y * s)), int(round(x * s))]
        yellow += int(r > 200 and g > 180 and b < 90)
    assert yellow / c2.n_obs > 0.9


def test_preview_goes_to_an_output_folder_with_a_legend(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "previews"
    assert main(["tiles", "preview", "C2", "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--max-side", "800"]) == 0
    out = out_dir / "C2_tiles.png"
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["previews"]  # nothing in the cwd
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    h = img.shape[0]
    inset = img[int(h * 0.6):, : int(img.shape[1] * 0.45)]  # legend: bottom-left, white box with the swatches
    white = (inset > 245).all(-1).mean()
    blue = ((abs(inset[..., 0] - 30) < 25) & (abs(inset[..., 1] - 90) < 25) & (inset[..., 2] > 200)).sum()
    red = ((inset[..., 0] > 200) & (inset[..., 1] < 60) & (inset[..., 2] < 60)).sum()
    assert white > 0.1 and blue > 20 and red > 20
    assert main(["tiles", "preview", "C2", "--data-dir", str(data_dir), "--max-side", "400"]) == 0
    assert (tmp_path / "tiles_preview" / "C2_tiles.png").is_file()  # the default folder, not the cwd itself


def test_preview_of_a_bare_image_uses_a_grid(tmp_path, he_image, capsys):
    path = tmp_path / "slide.png"
    Image.fromarray(he_image).save(path)
    assert main(["tiles", "preview", str(path), "--mpp", "2.0", "--out", str(tmp_path / "p.png")]) == 0
    assert "grid tiles of 200 µm" in capsys.readouterr().out


def test_preview_errors_are_clear(tmp_path, he_image, capsys):
    assert main(["tiles", "preview", str(tmp_path / "missing.png")]) == 1
    assert "missing.png: no such slide image" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300, 3), 243, np.uint8)).save(blank)
    assert main(["tiles", "preview", str(blank), "--mpp", "1"]) == 1
    assert "no tissue found" in capsys.readouterr().err
    tissue = tmp_path / "tissue.png"
    Image.fromarray(he_image).save(tissue)
    assert main(["tiles", "preview", str(tissue)]) == 1
    assert "microns per pixel unknown; give it (--mpp)" in capsys.readouterr().err
