"""Reports settings (GXAMI_ prefix); the only place reports reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from gxami_runtime.settings import ServiceSettings


class ReportsSettings(ServiceSettings):
    # Most rows one report request returns.
    max_rows: int = 100_000
    tou_calendar: Path | None = Field(
        default=None,
        description="tariff calendar file (tariff-calendar YAML) that /reports/tou splits by; unset: no TOU report",
    )
