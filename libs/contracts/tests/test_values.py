"""Typed values on the wire: integers stay integers, decimals read back digit for digit, text is tagged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from gxami_contracts import ReadingBatch, ReadingSeries, ReadingValue, TextSeries

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(*series: ReadingSeries, texts: tuple[TextSeries, ...] = ()) -> ReadingBatch:
    return ReadingBatch(batch_id="b", meter_id="M1", collected_at=T0, series=list(series), text_series=list(texts))


def test_integer_registers_stay_integers_through_the_wire() -> None:
    batch = _batch(ReadingSeries(quantity="1-0:1.8.0", unit="Wh", ts=[T0], values=[38296251]))
    wire = batch.model_dump_json()
    assert '"values":[38296251]' in wire  # a JSON integer, not 38296251.0
    (value,) = ReadingBatch.from_wire(wire).series[0].values
    assert value == 38296251 and type(value) is int


def test_a_scaled_decimal_reads_back_digit_for_digit() -> None:
    exact = Decimal("38296.251")
    batch = _batch(ReadingSeries(quantity="1-0:1.8.0", unit="kWh", ts=[T0], values=[float(exact)]))
    wire = batch.model_dump_json()
    assert '"values":[38296.251]' in wire
    (value,) = ReadingBatch.from_wire(wire).series[0].values
    assert repr(value) == "38296.251" and Decimal(repr(value)) == exact


@given(st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**11), max_value=10**11))
def test_decimals_of_up_to_15_digits_round_trip_exactly(exact: Decimal) -> None:
    batch = _batch(ReadingSeries(quantity="1-0:1.8.0", unit="kWh", ts=[T0], values=[float(exact)]))
    (value,) = ReadingBatch.from_wire(batch.model_dump_json()).series[0].values
    assert Decimal(repr(value)) == exact


def test_an_integer_beyond_int8_becomes_a_double_and_nan_is_refused() -> None:
    raw = _batch(ReadingSeries(quantity="1-0:1.8.0", unit="Wh", ts=[T0], values=[1])).model_dump_json()
    (big,) = ReadingBatch.from_wire(raw.replace('"values":[1]', f'"values":[{2**64}]')).series[0].values
    assert big == float(2**64) and type(big) is float
    with pytest.raises(ValidationError):
        ReadingBatch.from_wire(raw.replace('"values":[1]', '"values":[NaN]'))


def test_text_series_carry_text_bytes_bits_and_booleans_as_canonical_text() -> None:
    texts = (
        TextSeries(quantity="0-0:42.0.0", unit="", kind="text", ts=[T0], values=["SIM00100000"]),
        TextSeries(quantity="0-0:96.1.0", unit="", kind="bytes", ts=[T0], values=["00ff10"]),
        TextSeries(quantity="0-0:97.97.0", unit="", kind="bits", ts=[T0], values=["0101"]),
        TextSeries(quantity="0-0:96.3.10", unit="", kind="bool", ts=[T0], values=["true"]),
    )
    batch = _batch(texts=texts)
    again = ReadingBatch.from_wire(batch.model_dump_json())
    assert again.text_series == list(texts)
    assert again.count == 4
    assert [(r.kind, r.value) for r in again.readings()] == [
        ("text", "SIM00100000"),
        ("bytes", "00ff10"),
        ("bits", "0101"),
        ("bool", "true"),
    ]
    for kind, bad in (("bytes", "0FF"), ("bytes", "0G"), ("bits", "012"), ("bool", "yes")):
        with pytest.raises(ValidationError, match=f"values\\[0\\] is not canonical {kind} text"):
            TextSeries(quantity="0-0:96.1.0", unit="", kind=kind, ts=[T0], values=[bad])  # type: ignore[arg-type]  # kind from the loop
    with pytest.raises(ValidationError, match="a text reading with a int value"):
        ReadingValue(quantity="0-0:42.0.0", ts=T0, value=1, unit="", kind="text")
    with pytest.raises(ValidationError, match="a number reading with a str value"):
        ReadingValue(quantity="0-0:42.0.0", ts=T0, value="SIM", unit="")


class _SeriesV1(BaseModel):
    """ReadingSeries as the first consumers of version 1 read it: every value a double."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    quantity: str
    unit: str
    ts: list[datetime]
    values: list[float]
    status: list[int] | None = None


class _BatchV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1]
    batch_id: str
    meter_id: str
    job_id: str | None = None
    collected_at: datetime
    series: list[_SeriesV1]


def test_a_consumer_that_predates_typed_values_reads_new_messages() -> None:
    batch = _batch(
        ReadingSeries(quantity="1-0:1.8.0", unit="Wh", ts=[T0], values=[38296251]),
        texts=(TextSeries(quantity="0-0:42.0.0", unit="", kind="text", ts=[T0], values=["SIM1"]),),
    )
    old = _BatchV1.model_validate_json(batch.model_dump_json(), extra="ignore")
    assert old.series[0].values == [38296251.0]  # the number, as the double it always stored
    assert json.loads(batch.model_dump_json())["text_series"][0]["values"] == ["SIM1"]
