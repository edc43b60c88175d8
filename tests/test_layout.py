"""The layout's rules, checked on the source: no import cycle between modules or between packages,
utils/ imports no other layer, methods never import the runtime, evaluate.py and deploy/ read runs
without the training loop, report/ reads run files and nothing below it imports it, sweep/ is the sweep
script's own (no library imports it; its plan needs no torch), libraries never import the CLI scripts,
product code and the benchmarks never import the tests, and the method registry matches config.METHODS."""
import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import config
from distill import DISTILLERS
from distill.base import Distiller

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "data", "models", "distill", "runtime", "deploy", "quant", "report", "sweep", "benchmarks", "teachers",
            "docs")
SCRIPTS = ("train", "evaluate", "run_experiments", "plot_experiment_results", "tune")
LIBRARIES = ("config", "config_rules", "cli", "presets", "utils", "data", "models", "distill", "runtime", "deploy", "quant",
             "report")


def project_modules() -> dict:
    """{dotted module name: path} of every project source file (tests and the venv excluded)."""
    mods = {}
    for path in [*ROOT.glob("*.py"), *(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))]:
        rel = path.relative_to(ROOT)
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


@functools.cache
def import_graph() -> dict:
    """{module: the project modules it imports}, parsed once per test session (read-only)."""
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
    """utils/ is the bottom layer: it imports nothing of the project outside utils/ (no config, models,
    data, distill, runtime, deploy or script)."""
    bad = {m: sorted(d for d in deps if d.split(".")[0] != "utils")
           for m, deps in import_graph().items() if m.split(".")[0] == "utils"}
    assert not {m: d for m, d in bad.items() if d}


def package_graph(graph: dict) -> dict:
    """{package or top-level module: the others it imports}, self-imports left out."""
    out = {}
    for m, deps in graph.items():
        top = m.split(".")[0]
        out.setdefault(top, set()).update(d.split(".")[0] for d in deps if d.split(".")[0] != top)
    return out


def test_no_import_cycle_between_packages():
    packages = package_graph(import_graph())
    assert packages["runtime"] >= {"distill"}  # the runtime steps the methods, never the other way round
    assert find_cycle(packages) is None


def test_libraries_never_import_scripts():
    bad = {m: sorted(d for d in deps if d in SCRIPTS)
           for m, deps in import_graph().items() if m.split(".")[0] in LIBRARIES}
    assert not {m: d for m, d in bad.items() if d}


def test_registry_is_config_methods():
    assert tuple(DISTILLERS) == config.METHODS
    for name, cls in DISTILLERS.items():
        assert issubclass(cls, Distiller) and cls.name == name


# what a distillation method is (distill/: the base, one file per method, the registry) apart from the
# training runtime that steps it (runtime/: epochs, a training run, run directories, torchrun, Ray, CUDA graphs)
def test_methods_never_import_the_runtime():
    graph = import_graph()
    methods = [m for m in graph if m.split(".")[0] == "distill"]
    assert {"distill", "distill.base", "distill.kd"} <= set(methods)
    bad = {m: sorted(d for d in graph[m] if d.split(".")[0] == "runtime" or d in SCRIPTS) for m in methods}
    assert not {m: d for m, d in bad.items() if d}


def reachable(graph: dict, start: str) -> set:
    """Every project module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


# what evaluate.py and deploy/ may use of the runtime: the run-directory API and inference
READ_RUNS = {"runtime", "runtime.run_dir", "runtime.inference"}


def test_evaluate_and_deploy_never_import_the_training_loop():
    graph = import_graph()
    readers = ["evaluate"] + [m for m in graph if m.split(".")[0] == "deploy"]
    assert "runtime.run_dir" in graph["evaluate"] and "runtime.inference" in graph["evaluate"]
    bad = {m: sorted(d for d in reachable(graph, m)
                     if (d.split(".")[0] == "runtime" and d not in READ_RUNS) or d in SCRIPTS) for m in readers}
    assert not {m: d for m, d in bad.items() if d}


# what report/ stands on: the leaves, and quant's torch-free reader of ptq.json (the PTQ rows of the QAT table)
REPORT_USES = ("utils", "quant.ptq_file")
# who may import report/ (tables, CSV, hparams, plots): the sweep, the scripts and the benchmarks, nothing below
REPORT_USERS = ("report", "sweep", "benchmarks", *SCRIPTS)


def test_report_reads_run_files_and_nothing_below_imports_it():
    graph = import_graph()
    report = [m for m in graph if m.split(".")[0] == "report"]
    assert {"report.results", "report.qat", "report.scale", "report.hparams", "report.plots.data"} <= set(report)
    bad = {m: sorted(d for d in graph[m] if d.split(".")[0] != "report" and not d.startswith(REPORT_USES))
           for m in report}
    assert not {m: d for m, d in bad.items() if d}
    users = {m for m, deps in graph.items() if any(d.split(".")[0] == "report" for d in deps)}
    assert "sweep.report" in users and not {m for m in users if m.split(".")[0] not in REPORT_USERS}


def test_the_sweep_is_the_scripts_own_and_plans_without_torch():
    """sweep/ (plan, launch, steps, report) is run_experiments.py in parts: only it (and the benchmarks) import
    sweep/, and sweep/ imports no script but train.py and evaluate.py. The grid is planned without torch when
    the device's say on precision (sweep.plan.on_device) is left out."""
    graph = import_graph()
    assert {"sweep.plan", "sweep.launch", "sweep.steps", "sweep.report"} <= set(graph)
    users = {m for m, deps in graph.items() if any(d.split(".")[0] == "sweep" for d in deps)}
    assert "run_experiments" in users and not {m for m in users if m.split(".")[0] not in ("sweep", "run_experiments",
                                                                                            "benchmarks")}
    scripts = {d for m in graph if m.split(".")[0] == "sweep" for d in graph[m] if d in SCRIPTS}
    assert scripts == {"train", "evaluate"}
    code = ("import sys; from config import make_config; from sweep.plan import grid; "
            "runs = grid(make_config(['--preset=smoke', '--sweep_qat=[int4]']), resolve=lambda c: c); "
            "assert len(runs) > 3 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def imported_names(source: str) -> set:
    """Every module name the source imports, by statement or by importlib.import_module / __import__ of a literal."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return found


def test_product_and_benchmarks_never_import_the_tests():
    """tests/ builds on the product, never the reverse: the synthetic data the benchmarks and the tests both
    write comes from data/synthetic.py, which needs no torch."""
    assert imported_names("import tests.fixtures\nfrom tests import conftest\nimportlib.import_module('tests.x')") == \
        {"tests.fixtures", "tests", "tests.x"}
    bad = {m: sorted(n for n in imported_names(p.read_text()) if n.split(".")[0] == "tests")
           for m, p in project_modules().items()}
    assert "benchmarks.bench_data" in bad and not {m: n for m, n in bad.items() if n}
    synthetic = imported_names((ROOT / "data" / "synthetic.py").read_text())
    assert import_graph()["data.synthetic"] == set() and not {n.split(".")[0] for n in synthetic} & {"torch", "tests"}


def test_presets_import_nothing_of_the_project():
    assert import_graph()["presets"] == set()


def test_cli_knows_no_field():
    """config.py declares the fields and imports cli.py; cli.py reads whatever schema it is given, so it never
    imports config (nor anything above presets and utils/)."""
    assert {m.split(".")[0] for m in import_graph()["cli"]} <= {"presets", "utils"}


def test_files_stay_readable():
    """README.md fits on a few screens (the manual is docs/), config.py is the schema alone, and no
    Python file grows past 400 lines."""
    assert (ROOT / "README.md").stat().st_size <= 12_000
    assert len((ROOT / "config.py").read_text().splitlines()) <= 250
    too_long = {m: n for m, p in project_modules().items() if (n := len(p.read_text().splitlines())) > 400}
    too_long.update({p.name: n for p in (ROOT / "tests").glob("*.py") if (n := len(p.read_text().splitlines())) > 400})
    assert not too_long


def test_run_times_are_stated_once_in_presets_measured():
    """README and the Makefile link to docs/config.md#presets (presets.MEASURED) instead of stating run times."""
    import presets
    for name in ("README.md", "Makefile"):
        text = (ROOT / name).read_text()
        assert not re.search(r"\b\d+(\.\d+)? ?(s|sec|min|minutes|hours?)\b", text), f"{name} states a run time"
        assert "docs/config.md#presets" in text
    assert {"demo", "test", "teacher"} <= set(presets.MEASURED)
    assert "## presets" in (ROOT / "docs" / "config.md").read_text()
