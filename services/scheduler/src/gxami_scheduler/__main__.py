"""``python -m gxami_scheduler``: run the scheduler service."""

from gxami_scheduler.cli import run_scheduler

raise SystemExit(run_scheduler())
