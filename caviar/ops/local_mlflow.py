"""An MLflow tracking server on loopback, for trying the MLflow route and for the tests: `mlflow
server` (the `caviar[mlflow]` extra) on 127.0.0.1 with a SQLite backend and an artifact folder in
`folder`, its telemetry off, always stopped at the end with every process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from caviar.ops.local_store import START_TIMEOUT_S, free_port


@contextlib.contextmanager
def mlflow_server(folder: Path, backend: str | None = None, artifacts: str | None = None) -> Iterator[str]:
    """The tracking URI of a fresh server whose runs live in `folder` (mlflow.db, artifacts/), or in
    `backend` (a database URI: PostgreSQL, say) and `artifacts` (an s3:// prefix, say; the server
    reads the AWS_* variables and MLFLOW_S3_ENDPOINT_URL)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend or f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts or str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = folder / "server.log"
    with open(log, "wb") as out:
        # no job runner: six huey consumers (~270 MB each) for GenAI jobs caviar never submits
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        server = subprocess.Popen(command, stdout=out, stderr=out, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(uri, server, log)
        yield uri
    finally:
        _stop(server)


def _wait_until_up(uri: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=5).close()
            return
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the MLflow server did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.1)


def _stop(server: subprocess.Popen) -> None:
    """The server and its workers: they share its session, so one signal reaches them all."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
