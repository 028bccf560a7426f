"""Reports settings (GXAMI_ prefix); the only place reports reads the environment."""

from __future__ import annotations

from gxami_runtime.settings import ServiceSettings


class ReportsSettings(ServiceSettings):
    # Most rows one report request returns.
    max_rows: int = 100_000
