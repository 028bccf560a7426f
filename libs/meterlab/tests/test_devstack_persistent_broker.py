"""A persistent dev-stack broker: Tansu on the local S3 store keeps topics, records and committed
offsets across a SIGKILL and restart, and the store refuses conditional writes that do not hold."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gxami_meterlab.devstack import DevStack
from gxami_meterlab.devstack_procs import DevStackError
from gxami_meterlab.devstack_s3 import BUCKET, S3Store

pytestmark = pytest.mark.integration


async def _consume(bootstrap: str, topic: str, want: int, *, commit: bool) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id="g", enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        for _ in range(40):
            for recs in (await consumer.getmany(timeout_ms=250, max_records=want - len(got))).values():
                got.extend(r.value or b"" for r in recs)
            if len(got) >= want:
                break
        if commit:
            await consumer.commit({TopicPartition(topic, 0): len(got)})
        return got
    finally:
        await consumer.stop()


async def test_broker_restart_keeps_records_and_committed_offsets(tmp_path: Path) -> None:
    # DevStack starts and kills processes synchronously: in a thread, so the test's loop is never blocked.
    stack = DevStack(tmp_path / "stack", fresh=True, keep_data=False, persistent_broker=True)
    await asyncio.to_thread(stack.start)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(20):
                await producer.send_and_wait("p.t", f"m{i}".encode(), partition=0)
        finally:
            await producer.stop()
        first = await _consume(stack.kafka_bootstrap, "p.t", 10, commit=True)
        port = stack.endpoints.kafka_bootstrap

        await asyncio.to_thread(stack.restart_broker, kill=True)

        assert stack.endpoints.kafka_bootstrap == port
        rest = await _consume(stack.kafka_bootstrap, "p.t", 10, commit=False)
    finally:
        await asyncio.to_thread(stack.stop)
    assert first == [f"m{i}".encode() for i in range(10)]
    assert rest == [f"m{i}".encode() for i in range(10, 20)], "the group resumes at its committed offset"


def test_a_memory_broker_is_not_restarted(tmp_path: Path) -> None:
    with DevStack(tmp_path / "stack", fresh=True, keep_data=False) as stack, pytest.raises(DevStackError):
        stack.restart_broker()


def _put(port: int, key: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("PUT", f"/{BUCKET}/{key}", body=body, headers=headers)
        reply = conn.getresponse()
        reply.read()
        return reply.status, reply.getheader("ETag")
    finally:
        conn.close()


def test_the_store_keeps_s3_conditional_writes(tmp_path: Path) -> None:
    store = S3Store(tmp_path / "s3")
    store.start(timeout=30)
    try:
        status, etag = _put(store.port, "a/b.batch", b"one", {"If-None-Match": "*"})
        assert status == 200 and etag
        assert _put(store.port, "a/b.batch", b"two", {"If-None-Match": "*"})[0] == 412  # exists: not overwritten
        assert _put(store.port, "a/b.batch", b"three", {"If-Match": '"0123"'})[0] == 412  # stale ETag
        assert _put(store.port, "a/b.batch", b"four", {"If-Match": etag})[0] == 200
        assert _put(store.port, "a/c.batch", b"five", {"If-Match": etag})[0] == 412  # no such object
    finally:
        store.stop(timeout=10)
