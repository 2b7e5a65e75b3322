"""The layout's rules: dependencies point one way (util <- model <- attack <- defense, evaluation <- the
entry points), functions fit on a screen, and model/ makes no class at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("util", "model", "attack", "defense", "evaluation")
# What each package may not import: the ones above it.
FORBIDDEN = {
    "util": {"model", "attack", "defense", "evaluation", "tool_data", "train", "test"},
    "model": {"attack", "defense", "evaluation", "tool_data", "train", "test"},
    "attack": {"defense", "evaluation", "tool_data", "train", "test"},
    "defense": {"evaluation", "tool_data", "train", "test"},
    "evaluation": {"defense", "tool_data", "train", "test"},
}
MAX_FUNCTION_LINES = 60


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def source_files() -> list[Path]:
    return sorted(
        p for p in ROOT.glob("**/*.py") if p.relative_to(ROOT).parts[0] not in (".venv", "exp", "dataset", "tests")
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}, f"{package}/ imports a package above it"


def test_the_rule_catches_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from attack.bim import BIM\n    return BIM\n")
    assert imported_packages(module) & FORBIDDEN["model"] == {"attack"}


def classes_made_with_type(path: Path) -> list[int]:
    """Lines of ``path`` that call ``type`` with three arguments (name, bases, namespace): a class made at run
    time, which grep cannot find."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "type"
        and len(node.args) + len(node.keywords) == 3
    ]


def test_model_makes_no_class_at_run_time():
    made = {str(p.relative_to(ROOT)): classes_made_with_type(p) for p in sorted((ROOT / "model").rglob("*.py"))}
    assert not {k: v for k, v in made.items() if v}, "model/ makes classes with type(); use constructor arguments"


def test_the_rule_catches_a_class_made_with_type(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(
        "def variant(base):\n"
        "    kind = type(base)\n"  # one argument: the type of an object, allowed
        "    return type(f'{base.__name__}X', (base,), {'kind': kind})\n"
    )
    assert classes_made_with_type(module) == [3]


# A function's signature read at run time: the inspect module, or the attributes it reads.
_SIGNATURE_ATTRIBUTES = {"__signature__", "__defaults__", "__kwdefaults__", "__code__"}


def signature_reads(path: Path) -> list[str]:
    """Where ``path`` imports or uses ``inspect`` or reads a function's signature attributes ('line: what')."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "inspect"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "inspect":
            found.append(f"{node.lineno}: from inspect import ...")
        elif isinstance(node, ast.Name) and node.id == "inspect":
            found.append(f"{node.lineno}: inspect")
        elif isinstance(node, ast.Attribute) and node.attr in _SIGNATURE_ATTRIBUTES:
            found.append(f"{node.lineno}: .{node.attr}")
    return found


def test_attacks_declare_what_they_know():
    """An attack class declares its fields and defaults (Attack.defaults); no attack code inspects signatures."""
    offenders = {str(p.relative_to(ROOT)): signature_reads(p) for p in sorted((ROOT / "attack").rglob("*.py"))}
    assert not {k: v for k, v in offenders.items() if v}, f"attack/ reads signatures: {offenders}"


def test_the_rule_catches_signature_inspection(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(
        "def default(cls, name):\n"
        "    import inspect\n"
        "    from inspect import signature\n"
        "    return inspect.signature(cls).parameters[name].default or cls.__init__.__defaults__\n"
    )
    assert sorted(signature_reads(module)) == [
        "2: import inspect",
        "3: from inspect import ...",
        "4: .__defaults__",
        "4: inspect",
    ]
    (tmp_path / "good.py").write_text("def default(cls, name):\n    return cls.defaults[name]\n")
    assert signature_reads(tmp_path / "good.py") == []


def test_functions_fit_on_a_screen():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in source_files()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "functions longer than a screen: " + "; ".join(long)


@pytest.mark.parametrize("entry", ["train.py", "test.py"])
def test_entry_points_stay_thin(entry):
    """train.py and test.py parse, build and run; the work lives in the packages."""
    assert len((ROOT / entry).read_text().splitlines()) < 400
