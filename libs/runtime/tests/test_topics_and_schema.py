"""Topic creation from the catalog (or none, in production) and the schema check at start (issue 13, item 2)."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from gxami_contracts.topics import CATALOG, DEAD_LETTER, READINGS
from gxami_meterlab.devstack import StackEndpoints
from gxami_runtime.kafka import ensure_topics, topic_configs
from gxami_runtime.settings import ServiceSettings
from gxami_store.migrations import MIGRATIONS, SchemaNotReadyError, migrate, pending_migrations, prepare_schema


def test_the_catalog_gives_every_topic_a_retention_and_a_production_replication() -> None:
    for spec in CATALOG.values():
        assert spec.replication_factor == 3, spec.name
        assert (spec.retention_ms is None) == spec.compacted, spec.name  # compacted: kept for ever
    assert topic_configs(READINGS) == {"retention.ms": str(7 * 86_400_000)}
    assert topic_configs(CATALOG["ami.fleet"]) == {"cleanup.policy": "compact"}
    assert topic_configs(CATALOG[DEAD_LETTER])["retention.ms"] == str(30 * 86_400_000)


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_topics_are_created_capped_at_the_brokers_or_not_at_all(stack: StackEndpoints, topic_prefix: str) -> None:
    names = {"ami.readings": f"{topic_prefix}readings", "ami.fleet": f"{topic_prefix}fleet"}
    off = ServiceSettings(kafka_bootstrap=stack.kafka_bootstrap, topic_overrides=names, kafka_create_topics=False)
    await ensure_topics(off, list(names))
    assert not set(names.values()) & await _topics(stack.kafka_bootstrap)  # production: the platform makes them
    on = off.model_copy(update={"kafka_create_topics": True})
    await ensure_topics(on, list(names))  # the catalog says 3 copies; the dev broker has one
    assert set(names.values()) <= await _topics(stack.kafka_bootstrap)


async def test_a_service_that_may_not_migrate_refuses_an_older_schema(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        assert await pending_migrations(conn) == [m.name for m in MIGRATIONS]
        with pytest.raises(SchemaNotReadyError, match=f"lacks {len(MIGRATIONS)} migration.*gxami db migrate"):
            await prepare_schema(conn, migrate_now=False)
        await migrate(conn, up_to=MIGRATIONS[-2].version)  # as the previous release left it
        with pytest.raises(SchemaNotReadyError, match=f"lacks 1 migration.*from {MIGRATIONS[-1].name}"):
            await prepare_schema(conn, migrate_now=False)
        assert await prepare_schema(conn, migrate_now=True) == [MIGRATIONS[-1].name]
        assert await prepare_schema(conn, migrate_now=False) == []
    finally:
        await conn.close()


async def test_a_consumer_reports_its_lag_after_each_commit(stack: StackEndpoints, topic_prefix: str) -> None:
    from aiokafka import AIOKafkaProducer

    from gxami_runtime.kafka import CONSUMER_LAG, commit, make_consumer

    topic = f"{topic_prefix}lag"
    s = ServiceSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        topic_overrides={"ami.readings": topic},
    )
    await ensure_topics(s, ["ami.readings"])
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"{i}".encode(), partition=0)
    finally:
        await producer.stop()
    group = f"{topic_prefix}group"
    consumer = make_consumer(s, group, topic)
    await consumer.start()
    try:
        got: list[int] = []
        while len(got) < 3:
            for tp, records in (await consumer.getmany(timeout_ms=2000, max_records=3 - len(got))).items():
                got += [r.offset for r in records]
                last = tp
        await commit(consumer, {last: got[-1] + 1})
        assert CONSUMER_LAG.labels(group, topic, "0")._value.get() == 7  # 10 written, 3 committed
    finally:
        await consumer.stop()
