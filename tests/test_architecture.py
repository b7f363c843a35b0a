"""The package's shape: imports form no cycle, and only the objective and environment
modules name objectives and suites."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dreamer"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The ``dreamer`` modules a file imports, type-checking-only imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dreamer"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("dreamer"))
    return found


def test_package_imports_have_no_cycle():
    graph = {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}
    state = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(trail + [module])}"
        state[module] = "open"
        for imported in graph.get(module, ()):
            visit(imported, trail + [module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


CLASS_NAMES = ["BarlowTwinsObjective", "InfoNCEObjective", "ReconstructionObjective", "PrototypeObjective",
               "GymEnv", "DMCEnv", "DMCSubtleEnv", "AtariEnv", "CrafterEnv", "MetaWorldEnv"]


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py")
                                        if p.parent.name not in ("representation", "envs")), ids=str)
def test_only_objective_and_environment_modules_name_objectives_and_suites(path):
    text = path.read_text()
    assert not [name for name in CLASS_NAMES if name in text]
    assert "rep_variant ==" not in text and "variant ==" not in text
