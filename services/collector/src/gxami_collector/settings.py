"""Collector settings (GXAMI_ prefix); the only place the collector reads the environment."""

from __future__ import annotations

from pathlib import Path

from gxami_runtime.settings import ServiceSettings


class CollectorSettings(ServiceSettings):
    consumer_group: str = "collector"
    concurrency: int = 64
    exchange_timeout_s: float = 10.0
    # Upper bound on one whole meter session (association, all reads, release).
    session_timeout_s: float = 120.0
    profiles_dir: Path | None = None
    secrets_file: Path | None = None
    # DLMS security suite 0: the invocation counter of each meter must never be reused. Kept in this
    # file (one per collector replica, on a persistent volume) so a restart does not cost an extra
    # association per meter to read the frame counter again.
    invocation_counters_file: Path | None = None
