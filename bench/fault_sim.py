"""The fault harness's meters: DLMS and Modbus simulators that write down every value they serve.

``python -m bench.fault_sim --seed S --dlms N --modbus M --fleet-out F --served-out L`` serves N
DLMS/COSEM meters (TCP wrapper, one port each) and M Modbus TCP meters (Eastron SDM630 register
map, device ids 1..M behind one gateway port), writes the fleet file F once all of them listen,
and appends one JSON line to L for every value a meter puts into a reply:

    {"m": meter id, "q": quantity, "ts": the value's time as the meter labels it,
     "v": the value in the profile's unit, "at": wall-clock time it was served, "kind": ...}

The value is computed here from the simulator's own model (seed, meter index, time), never from
what gxami decoded: DLMS register and load-profile values at the instant the meter answers for,
Modbus values at the instant the request was answered. The harness reads L after the run.
Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import yaml

from gxami_meterlab.simulators import dlms as dlms_sim
from gxami_meterlab.simulators.modbus import ModbusMeterSimulator, expected_value
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.modbus.profile import Table

MODBUS_PROFILE = "eastron-sdm630"
DLMS_PROFILE = "generic-dlms"
SCHEDULE = "1m"

# DLMS register -> (quantity, factor from the meter's unit to the profile's): Wh -> kWh, W -> kW.
DLMS_QUANTITIES: dict[str, tuple[str, float]] = {
    dlms_sim.IMPORT: ("1-0:1.8.0", 0.001),
    dlms_sim.EXPORT: ("1-0:2.8.0", 0.001),
    dlms_sim.POWER: ("1-0:1.7.0", 0.001),
    dlms_sim.VOLTAGE: ("1-0:32.7.0", 1.0),
    dlms_sim.CURRENT: ("1-0:31.7.0", 1.0),
}


def modbus_meter_id(seed: int, device_id: int) -> str:
    """Meter id of Modbus device ``device_id`` (1-based) of the harness fleet."""
    return f"MB{seed:03d}{device_id:05d}"


class ServedLog:
    """Append-only JSON lines, flushed line by line so that a reader after SIGTERM sees them all."""

    def __init__(self, path: Path) -> None:
        self._fh: IO[str] = path.open("a", encoding="utf-8", buffering=1)

    def write(self, meter: str, quantity: str, ts: datetime, value: float, kind: str) -> None:
        line = {"m": meter, "q": quantity, "ts": ts.isoformat(), "v": value, "at": _now().isoformat(), "kind": kind}
        self._fh.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self._fh.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _recording_dlms_values(log: ServedLog) -> type[Any]:
    """A subclass of the simulator's meter model that logs each register and load-profile value it serves."""
    base: type[Any] = dlms_sim._MeterValues

    class Recording(base):  # type: ignore[misc]
        def _log_value(self, obis: str, ts: datetime, kind: str) -> None:
            quantity, factor = DLMS_QUANTITIES[obis]
            value = dlms_sim.expected_register(self.seed, self.index, obis, ts) * factor
            log.write(dlms_sim.meter_id(self.seed, self.index), quantity, ts, value, kind)

        def register_raw(self, obis: str, at: datetime) -> int:
            raw: int = super().register_raw(obis, at)
            if obis in DLMS_QUANTITIES and self.state.connected:
                self._log_value(obis, at, "register")
            return raw

        def _log_rows(self, obis: str, rows: Sequence[tuple[datetime, Sequence[int]]]) -> None:
            if obis != dlms_sim.LOAD_PROFILE:
                return
            for ts, _ in rows:
                for column in (dlms_sim.IMPORT, dlms_sim.EXPORT):
                    self._log_value(column, ts, "profile")

        def profile_rows(
            self, obis: str, start: datetime, end: datetime, now: datetime
        ) -> Sequence[tuple[datetime, Sequence[int]]]:
            rows: Sequence[tuple[datetime, Sequence[int]]] = super().profile_rows(obis, start, end, now)
            self._log_rows(obis, rows)
            return rows

        def profile_entries(
            self, obis: str, first: int, last: int, now: datetime
        ) -> tuple[Sequence[tuple[datetime, Sequence[int]]], int]:
            rows, in_use = super().profile_entries(obis, first, last, now)
            self._log_rows(obis, rows)
            return rows, in_use

    return Recording


class RecordingModbusSimulator(ModbusMeterSimulator):
    """Modbus meters that log every profile point a read reply carries, at the instant it was answered."""

    def __init__(self, log: ServedLog, seed: int, meters: int, host: str) -> None:
        self.profile = ProfileCatalog().get(MODBUS_PROFILE)
        super().__init__(self.profile, meters=meters, seed=seed, host=host, port=0)
        self._log = log
        self._read_tables = {3: Table.HOLDING, 4: Table.INPUT}

    def _respond(self, index: int, pdu: bytes, at: datetime) -> bytes:
        reply = super()._respond(index, pdu, at)
        table = self._read_tables.get(pdu[0])
        if table is not None and reply[:1] == pdu[:1] and len(pdu) >= 5:
            address, count = int.from_bytes(pdu[1:3], "big"), int.from_bytes(pdu[3:5], "big")
            for rp in self._points:
                if rp.table is table and rp.address >= address and rp.end <= address + count:
                    value = expected_value(self.seed, index, rp.point, at)
                    if isinstance(value, float | int | Decimal) and not isinstance(value, bool):
                        self._log.write(
                            modbus_meter_id(self.seed, index), rp.point.quantity, at, float(value), "modbus"
                        )
        return reply


def _write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


async def serve(seed: int, dlms: int, modbus: int, fleet_out: Path, served_out: Path, host: str) -> None:
    """Serve both fleets until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log = ServedLog(served_out)
    dlms_sim._MeterValues = _recording_dlms_values(log)  # type: ignore[misc]
    fleet = dlms_sim.DlmsFleetSimulator(dlms, seed=seed, host=host, authentication="none")
    mb = RecordingModbusSimulator(log, seed, modbus, host)
    await fleet.start()
    await mb.start()
    try:
        meters: list[dict[str, Any]] = [
            {
                "meter_id": m.meter_id,
                "protocol": "dlms",
                "address": f"tcp://{host}:{m.port}",
                "profile": DLMS_PROFILE,
                "group": "faults",
                "schedule": SCHEDULE,
                "options": {"authentication": "none"},
            }
            for m in fleet.meters
        ]
        meters += [
            {
                "meter_id": modbus_meter_id(seed, i),
                "protocol": "modbus",
                "address": mb.url(i),
                "profile": MODBUS_PROFILE,
                "group": "faults",
                "schedule": SCHEDULE,
                "options": {"unit_id": str(i)},
            }
            for i in range(1, modbus + 1)
        ]
        _write_atomic(fleet_out, {"meters": meters})
        await stop.wait()
    finally:
        await mb.stop()
        await fleet.stop()
        log.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dlms", type=int, default=10)
    parser.add_argument("--modbus", type=int, default=3)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fleet-out", type=Path, required=True)
    parser.add_argument("--served-out", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.seed, args.dlms, args.modbus, args.fleet_out, args.served_out, args.host))


if __name__ == "__main__":
    main()
