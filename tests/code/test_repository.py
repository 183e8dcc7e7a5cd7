"""The repository itself: no stray logs tracked, and no machine's absolute paths in benchmark JSON."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.conftest import leaves

ROOT = Path(__file__).parents[2]


def test_no_logs_are_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not [name for name in tracked.splitlines() if name.endswith(".log")]


def test_benchmark_json_records_paths_relative_to_the_project():
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        absolute = [s for s in leaves(json.loads(path.read_text())) if isinstance(s, str) and s.startswith(("/", "~"))]
        assert not absolute, (path.name, absolute[:3])


# the packages, top to bottom: a module imports only from its own package or one further down
LAYERS = [
    ("caviar.cli",),
    ("caviar.serving", "caviar.tuning"),
    ("caviar.registry",),
    ("caviar.experiment", "caviar.ops"),
    ("caviar.job",),
    ("model",),
]
MAX_LINES = 300


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _layer(module: str) -> int | None:
    for depth, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return depth
    return None


def _imports(path: Path) -> list[str]:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def test_no_module_is_over_300_lines_and_caviar_has_no_loose_modules():
    long = [
        (str(p.relative_to(ROOT)), n)
        for p in _modules("caviar") + _modules("model")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long
    loose = sorted(p.name for p in (ROOT / "caviar").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"]


def test_imports_run_one_way():
    """cli -> serving, tuning -> registry -> experiment, ops -> job -> model; model/ sees no Ray."""
    against = []
    for path in _modules("caviar") + _modules("model"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        own = _layer(module)
        for imported in _imports(path):
            if module.startswith("model") and imported.split(".")[0] in ("ray", "caviar"):
                against.append((module, imported))
            target = _layer(imported)
            if target is not None and own is not None and target < own:
                against.append((module, imported))
    assert not against


def test_every_module_name_is_its_own():
    """No two modules share a name (two `pretrain.py` once did two different jobs)."""
    names = [p.stem for p in _modules("caviar") + _modules("model") if p.stem not in ("__init__", "__main__")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def _listed_modules(cell: str) -> set[str]:
    """The module names a docs/architecture.md row lists: backticked names outside the parentheses
    that describe them."""
    import re

    depth, outside = 0, []
    for char in cell:
        depth += char == "("
        if depth == 0:
            outside.append(char)
        depth -= char == ")" and depth > 0
    return set(re.findall(r"`([a-z_][a-z0-9_]*)`", "".join(outside)))


def test_the_architecture_doc_names_every_package_and_module_and_no_other():
    rows = {}
    for line in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].endswith("/`"):
            rows[cells[0].strip("`").rstrip("/")] = _listed_modules(cells[2])
    packages = {
        p.parent.relative_to(ROOT).as_posix()
        for top in ("model", "caviar")
        for p in (ROOT / top).rglob("*.py")
        if "__pycache__" not in p.parts and p.name != "__init__.py"
    }
    assert set(rows) == packages, (sorted(packages - set(rows)), sorted(set(rows) - packages))
    for package, listed in rows.items():
        modules = {p.stem for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}
        assert listed == modules, (package, "missing:", sorted(modules - listed), "stale:", sorted(listed - modules))


def _private_ray_names(path: Path) -> list[str]:
    """Private Ray modules or names a file's code imports or reaches (`ray.x._y`). Logger names,
    which are strings, are not code: quieting `ray._private...`'s logger reaches nothing of it."""
    import ast

    def dotted(node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ray":
            private_module = any(part.startswith("_") for part in node.module.split("."))
            found += [f"{node.module}.{a.name}" for a in node.names if private_module or a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("ray.") and "._" in a.name]
        elif isinstance(node, ast.Attribute) and (name := dotted(node)) and name.startswith("ray.") and "._" in name:
            found.append(name)
    return found


def test_no_private_ray_name_outside_ray_compat():
    """Issue 50, item 6: Ray's internals are reached only from caviar/tuning/ray_compat/, where each
    use has its upstream link and a canary."""
    compat = ROOT / "caviar" / "tuning" / "ray_compat"
    offenders = {
        path.relative_to(ROOT).as_posix(): names
        for top in ("caviar", "model", "bench")
        for path in _modules(top)
        if compat not in path.parents and (names := _private_ray_names(path))
    }
    assert not offenders, offenders
    assert _private_ray_names(compat / "search_rng.py"), "the check itself finds nothing (it would pass anything)"


def _project_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports, at the top or inside a function."""
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for top in ("caviar", "model")
        for p in _modules(top)
    }
    graph = {}
    for name, path in modules.items():
        found = {m for m in _imports(path) if m in modules}  # `from a.b import c`: a.b, and a.b.c if a module
        graph[name] = {m for m in found if m != name and not name.startswith(m + ".")}
    return graph


def test_no_import_circles():
    """Issue 50, item 7: a module never reaches itself through the project's imports, function-level
    ones included (they hid members <-> record and mlm <-> electra)."""
    graph, circles = _project_graph(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, circles
    assert "caviar.experiment.members" in graph["caviar.experiment.record"]  # the graph sees real imports


def test_every_module_with_a_cuda_only_branch_is_listed_in_the_performance_doc():
    """Issue 50, item 12: the GPU-only surface stays small and named (docs/performance.md), since no
    GPU has run it in rounds: a new `"cuda"` branch in an unlisted module fails here."""
    doc = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    table = doc[doc.index("## What only a GPU runs") :]
    branching = {
        path.relative_to(ROOT).as_posix()
        for top in ("caviar", "model")
        for path in _modules(top)
        if '"cuda"' in path.read_text(encoding="utf-8")
    }
    assert branching, "the check finds no CUDA branch at all (it would pass anything)"
    unlisted = sorted(name for name in branching if f"`{name}`" not in table)
    assert not unlisted, unlisted


LAZY = "# lazy:"  # the comment a function-level import of the project's own modules carries, with why


def _unexplained_function_imports(path: Path) -> list[str]:
    """Function-level imports of caviar/model/bench modules whose block has no `# lazy: <why>` line."""
    import ast

    text = path.read_text(encoding="utf-8")
    lines, found = text.splitlines(), []
    for function in ast.walk(ast.parse(text)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if not any(n.split(".")[0] in ("caviar", "model", "bench") for n in names if n):
                continue
            above = node.lineno - 2  # walk up over the block's imports (blank lines between) to its top
            while above >= 0 and (not lines[above].strip() or lines[above].lstrip().startswith(("from ", "import "))):
                above -= 1
            if LAZY not in lines[node.lineno - 1] and (above < 0 or LAZY not in lines[above]):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_function_level_import_of_the_project_says_why_it_is_lazy():
    """Issue 50, item 7: the project's own modules are imported at the top, except where a function-
    level import keeps start-up fast (torch or Ray not loaded for `--help`, `train` or `report`);
    each such block carries one `# lazy: <why>` line."""
    modules = [p for top in ("caviar", "model", "bench") for p in _modules(top)]
    unexplained = [hit for path in modules for hit in _unexplained_function_imports(path)]
    assert not unexplained, unexplained
    lazy = sum(path.read_text(encoding="utf-8").count(LAZY) for path in modules)
    assert lazy > 0, "no lazy import found at all: the check would pass anything"


def test_every_benchmark_runs_in_the_suite_in_its_smoke_form():
    """Issue 50, item 10: a benchmark no test runs breaks unseen (bench.gpu did, for a round)."""
    benches = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "common"}
    tests = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests" / "bench").glob("test_*.py"))
    smoked = set(re.findall(r'smoke\(tmp_path, "(\w+)"', tests))
    assert benches - smoked == set(), "benchmarks with no smoke test"
