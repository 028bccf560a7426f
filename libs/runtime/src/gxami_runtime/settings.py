"""Settings every service shares, read from the environment with the GXAMI_ prefix."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Broker, database, observability. Services subclass this and add their own fields."""

    model_config = SettingsConfigDict(env_prefix="GXAMI_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # On for real Kafka; Tansu (the local broker) has no idempotent producer. Correctness does not
    # depend on it: ingest writes are idempotent on the natural key.
    kafka_enable_idempotence: bool = True
    kafka_request_timeout_ms: int = 30_000
    # Tansu completes a group join only after half the session timeout, so the local stack
    # sets these low (GXAMI_KAFKA_SESSION_TIMEOUT_MS=2000); real Kafka keeps the defaults.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    topic_overrides: dict[str, str] = Field(default_factory=dict, description="logical -> physical topic name")
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/gxami")
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # Limits of every HTTP server (see gxami_runtime.http.HttpLimits): slow or huge requests are cut off.
    http_header_timeout_s: float = Field(default=10.0, gt=0, description="a request head must arrive within this")
    http_body_timeout_s: float = Field(default=30.0, gt=0, description="a request body must arrive within this")
    http_keepalive_timeout_s: float = Field(default=75.0, gt=0, description="an idle keep-alive connection is closed")
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1, description="larger request bodies get 413")
    http_write_rate_per_s: float = Field(default=1.0, gt=0, description="write requests per second per client")
    http_write_burst: int = Field(default=20, ge=1, description="write requests a client may send at once")
    log_level: str = "INFO"
    instance: str = Field(default="", description="name of this replica in logs and metrics")

    def topic(self, logical: str) -> str:
        """Physical topic name for a logical one."""
        return self.topic_overrides.get(logical, logical)
