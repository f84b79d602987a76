"""The layering the imports must obey, bottom to top; MLflow only inside the tracking package.

A module may import modules of its own layer or below, never above (lazy imports inside functions
count too). A new module must be given a layer here. `config` holds dataclasses only: the checks that
need the task catalog, data files, models or the grid live in `validate`, above all of them.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "intertask"
LAYERS = [
    ["errors", "schema", "names"],
    ["config"],
    ["metrics", "compute.machine", "compute.hardware", "compute.batching"],
    ["tasks", "data", "models", "resolve"],
    ["compute.modeling", "compute.weights", "compute.encoding", "compute.dropout"],
    ["divergence", "leakage", "plots", "pooling", "significance", "transferability"],
    ["compute.training", "compute.evaluation", "compute.adapters", "compute.checkpoints"],
    ["identity"],
    ["tracking"],
    ["workspace", "stages"],
    ["grid", "executors", "tune"],
    ["validate"],
    ["report"],
    ["collect", "predict"],
    ["pipeline"],
    ["cli", "__main__"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
SUBPACKAGES = ("compute",)  # packages whose modules have layers of their own (the compute core spans several)


def _modules(package: Path = PACKAGE):
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts in (("__init__",), *((p, "__init__") for p in SUBPACKAGES)):
            continue
        yield path, ".".join(parts[:2]) if parts[0] in SUBPACKAGES else parts[0]


def _imports(path: Path):
    """(line, [("intertask", layer name)...]): `compute.training` for the compute core's modules."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "intertask" and (len(parts) == 1 or (len(parts) == 2 and parts[1] in SUBPACKAGES)):
                prefix = ".".join(parts[1:])
                yield (
                    node.lineno,
                    [("intertask", f"{prefix}.{a.name}" if prefix else a.name) for a in node.names],
                )
            else:
                yield node.lineno, [_layer_name(parts)]
        elif isinstance(node, ast.Import):
            yield node.lineno, [_layer_name(alias.name.split(".")) for alias in node.names]


def _layer_name(parts: list[str]) -> tuple:
    if parts[0] == "intertask" and len(parts) > 2 and parts[1] in SUBPACKAGES:
        return ("intertask", f"{parts[1]}.{parts[2]}")
    return tuple(parts[:2])


def test_every_module_has_a_layer():
    assert {top for _, top in _modules()} <= set(LEVEL), set(top for _, top in _modules()) - set(LEVEL)


def _upward(package: Path = PACKAGE) -> list[str]:
    found = []
    for path, me in _modules(package):
        for line, targets in _imports(path):
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
        for line, targets in _imports(path)
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
    (tmp_path / "config" / "reading.py").write_text("def f():\n    from intertask import grid\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "train.py").write_text(
        "import intertask.report.tables\nfrom intertask import tracking\n"
    )
    (tmp_path / "report.py").write_text("from intertask.metrics import MEAN_ALL\nimport mlflow.pyfunc\n")
    assert sorted(_upward(tmp_path)) == [
        "config/reading.py:2: config imports grid (a layer above)",
        "stages/train.py:1: stages imports report (a layer above)",
    ]
    assert _mlflow_outside_tracking(tmp_path) == ["report.py:2"]
