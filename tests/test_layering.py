"""The dependency rules of the layout: libraries never import services; gxcore stays free of
broker, database and metrics concerns and never reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"gxami_collector", "gxami_ingest", "gxami_scheduler", "gxami_reports", "gxami_cli"}
GXCORE_FORBIDDEN = {
    "aiokafka",
    "asyncpg",
    "prometheus_client",
    "faust",
    "gxami_runtime",
    "gxami_store",
    "gxami_contracts",
    "pydantic_settings",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "/tests/" not in p.as_posix())


@pytest.mark.parametrize("lib", ["gxcore", "contracts", "runtime", "store"])
def test_libraries_never_import_services(lib: str) -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & SERVICES) for p in _sources(f"libs/{lib}")}
    assert not {k: v for k, v in offenders.items() if v}


def test_gxcore_knows_meters_not_kafka_databases_or_metrics() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & GXCORE_FORBIDDEN) for p in _sources("libs/gxcore")}
    assert not {k: v for k, v in offenders.items() if v}


def test_gxcore_never_reads_the_environment() -> None:
    hits = []
    for p in _sources("libs/gxcore"):
        text = p.read_text(encoding="utf-8")
        if "os.environ" in text or "os.getenv" in text or "getenv(" in text:
            hits.append(str(p.relative_to(ROOT)))
    assert not hits


def test_services_never_import_each_other() -> None:
    for svc in SERVICES - {"gxami_cli"}:
        folder = f"services/{svc.removeprefix('gxami_')}"
        for p in _sources(folder):
            others = (_imports(p) & SERVICES) - {svc}
            assert not others, f"{p.relative_to(ROOT)} imports {sorted(others)}"


def test_settings_are_read_only_in_settings_modules() -> None:
    """Only settings.py (pydantic-settings) reads GXAMI_* variables in services."""
    for p in _sources("services"):
        if p.name == "settings.py":
            continue
        text = p.read_text(encoding="utf-8")
        assert "os.environ[" not in text and "os.getenv(" not in text, p.relative_to(ROOT)
