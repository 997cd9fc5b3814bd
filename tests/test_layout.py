"""The package's shape: the top holds the shared ground only and every other module lives in its
area's package; the layers below are declared once and no import runs upward or reaches into
another unit's private names (lazy imports inside functions count too); no module imports itself
back through another, every module imports on its own, and none grows into a drawer."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pgvkit"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = ("pgvkit",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


# The layers, lowest first. A unit is the longest name here that starts a module's dotted name; a
# module may import from its own unit and from any unit of its layer or a lower one, never higher.
LAYERS = [
    ("ground", ["pgvkit.errors", "pgvkit.display", "pgvkit.checks", "pgvkit.kinds", "pgvkit.vectors", "pgvkit.sizing",
                "pgvkit.schema", "pgvkit.indexes", "pgvkit.search"]),
    ("the server", ["pgvkit.server"]),
    ("the store", ["pgvkit.memory", "pgvkit.data"]),
    ("migrations", ["pgvkit.migrator"]),
    ("the audit", ["pgvkit.audit"]),
    ("tuning", ["pgvkit.tuning"]),
    ("models and watch", ["pgvkit.models", "pgvkit.watch"]),
    ("health", ["pgvkit.health"]),
    ("notebooks", ["pgvkit.notebooks"]),
    ("the front", ["pgvkit.cli", "pgvkit.__main__", "pgvkit"]),
]
LAYER = {unit: n for n, (_, units) in enumerate(LAYERS) for unit in units}
GROUND_FILES = 12  # entries at the top of src/pgvkit beside the area packages, at most
NOTEBOOKS = PACKAGE.parent.parent / "notebooks"


def unit_of(module: str) -> str:
    return max((u for u in LAYER if module == u or module.startswith(u + ".")), key=len)


def imports_in(name: str, source: str, modules=MODULES) -> list[tuple[str, str | None]]:
    """(pgvkit module, imported name or None) for each import in a module's source, anywhere in its
    body; `from . import history` imports a module, not a name."""
    is_package = name == "pgvkit" or modules.get(name, Path()).name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("pgvkit")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("pgvkit"):
                base = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, None) if sub in modules else (base, alias.name))
    return found


def imports_of(name: str) -> set[str]:
    """The pgvkit modules one module imports, anywhere in its body."""
    return {m for m, _ in imports_in(name, MODULES[name].read_text())} & MODULES.keys() - {name}


def public_names(module: str) -> set[str] | None:
    """A module's declared public API (its __all__), or None where it declares none."""
    for node in ast.parse(MODULES[module].read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


def private(module: str, name: str | None) -> bool:
    """Whether importing `name` from `module` (or the module itself) reaches past its public API."""
    if any(part.startswith("_") and part not in ("__init__", "__main__") for part in module.split(".")):
        return True
    if name is None or name == "*":
        return False
    declared = public_names(module) if module in MODULES else None
    return name.startswith("_") or (declared is not None and name not in declared)


def violations(sources: dict[str, str]) -> list[str]:
    """Every import that runs upward, or into another unit's private names, in these sources."""
    found = []
    for name, source in sorted(sources.items()):
        here = unit_of(name)
        for module, imported in imports_in(name, source):
            if module not in MODULES:
                continue
            there = unit_of(module)
            what = f"{name} imports {module}{'.' + imported if imported else ''}"
            if LAYER[there] > LAYER[here]:
                found.append(f"{what}: upward, {LAYERS[LAYER[there]][0]} is above {LAYERS[LAYER[here]][0]}")
            elif there != here and private(module, imported):
                found.append(f"{what}: not in {there}'s public API")
    return found


def notebook_imports() -> dict[str, list[tuple[str, str | None]]]:
    """What each notebook's code cells import from pgvkit (magics turned into Python as IPython does)."""
    from IPython.core.inputtransformer2 import TransformerManager

    found = {}
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join(TransformerManager().transform_cell("".join(c["source"])) for c in cells
                         if c["cell_type"] == "code")
        found[path.name] = imports_in("notebooks", code)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = {name: imports_of(name) for name in MODULES}
    assert graph["pgvkit.server.db"] >= {"pgvkit.server.explain"}  # the graph sees what it should
    assert cycles(graph) == []


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_top_holds_the_shared_ground_only():
    declared = {u.removeprefix("pgvkit.") for u in LAYER if u != "pgvkit"}
    areas = {u.removeprefix("pgvkit.") for _, units in LAYERS[1:] for u in units
             if (PACKAGE / u.removeprefix("pgvkit.")).is_dir()}
    entries = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    beside = entries - areas
    assert beside - declared == {"__init__"}, "declare a new module's layer in LAYERS, or move it into its area"
    assert len(beside) <= GROUND_FILES
    assert areas <= entries and all((PACKAGE / area / "__init__.py").is_file() for area in areas)


def test_every_module_belongs_to_a_declared_unit():
    assert [name for name in MODULES if name != "pgvkit" and unit_of(name) == "pgvkit"] == []


def test_no_import_runs_upward_or_into_another_units_private_names():
    assert violations({name: path.read_text() for name, path in MODULES.items()}) == []


def test_an_upward_or_private_import_would_be_found():
    sources = {name: path.read_text() for name, path in MODULES.items()}
    sources["pgvkit.server.db"] += "\nfrom ..tuning import tune\n"
    sources["pgvkit.tuning.confirm"] += "\nfrom ..audit.recall import _exact_answers\n"
    sources["pgvkit.cli.base"] += "\nfrom ..health.verify import search_dimension\n"  # a name its __all__ leaves out
    assert violations(sources) == [
        "pgvkit.cli.base imports pgvkit.health.verify.search_dimension: not in pgvkit.health's public API",
        "pgvkit.server.db imports pgvkit.tuning.tune: upward, tuning is above the server",
        "pgvkit.tuning.confirm imports pgvkit.audit.recall._exact_answers: not in pgvkit.audit's public API",
    ]


def test_every_area_package_says_its_job_and_names_its_public_api():
    for unit in [u for _, units in LAYERS[1:] for u in units if (PACKAGE / u.split(".")[-1]).is_dir()]:
        init = MODULES[unit].read_text()
        assert ast.get_docstring(ast.parse(init)), f"{unit} has no docstring"
        declared = public_names(unit)
        assert declared, f"{unit} declares no __all__"
        missing = [n for n in declared if f"{unit}.{n}" not in MODULES and not re.search(rf"\b{n}\b", init)]
        assert missing == [], f"{unit}.__all__ names what it does not hold"


def test_the_notebooks_import_only_public_names():
    imports = notebook_imports()
    assert sum(map(len, imports.values())) >= 10  # the check sees the notebooks' imports
    assert {nb: [f"{m}.{n}" for m, n in found if private(m, n)] for nb, found in imports.items()} == {
        nb: [] for nb in imports}


def test_every_module_imports_alone_in_a_fresh_interpreter():
    def load(name):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
        return name, proc.returncode, proc.stderr.strip().splitlines()[-1:] if proc.returncode else []

    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [r for r in pool.map(load, set(MODULES) - {"pgvkit.__main__"}) if r[1] != 0]  # that one runs
    assert failed == []


def test_no_module_grows_into_a_drawer():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}, "split these by what their parts do"
