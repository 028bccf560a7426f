"""python -m gxami_reports: run the reports service."""

from __future__ import annotations

import asyncio
import sys

from gxami_reports.app import main
from gxami_reports.settings import ReportsSettings
from gxami_runtime.service import load_settings, run_service


def run() -> int:
    settings = load_settings("reports", ReportsSettings)  # a bad setting: one line, exit 2

    async def reports(stop: asyncio.Event) -> None:
        await main(stop, settings)

    return run_service("reports", settings.log_level, reports)


if __name__ == "__main__":
    sys.exit(run())
