"""The layering the imports must obey, bottom to top; MLflow only inside the tracking package.

A module may import modules of its own layer or below, never above (lazy imports inside functions
count too). A new module must be given a layer here. `config` holds dataclasses only: the checks that
need the task catalog, data files, models or the grid live in `validate`, above all of them.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "intertask"
LAYERS = [
    ["errors", "schema", "registry"],
    ["config"],
    ["metrics", "hardware", "batching"],
    ["tasks", "data", "models", "resolve"],
    ["modeling", "encoding", "dropout", "divergence", "leakage", "plots", "significance"],
    ["training", "evaluation", "adapters", "checkpoints"],
    ["identity"],
    ["tracking", "serving"],
    ["workspace", "stages"],
    ["grid", "executors", "tune"],
    ["validate"],
    ["report"],
    ["collect"],
    ["pipeline"],
    ["cli", "__main__"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts != ("__init__",):
            yield path, parts[0]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "intertask":
                yield node.lineno, [("intertask", alias.name) for alias in node.names]
            else:
                yield node.lineno, [tuple(node.module.split(".")[:2])]
        elif isinstance(node, ast.Import):
            yield node.lineno, [tuple(alias.name.split(".")[:2]) for alias in node.names]


def test_every_module_has_a_layer():
    assert {top for _, top in _modules()} <= set(LEVEL), set(top for _, top in _modules()) - set(LEVEL)


def test_imports_go_down_the_layers():
    upward = []
    for path, me in _modules():
        for line, targets in _imports(path):
            for root, *rest in targets:
                if root != "intertask" or not rest or rest[0] == me:
                    continue
                if LEVEL[rest[0]] > LEVEL[me]:
                    upward.append(
                        f"{path.relative_to(PACKAGE)}:{line}: {me} imports {rest[0]} (a layer above)"
                    )
    assert not upward, "\n".join(upward)


def test_mlflow_is_imported_only_by_the_tracking_package():
    outside = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path, me in _modules()
        if me != "tracking"
        for line, targets in _imports(path)
        if any(root == "mlflow" for root, *_ in targets)
    ]
    assert not outside, outside
