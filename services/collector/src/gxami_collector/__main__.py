"""python -m gxami_collector: run the collector service."""

from __future__ import annotations

import sys

from gxami_collector.app import main
from gxami_collector.settings import CollectorSettings
from gxami_runtime.service import run_service


def run() -> int:
    return run_service("collector", CollectorSettings().log_level, main)


if __name__ == "__main__":
    sys.exit(run())
