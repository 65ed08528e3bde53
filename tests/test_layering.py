"""The package's structure (docs/design.md): the import graph has no circles, the core imports no
learner, window or model library, and the CLI fails loudly on a broken internal import."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import prefrl
from prefrl import cli
from prefrl.core.types import PrefrlError

PKG = Path(prefrl.__file__).resolve().parent
FORBIDDEN_IN_CORE = ("gymnasium", "stable_baselines3", "pygame", "transformers", "tokenizers", "ale_py", "cv2",
                     "prefrl.control", "prefrl.human", "prefrl.text", "prefrl.sweep", "prefrl.viz", "prefrl.cli")
# which top-level parts each part may import (besides the standard library and third parties)
ALLOWED = {
    "core": {"core"},
    "viz": {"core"},
    "control": {"core", "control", "viz"},
    "human": {"core", "human", "viz"},
    "text": {"core", "text", "viz"},
    "sweep": {"core", "control", "sweep", "viz"},
    "cli": {"core", "control", "human", "text", "sweep", "viz"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """prefrl modules (and third-party roots) that ``path`` imports, at module level or anywhere."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else module.split(".")[: len(module.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def test_module_level_import_graph_has_no_circles():
    modules = _modules()
    graph = {m: {r for n in _imports(p, m, top_level_only=True) if (r := _resolve(n, modules)) and r != m}
             for m, p in modules.items()}
    # a package's __init__ importing its own submodules is not a circle through them
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + ".") and m in ("prefrl",):
                continue
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_core_imports_no_learner_window_or_model_library():
    for m, p in _modules().items():
        if not m.startswith("prefrl.core"):
            continue
        bad = sorted(n for n in _imports(p, m, top_level_only=False)
                     if any(n == f or n.startswith(f + ".") for f in FORBIDDEN_IN_CORE))
        assert not bad, f"{p} imports {bad}"


def test_parts_import_only_the_layers_below_them():
    for m, p in _modules().items():
        parts = m.split(".")
        if len(parts) < 2:
            continue
        part = parts[1]
        if part not in ALLOWED:
            continue
        used = {n.split(".")[1] for n in _imports(p, m, top_level_only=False) if n.startswith("prefrl.") and len(n.split(".")) > 1}
        assert used <= ALLOWED[part], f"{p} ({part}) imports {sorted(used - ALLOWED[part])}"


def test_cli_fails_loudly_on_a_broken_internal_import(monkeypatch: pytest.MonkeyPatch):
    real = importlib.import_module

    def broken(name: str, *a, **kw):
        if name == "prefrl.text.commands":
            raise ModuleNotFoundError("No module named 'prefrl.text.brokn'", name="prefrl.text.brokn")
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="prefrl.text.brokn"):
        cli.main(["text", "demo", "--help"])


def test_unknown_command_names_close_matches():
    with pytest.raises(PrefrlError, match="unknown command `trian`.*`train`"):
        cli.main(["trian"])
