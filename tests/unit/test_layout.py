"""The house rules of the layout (README "Development"), checked on the source as text:
no import circle among the project's modules, imports only go down, and the folders
stay grouped (a newcomer finds one folder per model, a few loose modules)."""

from __future__ import annotations

import ast
from pathlib import Path

from serve_app.config.model_tier import MODELS
from serve_app.config.settings import REPO_ROOT

PACKAGES = ("serve_app", "deployments", "bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at module level or inside functions
    (`from pkg import name` counts as pkg.name when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_model_tier_never_imports_the_product():
    offenders = {m: sorted(i for i in deps if i.startswith("serve_app")) for m, deps in graph().items()}
    assert not {m: d for m, d in offenders.items() if m.startswith("deployments") and d}


def test_one_folder_per_model_and_few_loose_modules():
    deployments = REPO_ROOT / "deployments"
    folders = {p.parent.name for p in deployments.glob("*/model.py")}
    model_folders = {MODELS[name].module.split(".")[1] for name in MODELS}
    assert model_folders <= folders and len(model_folders) == len(MODELS)  # one folder each, none shared
    assert len(list(deployments.glob("*.py"))) <= 6
    assert len(list((REPO_ROOT / "serve_app").glob("*.py"))) <= 6


def test_nothing_edits_sys_path():
    edits = [
        str(p.relative_to(REPO_ROOT))
        for folder in ("bench", "scripts", "serve_app", "deployments")
        for p in (REPO_ROOT / folder).rglob("*.py")
        if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()
    ]
    assert not edits
