"""Where `gxami read` and `gxami profile discover` keep DLMS invocation counters: a state file.

The CLI, not gxcore, chooses the path: ``--counters-file``, else
``GXAMI_INVOCATION_COUNTERS_FILE``, else ``$XDG_STATE_HOME/gxami/invocation-counters.json``
(``~/.local/state/gxami/...`` without XDG_STATE_HOME). The file is shared safely with
other processes (another `gxami read`, a collector on the same host pointed at it): see
:class:`gxcore.protocols.dlms.invocation.JsonInvocationCounters`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gxcore.errors import ConfigurationError

if TYPE_CHECKING:  # the store loads the DLMS stack: imported when a command needs it (fast `gxami --help`)
    from gxcore.drivers.dlms.counter_file import JsonInvocationCounters

COUNTERS_ENV: Final = "GXAMI_INVOCATION_COUNTERS_FILE"
COUNTERS_HELP: Final = (
    "DLMS invocation counter state file (default: $GXAMI_INVOCATION_COUNTERS_FILE, else"
    " $XDG_STATE_HOME/gxami/invocation-counters.json)"
)


def default_counters_file() -> Path:
    """The state file when none is named: the environment variable, else the user's XDG state dir."""
    named = os.environ.get(COUNTERS_ENV)
    if named:
        return Path(named)
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "gxami" / "invocation-counters.json"


def counter_store(path: Path | None) -> JsonInvocationCounters:
    """The durable store at ``path`` (or the default), its folder created private if missing."""
    from gxcore.drivers.dlms.counter_file import JsonInvocationCounters

    chosen = path if path is not None else default_counters_file()
    try:
        chosen.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"invocation counters {chosen}: cannot create its folder ({exc.strerror})") from None
    return JsonInvocationCounters(chosen)
