"""Device profiles: declarative files saying what to read from a device type."""

from gxcore.profiles.model import DeviceProfile, ProfileCatalog, ProfilePoint, json_schema, load_profile

__all__ = ["DeviceProfile", "ProfileCatalog", "ProfilePoint", "json_schema", "load_profile"]
