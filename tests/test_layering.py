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


# -- gxcore by role: protocols pure, media the only I/O, drivers the only asyncio above media ------------------

GXCORE = ROOT / "libs" / "gxcore" / "src" / "gxcore"
IO_MODULES = {"asyncio", "socket", "serial", "serial_asyncio", "selectors", "pymodbus", "aiohttp"}


def _imported_modules(path: Path) -> set[str]:
    """Full dotted names of every absolute import in ``path`` (``from a.b import c`` gives ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _under(names: set[str], prefixes: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def test_protocol_cores_import_no_io_and_nothing_above_them() -> None:
    offenders = {}
    for p in sorted((GXCORE / "protocols").rglob("*.py")):
        bad = _under(_imported_modules(p), IO_MODULES | {"gxcore.drivers", "gxcore.media"})
        if bad:
            offenders[str(p.relative_to(ROOT))] = bad
    assert not offenders


def test_media_never_imports_protocols_or_drivers() -> None:
    offenders = {}
    for p in sorted((GXCORE / "media").rglob("*.py")):
        bad = _under(_imported_modules(p), {"gxcore.drivers", "gxcore.protocols"})
        if bad:
            offenders[str(p.relative_to(ROOT))] = bad
    assert not offenders


def test_asyncio_lives_only_in_media_and_drivers() -> None:
    allowed = {"media", "drivers"}
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted(GXCORE.rglob("*.py"))
        if p.relative_to(GXCORE).parts[0] not in allowed and _under(_imported_modules(p), {"asyncio"})
    ]
    assert not offenders


def test_gxcore_holds_no_meter_simulation() -> None:
    """Simulators and the DLMS meter side are dev-only (gxami-meterlab); gxcore never imports them."""
    offenders = {
        str(p.relative_to(ROOT)): _under(_imported_modules(p), {"gxami_meterlab"}) for p in sorted(GXCORE.rglob("*.py"))
    }
    assert not {k: v for k, v in offenders.items() if v}
    assert not (GXCORE / "simulators").exists()


def test_importing_any_protocol_module_leaves_asyncio_unloaded() -> None:
    """In a fresh interpreter, importing every module under gxcore.protocols loads no event loop and no port.

    (``socket`` itself is not checked here: the standard library's ``email`` and ``zipfile``, which
    ``importlib.metadata`` and gurux pull in, import it; the source check above keeps our cores off it.)
    """
    import subprocess
    import sys

    modules = sorted(
        "gxcore." + ".".join(p.relative_to(GXCORE).with_suffix("").parts).removesuffix(".__init__")
        for p in (GXCORE / "protocols").rglob("*.py")
    )
    probe = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "names = ('asyncio', 'serial', 'serial_asyncio', 'pymodbus')\n"
        "print(' '.join(sorted(n for n in names if n in sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert len(modules) > 30  # the probe did import the cores
    assert loaded == []
