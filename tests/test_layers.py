"""The layering the imports must obey, bottom to top; MLflow only inside the tracking package.

A module may import modules of its own layer or below, never above (lazy imports inside functions
count too). A new module must be given a layer here. `config` holds dataclasses only: the checks that
need the task catalog, data files, models or the grid live in `validate`, above all of them.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "intertask"
LAYERS = [
    ["errors", "names", "config.schema", "compute", "study", "transferability"],
    ["config.operations", "config.experiment", "config.tuning", "config.reading", "config"],
    ["metrics", "compute.machine", "compute.hardware", "compute.batching", "compute.quiet"],
    ["tasks", "data", "pretrained", "config.resolve"],
    ["compute.modeling", "compute.weights", "compute.encoding", "compute.dropout"],
    ["report.divergence", "report.plots", "report.pooling", "report.significance", "transferability.scores"],
    ["compute.training", "compute.evaluation", "compute.adapters", "compute.checkpoints"],
    ["study.identity"],
    ["tracking"],
    ["study.workspace", "stages"],
    ["study.grid", "study.executors", "tune"],
    ["config.validate"],
    [
        "report.flags",
        "report.tables",
        "report.gains",
        "report.questions",
        "report.estimators",
        "report.controls",
    ],
    ["report.render", "report"],
    ["study.collect", "transferability.predict", "study.planning"],
    ["study.foresight"],
    ["study.pipeline"],
    ["cli", "__main__", "printing"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
# packages whose modules have layers of their own (a package's __init__ is the module named by the package)
SUBPACKAGES = ("compute", "config", "report", "study", "transferability")


def _modules(package: Path = PACKAGE):
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts == ("__init__",):
            continue
        if parts[0] in SUBPACKAGES and len(parts) > 1:
            yield path, parts[0] if parts[1] == "__init__" else f"{parts[0]}.{parts[1]}"
        else:
            yield path, parts[0]


def _in_subpackage(package: str, name: str, root: Path) -> str:
    """`package.name` where name is a module of the subpackage, else the package (its __init__)."""
    return f"{package}.{name}" if (root / package / f"{name}.py").exists() else package


def _imports(path: Path, root: Path = PACKAGE):
    """(line, [("intertask", layer name)...]): `compute.training` for a subpackage's modules."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "intertask" and len(parts) == 1:
                yield node.lineno, [("intertask", a.name) for a in node.names]
            elif parts[0] == "intertask" and len(parts) == 2 and parts[1] in SUBPACKAGES:
                yield node.lineno, [("intertask", _in_subpackage(parts[1], a.name, root)) for a in node.names]
            else:
                yield node.lineno, [_layer_name(parts, root)]
        elif isinstance(node, ast.Import):
            yield node.lineno, [_layer_name(alias.name.split("."), root) for alias in node.names]


def _layer_name(parts: list[str], root: Path = PACKAGE) -> tuple:
    if parts[0] == "intertask" and len(parts) > 2 and parts[1] in SUBPACKAGES:
        return ("intertask", _in_subpackage(parts[1], parts[2], root))
    return tuple(parts[:2])


def test_every_module_has_a_layer():
    assert {top for _, top in _modules()} <= set(LEVEL), set(top for _, top in _modules()) - set(LEVEL)


def _upward(package: Path = PACKAGE) -> list[str]:
    found = []
    for path, me in _modules(package):
        for line, targets in _imports(path, package):
            for root, *rest in targets:
                if root != "intertask" or not rest or rest[0] == me:
                    continue
                if LEVEL[rest[0]] > LEVEL[me]:
                    found.append(
                        f"{path.relative_to(package)}:{line}: {me} imports {rest[0]} (a layer above)"
                    )
    return found


def _mlflow_outside_tracking(package: Path = PACKAGE) -> list[str]:
    return [
        f"{path.relative_to(package)}:{line}"
        for path, me in _modules(package)
        if me != "tracking"
        for line, targets in _imports(path, package)
        if any(root == "mlflow" for root, *_ in targets)
    ]


def test_imports_go_down_the_layers():
    upward = _upward()
    assert not upward, "\n".join(upward)


def test_mlflow_is_imported_only_by_the_tracking_package():
    outside = _mlflow_outside_tracking()
    assert not outside, outside


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A package with config importing grid lazily, a stage module reaching the report, and MLflow in
    the report: each is found, with its file and line; imports down or sideways are not."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "reading.py").write_text("def f():\n    from intertask.study import grid\n")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "grid.py").write_text("from intertask.config import resolve\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "train.py").write_text(
        "import intertask.report.tables\nfrom intertask import tracking\n"
    )
    (tmp_path / "report.py").write_text("from intertask.metrics import MEAN_ALL\nimport mlflow.pyfunc\n")
    assert sorted(_upward(tmp_path)) == [
        "config/reading.py:2: config.reading imports study.grid (a layer above)",
        "stages/train.py:1: stages imports report (a layer above)",
    ]
    assert _mlflow_outside_tracking(tmp_path) == ["report.py:2"]


def _module_graph() -> dict[str, set[str]]:
    """Each module of src/ (dotted, a package by its __init__) -> the modules of src/ it imports,
    lazily included (an import of a package's re-exported name counts as the package)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(("intertask", *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path

    def known(dotted: str) -> str | None:
        parts = dotted.split(".")
        return next(
            (".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in names), None
        )

    graph = {}
    for name, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("intertask"):
                found |= {known(f"{node.module}.{a.name}") or known(node.module) for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {known(a.name) for a in node.names if a.name.startswith("intertask")}
        # a package's __init__ re-exporting its own modules is not an import of them by another module
        graph[name] = {m for m in found if m and m != name and not m.startswith(f"{name}.")}
    return graph


def test_no_import_circles_between_modules():
    """No module imports, however indirectly, a module that imports it (lazy imports included): the
    circles compute.modeling <-> compute.weights and report.tables <-> report.questions were cut."""
    graph, circles = _module_graph(), []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for other in sorted(graph[name]):
            if other in path:
                circles.append(" -> ".join([*path[path.index(other) :], other]))
            elif other not in done:
                visit(other, [*path, other], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not circles, circles


def test_docs_architecture_lists_these_layers_and_names_every_module():
    """docs/architecture.md stays true: its layer list is LAYERS (top down), and its layout names
    every module file of src/intertask (a new module must be placed there too)."""
    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    block = text.split("the tasks, the rest above them:", 1)[1].strip().split("\n\n")[0]
    listed = [[name.strip() for name in line.split(",")] for line in block.splitlines()]
    assert listed == LAYERS[::-1]
    layout = text.split("## Layout", 1)[1].split("The layers, from the top down", 1)[0]
    for path in PACKAGE.rglob("*.py"):
        named = f"{path.parent.name}/" if path.name == "__init__.py" else path.name
        if path.parent != PACKAGE and path.name == "__init__.py":
            assert named in layout, named
        elif path.name != "__init__.py":
            assert path.name in layout or path.stem in layout, path.relative_to(PACKAGE)


def _stems_and_sizes(package: Path = PACKAGE) -> tuple[list[str], list[str]]:
    """(names used by two modules -- a package counts by its folder name --, files over 500 lines)."""
    names: dict[str, list[str]] = {}
    for path in package.rglob("*.py"):
        name = path.parent.name if path.name == "__init__.py" else path.stem
        if path.parent != package or path.name != "__init__.py":
            names.setdefault(name, []).append(str(path.relative_to(package)))
    shared = sorted(f"{n}: {', '.join(sorted(p))}" for n, p in names.items() if len(p) > 1)
    long = sorted(
        f"{p.relative_to(package)}: {n} lines"
        for p in package.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    )
    return shared, long


def test_no_two_modules_share_a_name_and_no_file_is_over_500_lines(tmp_path):
    shared, long = _stems_and_sizes()
    assert not shared and not long, shared + long
    # the check itself: a module named like a package, and a long file, are found
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "__init__.py").write_text("")
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / "study.py").write_text("x = 1\n" * 501)
    assert _stems_and_sizes(tmp_path) == (
        ["study: study/__init__.py, tune/study.py"],
        ["tune/study.py: 501 lines"],
    )
