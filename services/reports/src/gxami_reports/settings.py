"""Reports settings (GXAMI_ prefix); the only place reports reads the environment."""

from __future__ import annotations

from gxami_runtime.settings import ServiceSettings


class ReportsSettings(ServiceSettings):
    max_rows: int = 100_000
