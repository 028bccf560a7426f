"""Scheduler test fixtures: a device-profile folder, a migrated database per test, a fixed clock.

The broker/database stack and ``database_url`` (an empty database per test) come from the
workspace conftest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from gxami_store import migrate
from gxcore.profiles import ProfileCatalog

T0 = datetime(2025, 3, 1, 12, 0, 7, tzinfo=UTC)

PROFILE = """\
name: {name}
protocol: {protocol}
points:
  - quantity: "1-0:1.8.0"
    unit: kWh
    source: "3:1-0:1.8.0.255:2"
    purpose: [billing]
  - quantity: "1-0:1.8.0"
    unit: kWh
    source: "7:1-0:99.1.0.255:2"
    purpose: [load-profile]
"""


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    for name, protocol in (("em-dlms", "dlms"), ("em-modbus", "modbus"), ("water-mbus", "mbus")):
        (folder / f"{name}.yaml").write_text(PROFILE.format(name=name, protocol=protocol))
    return folder


@pytest.fixture
def profiles(profile_dir: Path) -> ProfileCatalog:
    return ProfileCatalog(profile_dir)


@pytest_asyncio.fixture(loop_scope="function")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's own database, schema applied."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture(loop_scope="function")
async def tokens(db: asyncpg.Connection) -> dict[str, dict[str, str]]:
    """A viewer and an operator token in this test's database, as request headers by role name."""
    from gxami_runtime.auth import Role, create_token

    made = {role: await create_token(db, f"test-{role}", role, "pytest") for role in (Role.VIEWER, Role.OPERATOR)}
    return {str(role): {"Authorization": f"Bearer {t.token}"} for role, t in made.items()}
