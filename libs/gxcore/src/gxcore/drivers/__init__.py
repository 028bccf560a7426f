"""The driver layer: the only asyncio above :mod:`gxcore.media`.

A driver joins one pure protocol core (:mod:`gxcore.protocols`) to one medium. The plug-in
interface (:class:`Driver`, :class:`MeterTarget`, :class:`ReadRequest`, :class:`ReadResult`)
and the registry (:func:`load_driver`) are in :mod:`gxcore.drivers.api` and re-exported here;
importing this package does not import any driver.
"""

from gxcore.drivers.api import (
    ENTRY_POINT_GROUP,
    BaseDriver,
    CommandKind,
    CommandResult,
    CommandValue,
    Driver,
    DriverCommand,
    MeterLookup,
    MeterTarget,
    PointProblem,
    ReadRequest,
    ReadResult,
    Served,
    available_drivers,
    load_driver,
)
from gxcore.readings import EventSeverity, EventValue, MeterEventRecord, stable_event_id

__all__ = [
    "ENTRY_POINT_GROUP",
    "BaseDriver",
    "CommandKind",
    "CommandResult",
    "CommandValue",
    "Driver",
    "DriverCommand",
    "EventSeverity",
    "EventValue",
    "MeterEventRecord",
    "MeterLookup",
    "MeterTarget",
    "PointProblem",
    "ReadRequest",
    "ReadResult",
    "Served",
    "available_drivers",
    "load_driver",
    "stable_event_id",
]
