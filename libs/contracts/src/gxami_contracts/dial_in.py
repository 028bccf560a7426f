"""Dial-in work and claims: how a dial-in meter's due reads reach whichever collector it calls.

A meter that dials in (``connection: dial-in``) has no address we can reach; it calls one of
several collector replicas behind one service address, when it likes. So its due work cannot
go on ``ami.read-jobs`` (a partition's jobs go to one consumer of the group, not to the replica
the meter happens to reach). Instead:

* the scheduler publishes each dial-in meter's pending jobs as one :class:`DialInWork` on the
  *compacted* topic ``ami.dial-in-work``, keyed by meter id: the latest record is the meter's
  whole pending set, a tombstone means "nothing pending";
* every collector replica with a dial-in listener reads the whole topic into memory (like
  ``ami.fleet``), so whichever replica the meter reaches knows its work;
* before serving, that replica publishes a :class:`DialInClaim` for the job ids on the compacted
  topic ``ami.dial-in-claims`` (key meter id, so one partition orders all claims of a meter),
  reads that partition up to its own claim, and serves only the jobs whose *first* live claim
  in the log is its own. Both replicas read the same log in the same order, so they agree on
  the winner: a job is served by one replica even when the meter calls the other before the
  scheduler's next :class:`DialInWork` arrives there. A claim lives until ``expires_at`` (a
  replica that died mid-session frees the job then);
* the replica publishes readings, events and a JobResult exactly as for a read job; the
  scheduler, on the result, publishes the meter's new pending set (a tombstone when none);
* every call of a known dial-in meter, served or not (nothing pending, claimed elsewhere, failed),
  is reported as a :class:`DialInContact` on ``ami.dial-in-contacts``: the scheduler records the
  meter's last contact from it, also for calls that had no work.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gxami_contracts.messages import Instant, Message, MessageId, MeterId, ReadJob, Text

ContactOutcome = Literal["served", "failed", "no-work", "claimed-elsewhere"]

MAX_PENDING_JOBS = 16


class DialInWork(Message):
    """A dial-in meter's pending jobs, served when it next calls. Keyed by meter id; tombstone: none."""

    max_wire_bytes: ClassVar[int] = 256 * 1024

    meter_id: MeterId
    jobs: list[ReadJob] = Field(min_length=1, max_length=MAX_PENDING_JOBS)
    updated_at: Instant


class DialInClaim(Message):
    """A collector replica takes some of a meter's pending jobs for the session it is serving. Keyed by meter id."""

    max_wire_bytes: ClassVar[int] = 16 * 1024

    claim_id: MessageId
    meter_id: MeterId
    job_ids: list[MessageId] = Field(min_length=1, max_length=MAX_PENDING_JOBS)
    replica: Annotated[Text, Field(min_length=1, max_length=200)]
    claimed_at: Instant
    expires_at: Instant


class DialInContact(Message):
    """A known dial-in meter called a collector replica; what came of the call. Keyed by meter id."""

    max_wire_bytes: ClassVar[int] = 4 * 1024

    meter_id: MeterId
    at: Instant  # when the call ended
    replica: Annotated[Text, Field(min_length=1, max_length=200)]
    outcome: ContactOutcome
    jobs_served: Annotated[int, Field(ge=0, le=MAX_PENDING_JOBS)] = 0
