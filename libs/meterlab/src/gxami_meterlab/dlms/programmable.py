"""The objects a simulated meter is programmed through: image transfer, active firmware id, calendars.

:class:`ProgrammableObjects` is what :class:`~gxami_meterlab.dlms.server.CosemMeterCore` asks
about these objects (their gurux stand-ins, GET answers, SETs, methods, access rights); the
state itself (:class:`~gxami_meterlab.dlms.image_transfer.ImageTransferState`,
:class:`~gxami_meterlab.dlms.tariff_calendar.CalendarState`) belongs to the meter and outlives
the connection.
"""

from __future__ import annotations

from datetime import datetime

from gurux_dlms.enums import DataType, ErrorCode
from gurux_dlms.objects import (
    GXDLMSActivityCalendar,
    GXDLMSData,
    GXDLMSImageTransfer,
    GXDLMSObject,
    GXDLMSSpecialDaysTable,
)

from gxami_meterlab.dlms.image_transfer import CALLABLE_METHODS, ImageTransferState
from gxami_meterlab.dlms.meter_objects import ListedObject
from gxami_meterlab.dlms.tariff_calendar import WRITABLE, CalendarState
from gxcore.protocols.dlms import calendar as cal
from gxcore.protocols.dlms import image_transfer as it


class ProgrammableObjects:
    """Image transfer and calendar objects of one meter connection, over the meter's own state."""

    def __init__(self, firmware: ImageTransferState | None, calendar: CalendarState | None) -> None:
        self.firmware = firmware
        self.calendar = calendar

    def gurux_objects(self) -> list[GXDLMSObject]:
        objects: list[GXDLMSObject] = []
        if self.firmware is not None:
            objects.append(GXDLMSImageTransfer(it.IMAGE_TRANSFER))
            active = GXDLMSData(it.ACTIVE_FIRMWARE_ID)
            active.setDataType(2, DataType.OCTET_STRING)
            objects.append(active)
        if self.calendar is not None:
            objects.append(GXDLMSActivityCalendar(cal.ACTIVITY_CALENDAR))
            objects.append(GXDLMSSpecialDaysTable(cal.SPECIAL_DAYS))
        return objects

    def association_started(self, meter_time: datetime) -> None:
        """A new association at ``meter_time``: a passive calendar that is due becomes active."""
        if self.calendar is not None:
            self.calendar.tick(meter_time)

    def answer(self, target: object, index: int) -> bytes | None:
        """A-XDR of a GET of ``index`` of ``target`` (None: not one of ours, or gurux's own attribute 1)."""
        if index < 2:
            return None
        if isinstance(target, GXDLMSImageTransfer) and self.firmware is not None:
            return self.firmware.attribute(index)
        if isinstance(target, GXDLMSData) and target.logicalName == it.ACTIVE_FIRMWARE_ID and self.firmware:
            return self.firmware.active_firmware() if index == 2 else None
        if isinstance(target, GXDLMSActivityCalendar) and self.calendar is not None:
            return self.calendar.attribute(index)
        if isinstance(target, GXDLMSSpecialDaysTable) and self.calendar is not None:
            return self.calendar.special_entries() if index == 2 else None
        return None

    def set(self, class_id: int, obis: str, attribute: int, value: bytes) -> int | None:
        """A SET of one of ours: the Data-Access-Result (None: not ours)."""
        if class_id == cal.CLASS_ACTIVITY_CALENDAR and obis == cal.ACTIVITY_CALENDAR and self.calendar is not None:
            return self.calendar.write(attribute, value)
        if class_id in (it.CLASS_IMAGE_TRANSFER, cal.CLASS_SPECIAL_DAYS) and obis in (
            it.IMAGE_TRANSFER,
            cal.SPECIAL_DAYS,
        ):
            return int(ErrorCode.READ_WRITE_DENIED)
        return None

    def callable_method(self, target: object, index: int) -> bool:
        if isinstance(target, GXDLMSImageTransfer):
            return self.firmware is not None and index in CALLABLE_METHODS
        if isinstance(target, GXDLMSActivityCalendar):
            return self.calendar is not None and index == cal.ACTIVATE_PASSIVE
        if isinstance(target, GXDLMSSpecialDaysTable):
            return self.calendar is not None and index in (cal.INSERT, cal.DELETE)
        return False

    def invoke(self, target: object, index: int, parameters: object) -> int | None:
        """Run a method of one of ours: its Action-Result (None: not ours)."""
        if isinstance(target, GXDLMSImageTransfer) and self.firmware is not None:
            return self.firmware.invoke(index, parameters)
        if isinstance(target, GXDLMSActivityCalendar) and self.calendar is not None:
            return self.calendar.invoke_calendar(index)
        if isinstance(target, GXDLMSSpecialDaysTable) and self.calendar is not None:
            return self.calendar.invoke_special(index, parameters)
        return None

    def listing(self, obj: GXDLMSObject) -> ListedObject | None:
        """The association view's entry for one of ours (None: not ours)."""
        if not isinstance(obj, GXDLMSImageTransfer | GXDLMSActivityCalendar | GXDLMSSpecialDaysTable):
            return None
        count = int(obj.getAttributeCount())
        methods = int(obj.getMethodCount())
        return ListedObject(
            class_id=int(obj.objectType),
            version=int(obj.version),
            obis=obj.logicalName,
            attributes=count,
            readable=tuple(range(1, count + 1)),
            writable=WRITABLE if isinstance(obj, GXDLMSActivityCalendar) else (),
            methods=methods,
            callable_methods=tuple(i for i in range(1, methods + 1) if self.callable_method(obj, i)),
        )
