"""Modbus RTU and TCP: profile conventions, read planning, register codec and the driver."""

from gxcore.modbus.codec import decode_value, encode_value, engineering_value
from gxcore.modbus.driver import ModbusDriver
from gxcore.modbus.planner import ReadBlock, plan_reads, split_block
from gxcore.modbus.profile import (
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
    "ModbusDriver",
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
