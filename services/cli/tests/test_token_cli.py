"""`gxami token create|list|revoke` against a real database: the token is printed once, never listed."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import pytest
from typer.testing import CliRunner

from gxami_cli.main import app
from gxami_store import migrate

pytestmark = pytest.mark.integration


async def test_create_list_and_revoke_a_token(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        monkeypatch.setenv("GXAMI_DATABASE_URL", database_url)
        runner = CliRunner()

        async def gxami(*args: str) -> tuple[int, str, str]:
            result = await asyncio.to_thread(runner.invoke, app, list(args))
            return result.exit_code, result.stdout, result.stderr

        code, out, err = await gxami("token", "create", "--role", "operator", "--name", "ops-bot")
        assert code == 0, err
        token = out.strip()
        token_id = token.split("_")[1]
        assert f"created operator token 'ops-bot' (id {token_id})" in err
        stored = await conn.fetchval("SELECT hash FROM api_tokens WHERE id = $1", token_id)
        assert bytes(stored) == hashlib.sha256(token.encode()).digest()

        code, out, err = await gxami("token", "create", "--role", "operator", "--name", "ops-bot")
        assert (code, out) == (2, "")
        assert "already named 'ops-bot'" in err
        code, _, err = await gxami("token", "create", "--role", "root", "--name", "x")
        assert code == 2 and "--role must be one of viewer, operator, admin" in err

        code, out, _ = await gxami("token", "list")
        assert code == 0 and token_id in out and "ops-bot  operator" in out and "live" in out
        assert token.split("_", 2)[2] not in out

        code, out, _ = await gxami("token", "revoke", "ops-bot")
        assert (code, out.strip()) == (0, f"revoked {token_id}")
        assert await conn.fetchval("SELECT revoked_at IS NOT NULL FROM api_tokens WHERE id = $1", token_id)
        code, _, err = await gxami("token", "revoke", token_id)
        assert code == 1 and "no live token" in err
        assert (await gxami("token", "list"))[1] == ""
        assert "revoked" in (await gxami("token", "list", "--all"))[1]
    finally:
        await conn.close()
