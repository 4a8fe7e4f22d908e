"""The import rules of docs/architecture.md, checked on the package's own imports (read with ``ast``)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_featviz"
TOP = "top level"  #: callback, posthoc, cli, arguments, loading, ``__init__``: they may import anything

#: Folder -> the folders its modules may import (itself included). Kept equal to docs/architecture.md's table.
ALLOWED: dict[str, set[str]] = {
    "capture": {"capture"},
    "analysis": {"analysis", "capture"},
    "render": {"render"},
    "outputs": {"outputs"},
    "report": {"report", "capture", "analysis", "render", "outputs", "dashboard"},
    "runtime": {"runtime", "capture", "analysis", "render", "outputs", "dashboard", "report"},
    "dashboard": {"dashboard", "capture", "analysis", "render", "outputs"},
    "demo": {"demo", TOP},
}
#: Modules outside ``demo`` that may import it: the CLI's ``featviz demo``, and the package's lazy public name
#: ``ColouredDigits`` (imported only when asked for).
DEMO_USERS = {"cli.py", "__init__.py"}


def folder_of(module: str) -> str:
    """``lightning_featviz.capture.bank`` -> ``capture``; a top-level module (or the package itself) -> TOP."""
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return TOP


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every import of ``lightning_featviz`` in ``source``, lazy ones included.

    ``module`` is the importing module's dotted name (for relative imports). ``from lightning_featviz.analysis
    import knn`` counts as an import of ``lightning_featviz.analysis.knn``.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: -node.level]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [
        (line, name) for line, name in found if name == "lightning_featviz" or name.startswith("lightning_featviz.")
    ]


def module_name(path: Path) -> str:
    """``.../lightning_featviz/capture/bank.py`` -> ``lightning_featviz.capture.bank``."""
    return ".".join(["lightning_featviz", *path.relative_to(PACKAGE).with_suffix("").parts])


def violations(source: str, path: Path) -> list[str]:
    """The imports of the module at ``path`` (inside the package) that break the rules, in words."""
    relative = path.relative_to(PACKAGE)
    module = module_name(path)
    own = folder_of(module)
    if own == TOP:
        return []
    if own not in ALLOWED:
        return [f"{relative}: the folder {own!r} is not in the rule table; add it to docs/architecture.md and ALLOWED"]
    broken = []
    for line, name in imported_modules(source, module):
        target = folder_of(name)
        if target not in ALLOWED[own]:
            broken.append(
                f"{relative}:{line} imports {name} ({target}), but {own}/ may import only {sorted(ALLOWED[own])}"
            )
    return broken


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_folder_imports_only_the_folders_its_row_of_the_table_allows():
    broken = [v for path in package_modules() for v in violations(path.read_text(encoding="utf-8"), path)]
    assert not broken, "\n".join(broken)


def test_only_the_cli_imports_the_demo():
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in package_modules()
        if folder_of(module_name(path)) != "demo"
        and any(folder_of(name) == "demo" for _, name in imported_modules(path.read_text(), module_name(path)))
    )
    assert set(users) <= DEMO_USERS, users


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("analysis/knn.py", "from lightning_featviz.render.grids import NeighbourGrid\n", "render"),
        ("analysis/knn.py", "def f():\n    from lightning_featviz.outputs import sinks\n", "outputs"),
        ("capture/bank.py", "import lightning_featviz.analysis.knn\n", "analysis"),
        ("render/grids.py", "from lightning_featviz import FeatureVisualizer\n", TOP),
        ("outputs/sinks.py", "from ..report import reporter\n", "report"),
    ],
)
def test_the_checker_flags_an_upward_import_lazy_relative_or_through_the_package(where, source, expected):
    found = violations(source, PACKAGE / where)
    assert len(found) == 1 and f"({expected})" in found[0], found


def test_the_checker_allows_a_downward_import():
    assert violations("from lightning_featviz.capture.bank import BankData\n", PACKAGE / "analysis/maps.py") == []


def test_the_rule_table_in_docs_matches_the_one_the_test_checks():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = {}
    for match in re.finditer(r"^\| `(\w+)/` \|[^|]*\| ([^|]*) \|", text, flags=re.MULTILINE):
        allowed = {name.strip("`/ ") for name in match.group(2).split(",") if name.strip()}
        rows[match.group(1)] = {TOP if name == "top level" else name for name in allowed if name != "nothing"}
    assert rows == {folder: allowed - {folder} for folder, allowed in ALLOWED.items()}


def test_every_folder_of_the_package_has_a_row_in_the_table():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders <= set(ALLOWED), folders - set(ALLOWED)


def test_a_module_over_300_lines_says_why_at_its_top():
    unexplained = []
    for path in package_modules():
        text = path.read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > 300 and "Over 300 lines" not in docstring:
            unexplained.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())} lines)")
    assert not unexplained, unexplained


def test_the_cli_and_the_post_hoc_analysis_load_without_the_demo():
    code = (
        "import sys, lightning_featviz.cli, lightning_featviz.posthoc; "
        "print(sorted(m for m in sys.modules if m.startswith('lightning_featviz.demo')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_only_render_imports_matplotlib_and_only_inside_the_functions_that_draw():
    # Importing the package (the callback, the report's modules) must not import matplotlib: a training process
    # whose report runs in a child process, or that only captures and searches, never loads it.
    importers = []
    for path in package_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        at_import_time = {id(node) for node in tree.body} | {
            id(child) for node in tree.body if isinstance(node, ast.If) for child in ast.walk(node)
        }
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name.split(".")[0] in ("matplotlib", "mpl_toolkits") for name in names):
                in_type_checking = any(
                    isinstance(top, ast.If) and "TYPE_CHECKING" in ast.unparse(top.test) and node in ast.walk(top)
                    for top in tree.body
                )
                where = path.relative_to(PACKAGE)
                if where.parts[0] != "render" or (id(node) in at_import_time and not in_type_checking):
                    importers.append(f"{where}:{node.lineno}")
    assert not importers, importers


def test_epochs_that_only_capture_and_search_never_ask_for_matplotlib(tmp_path):
    # Lightning's torchmetrics loads matplotlib by itself where it is installed, so the check is who asks for it:
    # every import statement and import_module call is watched, and one made from the package is recorded. The
    # fit's epochs make what the time budget makes on most epochs (capture, kNN, scalars, the tab's files);
    # drawing one chart after it shows that the watch sees the package ask.
    code = f"""
import builtins, importlib, sys
asked = []
def record(name, importer):
    if name.split(".")[0] == "matplotlib" and importer.split(".")[0] == "lightning_featviz":
        asked.append(f"{{importer}} -> {{name}}")
real_import, real_import_module = builtins.__import__, importlib.import_module
def watched_import(name, globals=None, locals=None, fromlist=(), level=0):
    record(name, (globals or {{}}).get("__name__", ""))
    return real_import(name, globals, locals, fromlist, level)
def watched_import_module(name, package=None):
    record(name, sys._getframe(1).f_globals.get("__name__", ""))
    return real_import_module(name, package)
builtins.__import__, importlib.import_module = watched_import, watched_import_module

import numpy as np
from torch.utils.data import Subset
from lightning_featviz import FeatureVisualizer, MapOptions, OutputOptions
from lightning_featviz.demo.datasets import ColouredDigits
from lightning_featviz.demo.model import ClassificationData
from conftest import TinyNet, read_events, tiny_trainer

digits = ColouredDigits("val", seed=0)
data = ClassificationData(Subset(digits, range(64)), Subset(digits, range(64, 224)), digits.classes, batch_size=32)
visualizer = FeatureVisualizer(
    ["input", "pool"], k=5, overhead=None, maps=MapOptions(every_n_epochs=None),
    outputs=OutputOptions(neighbour_grids=False, confusion=False), wrong_cluster=False,
)
trainer = tiny_trainer({str(tmp_path)!r}, callbacks=[visualizer])
trainer.fit(TinyNet(), datamodule=data)
scalars = [t for t in read_events({str(tmp_path)!r}).Tags()["scalars"] if "knn_purity" in t]
print(len(scalars), sorted(set(asked)))
from lightning_featviz.render.purity_charts import confusion_image
confusion_image(np.eye(2), ["a", "b"], "E")
print(sorted(set(asked)))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    during_fit, after_a_chart = ran.stdout.strip().splitlines()[-2:]
    scalars, asked = during_fit.split(" ", 1)
    assert int(scalars) == 2, ran.stdout  # each layer's purity was measured and logged
    assert asked == "[]", asked
    assert "lightning_featviz.render" in after_a_chart  # the watch sees the package ask when it draws


#: What writes a file: the calls of a module that writes one itself, and the writers of ``outputs`` (and the
#: dashboard's own) that only ``outputs`` calls (docs/architecture.md: outputs is the only writer).
FILE_CALLS = {"open", "write_text", "write_bytes", "mkdir", "savefig", "savez", "savez_compressed", "savetxt", "touch"}
WRITERS = {
    "lightning_featviz.outputs.files",
    "lightning_featviz.outputs.tables.write_csv",
    "lightning_featviz.outputs.projector.write_projector",
    "lightning_featviz.outputs.html_report.write_html_report",
    "lightning_featviz.dashboard.data.write_epoch",
}
#: The searches, fits and scores of ``analysis``: the report job has them done by ``analysis.epoch.analyse_epoch``.
COMPUTATIONS = {
    f"lightning_featviz.analysis.{name}"
    for name in (
        "knn.knn_search",
        "knn.neighbour_stats",
        "maps.fit_maps",
        "maps.fit_layer_maps",
        "tsne.tsne_map",
        "wrong_cluster.find_wrong_cluster",
        "label_issues.find_label_issues",
        "label_issues.score_label_issues",
        "wrong_cluster.neighbourhood_confusion",
    )
}


def writes_and_computations(source: str, path: Path) -> list[str]:
    """Where the module at ``path`` writes a file itself, imports a writer, or (in ``report``) a computation."""
    module, found = module_name(path), []
    for line, name in imported_modules(source, module):
        if any(name == writer or name.startswith(f"{writer}.") for writer in WRITERS):
            found.append(f"{path.relative_to(PACKAGE)}:{line} imports the writer {name}")
        if folder_of(module) == "report" and name in COMPUTATIONS:
            found.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}: analysis computes, report draws")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in FILE_CALLS:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} calls {called}(): outputs writes files")
    return found


def test_analysis_render_and_report_write_no_file_and_report_computes_nothing_itself():
    found = [
        problem
        for path in package_modules()
        if folder_of(module_name(path)) in ("analysis", "render", "report")
        for problem in writes_and_computations(path.read_text(encoding="utf-8"), path)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("where", "source"),
    [
        ("report/exports.py", "from pathlib import Path\nPath('x.csv').write_text('a')\n"),
        ("report/exports.py", "def f():\n    from lightning_featviz.outputs.tables import write_csv\n"),
        ("report/figures.py", "from lightning_featviz.analysis.maps import fit_maps\n"),
        ("analysis/epoch.py", "with open('x.csv', 'w') as handle:\n    pass\n"),
    ],
)
def test_the_checker_flags_a_file_written_outside_outputs_and_a_fit_in_report(where, source):
    assert len(writes_and_computations(source, PACKAGE / where)) == 1


def test_the_epoch_has_one_results_object_and_analysis_returns_it():
    defined = [
        str(path.relative_to(PACKAGE))
        for path in package_modules()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.name == "EpochResults"
    ]
    assert defined == ["analysis/results.py"]
    tree = ast.parse((PACKAGE / "analysis" / "epoch.py").read_text(encoding="utf-8"))
    entry = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "analyse_epoch")
    assert entry.returns is not None and ast.unparse(entry.returns) == "EpochResults"
