"""The unit rule shared by the M-Bus, wM-Bus, DSMR and IEC 62056-21 drivers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles import ProfilePoint
from gxcore.units import _UNITS, canonical_unit, conversion_factor, meter_unit, point_value


def test_spellings_meet_in_one_canonical_unit() -> None:
    assert canonical_unit("m³") == canonical_unit(" m3 ") == "m3"
    assert canonical_unit("°C") == "degC"
    assert canonical_unit("m³/h") == "m3/h"
    assert canonical_unit("furlong") == "furlong"


@pytest.mark.parametrize(
    ("source", "target", "factor"),
    [
        ("Wh", "kWh", 1e-3),
        ("GJ", "kWh", 1e9 / 3.6e6),
        ("MWh", "GJ", 3.6),
        ("l", "m3", 1e-3),
        ("m³", "m3", 1.0),
        ("m³/min", "m3/h", 60.0),
        ("J/h", "W", 1 / 3600),
        ("W", "kW", 1e-3),
        ("kvarh", "varh", 1e3),
        ("h", "d", 1 / 24),
        ("HCA", "HCA", 1.0),  # unknown but equal: no conversion needed
    ],
)
def test_conversion_factors(source: str, target: str, factor: float) -> None:
    assert conversion_factor(source, target) == pytest.approx(factor)


@pytest.mark.parametrize(("source", "target"), [("Wh", "m3"), ("degC", "K"), ("kvarh", "kWh"), ("HCA", "kWh")])
def test_no_conversion_across_dimensions(source: str, target: str) -> None:
    assert conversion_factor(source, target) is None


@given(st.sampled_from(sorted(_UNITS)), st.sampled_from(sorted(_UNITS)))
def test_conversions_are_inverse_and_only_within_a_dimension(a: str, b: str) -> None:
    there, back = conversion_factor(a, b), conversion_factor(b, a)
    if _UNITS[a][0] != _UNITS[b][0]:
        assert there is None and back is None
    else:
        assert there is not None and back is not None
        assert there * back == pytest.approx(1.0)


def test_point_value_converts_then_scales_then_offsets() -> None:
    point = ProfilePoint(quantity="6-0:1.0.0", unit="MWh", source="x", scale=2.0, offset=1.0)
    assert point_value(point, 5000.0, "kWh") == pytest.approx(5.0 * 2.0 + 1.0)
    assert point_value(point, 7.0, None) == pytest.approx(15.0)  # no unit from the meter: taken as meter_unit
    raw = ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="x", scale=0.001, options={"meter_unit": "Wh"})
    assert point_value(raw, 2.0, "kWh") == pytest.approx(2.0)  # kWh -> Wh (x1000), then the profile's scale
    with pytest.raises(ProtocolError, match="does not convert"):
        point_value(point, 1.0, "m3")


def test_meter_unit_option_must_be_text() -> None:
    point = ProfilePoint(quantity="6-0:1.0.0", unit="kWh", source="x", options={"meter_unit": 3})
    with pytest.raises(ConfigurationError):
        meter_unit(point)
