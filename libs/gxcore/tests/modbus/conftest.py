"""Shared fixtures for the Modbus tests: the shipped profiles and a frozen instant."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import gxcore.profiles
from gxcore.profiles import DeviceProfile, load_profile

PROFILE_DIR = Path(gxcore.profiles.__file__).parent / "data"


@pytest.fixture
def at() -> datetime:
    """The instant every simulated meter and the driver's clock agree on."""
    return datetime(2024, 5, 17, 12, 30, 15, tzinfo=UTC)


@pytest.fixture
def sdm630() -> DeviceProfile:
    return load_profile(PROFILE_DIR / "eastron-sdm630.yaml")


@pytest.fixture
def b23() -> DeviceProfile:
    return load_profile(PROFILE_DIR / "abb-b23.yaml")
