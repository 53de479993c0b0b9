"""The package layout: imports flow one way along the pipeline, and one name means one thing.

Every ``import`` in ``spotwhisper/`` (and in the folders ``pyproject.toml`` maps into the package:
``ui/`` = ``spotwhisper.ui``, ``configs/`` = ``spotwhisper.configs``) is parsed; a module may import modules of its own unit (a sub-package or top-level module) and of units in
earlier tiers of :data:`TIERS`, never of its own tier or a later one.
"""

from __future__ import annotations

import ast
import collections
import os
from pathlib import Path

import spotwhisper
from tests.layout import listed_packages, package_dirs

PACKAGE = Path(spotwhisper.__file__).resolve().parent
#: folder → its dotted package name: the package itself and the sub-packages mapped from elsewhere
FOLDERS = {PACKAGE: ("spotwhisper",), **{path: tuple(name.split(".")) for name, path in package_dirs().items()}}

#: The one direction of imports, written once. A unit is a top-level module (``genes``) or
#: sub-package (``expression``) of ``spotwhisper``; units in one tier are siblings and may not
#: import each other. The order follows DESIGN.md's pipeline, with two refinements the code shows:
#: proteins and language both read the inferred transcriptome through the shared gene panel and
#: never each other (siblings), and so do scale/search and bench/ui.
TIERS: list[list[str]] = [
    ["__init__", "keys", "atomic", "cache", "datadir", "config", "configs", "names", "extras", "userdata", "routes", "timing"],  # plumbing, no stage
    ["prompts", "genes", "setmodel"],  # shared model pieces: vocabulary, gene panel, set trunk
    ["io"],
    ["tiles"],
    ["encoders"],
    ["expression"],
    ["proteins", "language"],
    ["imagetext"],  # the aligned head maps images into the language stage's space
    ["index"],
    ["pipeline"],  # one slide through io → … → imagetext
    ["collection"],  # build / stage / publish / open collections (pipeline + index)
    ["scale", "search"],  # the Ray engine over collections; answering queries over an opened collection
    ["api"],  # the Python API (``import spotwhisper as sw``): read, tl, pl, Collection over all of the above
    ["bench", "ui"],
    ["cli"],
]
TIER = {unit: i for i, units in enumerate(TIERS) for unit in units}

#: File names several stage packages use for the same role (the stage's settings, model, training,
#: evaluation, data assembly, metrics, baselines, the registry of its pluggable parts). Every other module name is unique in the package.
ROLE_NAMES = {"__init__.py", "config.py", "model.py", "train.py", "evaluate.py", "data.py", "metrics.py", "baselines.py",
              "registry.py"}


def _modules() -> list[Path]:
    out = []
    for root in FOLDERS:
        for folder, _, files in os.walk(root):
            out += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(out)


def _dotted(path: Path) -> tuple[str, ...]:
    """The module's dotted name as installed (``ui/app.py`` → ``spotwhisper.ui.app``)."""
    root = max((r for r in FOLDERS if path.is_relative_to(r)), key=lambda r: len(r.parts))
    return (*FOLDERS[root], *path.relative_to(root).with_suffix("").parts)


def _unit(path: Path) -> str:
    return _dotted(path)[1]


def _rel(path: Path) -> str:
    return "/".join(_dotted(path)[1:]) + ".py"


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, dotted target)`` of every import; relative imports resolved against the module."""
    pkg = list(_dotted(path)[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            if target == ["spotwhisper"] or (node.level and not node.module):
                out += [(node.lineno, [*target, a.name]) for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def test_pyproject_installs_every_package_folder():
    """Every folder of ``spotwhisper/`` with Python modules is listed in ``pyproject.toml``'s packages (an
    unlisted one would be missing from the wheel), and the mapped folders hold no symlink back."""
    folders = {".".join(("spotwhisper", *Path(f).relative_to(PACKAGE).parts))
               for f, _, files in os.walk(PACKAGE) if any(n.endswith(".py") for n in files)} | set(package_dirs())
    assert folders == set(listed_packages()), (
        f"not listed in pyproject.toml: {sorted(folders - set(listed_packages()))}; "
        f"listed but not found: {sorted(set(listed_packages()) - folders)}")
    assert not any(p.is_symlink() for p in PACKAGE.iterdir()), "spotwhisper/ holds a symlink (map folders in pyproject)"


def test_stage_order_names_every_unit():
    units = {_unit(p) for p in _modules()}
    assert units <= set(TIER), f"units missing from TIERS: {sorted(units - set(TIER))}"
    assert len(TIER) == sum(map(len, TIERS)), "a unit is listed twice"


def test_imports_flow_one_way():
    back = []
    for path in _modules():
        unit = _unit(path)
        for line, target in _imports(path):
            if target[0] != "spotwhisper" or len(target) < 2:
                continue
            other = target[1] if target[1] != "__version__" else "__init__"
            if other == unit:
                continue
            if other not in TIER or TIER[other] >= TIER[unit]:
                back.append(f"{path}:{line}: {unit} imports {'.'.join(target)}")
    assert not back, "imports against the pipeline order (tests/test_import_direction.py TIERS):\n" + "\n".join(back)


def test_no_top_level_ui_package_is_imported():
    """The app is ``spotwhisper.ui``; a wheel installs no top-level ``ui`` package."""
    roots = [*FOLDERS, *(PACKAGE.parent / d for d in ("tests", "benchmarks", "scripts"))]
    bad = []
    for root in roots:
        for folder, _, files in os.walk(root):
            for f in (Path(folder) / n for n in files if n.endswith(".py")):
                for node in ast.walk(ast.parse(f.read_text())):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                    bad += [f"{f}:{node.lineno}: {n}" for n in names if n == "ui" or n.startswith("ui.")]
    assert not bad, "\n".join(bad)


def test_module_names_are_unique_except_stage_roles():
    by_name = collections.defaultdict(list)
    for path in _modules():
        by_name[path.name].append(_rel(path))
    clashes = {n: p for n, p in by_name.items() if len(p) > 1 and n not in ROLE_NAMES}
    assert not clashes, f"one file name, several modules: {clashes}"


def test_public_names_are_not_reused_across_stages():
    """Two public functions or classes of one name in different modules must be the same role
    (``register``, ``main`` …), not different things (as two ``embed_queries`` were)."""
    allowed = {"register", "register_train", "register_predict", "cmd_train", "main",  # CLI module protocol
               "TrainConfig", "summarize", "load_sections", "out_of_fold"}  # per-stage roles
    seen = collections.defaultdict(list)
    for path in _modules():
        if path.is_relative_to(PACKAGE) and path.relative_to(PACKAGE).as_posix() == "api/pl.py":  # a plot is named after what it shows (sw.tl.search → sw.pl.search)
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                seen[node.name].append(_rel(path))
    reused = {n: p for n, p in seen.items() if len(p) > 1 and n not in allowed}
    assert not reused, f"one public name, several definitions: {reused}"


def test_anndata_keys_are_named_in_keys_py():
    """``adata.obsm["…"]`` / ``.uns`` / ``.layers`` / ``.obs`` with a literal key (or ``.get("…")`` on them)
    only in ``keys.py``: every other module names the key through :mod:`spotwhisper.keys`."""
    containers = {"obsm", "uns", "layers", "obs", "varm", "obsp", "var"}
    literal = []
    for path in _modules():
        if path.name == "keys.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                    and node.value.attr in containers and isinstance(node.slice, ast.Constant)
                    and isinstance(node.slice.value, str)):
                literal.append(f"{_rel(path)}:{node.lineno}: .{node.value.attr}[{node.slice.value!r}]")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("get", "setdefault", "pop") and isinstance(node.func.value, ast.Attribute)
                  and node.func.value.attr in containers and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)):
                literal.append(f"{_rel(path)}:{node.lineno}: .{node.func.value.attr}.{node.func.attr}({node.args[0].value!r})")
    assert not literal, "AnnData keys written as literals (name them in spotwhisper/keys.py):\n" + "\n".join(literal)


def _import_time_nodes(tree: ast.Module):
    """Statements run when the module is imported: the module body, also inside ``if`` / ``try`` /
    ``with`` and class bodies, but not function bodies (a lazy import cannot close a cycle at import)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: modules it imports at import time}`` among ``modules`` (dotted name → file); relative
    imports resolved, ``from pkg import name`` counted as the module ``pkg.name`` when there is one."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        parts = name.split(".")
        pkg = parts if path.name == "__init__.py" else parts[:-1]
        out = set()
        for node in _import_time_nodes(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = pkg[: len(pkg) - node.level + 1] if node.level else []
                mod = ".".join(base + (node.module.split(".") if node.module else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            out |= {t for t in targets if t in modules and t != name}
        graph[name] = out
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, …, a]`` of ``graph``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _package_modules() -> dict[str, Path]:
    out = {}
    for path in _modules():
        dotted = _dotted(path)
        out[".".join(dotted[:-1] if path.name == "__init__.py" else dotted)] = path
    return out


def test_no_import_cycle_inside_a_package():
    """No module imports, at import time, a module that imports it back (directly or around a loop) —
    e.g. a registry that imports its route modules at its bottom while they import the registry."""
    cycle = find_cycle(import_graph(_package_modules()))
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_cycle_check_catches_a_synthetic_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import routes, extra  # registers\n")
    (pkg / "routes.py").write_text("REG = {}\n\ndef helper():\n    from . import extra\n\nfrom . import extra  # noqa: E402\n")
    (pkg / "extra.py").write_text("from .routes import REG\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.routes": pkg / "routes.py", "pkg.extra": pkg / "extra.py"}
    assert find_cycle(import_graph(modules)) == ["pkg.extra", "pkg.routes", "pkg.extra"]
    (pkg / "routes.py").write_text("REG = {}\n\ndef helper():\n    from . import extra  # lazy: no cycle at import\n")
    assert find_cycle(import_graph(modules)) is None
    (pkg / "extra.py").write_text("from pkg import routes\n")  # absolute
    (pkg / "routes.py").write_text("from .extra import x\n")
    assert find_cycle(import_graph(modules)) == ["pkg.extra", "pkg.routes", "pkg.extra"]
    (pkg / "routes.py").write_text("")
    (pkg / "extra.py").write_text("from . import helper_name\n")  # a name the package's __init__ defines
    assert find_cycle(import_graph(modules)) == ["pkg", "pkg.extra", "pkg"]
