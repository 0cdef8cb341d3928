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
    ["files", "progress", "sizes", "cli"],
    ["workdir_lock"],
    ["checkpoints", "drawing", "backbones", "model_stats"],
    ["data"],
    ["heads"],
    ["models"],
    ["quantization"],
    ["tasks"],
    ["export", "importers"],
    ["eval"],
    ["train"],
    ["info", "predict"],
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
