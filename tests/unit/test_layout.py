"""The layout holds what docs/design.md §8 says of it, read from the source (no import of the modules):
no import cycle, no module over 400 lines, a pure core that imports nothing outside itself, and each kind of
IO in the one place that owns it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconcile"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The reconcile modules `path` imports anywhere in it (lazy imports inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("reconcile")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reconcile"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
    return out


def stdlib_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle() -> None:
    mods = modules()
    # A package's __init__ is imported with any of its modules: count that edge too.
    graph = {name: imports(path, set(mods)) - {name} for name, path in mods.items()}
    for name in mods:
        parent = name.rpartition(".")[0]
        if parent in mods and parent != "reconcile":
            graph[name].add(parent)
    assert cycle(graph) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_400_lines(name: str) -> None:
    lines = modules()[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by job"


def test_the_core_imports_nothing_outside_itself_and_does_no_io() -> None:
    mods = modules()
    for name, path in mods.items():
        if not name.startswith("reconcile.core"):
            continue
        # errors.py holds plain exception values (each with its exit code): the core may name them.
        outside = {
            m
            for m in imports(path, set(mods))
            if not m.startswith("reconcile.core") and m != "reconcile.errors"
        }
        assert not outside, f"{name} imports {outside}"
        io = stdlib_imports(path) & {"os", "socket", "subprocess", "requests", "sqlite3", "time", "shutil"}
        assert not io, f"{name} imports {io}: the core does no IO and reads no clock"
        assert "datetime.now" not in path.read_text()


@pytest.mark.parametrize(
    ("library", "owners"),
    [
        ("subprocess", {"reconcile.fail2ban.client"}),
        ("sqlite3", {"reconcile.fail2ban.db"}),
        ("requests", {"reconcile.cloudflare"}),  # the package that owns HTTP
        ("urllib3", {"reconcile.cloudflare"}),
    ],
)
def test_each_kind_of_io_lives_in_one_place(library: str, owners: set[str]) -> None:
    users = {name for name, path in modules().items() if library in stdlib_imports(path)}
    strays = {u for u in users if not any(u == o or u.startswith(o + ".") for o in owners)}
    assert users and not strays, f"{library} is imported by {sorted(strays)}"


def test_only_the_whois_module_opens_a_socket() -> None:
    openers = {
        name
        for name, path in modules().items()
        if "socket.socket(" in path.read_text() or "create_connection(" in path.read_text()
    }
    assert openers == {"reconcile.enrich.whois"}


def test_no_shim_module_left() -> None:
    """0.2's reconcile/cloudflare.py re-exported names from elsewhere; nothing may do that again."""
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        assert not any(
            isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
            for n in tree.body
        ), f"{name} declares __all__"
        body = [n for n in tree.body if not isinstance(n, ast.Expr | ast.Import | ast.ImportFrom)]
        if (
            not body
            and any(isinstance(n, ast.ImportFrom) for n in tree.body)
            and not name.endswith("__main__")
        ):
            pytest.fail(f"{name} only imports names: a re-export shim")
