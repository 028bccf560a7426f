"""Scheduler settings: the only place the scheduler reads the environment (``GXAMI_`` prefix)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from gxami_runtime.settings import ServiceSettings
from gxami_scheduler.planner import SchedulePolicy, Shard


class SchedulerSettings(ServiceSettings):
    """Tick cadence, job timeouts, back-fill horizon, retry backoff and this replica's shard."""

    tick_seconds: float = Field(default=1.0, gt=0, le=3600, description="how often due meters are claimed")
    claim_limit: int = Field(default=500, ge=1, le=100_000, description="most meters claimed per tick")
    job_timeout_s: float = Field(
        default=300.0, ge=5, description="a job without a result after this long is emitted again"
    )
    result_grace_s: float = Field(
        default=30.0, ge=0, description="extra wait after a job's deadline before it counts as lost"
    )
    history_days: float = Field(default=2.0, ge=0, description="load-profile history asked of a never-read meter")
    backfill_max_days: float = Field(default=31.0, gt=0, description="the furthest back a load-profile read goes")
    backoff_base_s: float = Field(default=60.0, gt=0, description="retry delay after the first failure")
    backoff_factor: float = Field(default=2.0, ge=1, description="retry delay multiplier per further failure")
    backoff_cap_s: float = Field(default=3600.0, gt=0, description="longest retry delay")
    backoff_jitter: float = Field(default=0.2, ge=0, lt=1, description="retry delay shortened by up to this share")
    shard_index: int = Field(default=0, ge=0, description="which shard of the fleet this replica claims")
    shard_count: int = Field(default=1, ge=1, le=4096, description="how many scheduler replicas share the fleet")
    profile_dirs: list[Path] = Field(
        default_factory=list, description="extra device-profile folders (JSON list), checked on fleet import"
    )
    # Database connections the scheduler keeps.
    db_pool_size: int = Field(default=5, ge=2, le=100)
    results_group: str = Field(default="scheduler", min_length=1, description="consumer group for job results")
    # Commands (issue 9): see the README section "Commands".
    command_results_group: str = Field(
        default="scheduler-commands", min_length=1, description="consumer group for command results"
    )
    command_default_expiry_s: float = Field(
        default=900.0, gt=0, le=30 * 86400, description="a command's lifetime when the request gives no expires_at"
    )
    command_four_eyes_above: int = Field(
        default=10, ge=0, description="a command for more meters than this needs a second operator's approval"
    )
    clock_sync_threshold_s: float = Field(
        default=10.0, gt=0, description="a meter clock drifting more than this gets a clock-sync command"
    )
    clock_sync_period: timedelta = Field(
        default=timedelta(days=1),
        gt=timedelta(0),
        description="at most one automatic clock-sync per meter this often (seconds, or ISO 8601 like P1D)",
    )

    @field_validator("clock_sync_period", mode="before")
    @classmethod
    def _seconds_or_iso(cls, value: object) -> object:
        """A plain number (as the environment gives it, text) is seconds; anything else ISO 8601."""
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return value

    @model_validator(mode="after")
    def _shard_in_range(self) -> SchedulerSettings:
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} must be below shard_count {self.shard_count}")
        return self

    def policy(self) -> SchedulePolicy:
        """The pure scheduling rules these settings describe."""
        return SchedulePolicy(
            job_timeout_s=self.job_timeout_s,
            result_grace_s=self.result_grace_s,
            history_days=self.history_days,
            backfill_max_days=self.backfill_max_days,
            backoff_base_s=self.backoff_base_s,
            backoff_factor=self.backoff_factor,
            backoff_cap_s=self.backoff_cap_s,
            backoff_jitter=self.backoff_jitter,
        )

    def shard(self) -> Shard:
        return Shard(self.shard_index, self.shard_count)
