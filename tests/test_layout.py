"""House rules: the import graph of server/ is a tree, and the CLI's light commands stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from server.config import PROJECT_ROOT

SERVER = PROJECT_ROOT / "server"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every module of ours `path` imports, at any depth (functions and TYPE_CHECKING blocks too)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # `from server.x import y`: y may be a module of its own.
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            # The longest known module the name starts with (a name may be a function in it).
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(SERVER.rglob("*.py"))
    known = {module_name(f) for f in files}
    graph = {}
    for f in files:
        me = module_name(f)
        # A package's __init__ is imported on the way to its modules; it is not their dependency.
        graph[me] = {m for m in imported_modules(f, known) if m != me and not me.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_of_server_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and graph["server.app"], "the walk found the modules and their imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_leaves_import_nothing_of_ours_at_run_time():
    graph = import_graph()
    assert graph["server.errors"] == set()
    assert graph["server.log_context"] == set()
    assert graph["server.config"] == set()
    assert graph["server.outage"] == set()
    # keys.py names the types of its values for the type checker only.
    keys = ast.parse((SERVER / "keys.py").read_text())
    runtime = {
        node.module
        for node in keys.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("server")
    }
    assert runtime == {"server.config"}


def test_server_package_is_empty():
    assert not [n for n in ast.parse((SERVER / "__init__.py").read_text()).body if not isinstance(n, ast.Expr)]


def test_redis_path_imports_neither_aiohttp_nor_saq():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['server', 'redis-path']\n"
        "try:\n"
        "    runpy.run_module('server', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('aiohttp', 'saq', 'jsonschema_rs', 'redis', 'aiosqlite') if m in sys.modules)\n"
        "print('HEAVY', ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY"
