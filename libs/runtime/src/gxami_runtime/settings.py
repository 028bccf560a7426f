"""Settings every service shares, read from the environment with the GXAMI_ prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gxami_runtime.kafka_security import KafkaSecurity, SaslMechanism, SecurityProtocol, check_security


class ServiceSettings(BaseSettings):
    """Broker, database, observability. Services subclass this and add their own fields."""

    # hide_input_in_errors: a rejected value (a password, a DSN) never appears in a ValidationError.
    model_config = SettingsConfigDict(env_prefix="GXAMI_", extra="ignore", hide_input_in_errors=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # On for real Kafka; Tansu (the local broker) has no idempotent producer. Correctness does not
    # depend on it: ingest writes are idempotent on the natural key.
    kafka_enable_idempotence: bool = True
    kafka_request_timeout_ms: int = 30_000
    # Tansu completes a group join only after half the session timeout, so the local stack
    # sets these low (GXAMI_KAFKA_SESSION_TIMEOUT_MS=2000); real Kafka keeps the defaults.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    # Kafka over TLS and SASL (see gxami_runtime.kafka_security). A password comes from a file or
    # from the environment variable named here, never from this process's settings or a URL.
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_sasl_password_env: str | None = Field(default=None, description="name of the variable holding the password")
    kafka_ssl_ca_file: Path | None = Field(default=None, description="CA bundle (PEM); default: the system's")
    kafka_ssl_cert_file: Path | None = Field(default=None, description="client certificate (PEM), for mTLS")
    kafka_ssl_key_file: Path | None = Field(default=None, description="its private key (PEM)")
    kafka_ssl_key_password_file: Path | None = None
    # Refused when set (see _check_kafka_security): kept as a field only to say where the password goes.
    kafka_sasl_password: SecretStr | None = Field(default=None, exclude=True, repr=False)
    topic_overrides: dict[str, str] = Field(default_factory=dict, description="logical -> physical topic name")
    # Off in production: the topics are made by the platform (Strimzi KafkaTopics) with their
    # replication and ACLs, and a service then needs no right to create or even describe topics.
    kafka_create_topics: bool = Field(default=True, description="create missing catalog topics at start (dev)")
    # None: the catalog's (3), capped at the number of brokers the cluster has (1 on a dev broker).
    kafka_replication_factor: int | None = Field(default=None, ge=1, le=7)
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/gxami")
    # Off where a migration Job runs `gxami db migrate` (Kubernetes): a service then refuses to start
    # on an older schema instead of migrating it at every pod start.
    migrate_on_start: bool = Field(default=True, description="apply pending schema migrations at start")
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # Limits of every HTTP server (see gxami_runtime.http.HttpLimits): slow or huge requests are cut off.
    http_header_timeout_s: float = Field(default=10.0, gt=0, description="a request head must arrive within this")
    http_body_timeout_s: float = Field(default=30.0, gt=0, description="a request body must arrive within this")
    http_keepalive_timeout_s: float = Field(default=75.0, gt=0, description="an idle keep-alive connection is closed")
    http_max_body_bytes: int = Field(default=1024 * 1024, ge=1, description="larger request bodies get 413")
    http_write_rate_per_s: float = Field(default=1.0, gt=0, description="write requests per second per client")
    http_write_burst: int = Field(default=20, ge=1, description="write requests a client may send at once")
    # API tokens (see gxami_runtime.auth): a revoked token still works for up to the cache time.
    http_auth_cache_s: float = Field(default=5.0, ge=0, le=300, description="a verified token is trusted this long")
    http_auth_failure_rate_per_s: float = Field(default=0.1, gt=0, description="failed logins per second per peer")
    http_auth_failure_burst: int = Field(default=10, ge=1, description="failed logins a peer may make at once")
    log_level: str = "INFO"
    instance: str = Field(default="", description="name of this replica in logs and metrics")

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Self:
        if self.kafka_sasl_password is not None:
            raise ValueError(
                "GXAMI_KAFKA_SASL_PASSWORD is not read: put the password in a file (GXAMI_KAFKA_SASL_PASSWORD_FILE) "
                "or name the variable that holds it (GXAMI_KAFKA_SASL_PASSWORD_ENV)"
            )
        check_security(self.kafka_security())
        return self

    def kafka_security(self) -> KafkaSecurity:
        """The Kafka TLS/SASL settings as one value."""
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password_file=self.kafka_sasl_password_file,
            password_env=self.kafka_sasl_password_env,
            ca_file=self.kafka_ssl_ca_file,
            cert_file=self.kafka_ssl_cert_file,
            key_file=self.kafka_ssl_key_file,
            key_password_file=self.kafka_ssl_key_password_file,
        )

    def topic(self, logical: str) -> str:
        """Physical topic name for a logical one."""
        return self.topic_overrides.get(logical, logical)
