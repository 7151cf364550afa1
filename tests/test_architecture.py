"""The layout's rules, read from the source: imports point one way (bots -> brain ->
retrieval; training -> brain, retrieval), no import circles, and no Redis key spelled
outside `brain/keys.py`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bots", "brain", "retrieval", "training")
FORBIDDEN = {
    "brain": ("bots", "training", "telegram", "slack_bolt", "slack_sdk"),
    "retrieval": ("bots", "brain", "training", "telegram", "slack_bolt", "slack_sdk"),
    "training": ("bots", "telegram", "slack_bolt", "slack_sdk"),
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules `path` imports (all of them, or only those run when it is imported)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_imports_point_one_way() -> None:
    wrong = []
    for name, path in modules().items():
        package = name.split(".")[0]
        for imported in imports(path):
            if imported.split(".")[0] in FORBIDDEN.get(package, ()):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_no_import_circles() -> None:
    known = modules()
    graph = {
        name: {i for i in imports(path, top_level_only=True) if i in known and i != name}
        for name, path in known.items()
    }
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        for neighbour in graph[node]:
            if neighbour in trail:
                circles.append(" -> ".join([*trail[trail.index(neighbour) :], neighbour]))
            elif len(trail) < 30:
                visit(neighbour, [*trail, neighbour])

    for start in graph:
        visit(start, [start])
    assert not circles, sorted(set(circles))[:5]


# A key name right after the prefix: `prefix + "inbox"`, f"{prefix}seen:...".
KEY_SPELLING = re.compile(
    r"""(?:prefix\s*\+\s*["']|prefix\}|["'])(?:conv|lock|sendlock|seen|handoff|process|inbox"""
    r"""|outbox|transcripts|undelivered|model:active|faq:version|slack:placeholder"""
    r"""|telegram:typing)[:"']"""
)


def test_redis_keys_are_spelled_only_in_their_owner() -> None:
    spelled = [
        f"{path.relative_to(ROOT)}:{number}"
        for name, path in modules().items()
        if name != "brain.keys"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if KEY_SPELLING.search(line) and "prefix" in line
    ]
    assert not spelled, spelled


# Work that never runs a model, so it may use asyncio's default executor threads.
MODEL_FREE_THREAD_WORK = {"load_faq", "stdin.readline", "check_password"}


def test_model_work_runs_where_brain_compute_puts_it() -> None:
    """While serving, torch runs on `brain.compute`'s thread (or a fresh thread that
    ends with its work): a long-lived second thread that ran torch halves decode speed.
    So other threads in the serving packages run only work known to be model-free."""
    found = []
    for name, path in modules().items():
        if not name.startswith(("bots", "brain")) or name == "brain.compute":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            called = ast.unparse(node.func)
            if called in ("asyncio.to_thread", "loop.run_in_executor") and node.args:
                work = ast.unparse(node.args[0 if called == "asyncio.to_thread" else 1])
                if work not in MODEL_FREE_THREAD_WORK:
                    found.append(f"{name}: {called}({work}, ...)")
            elif called in ("threading.Thread", "ThreadPoolExecutor"):
                found.append(f"{name}: {called}(...)")
    assert not found, "use brain.compute.run / run_apart for: " + "; ".join(found)
