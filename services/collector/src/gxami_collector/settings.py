"""Collector settings (GXAMI_ prefix); the only place the collector reads the environment."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from gxami_runtime.settings import ServiceSettings


def _state_file() -> Path:
    """``$XDG_STATE_HOME/gxami/invocation-counters.json`` (``~/.local/state`` without XDG_STATE_HOME)."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "gxami" / "invocation-counters.json"


class CollectorSettings(ServiceSettings):
    consumer_group: str = "collector"
    concurrency: int = 64
    exchange_timeout_s: float = 10.0
    # Upper bound on one whole meter session (association, all reads, release).
    session_timeout_s: float = 120.0
    profiles_dir: Path | None = None
    secrets_file: Path | None = None
    # DLMS security suite 0: the invocation counter of each meter must never be reused (GCM nonce).
    # Reserved in this file before use, so a restart or a crash never repeats one; it must be on a
    # persistent volume (see deploy/k8s/collector.yaml). Processes sharing it (replicas on one
    # volume, `gxami read --counters-file`) are safe: it is locked across processes.
    # Default: the user's XDG state dir (local runs); deployments set GXAMI_INVOCATION_COUNTERS_FILE.
    invocation_counters_file: Path = Field(default_factory=_state_file)
