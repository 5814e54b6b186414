"""Apps depend one way (docs/architecture.md): every import, at any depth of a module
(function-level and TYPE_CHECKING ones too), points down this list or stays in its app."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Top first. An app may import the apps below it, never one above it.
LAYERS = ["beastmode", "devtools", "gateway", "monitoring", "routing", "cache", "beastmode.lib"]


def layer_of(module: str) -> str | None:
    if module == "beastmode.lib" or module.startswith("beastmode.lib."):
        return "beastmode.lib"
    top = module.split(".")[0]
    return top if top in LAYERS else None


def app_modules() -> list[tuple[str, Path]]:
    found = []
    for path in ROOT.glob("*/**/*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] not in LAYERS or "migrations" in relative.parts:
            continue
        found.append((".".join(relative.with_suffix("").parts).removesuffix(".__init__"), path))
    return found


def imports_of(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_the_layering_covers_every_app() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(LAYERS)


@pytest.mark.parametrize("module,path", app_modules(), ids=lambda v: str(v))
def test_apps_import_only_the_apps_below_them(module: str, path: Path) -> None:
    own = layer_of(module)
    assert own is not None
    upward = [
        name
        for name in imports_of(path)
        if (target := layer_of(name)) is not None
        and target != own
        and LAYERS.index(target) < LAYERS.index(own)
    ]
    assert not upward, f"{module} imports {upward}, above {own} (docs/architecture.md)"


def test_the_layering_test_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from gateway import answer\n")
    assert imports_of(module) == ["gateway"]
    assert LAYERS.index(layer_of("gateway")) < LAYERS.index(layer_of("cache.service"))


def test_the_helpers_and_the_cache_keys_import_without_django_settings() -> None:
    """Benchmarks and tools import them bare: beastmode/lib must not pull in the wiring."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import beastmode.lib.fastjson, cache.keys, cache.semantic.similarity"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
