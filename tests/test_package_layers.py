"""The package is a pipeline of layers; each module imports only from the layers below its own.

Every import statement counts, including the ones inside functions (a deferred import is still
a dependency). The order is the README's architecture section.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ondevice_vision"
# Bottom to top. Units on one line are peers: they may not import each other.
LAYERS = [
    ["configs"],
    ["files", "progress", "sizes", "cli", "keras_private"],
    ["workdir_lock", "workdir_owner"],
    ["checkpoints", "drawing", "backbones", "model_stats"],
    ["data"],
    ["heads"],
    ["models"],
    ["quantization"],
    ["tasks"],
    ["export", "importers"],
    ["eval"],
    ["train"],
    ["info", "predict", "benchmark"],
    ["demo"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# The command-line entry points of a package sit above everything below the CLIs' layer.
CLI_MODULES = {"main", "__main__"}


def _unit(parts: list[str]) -> str | None:
    """ondevice_vision.eval.coco_evaluator -> "eval"; ondevice_vision -> None."""
    return parts[1] if len(parts) > 1 else None


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + [node.module])
            if base == "ondevice_vision":
                for alias in node.names:
                    yield node.lineno, f"ondevice_vision.{alias.name}"
            else:
                yield node.lineno, base


def _violations():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        source = _unit(parts)
        if source is None or source == "__init__":
            continue
        if source not in RANK:
            problems.append(f"{path}: unit {source!r} is not in the layer table")
            continue
        is_cli = parts[-1] in CLI_MODULES
        for line, name in _imports(path):
            target_parts = name.split(".")
            if target_parts[0] != "ondevice_vision":
                if source == "configs" and target_parts[0] not in {"ml_collections", "__future__"}:
                    problems.append(f"{path}:{line}: configs import {name} (ml_collections only)")
                continue
            target = _unit(target_parts)
            if target is None or target == source or target == "__version__":
                continue
            if target not in RANK:
                problems.append(f"{path}:{line}: imports unknown unit {name}")
            elif RANK[target] > RANK[source] or (RANK[target] == RANK[source] and not is_cli):
                problems.append(f"{path}:{line}: {source} imports {name}, not below it")
    return problems


def test_no_import_runs_up_the_layers():
    assert _violations() == []


def test_the_checker_sees_deferred_imports(tmp_path, monkeypatch):
    """A function-level import of a higher layer is caught (the checker itself can fail)."""
    fake = tmp_path / "ondevice_vision"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("def f():\n    from ondevice_vision.train import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert any("data imports ondevice_vision.train" in p for p in _violations())


def _task_names() -> set[str]:
    """The registry's task names, read from tasks/__init__.py without importing it."""
    tree = ast.parse((PACKAGE / "tasks" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_TASKS" for t in node.targets
        ):
            return {key.value for key in node.value.keys}
    raise AssertionError("tasks/__init__.py has no _TASKS registry")


def _task_own_files() -> set[pathlib.Path]:
    """tasks/ and the evaluator / export modules its Task objects name ("module:Class")."""
    own = set((PACKAGE / "tasks").rglob("*.py"))
    for path in own.copy():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg in ("evaluator", "export"):
                module = node.value.value.split(":")[0]
                own.add(PACKAGE.parent / (module.replace(".", "/") + ".py"))
    return own


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return (
        isinstance(node, ast.Constant)
        and node.value in names
        or (
            isinstance(node, (ast.Tuple, ast.List, ast.Set))
            and any(_mentions(e, names) for e in node.elts)
        )
    )


def _task_name_comparisons(package: pathlib.Path, names: set[str], own: set[pathlib.Path]):
    """`x == "detection"`, `task in ("detection", ...)`, `case "detection":` outside the task's
    own files. A backbone's reduced_tail (also "detection" / "segmentation") is not a task."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path in own:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(_mentions(o, names) for o in operands) and "reduced_tail" not in {
                    ast.unparse(o).rsplit(".", 1)[-1] for o in operands
                }:
                    found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.MatchValue) and _mentions(node.value, names):
                found.append(f"{path}:{node.lineno}: case {ast.unparse(node.value)}")
    return found


def test_the_config_check_knows_the_registry_tasks():
    """configs/ cannot import the registry (it sits below TensorFlow), so it lists the names."""
    from ondevice_vision.configs import checks

    assert set(checks.TASKS) == _task_names()


def test_no_module_outside_the_tasks_compares_a_task_name():
    """What differs between tasks is asked of the Task (tasks/task.py), never branched on."""
    own = _task_own_files()
    assert (
        PACKAGE / "eval" / "detection.py" in own and PACKAGE / "export" / "segmentation.py" in own
    )
    assert _task_name_comparisons(PACKAGE, _task_names(), own) == []


def test_the_task_name_check_catches_a_planted_comparison(tmp_path):
    fake = tmp_path / "ondevice_vision"
    (fake / "eval").mkdir(parents=True)
    (fake / "eval" / "bad.py").write_text(
        "def f(config, exported, kind):\n"
        "    if config.task == 'detection':\n"
        "        return 1\n"
        "    match exported.task:\n"
        "        case 'segmentation':\n"
        "            return 2\n"
        "    return kind in ('detection', 'other')\n"
    )
    (fake / "eval" / "fine.py").write_text(
        "def f(reduced_tail):\n    return reduced_tail == 'detection'\n"
    )
    found = _task_name_comparisons(fake, {"detection", "segmentation"}, set())
    assert sorted(int(line.split(":")[1]) for line in found) == [2, 5, 7]
    assert not any("fine.py" in line for line in found)


def test_tasks_reach_upper_layers_only_through_their_named_classes():
    """The Task's dotted references are the one upward link (tasks/task.py): each names an
    existing class in eval/ or export/, and tasks/ imports nothing above its layer (checked by
    the import test)."""
    references = []
    for path in (PACKAGE / "tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg in ("evaluator", "export"):
                references.append((node.arg, node.value.value))
    assert len(references) == 2 * len(_task_names())
    for kind, reference in references:
        module, name = reference.split(":")
        assert module.split(".")[1] == {"evaluator": "eval", "export": "export"}[kind]
        source = (PACKAGE.parent / (module.replace(".", "/") + ".py")).read_text()
        assert f"class {name}(" in source, reference


@pytest.mark.parametrize(
    "config",
    [
        "ssdlite_mobilenet_v3_large_320_coco",
        "lraspp_mobilenet_v3_large_cityscapes",
        "ssdlite_mobilenet_v3_small_shapes",
    ],
)
def test_loading_a_config_imports_no_tensorflow(config):
    code = (
        "import sys\n"
        f"from ondevice_vision.configs import {config} as c\n"
        "c.get_config()\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tensorflow_datasets', "
        "'cityscapesscripts') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
