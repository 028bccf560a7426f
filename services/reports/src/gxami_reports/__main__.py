"""python -m gxami_reports: run the reports service."""

from __future__ import annotations

import sys

from gxami_reports.app import main
from gxami_reports.settings import ReportsSettings
from gxami_runtime.service import run_service


def run() -> int:
    return run_service("reports", ReportsSettings().log_level, main)


if __name__ == "__main__":
    sys.exit(run())
