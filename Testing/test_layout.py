"""The package's shape: stages import one way, no import cycles, no private names across modules,
small classes and functions, no tracker references in the code.

The stage table is ARCHITECTURE.md's. Each rule is checked by a function that takes the parsed
modules, so the rules themselves are tested on small made-up packages that break them.
"""
from __future__ import annotations

import ast
import os
import re
import warnings
from typing import Dict, List, Set, Tuple

import pytest

from conftest import ROOT

LIB_DIR = os.path.join(ROOT, "OsteoROI", "OsteoROILib")
PACKAGE = "OsteoROILib"

#: What each stage may import besides itself and the root modules (errors, resources, import_paths):
#: ARCHITECTURE.md's table. Stages on one row of the pipeline (placement, calibration, diagnosis;
#: mrml, cli) never import each other; diagnosis reads documents, never images.
ALLOWED_STAGES = {
    "": set(),
    "io": set(),
    "roi": {"io"},
    "placement": {"io", "roi"},
    "calibration": {"io", "roi"},
    "diagnosis": {"io"},
    "export": {"io", "roi", "diagnosis"},
    "digital_phantom": {"io", "roi"},
    "mrml": {"io", "roi", "placement", "calibration", "diagnosis", "export", "digital_phantom"},
    "cli": {"io", "roi", "placement", "calibration", "diagnosis", "export", "digital_phantom"},
}
#: Imports allowed besides the table: ``python -m OsteoROILib`` (__main__) runs the command line.
EXTRA_ALLOWED = {("", "cli")}

#: Longest allowed class and function, in lines (docstrings included).
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80
#: Definitions allowed to be longer, each with the one-sentence reason why it must be.
LONG_ALLOWED: Dict[str, str] = {}

Module = Tuple[str, ast.Module]  # (dotted name under OsteoROILib, tree)


def _modules(folder: str = LIB_DIR) -> Dict[str, ast.Module]:
    out = {}
    for dirpath, dirnames, files in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for name in sorted(files):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), folder)[:-3].replace(os.sep, ".")
                rel = rel[: -len(".__init__")] if rel.endswith(".__init__") else ("" if rel == "__init__" else rel)
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    out[rel] = ast.parse(f.read())
    return out


def _is_package(name: str, modules: Dict[str, ast.Module], folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, *name.split("."), "__init__.py")) if name else True


def _resolve(module: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    """The dotted name (under OsteoROILib, '' for the package) that an ImportFrom refers to, or None."""
    if node.level == 0:
        mod = node.module or ""
        if mod != PACKAGE and not mod.startswith(PACKAGE + "."):
            return None
        return mod[len(PACKAGE) + 1:] if mod != PACKAGE else ""
    parts = module.split(".") if module else []
    base = parts if is_pkg else parts[:-1]
    up = node.level - 1
    base = base[: len(base) - up] if up else base
    return ".".join(base + ([node.module] if node.module else []))


def import_edges(modules: Dict[str, ast.Module], folder: str = LIB_DIR) -> List[Tuple[str, str, str, int]]:
    """Every import of one of the package's modules: (importer, imported module, imported name or '', line)."""
    edges = []
    for name, tree in modules.items():
        is_pkg = _is_package(name, modules, folder)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, node, is_pkg)
                if target is None:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    if sub in modules:  # "from . import module"
                        edges.append((name, sub, "", node.lineno))
                    else:
                        edges.append((name, target, alias.name, node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(PACKAGE + "."):
                        edges.append((name, alias.name[len(PACKAGE) + 1:], "", node.lineno))
    return edges


def stage_of(module: str) -> str:
    """'' for the root modules, else the first component (the stage package)."""
    return module.split(".")[0] if "." in module or module in ALLOWED_STAGES else ""


def direction_violations(edges) -> List[str]:
    bad = []
    for src, dst, _, line in edges:
        a, b = stage_of(src), stage_of(dst)
        if a == b or b == "" or (a, b) in EXTRA_ALLOWED:
            continue
        if b not in ALLOWED_STAGES.get(a, set()):
            bad.append(f"{src or PACKAGE}:{line} imports {dst} (stage {a or 'root'} may not import {b})")
    return bad


def cycles(edges) -> List[List[str]]:
    """The import cycles between modules (strongly connected components with more than one module)."""
    graph: Dict[str, Set[str]] = {}
    for src, dst, _, _ in edges:
        if src != dst and not (dst == "" or src.startswith(dst + ".") and _ == ""):
            graph.setdefault(src, set()).add(dst)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_imports(edges, modules) -> List[str]:
    """Imports of another module's _private names (a module's own package __init__ re-exports excluded)."""
    return [f"{src}:{line} imports {dst}.{name}" for src, dst, name, line in edges
            if name.startswith("_") and not name.startswith("__") and dst in modules and dst != src]


def long_definitions(modules: Dict[str, ast.Module]) -> List[str]:
    """Classes and functions over the limits, named ``module.Class.method``."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{prefix}.{child.name}"
                length = child.end_lineno - child.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(child, ast.ClassDef) else MAX_FUNCTION_LINES
                if length > limit and key not in LONG_ALLOWED:
                    out.append(f"{key}: {length} lines (limit {limit})")
                visit(child, key)

    for mod, tree in modules.items():
        visit(tree, mod)
    return out


@pytest.fixture(scope="module")
def lib():
    modules = _modules()
    return modules, import_edges(modules)


def test_stages_import_only_what_the_table_allows(lib):
    modules, edges = lib
    assert len(edges) > 50, "the import scan found too few imports to be reading the package"
    assert direction_violations(edges) == []


def test_no_import_cycles(lib):
    assert cycles(lib[1]) == []


def test_no_private_name_crosses_a_module(lib):
    modules, edges = lib
    assert private_imports(edges, modules) == []


def test_core_never_imports_mrml_cli_or_qt(lib):
    modules, edges = lib
    core = {m for m in modules if stage_of(m) not in ("mrml", "cli") and m != "__main__"}
    bad = [f"{s} -> {d}" for s, d, _, _ in edges if s in core and stage_of(d) in ("mrml", "cli")]
    bad += [f"{m} imports {a.name}" for m, t in modules.items() for n in ast.walk(t) if isinstance(n, ast.Import)
            for a in n.names if a.name.split(".")[0] in ("qt", "ctk", "PythonQt")]
    assert bad == []


def test_classes_and_functions_are_short(lib):
    assert long_definitions(lib[0]) == []
    for key, reason in LONG_ALLOWED.items():
        assert reason.strip().endswith("."), f"{key}: say in one sentence why it must be long"


def test_pipeline_never_imports_the_digital_phantom(lib):
    """Ground truth cannot leak into a measurement: only the command line's demo and the GUI self-test use it."""
    modules, edges = lib
    bad = [f"{s} -> {d}" for s, d, _, _ in edges
           if stage_of(d) == "digital_phantom" and stage_of(s) not in ("digital_phantom", "cli", "mrml")]
    assert bad == []


TRACKER = re.compile(r"\bissues?\s*#?\d+|#\d+\s*\(|\bgh-\d+", re.I)


@pytest.mark.parametrize("folder", ["OsteoROI", "Testing", "benchmarks"])
def test_code_names_no_tracker_issue(folder):
    hits = []
    for dirpath, dirnames, files in os.walk(os.path.join(ROOT, folder)):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    for i, line in enumerate(f, 1):
                        if TRACKER.search(line) and "TRACKER" not in line:
                            hits.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    assert hits == [], "say what the code does instead of naming an issue:\n" + "\n".join(hits)


# --- the rules themselves can fail -----------------------------------------------------------------

def _fake(tmp_path, files: Dict[str, str]):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = _modules(str(tmp_path))
    return modules, import_edges(modules, str(tmp_path))


def test_rules_catch_an_upward_import_a_cycle_and_a_private_name(tmp_path):
    modules, edges = _fake(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "io/__init__.py": "",
        "io/volume.py": "from ..placement.click import place\nfrom .reader import read\n",
        "io/reader.py": "from .volume import Volume\n",
        "placement/__init__.py": "",
        "placement/click.py": "from ..io.volume import _crop\nfrom OsteoROILib.mrml import logic\n",
        "mrml/__init__.py": "",
        "mrml/logic.py": "from ..cli import main\n",
        "cli/__init__.py": "",
    })
    assert sorted(direction_violations(edges)) == sorted([
        "io.volume:1 imports placement.click (stage io may not import placement)",
        "placement.click:2 imports mrml.logic (stage placement may not import mrml)",
        "mrml.logic:1 imports cli (stage mrml may not import cli)",
    ])
    assert any({"io.reader", "io.volume"} <= set(c) for c in cycles(edges))
    assert private_imports(edges, modules) == ["placement.click:1 imports io.volume._crop"]


def test_rules_catch_an_import_between_stages_of_one_row(tmp_path):
    _, edges = _fake(tmp_path, {
        "__init__.py": "", "placement/__init__.py": "", "calibration/__init__.py": "", "diagnosis/__init__.py": "",
        "placement/click.py": "from ..calibration.model import Calibration\n",
        "diagnosis/verdict.py": "from OsteoROILib.roi.geometry import RoiShape\n",
    })
    assert sorted(direction_violations(edges)) == [
        "diagnosis.verdict:1 imports roi.geometry (stage diagnosis may not import roi)",
        "placement.click:1 imports calibration.model (stage placement may not import calibration)",
    ]


def test_rules_catch_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    modules, _ = _fake(tmp_path, {"__init__.py": "", "roi/__init__.py": "", "roi/long.py": f"def f():\n{body}\n"})
    assert long_definitions(modules) == [f"roi.long.f: {MAX_FUNCTION_LINES + 2} lines (limit {MAX_FUNCTION_LINES})"]


def test_tracker_pattern_matches_issue_references():
    assert TRACKER.search("see issue #3 for the target") and TRACKER.search("(issue 12)")
    assert not TRACKER.search("the L1 issue of seed 002 Table 3")


# --- old flat import paths keep working for one release ----------------------------------------------

@pytest.mark.parametrize("old, name", [
    ("volume", "read_volume"), ("measure", "measure_levels"), ("results", "build_document"),
    ("results", "json_safe"), ("phantom", "make_phantom"), ("autoplace", "place_from_click"),
    ("roifamily", "build_roi_family"), ("calibration", "scanner_facts"), ("diagnosis", "value_table"),
    ("criteria", "load_criteria"), ("rods", "auto_rods"), ("dicom", "read_dicom_directory"),
])
def test_old_import_path_warns_and_finds_the_same_object(old, name):
    import importlib

    import OsteoROILib

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"OsteoROILib.{old}")
        value = getattr(module, name)
    assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught)
    new_home = value.__module__
    assert new_home.startswith("OsteoROILib.") and new_home != f"OsteoROILib.{old}"
    assert getattr(importlib.import_module(new_home), name) is value
    assert OsteoROILib.__version__


def test_every_subpackage_is_packaged():
    """pip installs only the packages pyproject.toml names: a new stage folder must be listed there."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    listed = set(re.findall(r'"(OsteoROILib(?:\.\w+)*)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    folders = {PACKAGE + ("." + os.path.relpath(d, LIB_DIR).replace(os.sep, ".") if d != LIB_DIR else "")
               for d, _, files in os.walk(LIB_DIR) if "__init__.py" in files}
    assert folders - listed == set()


def test_reimporting_the_package_keeps_one_legacy_finder():
    """Slicer's Reload re-imports OsteoROILib: the old-path finder must not be installed twice."""
    import importlib
    import sys

    import OsteoROILib.import_paths as paths

    importlib.reload(paths)
    paths.install_legacy_finder()
    finders = [f for f in sys.meta_path if type(f).__name__ == "_LegacyModuleFinder"]
    assert len(finders) == 1
