"""Every password HLS mechanism (high, high-md5, high-sha1, high-sha256) through the driver
against the simulator, whose meter side is written independently of gurux (password_hls)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gxami_meterlab.dlms.password_hls import PasswordHls
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_register
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.errors import AccessDeniedError, ConfigurationError
from gxcore.profiles.model import BUILTIN_DIR, load_profile
from gxcore.protocols.dlms.parameters import DlmsParameters
from gxcore.secrets import Secret

NOW = datetime(2025, 1, 15, 13, 7, 30, tzinfo=UTC)
PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
PASSWORD = "Gurux-HLS-12345"  # 15 bytes: within the one AES key of "high"


@pytest.mark.parametrize("mechanism", ["high", "high-md5", "high-sha1", "high-sha256"])
@pytest.mark.parametrize("interface", ["wrapper", "hdlc"])
async def test_password_hls_reads_a_register_and_refuses_a_wrong_password(mechanism: str, interface: str) -> None:
    params = {**PROFILE.parameters, "authentication": mechanism, "interface": interface}
    profile = PROFILE.model_copy(update={"parameters": params})
    async with DlmsFleetSimulator(
        2,
        seed=3,
        clock=lambda: NOW,
        authentication=mechanism,
        password=PASSWORD,
        interface=interface,  # type: ignore[arg-type]
    ) as sim:
        url = f"tcp://127.0.0.1:{sim.meters[1].port}"
        good = MeterTarget("m", url, {}, {"password": Secret(PASSWORD)})
        result = await DlmsDriver().read(good, profile, ReadRequest(), timeout=3)
        got = {r.quantity: r.value for r in result.readings}
        assert float(got["1-0:1.8.0"]) == pytest.approx(expected_register(3, 1, "1-0:1.8.0", NOW) / 1000, abs=1e-9)
        # A second association reads again: nothing of the first is reused (fresh challenges).
        again = await DlmsDriver().read(good, profile, ReadRequest(), timeout=3)
        assert {r.quantity for r in again.readings} == set(got)
        with pytest.raises(AccessDeniedError) as denied:
            await DlmsDriver().read(
                MeterTarget("m", url, {}, {"password": Secret("not-the-password")}), profile, ReadRequest(), timeout=3
            )
        assert "not-the-password" not in str(denied.value) and PASSWORD not in str(denied.value)
        # Another mechanism than the meter's is refused at the AARQ.
        other = "high-md5" if mechanism != "high-md5" else "high-sha1"
        wrong_mechanism = PROFILE.model_copy(update={"parameters": {**params, "authentication": other}})
        with pytest.raises(AccessDeniedError, match="not-recognised"):
            await DlmsDriver().read(good, wrong_mechanism, ReadRequest(), timeout=3)
        # Without the HLS pass (no authentication) the meter demands it.
        plain = PROFILE.model_copy(update={"parameters": {**params, "authentication": "none"}})
        with pytest.raises(AccessDeniedError, match="authentication-required"):
            await DlmsDriver().read(good, plain, ReadRequest(), timeout=3)


def test_password_hls_known_answers() -> None:
    """f(StoC) per mechanism, from the definitions (challenge 00..0f, password "secret")."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    stoc, ctos = bytes(range(16)), bytes(range(16, 32))
    client, meter = b"CLI\x00\x00\x00\x00\x01", b"MTR\x00\x00\x00\x00\x02"
    pw = b"secret"
    aes = Cipher(algorithms.AES(pw.ljust(16, b"\0")), modes.ECB()).encryptor()
    expected = {
        "high": aes.update(stoc) + aes.finalize(),
        "high-md5": hashlib.md5(stoc + pw).digest(),
        "high-sha1": hashlib.sha1(stoc + pw).digest(),
        "high-sha256": hashlib.sha256(pw + client + meter + stoc + ctos).digest(),
    }
    for mechanism, answer in expected.items():
        hls = PasswordHls(mechanism, Secret(pw), meter)
        assert hls.client_answer(stoc, ctos, client) == answer
        assert hls.answer(answer, stoc, ctos, client) == hls.meter_answer(ctos, stoc, client)
        assert hls.answer(answer[:-1] + bytes([answer[-1] ^ 1]), stoc, ctos, client) is None
    assert PasswordHls("high-sha256", Secret(pw), meter).meter_answer(ctos, stoc, client) == (
        hashlib.sha256(pw + meter + client + ctos + stoc).digest()
    )


def test_password_hls_needs_a_password() -> None:
    for mechanism in ("high", "high-md5", "high-sha1", "high-sha256"):
        with pytest.raises(ConfigurationError, match="password"):
            DlmsParameters(authentication=mechanism)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="at most 16"):
        DlmsParameters(authentication="high", password="x" * 17)
