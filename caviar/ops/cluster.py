"""Tuning jobs on a Ray cluster, through Ray's Job Submission SDK, with token authentication.

To run: caviar submit tune_jobs/quickstart.yaml --address http://127.0.0.1:8265 --follow
        caviar jobs list | logs ID | stop ID

The entrypoint is `python -m caviar tune JOB --address auto` run from the uploaded project, so the
cluster runs the code you submitted. The token comes from RAY_AUTH_TOKEN or ~/.ray/auth_token;
authentication is never turned off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from caviar.job.loading import load_job
from caviar.ops.ray_env import RayEnv
from model.errors import UserError
from model.settings import path_variables

PROJECT = Path(__file__).resolve().parents[2]
EXCLUDES = [
    "results/",
    ".venv/",
    ".git/",
    "bench/results/",
    "**/__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".hypothesis/",
]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def default_address() -> str:
    env = RayEnv.from_env()
    return env.dashboard or env.address or "http://127.0.0.1:8265"


def auth_token() -> str:
    env = RayEnv.from_env()
    token, path = env.auth_token or "", env.auth_token_path
    if not token and path.is_file():
        token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise UserError(
            f"no Ray auth token: set RAY_AUTH_TOKEN or put the cluster's token in {path} "
            "(on the head node: ray get-auth-token)"
        )
    return token


# Ray's packaging chatter on submit: ~10 INFO lines per upload and a notice about default excludes;
# caviar prints what the user needs (the job id, how to follow it), real errors still come through
QUIET_LOGGERS = ("ray._private.runtime_env", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")


def client(address: str):
    """A JobSubmissionClient that sends the token; a refused token is a one-line error."""
    from ray.job_submission import JobSubmissionClient

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)

    try:
        return JobSubmissionClient(address, headers={"Authorization": f"Bearer {auth_token()}"})
    except UserError:
        raise
    except Exception as err:  # the SDK raises RuntimeError/ConnectionError with long texts
        raise UserError(explain(err, address)) from None


def explain(err: Exception, address: str) -> str:
    text = str(err)
    if "401" in text or "403" in text or "nauthorized" in text or "orbidden" in text or "token" in text.lower():
        return f"the Ray cluster at {address} rejected the auth token; check RAY_AUTH_TOKEN or ~/.ray/auth_token"
    if "Failed to connect" in text or "Connection" in text or "connect" in text:
        return f"cannot reach a Ray dashboard at {address}; is the cluster up (cluster/local.sh up 1)?"
    return f"Ray job API at {address}: {text.splitlines()[0][:200]}"


def call(address: str, fn, *args):
    try:
        return fn(*args)
    except UserError:
        raise
    except Exception as err:
        raise UserError(explain(err, address)) from None


def absolute_paths(job, overrides: list[str]) -> list[str]:
    """The job runs in a temporary copy of the project: a relative storage folder would land in it
    and vanish, and a relative data folder would name nothing there. Both are made absolute."""
    added = []
    if "://" not in job.storage and not Path(job.storage).is_absolute():
        shared = (Path.cwd() / job.storage).resolve()
        print(f"caviar: storage {job.storage!r} -> {shared} (every node must reach it; use s3:// or a shared mount)")
        added.append(f"storage={shared}")
    if job.data.dir and not Path(job.data.dir).expanduser().is_absolute():
        added.append(f"data.dir={Path(job.data.dir).expanduser().resolve()}")
    return [*overrides, *added]


# what a job on s3:// storage needs of the submitting shell; a real cluster's nodes may have their own
# (an instance role), and then none of these is set here
AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def runtime_requirements() -> list[str]:
    """The pinned runtime set (requirements.txt): what a cluster needs, no test tools."""
    lines = (PROJECT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "-"))]


def submit(job_file: Path, address: str, overrides: list[str], install: bool) -> str:

    job = load_job(job_file, overrides)  # fail here, not on the cluster
    overrides = absolute_paths(job, overrides)
    job_arg = Path(job_file).resolve()
    try:
        job_arg = job_arg.relative_to(PROJECT)  # shipped in the working_dir
    except ValueError:
        raise UserError(f"{job_file}: job files must live inside the project ({PROJECT}) to be uploaded") from None
    entrypoint = " ".join(
        ["python", "-m", "caviar", "tune", shlex.quote(str(job_arg)), "--address", "auto"]
        + [f"--set {shlex.quote(o)}" for o in overrides]
    )
    runtime_env: dict = {"working_dir": str(PROJECT), "excludes": EXCLUDES}
    # absolute: the job runs in the uploaded working_dir; and the next commands it prints are spelt
    # with this machine's caviar, where the user will type them (outcome.runnable)
    runtime_env["env_vars"] = {**path_variables(), "CAVIAR_CLIENT_BIN": str(Path(sys.executable).parent)}
    if job.storage.startswith("s3://"):  # the store's endpoint and keys, where this shell has them
        runtime_env["env_vars"] |= {k: v for k, v in os.environ.items() if k in AWS_VARIABLES}
    if install:
        runtime_env["pip"] = runtime_requirements()
    jobs = client(address)
    return call(address, lambda: jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env))


def follow(address: str, job_id: str, echo=print) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    jobs = client(address)

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            echo(lines.rstrip("\n"))

    call(address, lambda: asyncio.run(tail()))
    for _ in range(120):  # the log stream closes as the job ends; its status follows within moments
        status = str(call(address, jobs.get_job_status, job_id)).split(".")[-1]
        if status in TERMINAL:
            return status
        time.sleep(0.5)
    return status


def list_jobs(address: str) -> list[dict]:
    jobs = client(address)
    return [
        {
            "id": j.submission_id,
            "status": str(j.status).split(".")[-1],
            "message": j.message or "",  # e.g. why a PENDING job has not started
            "entrypoint": j.entrypoint,
            "start_time": j.start_time,
        }
        for j in call(address, jobs.list_jobs)
    ]


def logs(address: str, job_id: str) -> str:
    jobs = client(address)
    return call(address, jobs.get_job_logs, job_id)


def stop(address: str, job_id: str) -> bool:
    jobs = client(address)
    return call(address, jobs.stop_job, job_id)
