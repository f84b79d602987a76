"""The layering the imports must obey, bottom to top; MLflow only inside the tracking package.

A module may import modules of its own layer or below, never above (lazy imports inside functions
count too). A new module must be given a layer here. KNOWN lists the upward imports that remain:
config still reads the task catalog, data roots and offline models to validate, and reaches grid
for the cross-field checks; moving that validation above them (issue 18) empties the list, and an
entry that no longer occurs fails the test so that the list only shrinks.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "intertask"
LAYERS = [
    ["errors", "schema", "registry"],
    ["config"],
    ["metrics", "hardware", "batching"],
    ["tasks", "data", "models"],
    ["modeling", "encoding", "dropout", "divergence", "leakage", "plots", "significance"],
    ["training", "evaluation", "adapters", "checkpoints"],
    ["identity"],
    ["tracking", "serving"],
    ["workspace", "stages"],
    ["grid", "executors", "tune"],
    ["report"],
    ["collect"],
    ["pipeline"],
    ["cli", "__main__"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
KNOWN = {("config", "models"), ("config", "data"), ("config", "tasks"), ("config", "grid")}


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
    upward, seen = [], set()
    for path, me in _modules():
        for line, targets in _imports(path):
            for root, *rest in targets:
                if root != "intertask" or not rest or rest[0] == me:
                    continue
                if LEVEL[rest[0]] > LEVEL[me]:
                    seen.add((me, rest[0]))
                    if (me, rest[0]) not in KNOWN:
                        upward.append(
                            f"{path.relative_to(PACKAGE)}:{line}: {me} imports {rest[0]} (a layer above)"
                        )
    assert not upward, "\n".join(upward)
    assert seen >= KNOWN, f"no longer imported, remove from KNOWN: {KNOWN - seen}"


def test_mlflow_is_imported_only_by_the_tracking_package():
    outside = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path, me in _modules()
        if me != "tracking"
        for line, targets in _imports(path)
        if any(root == "mlflow" for root, *_ in targets)
    ]
    assert not outside, outside
