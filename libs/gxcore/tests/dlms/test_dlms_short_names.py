"""Short-name referencing, against a recorded session.

gurux-dlms 1.0.203's short-name *server* is too broken to serve (it calls an attribute as a
method, computes attribute indexes as floats, calls ``size(0)`` on an int), so the client
is tested against a meter that replays recorded replies. The frames follow IEC 62056-5-3
(ReadRequest 0x05 / ReadResponse 0x0C, variable-name 0x02 / parameterized-access 0x04,
Association SN at base name 0xFA00) and the client's requests are checked byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gxcore.drivers import MeterTarget
from gxcore.drivers.dlms.driver import dlms_parameters
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import ProtocolError
from gxcore.profiles.model import DeviceProfile, ProfilePoint
from gxcore.protocols.dlms import CosemValue, DlmsParameters, ProfileRange
from gxcore.protocols.dlms import wrapper as wrapper_frames
from gxcore.protocols.dlms.cosem_time import encode_datetime

NOW = datetime(2024, 2, 29, 23, 45, tzinfo=UTC)
T = encode_datetime(NOW).hex()
# AARE: application context "short names" (2), accepted, InitiateResponse with VAA name FA00.
AARE = "6129a109060760857405080102a203020100a305a103020100be10040e0800065f1f04001c1320020" + "0fa00"
# Object list of Association SN: {base_name, class_id, version, logical_name} per object.
OBJECTS = (
    "0105"
    "0204 10fa00 12000c 1100 0906 0000280000ff"  # Association SN      FA00
    "0204 100100 120008 1100 0906 0000010000ff"  # Clock               0100
    "0204 100200 120003 1100 0906 0100010800ff"  # Register 1-0:1.8.0  0200
    "0204 100300 120003 1100 0906 0100200700ff"  # Register 1-0:32.7.0 0300
    "0204 100400 120007 1101 0906 0100630100ff"  # Profile 1-0:99.1.0  0400
)
CAPTURE = "0102 0204 120008 0906 0000010000ff 0f02 120000  0204 120003 0906 0100010800ff 0f02 120000"
ROW_1, ROW_2 = NOW - timedelta(minutes=15), NOW
BUFFER = (
    f"0102 0202 090c {encode_datetime(ROW_1).hex()} 0600001000  0202 090c {encode_datetime(ROW_2).hex()} 0600001004"
)
RECORDED = {
    # request APDU (after the wrapper header)  ->  reply APDU
    "050102fa08": "0c0100" + OBJECTS,  # READ object list (FA00 + 8 = attribute 2)
    "0501020108": "0c0100090c" + T,  # READ clock time (0100 + 8)
    "0501020210": "0c01000202 0f00 161e",  # READ 1-0:1.8.0 scaler_unit (0200 + 16): 0, Wh
    "0501020208": "0c0100 0600bc614e",  # READ 1-0:1.8.0 value: 12345678
    "0501020310": "0c01000202 0fff 1623",  # READ 1-0:32.7.0 scaler_unit: -1, V
    "0501020308": "0c0100 1208fd",  # READ 1-0:32.7.0 value: 2301
    "0501020410": "0c0100" + CAPTURE,  # READ profile capture objects (attribute 3)
}


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


class RecordedMeter:
    """Answers each request with its recorded reply; keeps what it was asked, in order."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def reply(self, apdu: bytes) -> bytes:
        key = apdu.hex()
        self.requests.append(key)
        if apdu[:1] == b"\x60":
            assert apdu[12] == 0x02, "the AARQ must propose short-name referencing"
            return _hex(AARE)
        if apdu[:1] == b"\x62":
            return _hex("6303800100")  # RLRE, normal
        if key.startswith("0501040408"):  # parameterized access to the buffer: a range read
            return _hex("0c0100" + BUFFER)
        recorded = RECORDED.get(key)
        return _hex(recorded) if recorded else _hex("0c010104")  # data-access-error object-undefined

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        try:
            while chunk := await reader.read(4096):
                buffer += chunk
                while True:
                    used, frame = wrapper_frames.decode(buffer)
                    if frame is None:
                        break
                    del buffer[:used]
                    writer.write(wrapper_frames.encode(1, 16, self.reply(frame.apdu)))
                await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def recorded_meter() -> AsyncIterator[tuple[RecordedMeter, int]]:
    meter = RecordedMeter()
    server = await asyncio.start_server(meter.serve, "127.0.0.1", 0)
    try:
        yield meter, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


SN = DlmsParameters(logical_name_referencing=False)


async def test_short_name_read_of_clock_and_registers() -> None:
    async with recorded_meter() as (meter, port), DlmsSession(f"tcp://127.0.0.1:{port}", SN, timeout=2) as session:
        meter_time = await session.read_clock()
        energy = await session.read_value(CosemValue("1.0.1.8.0.255"))
        voltage = await session.read_value(CosemValue("1.0.32.7.0.255"))
        asked = len(meter.requests)
        with pytest.raises(ProtocolError):  # not in the object list: never asked
            await session.read_value(CosemValue("1.0.2.8.0.255"))
        assert len(meter.requests) == asked
    assert meter_time == NOW
    assert (energy, voltage) == ((12345678, "Wh"), (Decimal("230.1"), "V"))
    # AARQ: short names proposed (context 2), InitiateRequest with the SN conformance block.
    assert meter.requests[0] == "601da109060760857405080102be10040e01000000065f1f04001c03200400"
    assert meter.requests[1:] == [
        "050102fa08",  # ReadRequest, 1 item, variable-name FA00 + 8: the object list
        "0501020108",  # clock time
        "0501020210",  # 1-0:1.8.0 scaler_unit, then its value
        "0501020208",
        "0501020310",  # 1-0:32.7.0 scaler_unit, then its value
        "0501020308",
        "6203800100",  # RLRQ, reason normal
    ]


async def test_short_name_profile_by_range_uses_parameterized_access() -> None:
    window = ProfileRange("1.0.99.1.0.255", ROW_1, ROW_2)
    async with recorded_meter() as (meter, port), DlmsSession(f"tcp://127.0.0.1:{port}", SN, timeout=2) as session:
        await session.read_clock()
        profile = await session.read_profile(window)
    assert [(r.timestamp, r.value) for r in profile] == [(ROW_1, 4096.0), (ROW_2, 4100.0)]
    ranged = next(r for r in meter.requests if r.startswith("050104"))
    # ReadRequest, 1 item, parameterized-access, base 0400 + 8, selector 1 and the range descriptor.
    assert ranged.startswith("0501040408" + "01" + "0204" + "0204" + "120008" + "0906" + "0000010000ff")
    assert encode_datetime(ROW_1).hex() in ranged and encode_datetime(ROW_2).hex() in ranged


async def test_an_object_of_another_class_is_refused_before_asking() -> None:
    async with recorded_meter() as (meter, port), DlmsSession(f"tcp://127.0.0.1:{port}", SN, timeout=2) as session:
        asked = len(meter.requests)
        with pytest.raises(ProtocolError, match="class 3"):
            await session.get(4, "1.0.1.8.0.255", 2)
        assert len(meter.requests) == asked
        assert session.core.short_names["1.0.1.8.0.255"] == (0x0200, 3)
        assert session.core.short_names["0.0.40.0.0.255"] == (0xFA00, 12)


def test_driver_parameter_selects_short_names() -> None:
    profile = DeviceProfile(
        name="sn-meter",
        protocol="dlms",
        parameters={"referencing": "sn"},
        points=[ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="1.0.1.8.0.255")],
    )
    assert not dlms_parameters(profile, MeterTarget("m", "tcp://127.0.0.1:1")).logical_name_referencing
