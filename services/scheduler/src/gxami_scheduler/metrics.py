"""Prometheus metrics of the scheduler, on a registry of their own (one per service instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector


class SchedulerMetrics:
    """Jobs emitted, results seen, the due backlog and how long a tick takes."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.jobs_emitted = Counter(
            "gxami_scheduler_jobs_emitted_total", "Read jobs published to the broker", registry=self.registry
        )
        self.job_results = Counter(
            "gxami_scheduler_job_results_total",
            "Job results consumed, by status (ok, error)",
            ["status"],
            registry=self.registry,
        )
        self.stale_results = Counter(
            "gxami_scheduler_stale_results_total",
            "Job results for a job the meter no longer waits for (redelivered or late)",
            registry=self.registry,
        )
        self.publish_failures = Counter(
            "gxami_scheduler_publish_failures_total",
            "Ticks whose jobs could not be published (the meters were released)",
            registry=self.registry,
        )
        self.meters_due = Gauge(
            "gxami_scheduler_meters_due", "Meters due and not in flight at the last tick", registry=self.registry
        )
        self.tick_seconds = Histogram(
            "gxami_scheduler_tick_seconds",
            "Time of one scheduling tick (claim, commit, publish)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        for status in ("ok", "error"):
            self.job_results.labels(status=status)
        # Commands (issue 9)
        self.commands_queued = Counter(
            "gxami_scheduler_commands_queued_total",
            "Meter commands published to ami.commands",
            registry=self.registry,
        )
        self.commands_expired = Counter(
            "gxami_scheduler_commands_expired_total",
            "Meter commands the scheduler ended itself: expired waiting, or no answer from the collector",
            registry=self.registry,
        )
        self.command_results = Counter(
            "gxami_scheduler_command_results_total",
            "Command results consumed, by outcome (sent, succeeded, failed, expired)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("sent", "succeeded", "failed", "expired"):
            self.command_results.labels(outcome=outcome)
