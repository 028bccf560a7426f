"""`gxami wmbus heard URL`: listen to a wM-Bus receiver and say which meters it hears.

Prints JSON on stdout like the other field commands: per meter ID heard, its
manufacturer, version, device type, how many telegrams, the last RSSI, and whether it
encrypts; plus what the feed carried that was no telegram. Listening stops after
``--seconds`` or when the receiver hangs up; failing to connect exits with 1.

``--from-file PATH`` lists instead what a running collector hears on its receivers
(``GXAMI_WMBUS_RECEIVERS``): the heard file it keeps (``GXAMI_WMBUS_HEARD_FILE``), per receiver
the IDs its fleet does not know, with counts. A file, not an HTTP route: the collector has no
token store (an edge collector has no database), and access to its state volume is the
installer's authorisation. The collector rewrites the file every few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from gxami_cli.field import InputError, run_guarded

if TYPE_CHECKING:
    from gxcore.protocols.wmbus.receivers import ReceiverFraming

# Only typer and the field plumbing above: gxcore's drivers and asyncio load inside the command.

app = typer.Typer(
    help="Wireless M-Bus field tools: listen to a receiver.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)  # fmt: skip

FRAMINGS = (
    "hex",
    "length",
    "lfield",
    "im871a",
    "amber",
)  # gxcore.protocols.wmbus.receivers.FRAMINGS (a test keeps them equal)


@app.command("heard")
def heard_command(
    url: str | None = typer.Argument(None, help="the receiver: tcp://host:port or serial:///dev/ttyUSB0"),
    from_file: Path | None = typer.Option(
        None, "--from-file", help="a running collector's heard file (GXAMI_WMBUS_HEARD_FILE) instead of a receiver"
    ),
    framing: str = typer.Option("hex", "--framing", help="hex, length, lfield, im871a or amber"),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1, help="how long to listen"),
    no_rssi: bool = typer.Option(False, "--no-rssi", help="an Amber module set to append no RSSI byte"),
) -> None:
    """Listen to a wM-Bus receiver for a while; print every meter heard (id, manufacturer, count, RSSI ...)."""
    import asyncio

    def action() -> object:
        if (url is None) == (from_file is None):
            raise InputError("give a receiver URL or --from-file PATH (one of them)")
        if from_file is not None:
            return _read_heard_file(from_file)
        assert url is not None
        if framing not in FRAMINGS:
            raise InputError(f"--framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
        return asyncio.run(_listen(url, framing, seconds, rssi=not no_rssi))  # type: ignore[arg-type]  # checked above

    run_guarded("wmbus heard", action)


def _read_heard_file(path: Path) -> dict[str, object]:
    """The collector's heard file, checked for its shape; InputError if it cannot be read."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the heard file {path}: {exc.strerror or type(exc).__name__}") from None
    except ValueError:
        raise InputError(f"the heard file {path} is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("receivers"), list):
        raise InputError(f"{path} is not a collector's wM-Bus heard file (no receivers list)")
    return data


async def _listen(url: str, framing: ReceiverFraming, seconds: float, *, rssi: bool) -> dict[str, object]:
    import asyncio
    from collections import Counter

    from gxcore.drivers.wmbus_receiver import open_receiver, receive_telegrams
    from gxcore.errors import MediaError, MeterTimeoutError
    from gxcore.protocols.wmbus.heard import HeardMeters
    from gxcore.protocols.wmbus.receivers import Skipped

    skipped: Counter[str] = Counter()
    heard = HeardMeters()
    ended = "time"

    def on_skipped(skip: Skipped) -> None:
        skipped[skip.kind] += 1

    loop = asyncio.get_running_loop()
    began = loop.time()
    medium = await open_receiver(url, framing, timeout=min(seconds, 5.0))
    try:
        # The line may be quiet longer than we listen: only the clock ends the listening.
        telegrams = receive_telegrams(
            medium,
            framing,
            idle_timeout=seconds + 1.0,
            rssi=rssi,
            on_skipped=on_skipped,
        )
        try:
            async with asyncio.timeout(max(seconds - (loop.time() - began), 0.0)):
                async for telegram in telegrams:
                    heard.add(telegram)
        except TimeoutError:
            pass
        except MeterTimeoutError:
            ended = "quiet"
        except MediaError:
            ended = "receiver closed the connection"
        finally:
            await telegrams.aclose()
    finally:
        await medium.close()
    return {
        "receiver": url.split("?", maxsplit=1)[0],
        "framing": framing,
        "seconds": seconds,
        "ended": ended,
        "telegrams": heard.telegrams,
        "skipped": dict(sorted(skipped.items())),
        "meters": [meter.to_json_dict() for meter in heard.meters.values()],
    }
