"""python -m gxami_ingest: run the ingest service."""

from __future__ import annotations

import asyncio
import sys

from gxami_ingest.app import main
from gxami_ingest.settings import IngestSettings
from gxami_runtime.service import load_settings, run_service


def run() -> int:
    settings = load_settings("ingest", IngestSettings)  # a bad setting: one line, exit 2

    async def ingest(stop: asyncio.Event) -> None:
        await main(stop, settings)

    return run_service("ingest", settings.log_level, ingest)


if __name__ == "__main__":
    sys.exit(run())
