"""Collector settings (GXAMI_ prefix); the only place the collector reads the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from gxami_collector.networks import (
    DEFAULT_NETWORKS,
    DEFAULT_RESOLVE_TIMEOUT_S,
    DEFAULT_SCHEMES,
    DEFAULT_SERIAL_DEVICES,
    MeterNetworks,
    NetworkRule,
    parse_schemes,
    parse_serial_device,
)
from gxami_contracts.topics import COMMANDS, READ_JOBS
from gxami_runtime.settings import ServiceSettings
from gxcore.errors import ConfigurationError


def _state_dir() -> Path:
    """``$XDG_STATE_HOME/gxami`` (``~/.local/state/gxami`` without XDG_STATE_HOME)."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "gxami"


def _state_file() -> Path:
    """``$XDG_STATE_HOME/gxami/invocation-counters.json`` (``~/.local/state`` without XDG_STATE_HOME)."""
    return _state_dir() / "invocation-counters.json"


# An identification line such as ``SIM00200007\r\n`` (printable, no spaces), before any DLMS frame.
DIAL_IN_IDENT_PATTERN = r"^(?P<id>[A-Za-z0-9][A-Za-z0-9._:-]{0,63})\r?\n"

_UNITS = {"s": 1, "m": 60, "h": 3600}


def _seconds(value: object) -> object:
    """``90``, ``"90s"``, ``"2m"``, ``"1h"`` as seconds; anything else is left to the float check."""
    if isinstance(value, str) and value.strip()[-1:].lower() in _UNITS:
        number = value.strip()[:-1].strip()
        try:
            return float(number) * _UNITS[value.strip()[-1].lower()]
        except ValueError:
            raise ValueError("a duration such as 90s, 2m or 1h") from None
    return value


# Comma-separated in the environment (GXAMI_ALLOWED_NETWORKS=10.20.0.0/16:4059,10.30.0.0/16); empty: none.
CommaList = Annotated[list[str], NoDecode]


class CollectorSettings(ServiceSettings):
    # The Kafka consumer group of this service's replicas.
    consumer_group: str = "collector"
    # Meter sessions this collector runs at once.
    concurrency: int = Field(default=64, ge=1, le=100_000)
    # Seconds one request to a meter may take before it is retried or the session fails.
    exchange_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Upper bound on one whole meter session (association, all reads, release).
    session_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    # The meters' passwords and keys (YAML; see the README's secrets-file format).
    secrets_file: Path | None = None
    # DLMS security suite 0: the invocation counter of each meter must never be reused (GCM nonce).
    # Reserved in this file before use, so a restart or a crash never repeats one; it must be on a
    # persistent volume (see deploy/k8s/base/services/collector.yaml). Processes sharing it (replicas on one
    # volume, `gxami read --counters-file`) are safe: it is locked across processes.
    # Default: the user's XDG state dir (local runs); deployments set GXAMI_INVOCATION_COUNTERS_FILE.
    invocation_counters_file: Path = Field(default_factory=_state_file)
    # Many pods: the counters (and each meter's session lock) in PostgreSQL instead of the file,
    # with the collector's own role (GRANT gxami_collector, migration 0017). Unset: the file.
    invocation_counters_dsn: SecretStr | None = Field(default=None, repr=False)
    # Where read jobs may send the collector (see gxami_collector.networks). The default network
    # is loopback only, for a local run and the tests: a deployment lists its meter networks.
    allowed_schemes: CommaList = Field(default_factory=lambda: list(DEFAULT_SCHEMES))
    # Meter networks read jobs may reach, CIDR[:port-range], comma-separated (default: loopback only).
    allowed_networks: CommaList = Field(default_factory=lambda: list(DEFAULT_NETWORKS))
    # Serial devices read jobs may open (glob patterns such as /dev/ttyUSB*), comma-separated.
    allowed_serial_devices: CommaList = Field(default_factory=lambda: list(DEFAULT_SERIAL_DEVICES))
    # How long resolving a meter's host name may take.
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S
    # Edge collector (see gxami_collector.spool and README "Edge collectors"): with a site, this
    # collector takes only that site's jobs (topic ``<read-jobs>.<site>``, group ``<group>.<site>``)
    # and spools what it produces. Letters, digits, - and _ (a part of a Kafka topic name).
    site: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    # The spool: on with a site (default folder in the state dir, one per site) or with a folder.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=1 << 30, ge=4096, description="bound on spooled keys and values")
    spool_high_water: float = Field(default=0.8, gt=0, le=1, description="share of the bound: alarm, no new jobs")
    # Local schedule of a site collector (gxami_collector.edge_schedule): with no job from the
    # scheduler for this long, it reads its site's meters from its local copy of the fleet.
    edge_autonomous_after: Annotated[float, BeforeValidator(_seconds)] = Field(
        default=120.0, ge=5, le=86400, description="no scheduler jobs this long: the edge reads on its own"
    )
    # Push listeners (gxami_collector.listeners): kind@tcp://host:port or kind@udp://host:port, comma-separated.
    listeners: CommaList = Field(default_factory=list)
    # A push connection (or datagram) that moves nothing for this long is closed.
    push_idle_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # Connections the push and dial-in listeners accept at once; more are refused and counted.
    listener_max_connections: int = Field(default=1024, ge=1, le=100_000)
    # The last invocation counter seen per system title (replay protection); on a persistent volume.
    push_counters_file: Path = Field(default_factory=lambda: _state_file().with_name("push-counters.json"))
    # Continuous wM-Bus receivers (gxami_collector.wmbus_service), comma-separated:
    # tcp://host:port?framing=hex, serial:///dev/ttyUSB0?framing=im871a&baud=57600.
    wmbus_receivers: CommaList = Field(default_factory=list)
    # A receiver that delivers nothing for this long is reconnected (its read timeout).
    wmbus_idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    # Connecting to a wM-Bus receiver times out after this.
    wmbus_connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    wmbus_reconnect_max_s: float = Field(default=30.0, gt=0, le=3600, description="backoff cap between connects")
    # The heard list (IDs the fleet does not know, per receiver) for `gxami wmbus heard --from-file`.
    wmbus_heard_file: Path = Field(default_factory=lambda: _state_dir() / "wmbus-heard.json")
    # Commands (gxami_collector.commands): off for a collector that only reads. The record of
    # finished commands keeps a redelivered command from running twice: a folder on the persistent
    # volume the replicas share (beside the invocation counters), see gxami_collector.command_records.
    commands_enabled: bool = True
    # Folder of finished command runs (shared by the replicas; see GXAMI_COMMANDS_ENABLED).
    command_records_dir: Path = Field(default_factory=lambda: _state_dir() / "command-runs")
    # A record is kept this long after its command expired (a later redelivery is refused as expired anyway).
    command_records_days: float = Field(default=7.0, gt=0, le=366)
    # A command that arrives before its not_before is held this long at most (its link waits), else failed.
    command_early_wait_s: float = Field(default=30.0, ge=0, le=600)
    # How far a clock read back after clock-set/clock-sync may be from the time set, and still succeed.
    command_clock_tolerance_s: float = Field(default=5.0, gt=0, le=3600)
    # Firmware images (gxami_collector.firmware_images): fetched by SHA-256 from the scheduler's API
    # with a viewer token (given here or, better, in a file), checked, cached on disk.
    scheduler_api_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    scheduler_api_token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    # File holding the viewer token the collector uses to fetch firmware images.
    scheduler_api_token_file: Path | None = None
    # Where fetched firmware images are kept, by SHA-256 (re-hashed before each use).
    firmware_cache_dir: Path = Field(default_factory=lambda: _state_dir() / "firmware")
    # Every read of a firmware image from the scheduler's API times out after this.
    firmware_fetch_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Upper bound on one firmware-update session (an image transfer takes far longer than a read);
    # an interrupted one resumes from the meter's first missing block when the command comes again.
    firmware_session_timeout_s: float = Field(default=4 * 3600.0, gt=0, le=86_400)
    # A push from an unknown meter registers it with this device profile (as Gurux AMI4 does):
    # served at once, and the scheduler asked (ami.registrations) to add it to the registry.
    push_auto_register: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("secrets_file", "scheduler_api_token_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file {value}")
        return value

    # Dial-in listeners (gxami_collector.dialin; kind ``dlms-dial-in`` in GXAMI_LISTENERS).
    dial_in_max_sessions: int = Field(default=256, ge=1, le=100_000, description="dial-in sessions at once")
    # A modem may send an identification line first; the ``id`` group names the meter (serial / meter id).
    dial_in_ident_pattern: str = DIAL_IN_IDENT_PATTERN
    dial_in_ident_wait_s: float = Field(default=1.0, gt=0, le=60, description="wait for an ident line, then associate")
    # Association parameters (public client) for reading the logical device name of an unnamed caller.
    dial_in_profile: str = Field(default="generic-dlms", min_length=1, max_length=100)
    # A caller silent this long between bytes is hung up on (a typed timeout; its work stays pending).
    dial_in_idle_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # How long a replica's claim on a meter's jobs holds if it never reports (it died mid-session).
    dial_in_claim_s: float = Field(default=180.0, ge=10, le=86_400)
    dial_in_claim_wait_s: float = Field(default=10.0, gt=0, le=120, description="bound on seeing our own claim")

    @field_validator("dial_in_ident_pattern")
    @classmethod
    def _ident_pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value.encode())
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "id" not in compiled.groupindex:
            raise ValueError("needs a named group (?P<id>...) for the meter's identity")
        return value

    @model_validator(mode="after")
    def _claim_outlives_session(self) -> CollectorSettings:
        # A claim must hold while its session can still run, or another replica could serve the job too.
        if self.dial_in_claim_s <= self.session_timeout_s:
            raise ValueError(
                f"dial_in_claim_s ({self.dial_in_claim_s:g}) must exceed session_timeout_s ({self.session_timeout_s:g})"
            )
        return self

    @field_validator("allowed_schemes", "allowed_networks", "allowed_serial_devices", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("listeners", mode="before")
    @classmethod
    def _split_listeners(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("wmbus_receivers", mode="before")
    @classmethod
    def _split_receivers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("wmbus_receivers")
    @classmethod
    def _receivers(cls, value: list[str]) -> list[str]:
        from gxami_collector.wmbus_service import ReceiverSpec  # it imports these settings: a cycle at import

        for text in value:
            try:
                ReceiverSpec.parse(text)
            except ConfigurationError as exc:
                raise ValueError(exc.reason) from None
        return value

    @field_validator("allowed_schemes")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        return sorted(parse_schemes(value))

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(NetworkRule.parse(v)) for v in value]

    @field_validator("allowed_serial_devices")
    @classmethod
    def _serial(cls, value: list[str]) -> list[str]:
        return [parse_serial_device(v) for v in value]

    @field_validator("resolve_timeout_s")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0 < value <= 60:
            raise ValueError("must lie in (0, 60] seconds")
        return value

    def meter_networks(self) -> MeterNetworks:
        """The allow-list these settings describe."""
        return MeterNetworks.of(
            self.allowed_schemes,
            self.allowed_networks,
            self.allowed_serial_devices,
            resolve_timeout=self.resolve_timeout_s,
        )

    def spool_path(self) -> Path | None:
        """The spool folder, or None when this collector sends directly (no site, no spool folder)."""
        if self.spool_dir is not None:
            return self.spool_dir
        return _state_dir() / "spool" / self.site if self.site else None

    def jobs_topic(self) -> str:
        """The physical topic this collector takes jobs from: its site's, or the central one."""
        central = self.topic(READ_JOBS.name)
        return f"{central}.{self.site}" if self.site else central

    def jobs_group(self) -> str:
        """Its consumer group: one per site, so that one site's rebalances never pause another's."""
        return f"{self.consumer_group}.{self.site}" if self.site else self.consumer_group

    def commands_topic(self) -> str:
        """The physical topic this collector takes commands from: its site's, or the central one."""
        central = self.topic(COMMANDS.name)
        return f"{central}.{self.site}" if self.site else central

    def commands_group(self) -> str:
        """The commands consumer's group: apart from the jobs' group, so neither's rebalance pauses the other."""
        return f"{self.jobs_group()}.commands"
