"""What the end-to-end tests share when they run the services as processes: a metric read from a
service's /metrics, and a wait that fails at once, with the log's tail, when a service has died."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from gxami_meterlab.cli_procs import ServiceProcess


def scrape_metric(port: str | int, name: str, **labels: str) -> float:
    """The sum of metric ``name`` over the series whose labels include ``labels``, from a service's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def wait_until(what: str, pred: Callable[[], object], timeout: float, procs: Sequence[ServiceProcess]) -> None:
    """Poll ``pred`` until it holds; a dead service or the timeout fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), f"{p.name} died; log: {p.log_path.read_text()[-3000:]}"
        try:
            if pred():
                return
        except OSError:
            pass  # an ops server is not up yet
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def processes_under(root: Path) -> list[dict[str, object]]:
    """The processes whose command line names ``root`` or a path inside it (a demo's leftovers).

    Compared by path, not by substring, so `.gxami/demo` does not match `.gxami/demo-control`, and
    another checkout's demo, or another test worker's, is not this one's.
    """
    inside = re.compile(re.escape(str(root.resolve())) + r"(?:/|$)")
    found: list[dict[str, object]] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        parts = proc.info["cmdline"] or []
        if any(inside.search(part) for part in parts):
            found.append(proc.info)
    return found
