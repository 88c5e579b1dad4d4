"""The house rules of ``docs/architecture.md``, checked on the code itself.

Pure: reads the source files with :mod:`ast` (no import runs, nothing connects),
except the two field checks, which import the models.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "learntrack"

#: (importer, imported, why): a module under the first may never import the second.
NEVER = [
    ("learntrack.sinks", "learntrack.streaming", "a store knows nothing of the job"),
    (
        "learntrack.sinks",
        "learntrack.api",
        "stores are read by the API, not the reverse",
    ),
    ("learntrack.sinks", "learntrack.cli", "nothing imports the CLI"),
    ("learntrack.producers", "learntrack.sinks", "producers only publish to Kafka"),
    ("learntrack.producers", "learntrack.streaming", "producers only publish to Kafka"),
    ("learntrack.api", "learntrack.streaming", "the API reads stores, not the job"),
    ("learntrack.dashboards", "learntrack.streaming", "dashboards read stores"),
    ("learntrack.events", "learntrack.sinks", "the contract is the ground floor"),
    ("learntrack.config", "learntrack.sinks", "the contract is the ground floor"),
    ("learntrack", "learntrack.cli", "nothing imports the CLI"),
    ("learntrack", "bench", "the product never depends on its bench"),
]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _product_modules() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_imports_point_downstream_only() -> None:
    broken = [
        f"{module} imports {name}: {why}"
        for importer, imported, why in NEVER
        for module, names in _product_modules().items()
        if _within(module, importer) and module != "learntrack.cli"
        for name in names
        if _within(name, imported)
        # the CLI's bench command finds the checkout's bench at run time
        and not (module == "learntrack.cli" and imported == "bench")
    ]
    assert broken == []


def test_the_rules_see_imports_inside_functions(tmp_path: Path) -> None:
    """The checker itself: a lazy import counts like a top-level one."""
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    from learntrack.streaming.job import StreamJob\n"
        "    import bench.core\n"
    )
    assert {"os", "learntrack.streaming.job", "bench.core"} <= _imports(source)


def test_the_package_does_not_ship_the_bench() -> None:
    import tomllib

    from setuptools import find_packages  # type: ignore[import-untyped]

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(ROOT), include=find["include"])
    assert "learntrack" in shipped
    assert not [p for p in shipped if "bench" in p]
    assert (ROOT / "bench" / "__init__.py").is_file()


def test_no_test_module_imports_another() -> None:
    offenders = [
        f"{p.name} imports {name}"
        for p in (ROOT / "tests").glob("test_*.py")
        for name in _imports(p)
        if name.startswith("tests.test_")
    ]
    assert offenders == []


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_redis_keys_are_built_only_by_the_redis_store() -> None:
    home = PACKAGE / "sinks" / "redis.py"
    elsewhere = [
        f"{p.relative_to(ROOT)}: {text!r}"
        for p in [*PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py")]
        if p != home
        for text in _string_constants(p)
        if text.startswith("lt:")
    ]
    assert elsewhere == []


def test_the_api_activity_and_the_lake_follow_the_event_model() -> None:
    from learntrack.api.models import Activity
    from learntrack.events import ActivityEvent, arrow_schema
    from learntrack.sinks.lake import LAKE_COLUMNS

    event_fields = list(ActivityEvent.model_fields)
    assert list(Activity.model_fields) == [
        f for f in event_fields if f != "schemaVersion"
    ]
    assert list(LAKE_COLUMNS) == [f for f in event_fields if f != "metadata"]
    assert arrow_schema().names == event_fields


@pytest.mark.parametrize(
    ("name", "store"),
    [("PipelineRecorder", "learntrack.sinks.pipeline"),
     ("CourseDayRow", "learntrack.sinks.cassandra")],
)  # fmt: skip
def test_class_names_are_not_shared_across_the_package(name: str, store: str) -> None:
    defined: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                defined.setdefault(node.name, []).append(_module(path))
    shared = {k: v for k, v in defined.items() if len(v) > 1}
    assert shared == {}
    assert defined[name] == [store]
