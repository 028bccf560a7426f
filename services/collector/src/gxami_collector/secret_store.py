"""Meter passwords and keys, from a file mounted beside the collector (a Kubernetes Secret).

Read jobs never carry secrets; the collector looks them up here by meter id. File format (YAML):

    default: {password: "..."}           # optional, for meters without their own entry
    meters:
      MTR0001: {password: "...", key: "000102...", auth_key: "..."}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from gxcore.errors import ConfigurationError
from gxcore.secrets import Secret

_ALLOWED = {"password", "key", "auth_key", "dedicated_key"}


class SecretStore:
    """Per-meter secrets; values are ``Secret`` objects that never print."""

    def __init__(
        self, default: Mapping[str, Secret] | None = None, meters: Mapping[str, Mapping[str, Secret]] | None = None
    ) -> None:
        self._default = dict(default or {})
        self._meters = {k: dict(v) for k, v in (meters or {}).items()}

    @classmethod
    def load(cls, path: Path | None) -> SecretStore:
        if path is None:
            return cls()
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"secrets file {path}: cannot read it ({type(exc).__name__})") from None
        if not isinstance(raw, dict):
            raise ConfigurationError(f"secrets file {path}: top level must be a mapping")
        return cls(
            cls._entry(path, "default", raw.get("default") or {}),
            {str(m): cls._entry(path, f"meters.{m}", e) for m, e in (raw.get("meters") or {}).items()},
        )

    @staticmethod
    def _entry(path: Path, where: str, entry: object) -> dict[str, Secret]:
        if not isinstance(entry, dict):
            raise ConfigurationError(f"secrets file {path}: {where} must be a mapping")
        out: dict[str, Secret] = {}
        for name, value in entry.items():
            if name not in _ALLOWED:
                raise ConfigurationError(f"secrets file {path}: {where}: unknown field {name!r}")
            out[name] = Secret(str(value))
        return out

    def for_meter(self, meter_id: str) -> dict[str, Secret]:
        return {**self._default, **self._meters.get(meter_id, {})}
