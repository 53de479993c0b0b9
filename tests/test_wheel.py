"""The built wheel works outside the checkout.

Builds the wheel (``pip wheel --no-deps --no-build-isolation``) from a copy of the sources, installs
it into a fresh virtual environment that sees the running interpreter's dependencies and, from a
temporary folder, runs the venv's ``spotwhisper --help``,
``spotwhisper index build`` on ~15 real her2st spots and ``spotwhisper search`` — asserting that the
code, the configs and the vocabulary come from the venv, not from the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.layout import BLOCKER_SOURCE

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "spotwhisper", "configs", "ui"]


def _run(cmd: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _copy_sources(src: Path) -> None:
    """The checkout's files as git sees them (tracked and untracked-but-not-ignored; no build leftovers,
    caches or collections), so the build writes nothing into the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:  # not a git checkout: the package's folders
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
        for name in SOURCES:
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, src / name, **(
                {"ignore": ignore} if (ROOT / name).is_dir() else {}))
        return
    for rel in filter(None, listed.stdout.split("\0")):
        if rel.split("/")[0] in SOURCES and (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)


def _build_wheel(src: Path, dist: Path, env: dict) -> Path:
    """``pip wheel`` of the source tree ``src`` into ``dist``, checked to hold the package and its data only."""
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src], dist.parent, env)
    (wheel,) = dist.glob("spotwhisper-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"spotwhisper", wheel.name.split("-py3")[0] + ".dist-info"}, \
        "the wheel installs something besides the spotwhisper package (a top-level ui?)"
    for needed in ("spotwhisper/configs/search.yaml", "spotwhisper/configs/vocabulary.yaml",
                   "spotwhisper/configs/bench/harness.yaml", "spotwhisper/ui/app.py",
                   "spotwhisper/ui/static/viewer.js", "spotwhisper/ui/static/openseadragon/openseadragon.min.js",
                   "spotwhisper/pretrained/text-default/model.safetensors", "spotwhisper/resources/gene_panel.txt"):
        assert needed in names, f"{needed} missing from the wheel"
    return wheel


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPOTWHISPER_CONFIG_DIR")}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv with the wheel installed (and nothing of the checkout on its path)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    _copy_sources(src)
    env = _clean_env()
    wheel = _build_wheel(src, work / "dist", env)
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], work, env)
    _see_running_site_packages(venv)
    # the running interpreter's pip (on the venv's path through the .pth) installs into the venv's prefix
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel], work, env)
    return venv


def running_site_packages() -> list[str]:
    """The site-packages folders of the interpreter running the tests, in its own order.

    In a venv these are the venv's (plus the base's when it was made with ``--system-site-packages``);
    in the system interpreter, the system's. ``python -m venv --system-site-packages`` would expose the
    *base* interpreter's folders instead, which lack what was installed into an active venv."""
    out = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        out.append(site.getusersitepackages())
    return [p for p in dict.fromkeys(out) if os.path.isdir(p)]


def _see_running_site_packages(venv: Path) -> None:
    """Put the running interpreter's site-packages on the venv's path, after the venv's own.

    A ``.pth`` line that is a folder is appended to ``sys.path`` but the ``.pth`` files inside that folder
    are not run, so an editable install of the checkout there (a meta-path finder started by a ``.pth``)
    stays invisible and ``spotwhisper`` can only come from the wheel."""
    code = ("import site, sys; sys.stdout.write(site.getsitepackages()[0])")
    own = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", code], capture_output=True, text=True, check=True)
    Path(own.stdout.strip(), "_running_interpreter.pth").write_text("\n".join(running_site_packages()) + "\n")


@pytest.mark.slow
def test_wheel_runs_outside_the_checkout(venv, data_dir, tmp_path):
    from spotwhisper import keys
    from spotwhisper.io import read_her2st, write_h5ad

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SPOTWHISPER_CONFIG_DIR", "SPOTWHISPER_INDEX_DIR")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    python, cli = venv / "bin" / "python", venv / "bin" / "spotwhisper"

    where = _run([python, "-c", "import json, spotwhisper, spotwhisper.ui.app as app, spotwhisper.config as c, "
                  "spotwhisper.prompts as p; print(json.dumps([spotwhisper.__file__, app.__file__, "
                  "str(c.resolve_config_path('search')), str(c.resolve_config_path('vocabulary')), "
                  "len(p.load_vocabulary().terms)]))"], outside, env)
    package, app, search_yaml, vocabulary, n_terms = json.loads(where.stdout.splitlines()[-1])
    for path in (package, app, search_yaml, vocabulary):
        assert Path(path).resolve().is_relative_to(venv.resolve()), f"{path} is not from the venv"
        assert not Path(path).resolve().is_relative_to(ROOT), f"{path} comes from the checkout"
    assert n_terms > 10
    no_ui = subprocess.run([python, "-c", "import ui"], cwd=outside, env=env, capture_output=True, text=True)
    assert no_ui.returncode != 0 and "No module named 'ui'" in no_ui.stderr

    assert "index" in _run([cli, "--help"], outside, env).stdout

    c2 = read_her2st(data_dir, "C2")
    strip = c2[c2.obs[keys.ARRAY_Y] == 19].copy()  # ~15 real spots; the H&E stays where it is (named in uns)
    spots = write_h5ad(strip, outside / "strip.h5ad")
    index_dir = outside / "collections"
    # the core install's CLI: index build and search run with gradio and ray unimportable (no [ui] / [ray])
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "block_extras.py").write_text(BLOCKER_SOURCE)
    core_env = {**env, "PYTHONPATH": str(tmp_path / "blocker")}
    core = [python, "-c", "import sys, block_extras; from spotwhisper.cli import main; sys.exit(main(sys.argv[1:]))"]
    _run([*core, "index", "build", "--collection", "wheel", spots, "--index-dir", index_dir], outside, core_env,
         timeout=600)
    manifest = json.loads((index_dir / "wheel" / "manifest.json").read_text())
    assert manifest["routes"]["transcriptome"]["n_vectors"] == strip.n_obs
    assert (index_dir / "wheel" / "slides").is_dir()

    found = _run([*core, "search", "invasive cancer", "--collection", "wheel", "--index-dir", index_dir,
                  "--out-dir", outside / "results", "--json"], outside, core_env, timeout=600)
    answer = json.loads(found.stdout[found.stdout.index("{"):])
    assert answer["query"] == "invasive cancer" and answer["slides"][0]["slide"] == "C2", answer
    assert "transcriptome" in answer["routes"]
    assert sorted(p.suffix for p in (outside / "results").iterdir()) == [".csv", ".geojson", ".png"]


@pytest.mark.slow
def test_symlink_free_clone_builds_sdist_and_wheel_with_configs_and_ui(tmp_path):
    """A clone without symlink support (``core.symlinks=false``, the Windows default) carries the configs
    and the UI: the repository tracks no symlink, and both the sdist and the wheel built from it hold
    ``spotwhisper/configs`` and ``spotwhisper/ui`` (mapped from the top-level ``configs/`` and ``ui/``)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t")[-1] for line in tracked.splitlines() if line.startswith("120000")]
    assert not links, f"the repository tracks symlinks: {links}"
    env = _clean_env()
    clone = tmp_path / "clone"
    _run(["git", "-c", "core.symlinks=false", "clone", "-q", "--no-local", ROOT, clone], tmp_path, env)
    sdist_dir = tmp_path / "sdist"
    _run([sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(sdist_dir)!r}))"],
         clone, env)
    (sdist,) = sdist_dir.glob("spotwhisper-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[-1] for m in tar.getmembers()}
        assert {"ui/app.py", "ui/static/viewer.js", "configs/search.yaml", "configs/bench/harness.yaml"} <= members
        tar.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    (tmp_path / "dist-clone").mkdir()
    (tmp_path / "dist-sdist").mkdir()
    for tree, dist in ((clone, tmp_path / "dist-clone"), (unpacked, tmp_path / "dist-sdist")):
        _build_wheel(tree, dist, env)
