"""Read jobs of edge sites: each site's jobs go to a topic of its own, ``<read-jobs>.<site>``.

Why a topic per site (and not site-keyed partitions of one topic): see the collector's app module
and README "Edge collectors". In short, an offline site's backlog then sits in its own topic and
nowhere else, a flapping uplink rebalances its own group only, and an edge's Kafka user can be
granted its site's topic alone.

The physical name is the central topic's physical name (after ``GXAMI_TOPIC_OVERRIDES``) with
``.<site>`` appended; the collector's ``CollectorSettings.jobs_topic`` computes the very same.
In development the scheduler creates a site's topic the first time it sends there, as every
service creates the catalog's topics; where its Kafka user may not (production, topics managed
by Strimzi), a warning says so once and it sends anyway: the topic must exist. With
``GXAMI_KAFKA_CREATE_TOPICS=false`` nothing is created (``ensure_topics``): declare a topic per site.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from gxami_contracts.messages import Message
from gxami_contracts.topics import READ_JOBS
from gxami_runtime.kafka import Publisher, ensure_topics
from gxami_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)


def site_jobs_topic(settings: ServiceSettings, site: str) -> str:
    """The physical read-jobs topic of ``site``."""
    return f"{settings.topic(READ_JOBS.name)}.{site}"


class JobSender(Protocol):
    """What the tick loop needs of the broker (``gxami_runtime.kafka.Publisher`` fits)."""

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None: ...


class SiteSenders(Protocol):
    """The sender of one site's read jobs."""

    async def for_site(self, site: str) -> JobSender: ...


class SitePublishers:
    """A :class:`Publisher` per site, whose read-jobs topic is the site's; the topic is created once if it may be."""

    def __init__(self, producer: AIOKafkaProducer, settings: ServiceSettings) -> None:
        self._producer = producer
        self._settings = settings
        self._publishers: dict[str, Publisher] = {}

    async def for_site(self, site: str) -> JobSender:
        publisher = self._publishers.get(site)
        if publisher is not None:
            return publisher
        topic = site_jobs_topic(self._settings, site)
        routed = self._settings.model_copy(
            update={"topic_overrides": {**self._settings.topic_overrides, READ_JOBS.name: topic}}
        )
        try:
            await ensure_topics(routed, [READ_JOBS.name])
        except (KafkaConnectionError, OSError):
            raise  # the broker is away: this tick's jobs of the site are released, and tried again
        except KafkaError as exc:  # e.g. a user without the right to create topics: it must exist
            log.warning(
                "cannot create a site's jobs topic; it must exist already",
                extra={"site": site, "topic": topic, "error": type(exc).__name__},
            )
        publisher = self._publishers[site] = Publisher(self._producer, routed)
        log.info("sending a site's read jobs to its own topic", extra={"site": site, "topic": topic})
        return publisher


class NoSites:
    """For a scheduler given no site senders: a site meter's jobs cannot be sent (and are released)."""

    async def for_site(self, site: str) -> JobSender:
        raise LookupError(f"no sender for the read jobs of site {site!r}")
