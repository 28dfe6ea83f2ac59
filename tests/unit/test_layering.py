"""The arrows between the rooms run one way (read from the imports with `ast`).

pyproject maps the top-level folders components/ and pipelines/ into the ctpipe namespace
(ctpipe.components, ctpipe.pipelines), so a reader of the file tree cannot see who imports
whom; this test says it instead:

- the core (every module under ctpipe/) never imports the wiring (ctpipe.pipelines) or the
  KFP face (ctpipe.components); the one exception is ctpipe.cli, the entry point, which
  hands the wiring's submitters to the core;
- components import only the core's adapters (ctpipe.stages), the step log, the config
  parser and the image names;
- config imports nothing above it (no arrow back up to training/, data/, ...);
- serving and the monitor share the prediction log (ctpipe.predlog) and never import each
  other;
- no module imports itself back through others (no circles), lazy imports included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "ctpipe": ROOT / "ctpipe",
    "ctpipe.components": ROOT / "components",
    "ctpipe.pipelines": ROOT / "pipelines",
}
ENTRY_POINTS = {"ctpipe.cli"}
WIRING = ("ctpipe.pipelines", "ctpipe.components")
COMPONENTS_MAY_IMPORT = {
    "ctpipe",  # __version__, for the image tag
    "ctpipe.stages",
    "ctpipe.steplog",
    "ctpipe.config",
    "ctpipe.components.images",
}
CONFIG_MAY_IMPORT = {"ctpipe.errors", "ctpipe.options"}


def _module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _module_files()


def _targets(node: ast.AST, here: str, is_package: bool) -> Iterator[str]:
    """The ctpipe modules one import statement loads: a name imported from a package
    counts as its submodule when there is one, else as the package."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".") if is_package else here.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            child = f"{module}.{alias.name}"
            yield child if child in MODULES else module


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {
            target
            for node in ast.walk(tree)
            for target in _targets(node, name, is_package)
            if target in MODULES and target != name
        }
    return graph


GRAPH = _imports()


def _under(module: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_is_read() -> None:
    # A reader that finds nothing would pass every rule below.
    assert {
        "ctpipe.stages",
        "ctpipe.pipelines.continuous_training",
        "ctpipe.components.train",
    } <= set(GRAPH)
    assert "ctpipe.stages" in GRAPH["ctpipe.components.train"]
    assert "ctpipe.predlog" in GRAPH["ctpipe.serving.model"]


def test_the_core_never_imports_the_wiring() -> None:
    core = [m for m in GRAPH if not _under(m, WIRING) and m not in ENTRY_POINTS]
    offenders = {m: sorted(t for t in GRAPH[m] if _under(t, WIRING)) for m in core}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_components_import_only_the_adapters() -> None:
    offenders = {
        m: sorted(
            t
            for t in targets
            if t not in COMPONENTS_MAY_IMPORT and not _under(t, ("ctpipe.components",))
        )
        for m, targets in GRAPH.items()
        if _under(m, ("ctpipe.components",))
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_config_imports_nothing_above_it() -> None:
    assert GRAPH["ctpipe.config"] <= CONFIG_MAY_IMPORT
    assert GRAPH["ctpipe.options"] <= {"ctpipe.errors"}


@pytest.mark.parametrize(
    ("one", "other"), [("ctpipe.serving", "ctpipe.monitor"), ("ctpipe.monitor", "ctpipe.serving")]
)
def test_serving_and_the_monitor_meet_only_in_the_prediction_log(one: str, other: str) -> None:
    crossing = {
        m: sorted(t for t in GRAPH[m] if _under(t, (other,))) for m in GRAPH if _under(m, (one,))
    }
    assert {m: t for m, t in crossing.items() if t} == {}


def _cycle() -> list[str] | None:
    """One import circle, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_circles() -> None:
    assert _cycle() is None


def test_the_rules_catch_what_they_forbid() -> None:
    # The checks above on a graph with each forbidden arrow added: each must notice.
    GRAPH["ctpipe.monitor.runner"].add("ctpipe.pipelines.local")
    GRAPH["ctpipe.config"].add("ctpipe.training.families")
    GRAPH["ctpipe.predlog.format"].add("ctpipe.monitor.runner")
    try:
        with pytest.raises(AssertionError):
            test_the_core_never_imports_the_wiring()
        with pytest.raises(AssertionError):
            test_config_imports_nothing_above_it()
        assert _cycle() is not None
    finally:
        GRAPH["ctpipe.monitor.runner"].discard("ctpipe.pipelines.local")
        GRAPH["ctpipe.config"].discard("ctpipe.training.families")
        GRAPH["ctpipe.predlog.format"].discard("ctpipe.monitor.runner")
