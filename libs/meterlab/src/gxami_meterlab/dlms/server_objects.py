"""The simulated meter's object model in gurux terms: its objects, their access rights, their attribute encodings.

:func:`gurux_objects` builds the gurux objects a :class:`~gxami_meterlab.dlms.server.CosemMeterCore`
serves from its specs (values are answered by the core, never kept in the objects);
:func:`listed` is one object's entry in the association view (what may be read, written,
selected, called); :func:`richer_attribute` is the exact A-XDR of an attribute of an
extended or demand register or a data object, asked of the model at the association's
instant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from gurux_dlms.enums import DataType
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDemandRegister,
    GXDLMSDisconnectControl,
    GXDLMSExtendedRegister,
    GXDLMSObject,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from gxami_meterlab.dlms.meter_objects import (
    DataSpec,
    DemandRegisterSpec,
    ExtendedRegisterSpec,
    ListedObject,
    ObjectSpec,
    ProfileSpec,
    RicherMeterModel,
    encode_scaler_unit,
    encode_time,
    encode_value,
)
from gxcore.protocols.dlms.obis import dotted
from gxcore.protocols.dlms.parameters import FRAME_COUNTER_OBIS


def gurux_objects(
    specs: Iterable[ObjectSpec],
    profiles: Iterable[ProfileSpec],
    disconnect_control: str | None,
    *,
    frame_counter: bool,
) -> list[GXDLMSObject]:
    """The meter's objects: the clock, one per spec, the profiles (clock first in each), the
    disconnect control and, on a secured meter, the frame counter (a Data object)."""
    clock = GXDLMSClock()
    objects: list[GXDLMSObject] = [clock]
    by_obis: dict[str, GXDLMSObject] = {clock.logicalName: clock}
    for spec in specs:
        obj = _gurux_object(spec)
        objects.append(obj)
        by_obis[obj.logicalName] = obj
    for pspec in profiles:
        pg = GXDLMSProfileGeneric(pspec.obis)
        pg.addCaptureObject(clock, 2, 0)
        for obis in pspec.registers:
            pg.addCaptureObject(by_obis[dotted(obis)], 2, 0)
        pg.capturePeriod = pspec.period
        pg.profileEntries = pspec.entries
        objects.append(pg)
    if disconnect_control is not None:
        objects.append(GXDLMSDisconnectControl(disconnect_control))
    if frame_counter:
        counter = GXDLMSData(FRAME_COUNTER_OBIS)
        counter.setDataType(2, DataType.UINT32)
        objects.append(counter)
    return objects


def _gurux_object(spec: ObjectSpec) -> GXDLMSObject:
    """The gurux object standing for one spec (values are answered by the core, not kept in it)."""
    obj: GXDLMSObject
    if isinstance(spec, DataSpec):
        obj = GXDLMSData(spec.obis)
        obj.setDataType(2, spec.data_type)
        return obj
    if isinstance(spec, DemandRegisterSpec):
        obj = GXDLMSDemandRegister(spec.obis)
    elif isinstance(spec, ExtendedRegisterSpec):
        obj = GXDLMSExtendedRegister(spec.obis)
    else:
        obj = GXDLMSRegister(spec.obis)
        obj.setDataType(2, spec.data_type)
        obj.value = 0
    obj.scaler = 10.0**spec.scaler  # gurux keeps the multiplier and sends its log10
    obj.unit = spec.unit
    return obj


def listed(obj: GXDLMSObject) -> ListedObject:
    """Access rights of one object in the association view: read everything, write the clock time,
    select profile buffers by range (1) or entry (2), call the disconnect and HLS methods."""
    kind = int(obj.objectType)
    count = int(obj.getAttributeCount())
    return ListedObject(
        class_id=kind,
        version=int(obj.version),
        obis=obj.logicalName,
        attributes=count,
        readable=tuple(range(1, count + 1)),
        writable=(2,) if isinstance(obj, GXDLMSClock) else (),
        selectors={2: (1, 2)} if isinstance(obj, GXDLMSProfileGeneric) else None,
        methods=int(obj.getMethodCount()),
        callable_methods=(1, 2) if isinstance(obj, GXDLMSDisconnectControl) else (1,) if kind == 15 else (),
    )


def richer_attribute(
    spec: ObjectSpec | None,
    model: RicherMeterModel,
    obis: str,
    index: int,
    now: datetime,
    frame_counter: Callable[[], int],
) -> bytes | None:
    """A-XDR of one attribute of an extended/demand register or a data object (None: gurux's own)."""
    if obis == FRAME_COUNTER_OBIS and index == 2:
        return encode_value(DataType.UINT32, frame_counter())
    attributes: dict[int, Callable[[], bytes]]
    if isinstance(spec, ExtendedRegisterSpec):
        value, status, captured = model.extended(obis, now)
        attributes = {
            2: lambda: encode_value(spec.data_type, value),
            3: lambda: encode_scaler_unit(spec.scaler, spec.unit),
            4: lambda: encode_value(DataType.UINT8, status),
            5: lambda: encode_time(captured),
        }
    elif isinstance(spec, DemandRegisterSpec):
        current, last, status, captured, started = model.demand(obis, now)
        attributes = {
            2: lambda: encode_value(spec.data_type, current),
            3: lambda: encode_value(spec.data_type, last),
            4: lambda: encode_scaler_unit(spec.scaler, spec.unit),
            5: lambda: encode_value(DataType.UINT8, status),
            6: lambda: encode_time(captured),
            7: lambda: encode_time(started),
            8: lambda: encode_value(DataType.UINT32, spec.period),
            9: lambda: encode_value(DataType.UINT16, 1),
        }
    elif isinstance(spec, DataSpec):
        attributes = {2: lambda: encode_value(spec.data_type, model.data_value(obis, now))}
    else:
        return None
    encode = attributes.get(index)
    return encode() if encode is not None else None  # attribute 1 (the name): gurux's own


def selected_columns(spec: ProfileSpec, selected: object) -> list[int]:
    """Column indexes of a profile named by a range selection's selected_values (empty: every column)."""
    if not isinstance(selected, list):
        return []
    names = ["0.0.1.0.0.255", *(dotted(o) for o in spec.registers)]
    out: list[int] = []
    for item in selected:
        if isinstance(item, list) and len(item) == 4 and isinstance(item[1], bytes | bytearray):
            ln = ".".join(str(b) for b in item[1])
            if ln in names:
                out.append(names.index(ln))
    return sorted(set(out))
