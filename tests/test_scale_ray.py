"""The Ray batch engine on real her2st spots: same vectors as the local engine, resumable after a kill.

Inputs are strips of ~15 spots of C2, C3 and C4 written to ``.h5ad`` (the H&E image stays where it
is, named in ``uns``), so the pipeline runs on real tissue in seconds once features are cached.
One local Ray instance with 2 CPUs serves the whole module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from spotwhisper import keys
from spotwhisper.collection import (
    CollectionConfig,
    build_collection,
    load_collection_config,
    plan_staging,
    stage_slide,
    staging_folder,
)
from spotwhisper.collection.staging import FAILED, REUSED, model_fingerprint
from spotwhisper.index import CollectionExistsError, CollectionIndex, list_collections
from spotwhisper.io import read_h5ad, write_h5ad
from spotwhisper.pipeline import PipelineConfig
from spotwhisper.scale import ScaleConfig, build_collection_ray

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def specs(strip_specs) -> list[str]:
    """Three small real spot sets as .h5ad files (C2, C3, C4 strips, tests/conftest.py)."""
    return strip_specs


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs for the module, started as the project starts one."""
    import torch

    from spotwhisper.scale.ray_engine import start_local_ray

    torch.set_num_threads(1)  # the actors run with 1 thread too (configs/scale.yaml)
    start_local_ray(2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """``(local address, process)`` of every TCP socket listening in ``pids`` (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(m) for m in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append((line.split()[3], re.search(r'\(\("([^"]+)"', line).group(1)))
    return found


def test_ray_started_here_listens_on_loopback_only(ray_local):
    """GCS, raylet, object manager, workers and agents of the instance the project starts bind
    127.0.0.1 — nothing on the machine's other interfaces (Ray itself would bind every one)."""
    import psutil

    @ray.remote
    def pid() -> int:
        return os.getpid()

    ray.get(pid.remote())  # a worker is up too
    me = psutil.Process()
    pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
    sockets = _listening(pids)
    names = {name for _, name in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets
    outside = [(a, n) for a, n in sockets if not re.match(r"^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+$", a)]
    assert not outside, f"Ray listens beyond loopback: {outside}"
    assert ray_local.startswith("127.0.0.1:")


def _assert_same_collection(a: CollectionIndex, b: CollectionIndex) -> None:
    assert a.routes() == b.routes() and a.slides() == b.slides()
    for route in a.routes():
        for slide in a.slides():
            va, vb = a.vectors_for(route, slide), b.vectors_for(route, slide)
            np.testing.assert_allclose(va.vectors[route], vb.vectors[route], rtol=0, atol=1e-6)
            assert va.metadata["spot"].tolist() == vb.metadata["spot"].tolist()


# --------------------------------------------------------------------------------------- no Ray
def test_staging_keys_follow_input_and_models(specs, tmp_path):
    fp = model_fingerprint(PipelineConfig(), CollectionConfig(key_configs=["pipeline"]))
    first = plan_staging(specs[:2], tmp_path, None, None, fp)
    again = plan_staging(specs[:2], tmp_path, None, None, fp)
    assert [i.path for i in first] == [i.path for i in again]
    assert len({i.path for i in first}) == 2 and all(i.status == "pending" for i in first)
    # another model setting, another mpp → other keys; a staged file → reused
    other_fp = model_fingerprint(PipelineConfig(embed_measured=False), CollectionConfig(key_configs=["pipeline"]))
    assert plan_staging(specs[:1], tmp_path, None, None, other_fp)[0].path != first[0].path
    assert plan_staging(specs[:1], tmp_path, None, 0.5, fp)[0].path != first[0].path
    first[0].path.write_bytes(b"staged")
    assert plan_staging(specs[:2], tmp_path, None, None, fp)[0].status == REUSED
    with pytest.raises(ValueError, match="given twice"):
        plan_staging([specs[0], specs[0]], tmp_path, None, None, fp)
    with pytest.raises(FileNotFoundError, match="no such file"):
        plan_staging([str(tmp_path / "nope.h5ad")], tmp_path, None, None, fp)


def test_failed_slide_is_reported_and_not_staged(specs, tmp_path):
    bare = read_h5ad(specs[0])
    del bare.uns[keys.SPATIAL]  # no H&E image any more
    spec = tmp_path / "bare.h5ad"
    write_h5ad(bare, spec)
    (item,) = plan_staging([str(spec)], tmp_path / "staging", None, None, "fp")
    out = stage_slide(item, models=None, pipeline=None, data_dir=None, mpp=None)
    assert out.status == FAILED and "no H&E image" in out.error and "bare" in out.error
    assert not item.path.exists()


def test_scale_config_rejects_bad_values():
    with pytest.raises(ValueError, match="torch_threads"):
        ScaleConfig(torch_threads=0)
    with pytest.raises(ValueError, match="actors"):
        ScaleConfig(actors=0)


# ------------------------------------------------------------------------------------------ Ray
KILLED_JOB = textwrap.dedent("""
    import sys
    from spotwhisper.scale import build_collection_ray, load_scale_config
    cfg = load_scale_config(actors=1)  # one slide at a time, so the kill lands between slides
    build_collection_ray("coll", sys.argv[2:], index_dir=sys.argv[1], cfg=cfg, progress=False)
""")


@pytest.fixture(scope="module")
def resumed(specs, ray_local, tmp_path_factory) -> dict:
    """A Ray job on C2+C3+C4 killed (SIGKILL) once C2 is staged, then rerun with the CLI to completion."""
    from spotwhisper.cli import main

    index_dir = tmp_path_factory.mktemp("indexes")
    folder = staging_folder("coll", index_dir, load_collection_config())
    log = index_dir.parent / "killed-job.log"
    env = {**os.environ, "RAY_ADDRESS": ray_local, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_JOB, str(index_dir), *specs], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not list(folder.glob("C2.*.h5ad")) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    staged = list(folder.glob("C2.*.h5ad"))
    assert len(staged) == 1, f"the job did not stage its first slide; its log:\n{log.read_text()[-3000:]}"
    info = {"index_dir": index_dir, "folder": folder, "c2_staged": staged[0].stat(),
            "after_kill": (list_collections(index_dir), list(index_dir.glob(".tmp-*")))}
    assert main(["index", "build", "--engine", "ray", "--collection", "coll", "--index-dir", str(index_dir),
                 "--no-progress", *specs]) == 0
    return info


def test_actor_pool_is_sized_from_the_cluster(ray_local):
    from spotwhisper.scale.ray_engine import _actor_count

    assert _actor_count(ScaleConfig(), n_slides=10) == 2  # 2 CPUs, one each
    assert _actor_count(ScaleConfig(), n_slides=1) == 1
    assert _actor_count(ScaleConfig(actors=5), n_slides=3) == 3
    with pytest.raises(ValueError, match="cannot hold one slide actor"):
        _actor_count(ScaleConfig(memory_per_actor_gb=100_000), n_slides=3)


def test_killed_job_leaves_no_index_and_resumes(specs, resumed):
    assert resumed["after_kill"] == ([], [])  # nothing half-written after the kill
    coll = CollectionIndex.open("coll", index_dir=resumed["index_dir"])
    assert coll.slides() == ["C2", "C3", "C4"] and len(coll) > 30
    c2, before = (coll.folder / "slides" / "C2.h5ad").stat(), resumed["c2_staged"]
    assert (c2.st_ino, c2.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the staged C2, not redone
    assert not resumed["folder"].exists()  # staging cleared after the commit
    assert sorted(p.name for p in resumed["index_dir"].iterdir()) == ["coll"]
    with pytest.raises(CollectionExistsError, match="--overwrite"):
        build_collection_ray("coll", specs[:1], index_dir=resumed["index_dir"], progress=False)


def test_ray_engine_gives_the_local_vectors(specs, resumed, tmp_path):
    on_ray = CollectionIndex.open("coll", index_dir=resumed["index_dir"])
    local = build_collection("local", specs, index_dir=tmp_path, progress=False)
    assert {"transcriptome", "image"} <= set(on_ray.routes())
    _assert_same_collection(local, on_ray)
    for slide in on_ray.slides():  # slide files: inferred expression and proteins too
        a = read_h5ad(local.folder / "slides" / f"{slide}.h5ad")
        b = read_h5ad(on_ray.folder / "slides" / f"{slide}.h5ad")
        np.testing.assert_allclose(a.X, b.X, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.obsm["proteins"], b.obsm["proteins"], rtol=0, atol=1e-6, equal_nan=True)


# ------------------------------------------------------------- commit step alone (staged files, no Ray)
def _staged_copies(resumed, tmp_path) -> list:
    """StagedSlide items for copies of the finished collection's slide files (same format as staging)."""
    from spotwhisper.collection import StagedSlide

    src = CollectionIndex.open("coll", index_dir=resumed["index_dir"]).folder / "slides"
    out = []
    for name in ("C2", "C3", "C4"):
        dst = tmp_path / "staged" / f"{name}.h5ad"
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes((src / f"{name}.h5ad").read_bytes())
        out.append(StagedSlide(name, name, dst))
    return out


def test_publish_in_batches_add_and_overwrite(resumed, tmp_path):
    from spotwhisper.collection import publish

    ref = CollectionIndex.open("coll", index_dir=resumed["index_dir"])
    items, root = _staged_copies(resumed, tmp_path), tmp_path / "idx"
    (root / ".tmp-ray-batched-leftover").mkdir(parents=True)  # as a killed commit leaves it
    batched = publish(items, "batched", root, cfg=CollectionConfig(commit_batch_slides=1), progress=False)
    _assert_same_collection(ref, batched)
    assert not list(root.glob(".tmp-*"))

    grow = publish(items[:1], "grow", root, progress=False)
    (grow.folder / "slides" / "C2.h5ad").unlink()  # as if killed between the index and the slide files
    grow = publish(items, "grow", root, mode="add", progress=False)  # C2 is not added twice
    assert grow.slides() == ["C2", "C3", "C4"] and len(grow) == len(ref)
    assert (grow.folder / "slides" / "C2.h5ad").is_file()

    small = publish(items[1:], "grow", root, mode="overwrite", progress=False)
    assert small.slides() == ["C3", "C4"] and sorted(p.stem for p in (small.folder / "slides").iterdir()) == ["C3", "C4"]
    assert sorted(p.name for p in root.iterdir()) == ["batched", "grow"]
    with pytest.raises(CollectionExistsError):
        publish(items, "grow", root, progress=False)


def test_batched_commit_sizes_the_index_for_the_whole_collection(tmp_path):
    """Three staged slides of 20k vectors each, committed one per batch: the route gets the factory
    for 60k vectors (IVF, trained on the first batch), not the exact Flat index 20k would get."""
    import anndata as ad

    from spotwhisper.collection import StagedSlide, publish
    from spotwhisper.index import choose_factory, load_index_config

    rng, items = np.random.default_rng(0), []
    for i in range(3):
        n, dim = 20_000, 32
        a = ad.AnnData(obs={"section": [f"S{i}"] * n}, obsm={keys.TEXT_EMB: rng.standard_normal((n, dim), dtype=np.float32),
                                                              keys.SPATIAL: rng.uniform(0, 5000, (n, 2))})
        a.obs_names = [f"S{i}_{j}" for j in range(n)]
        a.uns[keys.EMBEDDING_MODELS] = {keys.TEXT_EMB: {"name": "synthetic", "version": "v0", "dim": dim}}
        items.append(StagedSlide(f"S{i}", f"S{i}", write_h5ad(a, tmp_path / f"S{i}.h5ad")))
    coll = publish(items, "big", tmp_path / "idx", cfg=CollectionConfig(commit_batch_slides=1), progress=False)
    factory = coll.manifest.routes["transcriptome"].factory
    assert factory == choose_factory(60_000, 32, load_index_config().factory) and factory.startswith("IVF")
    assert len(coll) == 60_000 and coll.slides() == ["S0", "S1", "S2"]
    own = coll.vectors_for("transcriptome", "S2")  # each vector finds itself
    res = coll.search("transcriptome", own.vectors["transcriptome"][:5], k=1)
    assert res.ids[:, 0].tolist() == own.metadata["id"].tolist()[:5] and set(res.hits["slide"]) == {"S2"}


# ------------------------------------------------------------- SIGKILL during a Ray --overwrite
RAY_JOB = textwrap.dedent("""
    import sys
    from spotwhisper.scale import build_collection_ray, load_scale_config
    build_collection_ray("coll", sys.argv[2:], index_dir=sys.argv[1], mode="overwrite",
                         cfg=load_scale_config(actors=1), progress=False)
""")


def _ray_run(index_dir: Path, specs: list[str], ray_address: str, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONPATH": str(ROOT)}
    env.pop("SPOTWHISPER_KILL_AT", None)
    if kill_at:
        env["SPOTWHISPER_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-c", RAY_JOB, str(index_dir), *specs], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ray_overwrite_killed_at_each_phase_is_old_or_new(specs, resumed, ray_local, tmp_path):
    """The finished C2+C3+C4 collection is overwritten with C2 alone on Ray; killed after the slide
    is staged it is still the old one, killed right after the swap the new one; the rerun finishes."""
    shutil.copytree(resumed["index_dir"] / "coll", tmp_path / "coll")
    proc = _ray_run(tmp_path, specs[:1], ray_local, "stage")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert CollectionIndex.open("coll", index_dir=tmp_path).slides() == ["C2", "C3", "C4"]
    proc = _ray_run(tmp_path, specs[:1], ray_local, "commit:indexed")  # C2 is staged: no Ray needed
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert CollectionIndex.open("coll", index_dir=tmp_path).slides() == ["C2", "C3", "C4"]
    proc = _ray_run(tmp_path, specs[:1], ray_local, "commit:swapped")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert CollectionIndex.open("coll", index_dir=tmp_path).slides() == ["C2"]
    proc = _ray_run(tmp_path, specs[:1], ray_local, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    coll = CollectionIndex.open("coll", index_dir=tmp_path)
    assert coll.slides() == ["C2"] and [p.stem for p in (coll.folder / "slides").iterdir()] == ["C2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coll"]
