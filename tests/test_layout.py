"""The layout's rules, checked on the source: no import cycle, utils/ imports no higher layer,
libraries never import the CLI scripts, and the method registry matches config.METHODS."""
import ast
from pathlib import Path

import config
from distill import DISTILLERS
from distill.base import Distiller

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "data", "models", "distill", "deploy", "benchmarks")
SCRIPTS = ("train", "evaluate", "run_experiments", "plot_experiment_results", "tune")
LIBRARIES = ("config", "presets", "utils", "data", "models", "distill", "deploy")


def project_modules() -> dict:
    """{dotted module name: path} of every project source file (tests and the venv excluded)."""
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in PACKAGES and len(rel.parts) > 1:
            continue
        name = ".".join(rel.with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def imports_of(path: Path, mods: dict) -> set:
    """Project modules `path` imports anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in mods:
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found


def import_graph() -> dict:
    mods = project_modules()
    return {m: imports_of(p, mods) - {m} for m, p in mods.items()}


def find_cycle(graph: dict):
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_the_walker_sees_imports_inside_functions():
    graph = import_graph()
    assert "deploy.variants" in graph["evaluate"]  # imported inside evaluate_run only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_utils_import_no_higher_layer():
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ("models", "data", "distill", "deploy", *SCRIPTS))
           for m, deps in import_graph().items() if m.split(".")[0] == "utils"}
    assert not {m: d for m, d in bad.items() if d}


def test_libraries_never_import_scripts():
    bad = {m: sorted(d for d in deps if d in SCRIPTS)
           for m, deps in import_graph().items() if m.split(".")[0] in LIBRARIES}
    assert not {m: d for m, d in bad.items() if d}


def test_registry_is_config_methods():
    assert tuple(DISTILLERS) == config.METHODS
    for name, cls in DISTILLERS.items():
        assert issubclass(cls, Distiller) and cls.name == name


# what a distillation method is (distill/: the base, one file per method, the registry) apart from the
# training runtime that steps it (epochs, run files, torchrun, Ray, CUDA graphs)
RUNTIME = ("distill.engine", "distill.run_state", "distill.runs", "distill.distributed", "distill.ray_sweep",
           "distill.graphs")


def test_methods_never_import_the_runtime():
    methods = ["distill", "distill.base"] + [f"distill.{m}" for m in ("ce", "kd", "dkd", "fitnet", "at", "fm", "pl")]
    graph = import_graph()
    bad = {m: sorted(d for d in graph[m] if d in RUNTIME or d in SCRIPTS) for m in methods}
    assert not {m: d for m, d in bad.items() if d}


def test_presets_import_nothing_of_the_project():
    assert import_graph()["presets"] == set()
