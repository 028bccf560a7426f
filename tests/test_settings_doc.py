"""docs/settings.md is the table docs/generate_settings.py writes from the settings classes (issue 13, item 8)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_settings", DOCS / "generate_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_settings_table_is_current_and_says_what_each_setting_does() -> None:
    generator = _generator()
    assert (DOCS / "settings.md").read_text(encoding="utf-8") == generator.render(), (
        "docs/settings.md is stale: run .venv/bin/python docs/generate_settings.py"
    )
    assert generator.undocumented() == [], "give these settings a description or a comment above the field"


def test_every_setting_of_every_service_has_its_row() -> None:
    generator = _generator()
    table = (DOCS / "settings.md").read_text(encoding="utf-8")
    for cls in generator.SERVICES.values():
        for name, info in cls.model_fields.items():
            if not info.exclude:
                assert f"| `GXAMI_{name.upper()}` |" in table, name
    assert "GXAMI_KAFKA_SASL_PASSWORD`" not in table  # refused as a setting: never documented as one
