"""Modbus RTU and TCP: profile conventions, read planning and the register codec (pure; the driver is in drivers)."""

from gxcore.protocols.modbus.codec import decode_value, encode_value, engineering_value
from gxcore.protocols.modbus.planner import ReadBlock, plan_reads, split_block
from gxcore.protocols.modbus.profile import (
    ModbusParameters,
    RegisterPoint,
    Table,
    ValueType,
    modbus_parameters,
    register_point,
    register_points,
    validate_modbus_profile,
)

__all__ = [
    "ModbusParameters",
    "ReadBlock",
    "RegisterPoint",
    "Table",
    "ValueType",
    "decode_value",
    "encode_value",
    "engineering_value",
    "modbus_parameters",
    "plan_reads",
    "register_point",
    "register_points",
    "split_block",
    "validate_modbus_profile",
]
