"""What the install needs and carries: POSIX-only modules are optional, and the package's data are found
through the package (``spotwhisper.configs``, ``spotwhisper.ui``), wherever the folders live."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tests.layout import BLOCKER_SOURCE, ROOT, package_dirs


def test_staging_works_without_the_posix_resource_module(monkeypatch):
    from spotwhisper.collection import staging

    assert staging.peak_rss_mb() > 0
    monkeypatch.setitem(sys.modules, "resource", None)  # as on Windows: import resource raises ImportError
    assert math.isnan(staging.peak_rss_mb())


def test_configs_and_ui_static_come_from_the_mapped_folders():
    from spotwhisper.config import shipped_config_dir
    from spotwhisper.ui.viewer import static_dir

    dirs = package_dirs()
    assert shipped_config_dir().resolve() == dirs["spotwhisper.configs"].resolve()
    assert (shipped_config_dir() / "search.yaml").is_file()
    assert static_dir().resolve() == (dirs["spotwhisper.ui"] / "static").resolve()
    assert (static_dir() / "viewer.js").is_file() and (static_dir() / "openseadragon").is_dir()
    assert not Path(sys.modules["spotwhisper"].__file__).parent.joinpath("ui").exists()


CORE_RUN = '''
import contextlib, io, json, sys
import spotwhisper, spotwhisper.cli, spotwhisper.pipeline, spotwhisper.collection, spotwhisper.index
import spotwhisper.search.engine, spotwhisper.bench, spotwhisper.scale, spotwhisper.ui
from spotwhisper.cli import main

out = {}
for name, argv in {"help": ["--help"], "serve": ["serve", "--collection", "none"],
                   "demo": ["demo"], "ray": ["index", "build", "--engine", "ray", "--collection", "none", "C2"]}.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    out[name] = [code, err.getvalue()]
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("gradio", "ray"))
print(json.dumps(out))
'''


def test_core_install_runs_without_gradio_and_ray(tmp_path):
    """With gradio and ray unimportable: the package, the CLI, pipeline, index, search, bench and the scale
    module import; serve / demo / --engine ray stop with one line naming the extra to install."""
    import json
    import os
    import subprocess

    (tmp_path / "block_extras.py").write_text(BLOCKER_SOURCE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", "import block_extras\n" + CORE_RUN], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["loaded"] == []
    assert out["help"][0] == 0
    for name, extra in (("serve", "ui"), ("demo", "ui"), ("ray", "ray")):
        code, err = out[name]
        assert code == 1 and f"pip install 'spotwhisper[{extra}]'" in err and "Traceback" not in err, (name, err)
        assert len(err.strip().splitlines()) == 1, err


def test_default_outputs_go_to_the_user_data_folder_not_the_checkout(tmp_path, monkeypatch):
    """Collections, trained models and results default to the user data folder, never the checkout or the
    installed package; a config's relative ``out`` lands under the results folder, ``--out`` is as typed."""
    from spotwhisper.bench.config import BenchConfig
    from spotwhisper.cli.options import absolute_out
    from spotwhisper.config import load_config
    from spotwhisper.index import resolve_index_dir
    from spotwhisper.index.config import INDEX_DIR_ENV
    from spotwhisper.userdata import USER_DATA_ENV, models_dir, output_path, results_dir, user_data_dir

    monkeypatch.delenv(INDEX_DIR_ENV, raising=False)
    monkeypatch.delenv(USER_DATA_ENV, raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert user_data_dir() == Path.home() / ".local" / "share" / "spotwhisper"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_index_dir() == tmp_path / "xdg" / "spotwhisper" / "indexes"
    monkeypatch.setenv(USER_DATA_ENV, str(tmp_path / "home"))
    home = tmp_path / "home"
    assert resolve_index_dir() == home / "indexes"
    assert models_dir("expression-default") == home / "models" / "expression-default"
    cfg = load_config(BenchConfig, "bench/harness")
    assert output_path(cfg.out) == results_dir() / "zero_shot" and results_dir() == home / "results"
    monkeypatch.chdir(tmp_path)
    assert output_path(absolute_out("mine/zs")) == tmp_path / "mine" / "zs"
    package = Path(sys.modules["spotwhisper"].__file__).parent
    for path in (resolve_index_dir(), models_dir("text"), output_path(cfg.out)):
        assert not path.is_relative_to(ROOT) and not path.is_relative_to(package), path
