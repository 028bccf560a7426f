"""python -m gxami_collector: run the collector service."""

from __future__ import annotations

import asyncio
import sys

from gxami_collector.app import main
from gxami_collector.settings import CollectorSettings
from gxami_runtime.service import load_settings, run_service


def run() -> int:
    settings = load_settings("collector", CollectorSettings)  # a bad setting: one line, exit 2

    async def collector(stop: asyncio.Event) -> None:
        await main(stop, settings)

    return run_service("collector", settings.log_level, collector)


if __name__ == "__main__":
    sys.exit(run())
