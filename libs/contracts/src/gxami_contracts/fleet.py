"""The fleet directory on ``ami.fleet``: how a collector knows the meters that contact it.

A polled meter needs nothing of the sort: its read job carries its URL, profile and options. A
meter without a static address pushes or dials in, and the collector that answers must find it
by what the meter says about itself (its DLMS system title, serial number or logical device
name, its wM-Bus id). So the scheduler publishes its registry, one :class:`FleetEntry` per
meter, on the *compacted* topic ``ami.fleet`` keyed by meter id; a tombstone (a record with no
value) removes a meter. Every collector reads the whole topic from the beginning into an
in-memory directory keyed by identity, and follows it.

Why a compacted topic and not database access from the edge:

* a collector at a site opens outbound connections only, to the broker (TLS, SCRAM); giving it
  the registry database as well would mean a second credential, a second firewall opening and a
  database that sees every edge's connection churn;
* the broker already delivers in order per meter (key = meter id) and compaction keeps the
  latest entry of each meter for ever, so a collector that starts, restarts or was cut off for a
  day catches up by reading the topic, with no query load on the database;
* an edge collector that cannot reach anything keeps serving pushes from the directory it has
  (the next step, a local copy on disk, reads the same records).

What an entry never holds: keys, passwords or any secret. The collector takes those from its
own secret store by meter id, after the identity has been matched.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gxami_contracts.messages import (
    Instant,
    LinkId,
    Message,
    MeterId,
    MeterUrl,
    OptionName,
    Options,
    ProfileName,
    ProtocolName,
    Text,
)

Connection = Literal["poll", "push", "dial-in"]
"""How the meter is reached: we poll its address, it pushes to a listener, or it dials in and is served."""

SystemTitle = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]  # 8 bytes as lower-case hex
DeviceName = Annotated[Text, Field(min_length=1, max_length=64)]  # serial number / logical device name
WmbusId = Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,32}$")]  # as the fleet file writes it
# The edge site whose collector reads the meter: a part of a Kafka topic name (``ami.read-jobs.<site>``).
SiteName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]


class FleetEntry(Message):
    """One meter of the registry as collectors need it to recognise and serve it. Keyed by meter id."""

    max_wire_bytes: ClassVar[int] = 64 * 1024

    meter_id: MeterId
    protocol: ProtocolName
    url: MeterUrl
    link_id: LinkId
    profile: ProfileName
    group: Annotated[Text, Field(max_length=100)] = ""
    connection: Connection = "poll"
    interval_s: Annotated[int, Field(ge=60, le=366 * 86400)]
    options: Options = Field(default_factory=dict)
    purposes: list[OptionName] = Field(default_factory=lambda: ["billing"], max_length=16)
    enabled: bool = True
    # Identities a listener matches a meter on; any may be absent.
    system_title: SystemTitle | None = None
    serial: DeviceName | None = None
    wmbus_id: WmbusId | None = None
    updated_at: Instant
    # The edge site that reads the meter (its jobs go to ``ami.read-jobs.<site>``); None: the centre.
    # An edge collector keeps its site's entries on disk and reads them on its own when the
    # scheduler's jobs stop coming (gxami_collector.edge_schedule).
    site: SiteName | None = None

    def identities(self) -> list[str]:
        """The identities this meter is found by, as drivers report them (system title hex, names)."""
        return [i for i in (self.system_title, self.serial, self.wmbus_id) if i]


class MeterRegistration(Message):
    """A collector heard a meter the registry does not have and asks the scheduler to register it.

    Sent on ``ami.registrations`` (keyed by meter id) when a listener runs with auto-registration
    (``GXAMI_PUSH_AUTO_REGISTER=<default profile>``, as Gurux AMI4 does). The scheduler owns the
    registry: it inserts the meter (never overwriting one an operator registered meanwhile) and
    publishes it on ``ami.fleet`` like any other, so every replica comes to know it. Never a key.
    """

    max_wire_bytes: ClassVar[int] = 16 * 1024

    meter_id: MeterId
    protocol: ProtocolName
    url: MeterUrl  # the listener that heard it
    profile: ProfileName
    connection: Connection = "push"
    options: Options = Field(default_factory=dict)  # e.g. the security a ciphered push showed; never a key
    system_title: SystemTitle | None = None
    serial: DeviceName | None = None
    heard_at: Instant
