"""Static checks of the Slicer extension: CMake lists, ExtensionsIndex entry, Qt Designer UI, module source.

3D Slicer cannot be installed here, so nothing in this file imports ``slicer`` or ``qt``. The checks
encode what Slicer's build and run-time machinery expect (read from Slicer's and CTK's sources):

* ``slicerMacroBuildScriptedModule`` copies and installs only the files listed in
  ``OsteoROI/CMakeLists.txt``: a Python file or resource that is not listed is silently missing from
  the installed extension, so every file must be listed (and every listed file must exist, or CMake
  stops with "given nonexistent file").
* ``slicer.util.loadUI`` builds the widgets with QUiLoader: every class must be a Qt class or declared
  in ``<customwidgets>``; ``parameterNodeWrapper.connectGui`` maps the dynamic property
  ``SlicerParameterName`` to a parameter node member and accepts only certain widget types per value
  type (``canRepresent`` in ``slicer/parameterNodeWrapper/guiConnectors.py``).
* Slicer 5.6 ships Python 3.9; ``OsteoROILib`` must import without Qt/Slicer.
"""
from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_DIR = os.path.join(ROOT, "OsteoROI")
LIB_DIR = os.path.join(MODULE_DIR, "OsteoROILib")
RESOURCES_DIR = os.path.join(ROOT, "Resources")
MODULE_PY = os.path.join(MODULE_DIR, "OsteoROI.py")
MODULE_CMAKE = os.path.join(MODULE_DIR, "CMakeLists.txt")
TOP_CMAKE = os.path.join(ROOT, "CMakeLists.txt")
TESTING_CMAKE = os.path.join(ROOT, "Testing", "CMakeLists.txt")
INDEX_JSON = os.path.join(ROOT, "OsteoROI.json")
UI_FILE = os.path.join(RESOURCES_DIR, "UI", "OsteoROI.ui")

SKIP_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _files_under(folder: str, suffix: str = "") -> Set[str]:
    """Files below ``folder`` as posix paths relative to it (hidden files and caches skipped)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or name.endswith((".pyc", ".pyo")) or not name.endswith(suffix):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            out.add(rel.replace(os.sep, "/"))
    return out


# ------------------------------------------------------------------------------------------------
# A small CMake reader: commands, arguments, set() lists with ${VAR} expansion.
# ------------------------------------------------------------------------------------------------
_CMAKE_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s()"]+|[()]')


def _strip_cmake_comments(text: str) -> str:
    text = re.sub(r"#\[(=*)\[.*?\]\1\]", " ", text, flags=re.S)  # bracket comments
    out_lines = []
    for line in text.splitlines():
        in_quote = False
        cut = len(line)
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_quote = not in_quote
            elif ch == "#" and not in_quote:
                cut = i
                break
        out_lines.append(line[:cut])
    return "\n".join(out_lines)


def cmake_commands(text: str) -> List[Tuple[str, List[str]]]:
    """``[(command name lower-cased, [arguments])]`` in file order; quotes are removed from arguments."""
    tokens = _CMAKE_TOKEN.findall(_strip_cmake_comments(text))
    commands: List[Tuple[str, List[str]]] = []
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i + 1] == "(" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tokens[i]):
            name = tokens[i].lower()
            depth, j, args = 1, i + 2, []
            while j < len(tokens) and depth:
                t = tokens[j]
                if t == "(":
                    depth += 1
                elif t == ")":
                    depth -= 1
                if depth and t not in "()":
                    args.append(t[1:-1] if t.startswith('"') else t)
                j += 1
            assert depth == 0, f"unbalanced parentheses after {tokens[i]}("
            commands.append((name, args))
            i = j
        else:
            i += 1
    return commands


def cmake_expand(value: str, variables: Dict[str, List[str]]) -> str:
    def repl(m):
        name = m.group(1)
        return ";".join(variables[name]) if name in variables else m.group(0)

    prev = None
    while prev != value:
        prev, value = value, re.sub(r"\$\{([A-Za-z0-9_]+)\}", repl, value)
    return value


def cmake_variables(commands) -> Dict[str, List[str]]:
    """Values of plain ``set(VAR a b c)`` commands (``${VAR}`` expanded with earlier sets)."""
    variables: Dict[str, List[str]] = {}
    for name, args in commands:
        if name == "set" and args:
            values = []
            for a in args[1:]:
                if a in ("CACHE", "PARENT_SCOPE"):
                    break
                values.extend(v for v in cmake_expand(a, variables).split(";") if v)
            variables[args[0]] = values
    return variables


@pytest.fixture(scope="module")
def module_cmake():
    commands = cmake_commands(_read(MODULE_CMAKE))
    return commands, cmake_variables(commands)


@pytest.fixture(scope="module")
def top_cmake():
    commands = cmake_commands(_read(TOP_CMAKE))
    return commands, cmake_variables(commands)


def _check_listed(listed: List[str], base: str, actual: Set[str], var: str, what: str) -> None:
    unresolved = [f for f in listed if "${" in f or "$<" in f]
    assert not unresolved, f"{var} has entries this check cannot resolve: {unresolved}"
    duplicates = sorted({f for f in listed if listed.count(f) > 1})
    assert not duplicates, f"{var} lists these files twice: {duplicates}"
    missing_files = sorted(f for f in listed if not os.path.isfile(os.path.join(base, f)))
    assert not missing_files, (
        f"{var} in OsteoROI/CMakeLists.txt lists files that do not exist (CMake would stop): {missing_files}"
    )
    unlisted = sorted(actual - set(listed))
    assert not unlisted, (
        f"These {what} are not listed in {var} in OsteoROI/CMakeLists.txt, so the Slicer extension would not "
        f"contain them; add them: {unlisted}"
    )


# ------------------------------------------------------------------------------------------------
# OsteoROI/CMakeLists.txt
# ------------------------------------------------------------------------------------------------
def test_every_python_file_is_listed(module_cmake):
    _, variables = module_cmake
    assert "MODULE_PYTHON_SCRIPTS" in variables, "OsteoROI/CMakeLists.txt must set(MODULE_PYTHON_SCRIPTS ...)"
    listed = variables["MODULE_PYTHON_SCRIPTS"]
    actual = _files_under(MODULE_DIR, ".py")
    assert "OsteoROI.py" in actual and "OsteoROILib/__init__.py" in actual
    _check_listed(listed, MODULE_DIR, actual, "MODULE_PYTHON_SCRIPTS", "Python files")


def test_every_resource_file_is_listed(module_cmake):
    _, variables = module_cmake
    assert "MODULE_PYTHON_RESOURCES" in variables, "OsteoROI/CMakeLists.txt must set(MODULE_PYTHON_RESOURCES ...)"
    listed = variables["MODULE_PYTHON_RESOURCES"]
    assert all(f.startswith("Resources/") for f in listed), "resources are listed relative to the top-level folder"
    # Screenshots are for the Extensions Index (EXTENSION_SCREENSHOTURLS), not used at run time.
    actual = {"Resources/" + f for f in _files_under(RESOURCES_DIR) if not f.startswith("Screenshots/")}
    assert {"Resources/UI/OsteoROI.ui", "Resources/Icons/OsteoROI.png"} <= actual
    _check_listed(listed, ROOT, actual, "MODULE_PYTHON_RESOURCES", "resource files")
    # Resources must not (also) live in the module folder: the issue puts them at the top level.
    assert not os.path.isdir(os.path.join(MODULE_DIR, "Resources")), "use the top-level Resources/ folder"


def test_scripted_module_macro_call(module_cmake):
    commands, variables = module_cmake
    calls = [args for name, args in commands if name == "slicermacrobuildscriptedmodule"]
    assert len(calls) == 1, "exactly one slicerMacroBuildScriptedModule(...) call"
    args = calls[0]
    keywords = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"}
    parsed: Dict[str, List[str]] = {}
    key = None
    for a in args:
        if a in keywords:
            key = a
            parsed.setdefault(a, [])
        else:
            assert key is not None, f"argument {a!r} before any keyword"
            parsed[key].extend(v for v in cmake_expand(a, variables).split(";") if v)
    assert parsed.get("NAME") == ["OsteoROI"]
    assert "WITH_GENERIC_TESTS" in parsed
    assert "WITH_SUBDIR" not in parsed, "OsteoROI.py must sit directly in the scripted-modules folder"
    assert sorted(parsed.get("SCRIPTS", [])) == sorted(variables["MODULE_PYTHON_SCRIPTS"])
    # CTK's ctkMacroCompilePythonScript copies a RESOURCES entry from <this folder>/<entry> to
    # <module lib dir>/<entry>: entries must therefore exist in OsteoROI/ and stay inside it.
    for entry in parsed.get("RESOURCES", []):
        assert not os.path.isabs(entry) and ".." not in entry.split("/"), f"RESOURCES entry {entry!r} escapes"
        assert os.path.isfile(os.path.join(MODULE_DIR, entry)), f"RESOURCES entry {entry!r} is not in OsteoROI/"


def test_top_level_resources_have_copy_and_install_rules(module_cmake):
    """The top-level Resources/ get their own copy and install rules (the macro cannot place them)."""
    commands, _ = module_cmake
    loops = [args for name, args in commands if name == "foreach"]
    assert any(args[1:3] == ["IN", "LISTS"] and "MODULE_PYTHON_RESOURCES" in args for args in loops), (
        "expected foreach(<var> IN LISTS MODULE_PYTHON_RESOURCES) over the resources"
    )
    assert any(name == "add_custom_command" for name, _ in commands), "build-tree copy of the resources"
    installs = [" ".join(args) for name, args in commands if name == "install"]
    assert any("${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in a for a in installs), (
        "install rule into ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    )
    targets = [args for name, args in commands if name == "add_custom_target"]
    assert any("ALL" in args for args in targets), "the copy target must be part of ALL"


# A stand-in for an installed Slicer, just enough to configure, build and install the extension.
# slicerMacroBuildScriptedModule is modelled on CTK's ctkMacroCompilePythonScript: each SCRIPTS or
# RESOURCES entry <e> (relative to the calling CMakeLists.txt's folder) is copied to
# <build>/<Slicer_QTSCRIPTEDMODULES_LIB_DIR>/<e>, and that folder is installed as a whole.
_MOCK_SLICER_CONFIG = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
"""
_MOCK_USE_SLICER = """
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(BUILD_TESTING ON)
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MOCK "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MOCK_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "unknown arguments ${MOCK_UNPARSED_ARGUMENTS}")
  endif()
  set(_dest ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
  set(_outputs)
  foreach(_entry IN LISTS MOCK_SCRIPTS MOCK_RESOURCES)
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${_entry})
      message(FATAL_ERROR "given nonexistent file ${_entry}")
    endif()
    add_custom_command(OUTPUT ${_dest}/${_entry} DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${_entry}
      COMMAND ${CMAKE_COMMAND} -E copy ${CMAKE_CURRENT_SOURCE_DIR}/${_entry} ${_dest}/${_entry})
    list(APPEND _outputs ${_dest}/${_entry})
  endforeach()
  add_custom_target(Copy${MOCK_NAME}PythonFiles ALL DEPENDS ${_outputs})
  install(DIRECTORY ${_dest}/ DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR})
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(MOCKTEST "" "SCRIPT" "SLICER_ARGS" ${ARGN})
  get_filename_component(_script "${MOCKTEST_SCRIPT}" ABSOLUTE)
  file(APPEND ${CMAKE_BINARY_DIR}/unittests.txt "${_script}\n")
endmacro()
"""


def test_extension_builds_module_layout(module_cmake, tmp_path):
    """Configure, build and install the extension against a mock Slicer; check the module folder's layout."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    generator = [] if shutil.which("make") else (["-G", "Ninja"] if shutil.which("ninja") else None)
    if generator is None:
        pytest.skip("neither make nor ninja is installed")
    mock = tmp_path / "Slicer"
    mock.mkdir()
    (mock / "SlicerConfig.cmake").write_text(_MOCK_SLICER_CONFIG)
    (mock / "UseSlicer.cmake").write_text(_MOCK_USE_SLICER)
    (mock / "empty.cmake").write_text("")
    build, inst = tmp_path / "build", tmp_path / "install"
    steps = [
        [cmake, *generator, "-S", ROOT, "-B", str(build), f"-DSlicer_DIR={mock}", f"-DCMAKE_INSTALL_PREFIX={inst}"],
        [cmake, "--build", str(build)],
        [cmake, "--install", str(build)],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=300)
        if proc.returncode and "No CMAKE_C" in proc.stdout + proc.stderr:
            pytest.skip("no C/C++ compiler for project() to detect")
        assert proc.returncode == 0, f"{' '.join(step)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    _, variables = module_cmake
    lib = "lib/Slicer-5.8/qt-scripted-modules"
    expected = variables["MODULE_PYTHON_SCRIPTS"] + variables["MODULE_PYTHON_RESOURCES"]
    for tree in (build, inst):
        module_dir = tree / lib
        missing = [f for f in expected if not (module_dir / f).is_file()]
        assert not missing, f"missing from {module_dir}: {missing}"
        # ScriptedLoadableModule.resourcePath(): <dir of OsteoROI.py>/Resources/<file>
        assert (module_dir / "Resources" / "UI" / "OsteoROI.ui").is_file()
        assert (module_dir / "Resources" / "Icons" / "OsteoROI.png").is_file()
        assert not (tree / "lib" / "Slicer-5.8" / "Resources").exists(), "resources leaked outside the module dir"
        for f in variables["MODULE_PYTHON_RESOURCES"]:
            with open(os.path.join(ROOT, f), "rb") as a, open(module_dir / f, "rb") as b:
                assert a.read() == b.read(), f
    registered = (build / "unittests.txt").read_text().split()
    assert [os.path.normpath(p) for p in registered] == [os.path.normpath(MODULE_PY)]


def test_resource_lookups_match_layout():
    """Run-time lookups: moduleResourcePath('X') finds Resources/X beside OsteoROI.py (installed) or one
    level up (source tree); resources.py looks in <module dir>/Resources. Slicer's own resourcePath
    (beside OsteoROI.py only) is not used: it misses the source tree's top-level Resources/."""
    tree = ast.parse(_read(MODULE_PY))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert not [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "resourcePath"]
    used = [
        node.args[0].value
        for node in calls
        if getattr(node.func, "id", None) == "moduleResourcePath" and node.args and isinstance(node.args[0], ast.Constant)
    ]
    assert {"UI/OsteoROI.ui", "Icons/OsteoROI.png"} <= set(used)
    for rel in used:
        assert os.path.isfile(os.path.join(RESOURCES_DIR, rel)), f"resourcePath({rel!r}) has no file in Resources/"
    resources_src = _read(os.path.join(LIB_DIR, "resources.py"))
    assert re.search(r'os\.path\.join\(_HERE,\s*"\.\.",\s*"Resources"\)', resources_src), (
        "OsteoROILib/resources.py must look in <module dir>/Resources (the Slicer install layout)"
    )


# ------------------------------------------------------------------------------------------------
# Top-level CMakeLists.txt and Testing/CMakeLists.txt
# ------------------------------------------------------------------------------------------------
REQUIRED_EXTENSION_VARIABLES = (
    "EXTENSION_HOMEPAGE",
    "EXTENSION_CATEGORY",
    "EXTENSION_CONTRIBUTORS",
    "EXTENSION_DESCRIPTION",
    "EXTENSION_ICONURL",
    "EXTENSION_SCREENSHOTURLS",
    "EXTENSION_DEPENDS",
)


def test_top_level_cmake(top_cmake):
    commands, variables = top_cmake
    names = [n for n, _ in commands]
    assert names[0] == "cmake_minimum_required"
    assert ("project", ["OsteoROI"]) in commands
    for var in REQUIRED_EXTENSION_VARIABLES:
        assert variables.get(var), f"set({var} ...) is missing or empty"
    assert variables["EXTENSION_CATEGORY"] == ["Quantification"]
    assert variables["EXTENSION_DEPENDS"] == ["NA"]
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert all(v.startswith("https://") for v in variables[var]), f"{var} must be https URLs"
    assert len(" ".join(variables["EXTENSION_DESCRIPTION"])) >= 40

    def index(cmd):
        assert cmd in commands, f"missing {cmd[0]}({' '.join(cmd[1])})"
        return commands.index(cmd)

    order = [
        index(("find_package", ["Slicer", "REQUIRED"])),
        index(("include", ["${Slicer_USE_FILE}"])),
        index(("add_subdirectory", ["OsteoROI"])),
        index(("include", ["${Slicer_EXTENSION_GENERATE_CONFIG}"])),
        index(("include", ["${Slicer_EXTENSION_CPACK}"])),
    ]
    assert order == sorted(order), "order: find_package, Slicer_USE_FILE, modules, GENERATE_CONFIG, CPACK"
    # Every EXTENSION_* variable is set before find_package(Slicer) reads them.
    last_set = max(i for i, (n, a) in enumerate(commands) if n == "set" and a and a[0].startswith("EXTENSION_"))
    assert last_set < order[0]
    # The self-test directory is added only when testing is on.
    text = _strip_cmake_comments(_read(TOP_CMAKE))
    assert re.search(r"if\s*\(\s*BUILD_TESTING\s*\)\s*add_subdirectory\s*\(\s*Testing\s*\)\s*endif", text)


def test_icon_url_points_at_the_icon(top_cmake):
    _, variables = top_cmake
    url = variables["EXTENSION_ICONURL"][0]
    assert url.endswith("Resources/Icons/OsteoROI.png")
    homepage = variables["EXTENSION_HOMEPAGE"][0].rstrip("/")
    owner_repo = homepage.split("github.com/")[-1]
    assert owner_repo in url, "the icon URL should point into the extension's own repository"


def test_screenshot_urls_point_at_files(top_cmake):
    """Each EXTENSION_SCREENSHOTURLS entry is a PNG of this repository (Resources/Screenshots/)."""
    _, variables = top_cmake
    homepage = variables["EXTENSION_HOMEPAGE"][0].rstrip("/")
    prefix = "https://raw.githubusercontent.com/" + homepage.split("github.com/")[-1] + "/main/"
    urls = " ".join(variables["EXTENSION_SCREENSHOTURLS"]).split()
    assert urls
    for url in urls:
        assert url.startswith(prefix + "Resources/Screenshots/"), url
        path = os.path.join(ROOT, *url[len(prefix):].split("/"))
        assert os.path.isfile(path), f"{url} has no file {path}"
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def test_icon_is_a_128px_png():
    with open(os.path.join(RESOURCES_DIR, "Icons", "OsteoROI.png"), "rb") as f:
        head = f.read(32)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert head[12:16] == b"IHDR"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (128, 128)


def test_self_test_is_registered():
    commands = cmake_commands(_read(TESTING_CMAKE))
    calls = [args for name, args in commands if name == "slicer_add_python_unittest"]
    assert calls, "Testing/CMakeLists.txt must register the module self-test with slicer_add_python_unittest"
    script = calls[0][calls[0].index("SCRIPT") + 1]
    resolved = script.replace("${PROJECT_SOURCE_DIR}", ROOT).replace("${CMAKE_CURRENT_SOURCE_DIR}",
                                                                      os.path.join(ROOT, "Testing"))
    assert os.path.normpath(resolved) == os.path.normpath(MODULE_PY)
    # slicer.testing.runUnitTest loads test cases by module name: OsteoROI.py must define one.
    tree = ast.parse(_read(MODULE_PY))
    tests = [c for c in tree.body if isinstance(c, ast.ClassDef)
             and any(getattr(b, "id", None) == "ScriptedLoadableModuleTest" for b in c.bases)]
    assert [c.name for c in tests] == ["OsteoROITest"]
    methods = {f.name for f in tests[0].body if isinstance(f, ast.FunctionDef)}
    assert {"setUp", "runTest"} <= methods and any(m.startswith("test_") for m in methods)


# ------------------------------------------------------------------------------------------------
# OsteoROI.json (Slicer ExtensionsIndex catalog entry)
# ------------------------------------------------------------------------------------------------
#: Properties of the catalog entry schema (slicer-extension-catalog-entry-schema-v1.0.x); the
#: schema has additionalProperties: false.
INDEX_PROPERTIES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "dicom_support_rule": str,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}


def test_extension_index_entry(top_cmake):
    with open(INDEX_JSON, encoding="utf-8") as f:
        entry = json.load(f)
    assert isinstance(entry, dict)
    unknown = set(entry) - set(INDEX_PROPERTIES)
    assert not unknown, f"properties the catalog schema does not allow: {sorted(unknown)}"
    for key in ("$schema", "build_dependencies", "category", "scm_revision", "scm_url", "tier"):
        assert key in entry, f"{key} is missing"
    for key, value in entry.items():
        assert isinstance(value, INDEX_PROPERTIES[key]) and not (key == "tier" and isinstance(value, bool)), key
    assert re.fullmatch(
        r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
        r"slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#",
        entry["$schema"],
    )
    assert entry["category"] == "Quantification"
    assert 1 <= entry["tier"] <= 5
    assert all(isinstance(d, str) for d in entry["build_dependencies"])
    assert entry.get("scm_type", "git") in ("git", "local")
    # The catalog builds the repository the CMake homepage names.
    _, variables = top_cmake
    homepage = variables["EXTENSION_HOMEPAGE"][0].rstrip("/")
    assert entry["scm_url"] in (homepage, homepage + ".git")
    # EXTENSION_DEPENDS "NA" <-> no build dependencies.
    assert (variables["EXTENSION_DEPENDS"] == ["NA"]) == (entry["build_dependencies"] == [])


# ------------------------------------------------------------------------------------------------
# Resources/UI/OsteoROI.ui
# ------------------------------------------------------------------------------------------------
QT_LAYOUTS = {"QVBoxLayout", "QHBoxLayout", "QFormLayout", "QGridLayout", "QStackedLayout"}
#: Qt classes QUiLoader can build, each with its base class (for the property/API checks below).
QT_WIDGETS = {
    "QWidget": None,
    "QFrame": "QWidget",
    "QLabel": "QFrame",
    "QAbstractButton": "QWidget",
    "QPushButton": "QAbstractButton",
    "QToolButton": "QAbstractButton",
    "QCheckBox": "QAbstractButton",
    "QRadioButton": "QAbstractButton",
    "QAbstractSpinBox": "QWidget",
    "QSpinBox": "QAbstractSpinBox",
    "QDoubleSpinBox": "QAbstractSpinBox",
    "QComboBox": "QWidget",
    "QLineEdit": "QWidget",
    "QTextEdit": "QFrame",
    "QPlainTextEdit": "QFrame",
    "QGroupBox": "QWidget",
    "QTabWidget": "QWidget",
    "QStackedWidget": "QFrame",
    "QScrollArea": "QFrame",
    "QSlider": "QWidget",
    "QProgressBar": "QWidget",
    "QTableView": "QFrame",
    "QTableWidget": "QTableView",
    "QTreeWidget": "QFrame",
    "QListWidget": "QFrame",
}
#: Slicer/CTK widget classes the module may declare in <customwidgets>, with their base class.
SLICER_WIDGETS = {
    "qMRMLWidget": "QWidget",
    "qSlicerWidget": "QWidget",
    "qMRMLNodeComboBox": "QWidget",
    "qMRMLSliderWidget": "ctkSliderWidget",
    "qMRMLSpinBox": "ctkDoubleSpinBox",
    "qMRMLTableView": "QTableView",
    "qMRMLSubjectHierarchyTreeView": "QWidget",
    "qSlicerMarkupsPlaceWidget": "QWidget",
    "qMRMLSimpleMarkupsWidget": "QWidget",
    "ctkCollapsibleButton": "QAbstractButton",
    "ctkCollapsibleGroupBox": "QGroupBox",
    "ctkCheckBox": "QCheckBox",
    "ctkCheckablePushButton": "QPushButton",
    "ctkComboBox": "QComboBox",
    "ctkDoubleSpinBox": "QWidget",
    "ctkSliderWidget": "QWidget",
    "ctkRangeWidget": "QWidget",
    "ctkPathLineEdit": "QWidget",
    "ctkDirectoryButton": "QWidget",
    "ctkColorPickerButton": "QPushButton",
}
ALL_BASES = dict(QT_WIDGETS, **SLICER_WIDGETS)

#: Designer properties (Q_PROPERTY) per class, for the classes whose properties are checked.
#: Qt: from the Qt 5 class documentation; CTK/Slicer: from ctkCollapsibleButton.h, ctkDoubleSpinBox.h,
#: qMRMLNodeComboBox.h.
PROPERTIES = {
    "QWidget": {
        "geometry", "toolTip", "statusTip", "whatsThis", "enabled", "visible", "sizePolicy", "minimumSize",
        "maximumSize", "styleSheet", "font", "layoutDirection", "focusPolicy", "contextMenuPolicy",
        "accessibleName", "accessibleDescription", "windowTitle", "autoFillBackground", "cursor", "locale",
        "baseSize", "sizeIncrement", "toolTipDuration", "mouseTracking", "palette",
    },
    "QFrame": {"frameShape", "frameShadow", "lineWidth", "midLineWidth", "frameRect"},
    "QLabel": {"text", "textFormat", "pixmap", "scaledContents", "alignment", "wordWrap", "margin", "indent",
               "openExternalLinks", "textInteractionFlags", "buddy"},
    "QAbstractButton": {"text", "icon", "iconSize", "shortcut", "checkable", "checked", "autoRepeat",
                        "autoExclusive", "autoRepeatDelay", "autoRepeatInterval", "down"},
    "QPushButton": {"autoDefault", "default", "flat"},
    "QCheckBox": {"tristate"},
    "QAbstractSpinBox": {"wrapping", "frame", "alignment", "readOnly", "buttonSymbols", "specialValueText",
                         "accelerated", "correctionMode", "keyboardTracking", "showGroupSeparator"},
    "QDoubleSpinBox": {"prefix", "suffix", "decimals", "minimum", "maximum", "singleStep", "value", "stepType"},
    "QSpinBox": {"prefix", "suffix", "minimum", "maximum", "singleStep", "value", "displayIntegerBase",
                 "stepType"},
    "ctkCollapsibleButton": {"collapsed", "collapsedHeight", "flat", "contentsFrameShape", "contentsFrameShadow",
                             "contentsLineWidth", "contentsMidLineWidth", "buttonTextAlignment",
                             "indicatorAlignment"},
    "ctkDoubleSpinBox": {"alignment", "frame", "readOnly", "prefix", "suffix", "decimals", "decimalsOption",
                         "minimum", "maximum", "singleStep", "value", "setMode", "invertedControls",
                         "sizeHintPolicy"},
    "qMRMLNodeComboBox": {"currentNodeID", "currentNodeId", "nodeTypes", "showHidden", "showChildNodeTypes",
                          "hideChildNodeTypes", "baseName", "noneEnabled", "addEnabled", "removeEnabled",
                          "editEnabled", "renameEnabled", "interactionNodeSingletonTag",
                          "selectNodeUponCreation", "noneDisplay", "sizeAdjustPolicy"},
}
CHECKED_PROPERTY_CLASSES = {"QLabel", "QPushButton", "QCheckBox", "QDoubleSpinBox", "QSpinBox",
                            "ctkCollapsibleButton", "ctkDoubleSpinBox", "qMRMLNodeComboBox", "QWidget",
                            "qMRMLWidget"}

#: Python-side members (attributes, methods) the module may use on ``self.ui.<widget>``.
API = {
    "QWidget": {"enabled", "visible", "toolTip", "setEnabled", "setVisible", "setToolTip", "show", "hide",
                "connect", "disconnect", "setStyleSheet", "styleSheet", "objectName", "property",
                "setProperty", "blockSignals", "findChildren", "layout"},
    "QLabel": {"text", "setText", "wordWrap", "clear"},
    "QAbstractButton": {"text", "setText", "checked", "setChecked", "checkable", "click", "clicked", "toggled"},
    "QAbstractSpinBox": {"specialValueText"},
    "QDoubleSpinBox": {"value", "setValue", "minimum", "maximum", "decimals", "singleStep", "suffix",
                       "valueChanged"},
    "ctkDoubleSpinBox": {"value", "setValue", "minimum", "maximum", "decimals", "singleStep", "suffix",
                         "valueChanged"},
    "ctkCollapsibleButton": {"collapsed", "setCollapsed"},
    "qMRMLNodeComboBox": {"currentNode", "setCurrentNode", "currentNodeID", "setCurrentNodeID", "setMRMLScene",
                          "mrmlScene", "nodeTypes", "addNode", "currentNodeChanged", "noneEnabled"},
    "qMRMLWidget": {"setMRMLScene", "mrmlScene"},
    "QComboBox": {"currentIndex", "setCurrentIndex", "currentText", "addItem", "clear", "count", "findText"},
    "QLineEdit": {"text", "setText", "clear"},
    "QTableView": {"resizeColumnsToContents"},
    "qMRMLTableView": {"setMRMLTableNode", "mrmlTableNode", "setMRMLScene", "mrmlScene"},
}
#: Qt signals per class, for ``self.ui.<widget>.connect("signal(args)", slot)``.
SIGNALS = {
    "QWidget": {"destroyed()", "customContextMenuRequested(QPoint)"},
    "QAbstractButton": {"clicked()", "clicked(bool)", "toggled(bool)", "pressed()", "released()"},
    "QDoubleSpinBox": {"valueChanged(double)", "editingFinished()"},
    "ctkDoubleSpinBox": {"valueChanged(double)", "editingFinished()"},
    "ctkCollapsibleButton": {"contentsCollapsed(bool)"},
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)"},
    "QLineEdit": {"textChanged(QString)", "editingFinished()"},
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                          "currentNodeIDChanged(QString)", "nodeAdded(vtkMRMLNode*)",
                          "nodeActivated(vtkMRMLNode*)", "nodeAddedByUser(vtkMRMLNode*)"},
}


def _ancestry(cls: str) -> List[str]:
    chain = []
    while cls is not None:
        chain.append(cls)
        cls = ALL_BASES.get(cls)
    return chain


def _members(table: Dict[str, Set[str]], cls: str) -> Set[str]:
    out: Set[str] = set()
    for c in _ancestry(cls):
        out |= table.get(c, set())
    return out


@pytest.fixture(scope="module")
def ui():
    return ET.parse(UI_FILE).getroot()


def _widgets(root) -> Dict[str, ET.Element]:
    return {w.get("name"): w for w in root.iter("widget")}


def _dynamic_property(widget: ET.Element, name: str) -> Optional[str]:
    for p in widget.findall("property"):
        if p.get("name") == name:
            s = p.find("string")
            return None if s is None else (s.text or "")
    return None


def test_ui_is_a_designer_form(ui):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    top = ui.find("widget")
    assert top is not None and top.get("class") in ("qMRMLWidget", "qSlicerWidget"), (
        "the top widget must be a qMRMLWidget/qSlicerWidget: the module calls uiWidget.setMRMLScene()"
    )
    assert ui.findtext("class") == top.get("name") == "OsteoROI"


def test_ui_uses_only_known_classes(ui):
    declared = {}
    for cw in ui.iter("customwidget"):
        cls, extends, header = cw.findtext("class"), cw.findtext("extends"), cw.findtext("header")
        assert cls in SLICER_WIDGETS, f"custom widget {cls} is not a known Slicer/CTK widget class"
        assert extends in QT_WIDGETS or extends in SLICER_WIDGETS, f"{cls} extends unknown {extends}"
        assert header == f"{cls}.h", f"{cls}: header should be {cls}.h"
        declared[cls] = cw
    used = {w.get("class") for w in ui.iter("widget")}
    for cls in used:
        assert cls in QT_WIDGETS or cls in declared, f"widget class {cls} is neither Qt nor declared in <customwidgets>"
    assert not set(declared) - used, f"declared but unused custom widgets: {set(declared) - used}"
    for layout in ui.iter("layout"):
        assert layout.get("class") in QT_LAYOUTS, layout.get("class")
    names = [w.get("name") for w in ui.iter("widget")] + [w.get("name") for w in ui.iter("layout")]
    assert len(names) == len(set(names)), "object names must be unique"


def test_ui_properties_exist(ui):
    """Designer (stdset) properties must exist on the class, or QUiLoader ignores them with a warning."""
    for w in ui.iter("widget"):
        cls = w.get("class")
        if not any(c in CHECKED_PROPERTY_CLASSES for c in _ancestry(cls)) or not all(
            c in PROPERTIES or c in ("qMRMLWidget",) for c in _ancestry(cls)
        ):
            continue
        known = _members(PROPERTIES, cls)
        for p in w.findall("property"):
            if p.get("stdset") == "0":
                continue
            assert p.get("name") in known, f"{w.get('name')} ({cls}) has no property {p.get('name')!r}"


def test_ui_mrml_widgets_get_the_scene(ui):
    widgets = _widgets(ui)
    top = ui.find("widget").get("name")
    connections = {
        (c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
        for c in ui.iter("connection")
    }
    for sender, _signal, receiver, _slot in connections:
        assert sender in widgets and receiver in widgets
    combos = [n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"]
    assert len(combos) >= 2
    for name in combos:
        assert (top, "mrmlSceneChanged(vtkMRMLScene*)", name, "setMRMLScene(vtkMRMLScene*)") in connections, (
            f"{name} does not receive the scene: connect {top}.mrmlSceneChanged to its setMRMLScene"
        )
        node_types = [s.text for p in widgets[name].findall("property") if p.get("name") == "nodeTypes"
                      for s in p.iter("string")]
        assert node_types and all(t.startswith("vtkMRML") and t.endswith("Node") for t in node_types), name
        # Never delete user nodes: no "Delete current node" entry in the combo boxes.
        remove = [p.findtext("bool") for p in widgets[name].findall("property") if p.get("name") == "removeEnabled"]
        assert remove == ["false"], f"{name}: set removeEnabled to false"


def _module_tree() -> ast.Module:
    return ast.parse(_read(MODULE_PY), filename=MODULE_PY)


def _parameter_fields() -> Dict[str, ast.expr]:
    tree = _module_tree()
    classes = [c for c in tree.body if isinstance(c, ast.ClassDef)
               and any(getattr(d, "id", None) == "parameterNodeWrapper" for d in c.decorator_list)]
    assert [c.name for c in classes] == ["OsteoROIParameterNode"]
    return {s.target.id: s.annotation for s in classes[0].body if isinstance(s, ast.AnnAssign)}


def _unannotated(annotation: ast.expr) -> str:
    """'float' for ``Annotated[float, ...]``, 'vtkMRMLScalarVolumeNode' for that name, ..."""
    if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", None) == "Annotated":
        inner = annotation.slice
        inner = getattr(inner, "value", inner)  # Python 3.8 ast.Index
        return _unannotated(inner.elts[0] if isinstance(inner, ast.Tuple) else inner)
    return ast.unparse(annotation)


#: Widget classes Slicer 5.6 (the oldest supported) can connect to each value type (canRepresent in
#: Base/Python/slicer/parameterNodeWrapper/guiConnectors.py at v5.6.2; every version is checked in
#: test_slicer_conformance.py). A QComboBox needs a Choice annotation (or an Enum).
CONNECTABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget"},
    "int": {"QSlider", "QSpinBox"},
    "str": {"QLineEdit", "QTextEdit"},
}
#: Parameters deliberately without a bound widget (kept in sync by the widget's own code).
UNBOUND = {"calibrationPhantom": "its combo box also lists user phantoms added at run time (no fixed Choice)"}


def _has_choice(annotation: ast.expr) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Choice" for n in ast.walk(annotation))


def test_ui_parameter_names_match_parameter_node(ui):
    fields = _parameter_fields()
    assert {"inputVolume", "inputPoints", "slabMm"} <= set(fields)
    assert _unannotated(fields["inputVolume"]) == "vtkMRMLScalarVolumeNode"
    assert _unannotated(fields["inputPoints"]) == "vtkMRMLMarkupsFiducialNode"
    assert _unannotated(fields["slabMm"]) == "float"
    seen = {}
    for name, w in _widgets(ui).items():
        param = _dynamic_property(w, "SlicerParameterName")
        if param is None:
            continue
        assert param in fields, f"{name}: SlicerParameterName {param!r} is not a member of OsteoROIParameterNode"
        assert param not in seen, f"{param} is connected to both {seen[param]} and {name}"
        seen[param] = name
        cls, value_type = w.get("class"), _unannotated(fields[param])
        if value_type.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox", f"{name}: a node parameter needs a qMRMLNodeComboBox"
            node_types = [s.text for p in w.findall("property") if p.get("name") == "nodeTypes"
                          for s in p.iter("string")]
            assert node_types == [value_type], f"{name}: nodeTypes {node_types} != parameter type {value_type}"
        elif cls == "QComboBox":
            assert _has_choice(fields[param]), f"{name}: a QComboBox bound to {param} needs Annotated[..., Choice(...)]"
        else:
            assert cls in CONNECTABLE.get(value_type, set()), f"connectGui cannot connect {value_type} {param} to {cls}"
    # Every GUI-editable parameter has a widget, except those kept in sync by hand.
    assert set(fields) - set(UNBOUND) == set(seen), f"parameters without a widget: {set(fields) - set(seen)}"
    assert not set(UNBOUND) & set(seen)


def test_ui_names_used_by_the_module_exist(ui):
    widgets = _widgets(ui)
    tree = _module_tree()
    used: Dict[str, Set[str]] = {}
    connects: List[Tuple[str, str]] = []
    for node in ast.walk(tree):
        # self.ui.<name> (self.ui.__dict__ lists the widgets)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui" \
                and getattr(node.value.value, "id", None) == "self" and not node.attr.startswith("__"):
            used.setdefault(node.attr, set())
        # self.ui.<name>.<member>
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "ui" \
                and getattr(node.value.value.value, "id", None) == "self" and not node.value.attr.startswith("__"):
            used.setdefault(node.value.attr, set()).add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect" \
                and isinstance(node.func.value, ast.Attribute) and isinstance(node.func.value.value, ast.Attribute) \
                and node.func.value.value.attr == "ui" and node.args and isinstance(node.args[0], ast.Constant):
            connects.append((node.func.value.attr, node.args[0].value))
    assert "applyButton" in used
    for name, members in used.items():
        assert name in widgets, f"self.ui.{name} is used in OsteoROI.py but there is no widget {name!r} in the .ui"
        cls = widgets[name].get("class")
        api = _members(API, cls)
        unknown = members - api
        assert not unknown, f"self.ui.{name} is a {cls}, which has no {sorted(unknown)} (known: {sorted(api)})"
    assert widgets["applyButton"].get("class") in ("QPushButton", "ctkPushButton")
    for name, signal in connects:
        cls = widgets[name].get("class")
        assert signal in _members(SIGNALS, cls), f"{name} ({cls}) has no signal {signal}"


# ------------------------------------------------------------------------------------------------
# OsteoROI.py and OsteoROILib: syntax, lint, imports
# ------------------------------------------------------------------------------------------------
ALL_PY = sorted(_files_under(MODULE_DIR, ".py"))


@pytest.mark.parametrize("rel", ALL_PY)
def test_python39_syntax(rel):
    path = os.path.join(MODULE_DIR, rel)
    source = _read(path)
    tree = ast.parse(source, filename=path, feature_version=(3, 9))
    has_future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                     and any(a.name == "annotations" for a in n.names) for n in tree.body)
    # "X | Y" in an annotation is evaluated at definition time on 3.9 unless annotations are postponed.
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations += [a.annotation for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs]
            annotations += [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for ann in annotations:
            if ann is not None and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)):
                assert has_future, f"{rel}:{ann.lineno}: 'X | Y' annotation needs 'from __future__ import annotations'"
    # A few 3.10+ only APIs that parse fine on 3.9 but fail at run time.
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fname = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            kws = {k.arg for k in node.keywords}
            assert not (fname == "zip" and "strict" in kws), f"{rel}:{node.lineno}: zip(strict=) is Python 3.10+"
            assert not (fname == "dataclass" and kws & {"slots", "kw_only", "match_args"}), (
                f"{rel}:{node.lineno}: dataclass(slots/kw_only/match_args) is Python 3.10+"
            )
            assert fname not in ("pairwise", "aiter", "anext"), f"{rel}:{node.lineno}: {fname} is Python 3.10+"
        if isinstance(node, ast.ImportFrom) and node.module == "typing":
            new = {a.name for a in node.names} & {"TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "Self",
                                                  "Never", "LiteralString", "Required", "NotRequired", "Unpack"}
            assert not new, f"{rel}:{node.lineno}: typing.{sorted(new)} is Python 3.10+"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert "tomllib" not in mods, f"{rel}: tomllib is Python 3.11+"


def test_parameter_node_annotations_evaluate_on_python39():
    """parameterNodeWrapper evaluates the class annotations (typing.get_type_hints) even when postponed."""
    for name, ann in _parameter_fields().items():
        bad = [n for n in ast.walk(ann) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)]
        assert not bad, f"OsteoROIParameterNode.{name}: use Optional[...] / Union[...], not 'X | Y' (Python 3.9)"


def _ruff() -> Optional[str]:
    candidates = [os.path.join(os.path.dirname(sys.executable), "ruff"),
                  os.path.join(ROOT, ".venv", "bin", "ruff"), shutil.which("ruff")]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def test_ruff_module():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    # --isolated: ignore project config so that the check is the same wherever it runs.
    # E9: syntax/IO errors; F: pyflakes (undefined names, unused imports, redefinitions, star imports).
    proc = subprocess.run(
        [ruff, "check", "--isolated", "--no-cache", "--select", "E9,F", "--target-version", "py39",
         "--output-format", "concise", MODULE_PY],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _stdlib_names() -> Set[str]:
    names = set(sys.builtin_module_names)
    if hasattr(sys, "stdlib_module_names"):
        return names | set(sys.stdlib_module_names)
    stdlib = sysconfig.get_paths()["stdlib"]
    for entry in os.listdir(stdlib):
        base = entry[:-3] if entry.endswith(".py") else entry
        if base.isidentifier():
            names.add(base)
    lib_dynload = os.path.join(stdlib, "lib-dynload")
    if os.path.isdir(lib_dynload):
        names |= {e.split(".")[0] for e in os.listdir(lib_dynload)}
    return names - {"site-packages"}


#: What OsteoROILib may import (besides the standard library and itself).
ALLOWED_THIRD_PARTY = {"numpy", "SimpleITK", "vtk", "vtkmodules"}
#: Optional packages that only command-line features use, imported inside the function that needs them.
OPTIONAL_OUTSIDE_SLICER = {"pydicom", "jsonschema", "highdicom"}


def _lib_modules() -> List[str]:
    out = []
    for rel in sorted(_files_under(LIB_DIR, ".py")):
        mod = "OsteoROILib." + rel[:-3].replace("/", ".")
        mod = mod[: -len(".__init__")] if mod.endswith(".__init__") else mod
        out.append(mod)
    return out


def _is_mrml_module(mod: str) -> bool:
    """A module of the ``mrml`` subpackage (``mrml/logic`` or ``OsteoROILib.mrml.logic``)."""
    return "mrml" in mod.replace("/", ".").split(".")


@pytest.mark.parametrize("rel", sorted(_files_under(LIB_DIR, ".py")))
def test_lib_import_statements(rel):
    """Every import in OsteoROILib (outside the mrml subpackage) is stdlib, numpy, SimpleITK, vtk or OsteoROILib."""
    if _is_mrml_module(rel[:-3].replace("/", ".")):
        pytest.skip("MRML module: may import slicer")
    stdlib = _stdlib_names()
    tree = ast.parse(_read(os.path.join(LIB_DIR, rel)))
    module_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            tops = [(node.module or "").split(".")[0]]
        else:
            continue
        for top in tops:
            if top in stdlib or top in ALLOWED_THIRD_PARTY or top in ("OsteoROILib", "__future__"):
                continue
            assert id(node) not in module_level and top in OPTIONAL_OUTSIDE_SLICER, (
                f"OsteoROILib/{rel}:{node.lineno} imports {top}; OsteoROILib may import only the standard library, "
                f"{', '.join(sorted(ALLOWED_THIRD_PARTY))}"
            )
            assert top not in ("qt", "slicer", "ctk", "PythonQt")


_IMPORT_PROBE = textwrap.dedent(
    r"""
    import importlib, importlib.abc, json, sys
    sys.path.insert(0, MODULE_DIR)
    BLOCKED = {"qt", "slicer", "ctk", "PythonQt", "PyQt5", "PyQt6", "PySide2", "PySide6", "qt_compat"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in BLOCKED or (path is None and "." not in name and top not in ALLOWED):
                raise ModuleNotFoundError(f"blocked import of {name!r} (not stdlib/numpy/SimpleITK/vtk)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    failures = {}
    for mod in MODULES:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # report every module, not just the first
            failures[mod] = f"{type(exc).__name__}: {exc}"
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"failures": failures, "leaked": leaked}))
    """
)


def test_lib_imports_without_qt_or_slicer():
    """Import every OsteoROILib module in a fresh interpreter where only stdlib, numpy, SimpleITK and vtk exist."""
    modules = [m for m in _lib_modules() if not _is_mrml_module(m) and not m.endswith(".__main__")]
    allowed = _stdlib_names() | ALLOWED_THIRD_PARTY | {"OsteoROILib", "__future__"}
    code = (
        f"MODULE_DIR = {MODULE_DIR!r}\nMODULES = {modules!r}\nALLOWED = set({sorted(allowed)!r})\n" + _IMPORT_PROBE
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}, report["failures"]
    assert report["leaked"] == [], f"Qt/Slicer modules were imported: {report['leaked']}"


def test_module_calls_match_lib_signatures():
    """Every OsteoROILib function/class OsteoROI.py calls exists and accepts the arguments it is given."""
    import importlib

    pytest.importorskip("slicer", reason="the module imports OsteoROILib's MRML logic, which needs slicer-core")
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)
    tree = _module_tree()
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("OsteoROILib"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                imported[alias.asname or alias.name] = getattr(module, alias.name)
    assert {"measure_levels", "OsteoROIMRMLLogic", "volume_from_node"} <= set(imported)
    checked = 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported):
            continue
        target = imported[node.func.id]
        if not callable(target) or any(isinstance(a, ast.Starred) for a in node.args) \
                or any(k.arg is None for k in node.keywords):
            continue
        try:
            inspect.signature(target).bind(*([None] * len(node.args)), **{k.arg: None for k in node.keywords})
        except TypeError as exc:
            pytest.fail(f"OsteoROI.py line {node.lineno}: {node.func.id}(...) does not match its signature: {exc}")
        checked += 1
    assert checked >= 3


def test_module_shape_parameters_cover_lib_shapes():
    """The widget's shape check boxes map one-to-one onto OsteoROILib's ROI shape names."""
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)
    from OsteoROILib.roi.family import SHAPE_NAMES

    tree = _module_tree()
    mapping = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SHAPE_PARAMETERS" for t in node.targets):
            mapping = ast.literal_eval(node.value)
    assert mapping is not None, "OsteoROI.py must define SHAPE_PARAMETERS"
    assert set(mapping) == set(SHAPE_NAMES)
    fields = _parameter_fields()
    for param in mapping.values():
        assert param in fields and _unannotated(fields[param]) == "bool", param


def test_module_metadata():
    tree = _module_tree()
    cls = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "OsteoROI")
    assigned = {}
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            assigned[node.targets[0].attr] = node.value
    for attr in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert attr in assigned, f"self.parent.{attr} is not set"
    categories = [n.value for n in ast.walk(assigned["categories"]) if isinstance(n, ast.Constant)]
    assert "Quantification" in categories
    help_text = " ".join(n.value for n in ast.walk(assigned["helpText"]) if isinstance(n, ast.Constant)
                         and isinstance(n.value, str))
    assert "github.com/osteoroi/SlicerOsteoROI" in help_text, "helpText should link to the README"
    assert "getModuleLogic" in help_text, "helpText should show the Python console API"
    # The class names Slicer looks for: <Module>, <Module>Widget, <Module>Logic, <Module>Test.
    names = {c.name for c in tree.body if isinstance(c, ast.ClassDef)}
    assert {"OsteoROI", "OsteoROIWidget", "OsteoROILogic", "OsteoROITest", "OsteoROIParameterNode"} <= names


def test_per_level_widgets_exist(ui):
    """The widget reaches per-level widgets by name (getattr(self.ui, f"exclude{level}CheckBox")): check them all."""
    widgets = _widgets(ui)
    tree = _module_tree()
    levels = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "GUI_LEVELS" for t in node.targets):
            levels = ast.literal_eval(node.value)
    assert levels == ("L1", "L2", "L3", "L4")
    patterns = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.JoinedStr) and ast.unparse(node.args[0]) == "self.ui":
            patterns.add(ast.unparse(node.args[1]))
    assert patterns, "expected getattr(self.ui, f'...{level}...') look-ups"
    expected_class = {"CheckBox": "QCheckBox", "ComboBox": "QComboBox", "Button": "QPushButton"}
    for pattern in patterns:
        for level in levels:
            name = re.sub(r"\{[^}]*\}", level, pattern[2:-1])
            assert name in widgets, f"self.ui.{name} (from {pattern}) is not in the .ui"
            suffix = next(s for s in expected_class if name.endswith(s))
            assert widgets[name].get("class") == expected_class[suffix], name
    for level in levels:  # the per-level place buttons, exclusion boxes and Genant grades
        assert widgets[f"place{level}Button"].get("class") == "QPushButton"
        assert widgets[f"exclude{level}CheckBox"].get("class") == "QCheckBox"
        genant = widgets[f"genant{level}ComboBox"]
        items = [i.find("property/string").text for i in genant.findall("item")]
        assert len(items) == 5 and items[0] == "not graded" and [t[0] for t in items[1:]] == ["0", "1", "2", "3"]


def test_criteria_and_calibration_choices_match_the_library(ui):
    """The criteria combo box offers the built-in criteria ids; the calibration modes are the documented five."""
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)
    from OsteoROILib.diagnosis.criteria import builtin_ids

    widgets = _widgets(ui)
    items = [i.find("property/string").text or "" for i in widgets["criteriaComboBox"].findall("item")]
    assert set(items) - {""} == set(builtin_ids())
    modes = [i.find("property/string").text for i in widgets["calibrationModeComboBox"].findall("item")]
    assert modes == ["none", "saved", "manual", "phantom", "internal"]
    default = _parameter_fields()
    assert ast.literal_eval(_default_of("criteria")) in items
    assert ast.literal_eval(_default_of("calibrationMode")) in modes
    assert "criteria" in default and "calibrationMode" in default


def _default_of(field: str) -> str:
    tree = _module_tree()
    cls = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "OsteoROIParameterNode")
    for s in cls.body:
        if isinstance(s, ast.AnnAssign) and s.target.id == field:
            return ast.unparse(s.value)
    raise AssertionError(f"{field} has no default")


def test_mrml_modules_are_listed_and_import_only_allowed_packages():
    """mrml/*.py may import slicer (MRML) but never Qt; they are listed in CMake like every file."""
    for rel in sorted(_files_under(LIB_DIR, ".py")):
        if not _is_mrml_module(rel[:-3]):
            continue
        tree = ast.parse(_read(os.path.join(LIB_DIR, rel)))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in ("qt", "ctk", "PythonQt"), f"{rel} imports {name}"


# ------------------------------------------------------------------------------------------------
# The calibration panel and the calls into the MRML logic (read from the sources; no slicer import)
# ------------------------------------------------------------------------------------------------
def test_calibration_panel_choices_match_the_library(ui):
    """The phantom combo box offers the built-in phantom library (user phantoms are added at run time);
    the manual unit combo box offers exactly the two density units; the defaults are among them."""
    if MODULE_DIR not in sys.path:
        sys.path.insert(0, MODULE_DIR)
    from OsteoROILib.calibration.phantom_library import UNITS, load_builtin

    widgets = _widgets(ui)
    phantoms = [i.find("property/string").text for i in widgets["phantomComboBox"].findall("item")]
    assert phantoms == list(load_builtin())
    assert ast.literal_eval(_default_of("calibrationPhantom")) in phantoms
    units = [i.find("property/string").text for i in widgets["manualUnitComboBox"].findall("item")]
    assert units == list(UNITS) and ast.literal_eval(_default_of("manualUnit")) in units
    fields = _parameter_fields()
    for name in ("rodPoints", "tissuePoints"):
        assert _unannotated(fields[name]) == "vtkMRMLMarkupsFiducialNode", name
    for name in ("placeRodsButton", "autoRodsButton", "placeTissuesButton", "applyCalibrationButton",
                 "saveCalibrationButton", "calibrationFileBrowseButton"):
        assert widgets[name].get("class") == "QPushButton", name
    assert widgets["calibrationSummaryLabel"].get("class") == "QLabel"


def _class_methods(path: str, class_names) -> Dict[str, ast.FunctionDef]:
    tree = ast.parse(_read(path))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in class_names:
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    out.setdefault(item.name, item)
    return out


def _signature_of(fn: ast.FunctionDef) -> inspect.Signature:
    """An inspect.Signature built from a function's AST (defaults are placeholders)."""
    P = inspect.Parameter
    args = fn.args
    positional = args.posonlyargs + args.args
    first_default = len(positional) - len(args.defaults)
    params = []
    for i, a in enumerate(positional):
        kind = P.POSITIONAL_ONLY if a in args.posonlyargs else P.POSITIONAL_OR_KEYWORD
        params.append(P(a.arg, kind, default=None if i >= first_default else P.empty))
    if args.vararg:
        params.append(P(args.vararg.arg, P.VAR_POSITIONAL))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        params.append(P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else None))
    if args.kwarg:
        params.append(P(args.kwarg.arg, P.VAR_KEYWORD))
    is_static = any(getattr(d, "id", None) == "staticmethod" for d in fn.decorator_list)
    if not is_static and params:
        params = params[1:]  # self / cls
    return inspect.Signature(params)


def _bind(fn: ast.FunctionDef, call: ast.Call, where: str) -> None:
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return
    try:
        _signature_of(fn).bind(*([None] * len(call.args)), **{k.arg: None for k in call.keywords})
    except TypeError as exc:
        pytest.fail(f"OsteoROI.py line {call.lineno}: {where}(...) does not match its definition: {exc}")


def test_module_calls_into_the_mrml_logic_match_its_methods():
    """Every ``<x>.mrml.<method>(...)`` in OsteoROI.py (widget, console logic and the self-test) names a
    method of OsteoROIMRMLLogic (the front that delegates to the mrml parts) and passes arguments it accepts; every
    ``logic.<method>(...)`` / ``self.logic.<method>(...)`` names a method of OsteoROILogic."""
    mrml_methods = _class_methods(os.path.join(LIB_DIR, "mrml", "logic.py"), {"OsteoROIMRMLLogic"})
    module_logic = _class_methods(MODULE_PY, {"OsteoROILogic"})
    inherited = {"getParameterNode", "createParameterNode", "isValidInputOutputData"}
    assert {"calibrateFromRods", "autoDetectRods", "calibrateFromTissues", "setManualCalibration",
            "setCalibration", "calibrationSummary", "saveCalibration", "prepareRodPoints",
            "prepareTissuePoints"} <= set(mrml_methods)
    checked = 0
    for node in ast.walk(_module_tree()):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, method = node.func.value, node.func.attr
        if isinstance(owner, ast.Attribute) and owner.attr == "mrml":
            assert method in mrml_methods, f"OsteoROI.py line {node.lineno}: OsteoROIMRMLLogic has no {method}()"
            _bind(mrml_methods[method], node, f"mrml.{method}")
            checked += 1
        elif ast.unparse(owner) in ("logic", "self.logic", "restored"):
            assert method in module_logic or method in inherited, (
                f"OsteoROI.py line {node.lineno}: OsteoROILogic has no {method}()")
            if method in module_logic:
                _bind(module_logic[method], node, f"logic.{method}")
            checked += 1
    assert checked >= 20


def test_module_parameter_node_members_exist():
    """``p.<member>`` / ``parameterNode.<member>`` / ``self._parameterNode.<member>`` in OsteoROI.py are
    members of OsteoROIParameterNode (a typo would fail only inside Slicer)."""
    fields = set(_parameter_fields())
    allowed_methods = {"connectGui", "connectParametersToGui", "disconnectGui", "parameterNode", "default",
                       "isCached"}
    seen = set()
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("p", "parameterNode",
                                                                           "self._parameterNode"):
            seen.add(node.attr)
            assert node.attr in fields | allowed_methods, (
                f"OsteoROI.py line {node.lineno}: OsteoROIParameterNode has no member {node.attr!r}")
    assert {"calibrationMode", "calibrationPhantom", "rodPoints", "tissuePoints", "manualUnit"} <= seen
