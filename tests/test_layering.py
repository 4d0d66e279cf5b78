"""The package's layers import only downwards (``utils``, ``config.py``; ``modeling``, ``solver``;
``data``; ``checkpoint``; ``finetune``; ``engine``; ``evaluation``; ``pipeline``), lazy imports
included, so there is no import cycle between them; and the config module works without the
models."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "soco_d2"

# layer (a subpackage, or config.py) -> the other parts of soco_d2 it may import
ALLOWED = {
    "utils": set(),
    "config": set(),
    "modeling": {"config", "utils"},
    "solver": {"config", "utils"},
    "data": {"config", "utils"},
    "checkpoint": {"config", "utils"},
    "finetune": {"config", "utils", "modeling"},
    "engine": {"config", "utils", "modeling", "solver", "data", "checkpoint", "finetune"},
    "evaluation": {
        "config", "utils", "modeling", "solver", "data", "checkpoint", "finetune", "engine"
    },
    "pipeline": {
        "config", "utils", "modeling", "solver", "data", "checkpoint", "finetune", "engine",
        "evaluation", "model_zoo",
    },
}


def soco_d2_imports(path: Path, package_dir: Path = PACKAGE):
    """``(line, module)`` of every soco_d2 module the file ``path`` under ``package_dir`` imports,
    at any depth of its code (lazy imports in functions included), relative imports resolved."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
                targets = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                targets = [node.module]
        else:
            continue
        for target in targets:
            if target == "soco_d2" or target.startswith("soco_d2."):
                yield node.lineno, target


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "soco_d2"


def _files(layer: str):
    return [PACKAGE / "config.py"] if layer == "config" else sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_import_nothing_above_them(layer):
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in _files(layer)
        for line, target in soco_d2_imports(path)
        if _layer(target) not in ALLOWED[layer] | {layer}
    ]
    assert not wrong, f"soco_d2.{layer} may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(
        wrong
    )


def test_the_rule_sees_lazy_and_relative_imports(tmp_path):
    fake = tmp_path / "soco_d2" / "utils" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..engine import load_cfg\n    from . import results\n")
    found = list(soco_d2_imports(fake, tmp_path / "soco_d2"))
    assert found == [(2, "soco_d2.engine"), (3, "soco_d2.utils.results")]


@pytest.mark.spawns
def test_config_module_adds_the_shared_keys_without_any_other_soco_d2_module():
    # config.py loaded on its own file, outside the package: method namespaces come only from
    # modules that register themselves, so nothing of soco_d2 is imported on the way
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("config_alone", {str(PACKAGE / "config.py")!r})
config = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config)
from detectron2.config import get_cfg
cfg = config.add_ssl_config(get_cfg())
assert cfg.MODEL.SSL.MOMENTUM == 0.99 and not hasattr(cfg.MODEL, "SOCO")
loaded = sorted(m for m in sys.modules if m == "soco_d2" or m.startswith("soco_d2."))
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
