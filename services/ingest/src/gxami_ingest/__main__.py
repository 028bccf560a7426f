"""python -m gxami_ingest: run the ingest service."""

from __future__ import annotations

import sys

from gxami_ingest.app import main
from gxami_ingest.settings import IngestSettings
from gxami_runtime.service import run_service


def run() -> int:
    return run_service("ingest", IngestSettings().log_level, main)


if __name__ == "__main__":
    sys.exit(run())
