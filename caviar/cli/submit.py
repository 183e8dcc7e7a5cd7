"""`caviar submit` and `caviar jobs list | logs | stop`: tuning jobs on a Ray cluster.

To run: caviar submit tune_jobs/quickstart.yaml --address http://127.0.0.1:8265 --follow
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from caviar.job.loading import SET_HELP
from caviar.ops import cluster


def register(app: typer.Typer) -> None:
    """Add `submit` and the `jobs` group to the main app."""
    app.command("submit")(submit_cmd)
    app.add_typer(jobs_app, name="jobs")


def submit_cmd(
    job: Path = typer.Argument(..., help="tune_jobs/<job>.yaml"),
    address: str | None = typer.Option(None, help="the cluster's dashboard, e.g. http://HEAD:8265"),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    follow: bool = typer.Option(False, "--follow", help="stream the logs; exit with the job's status"),
    install: bool = typer.Option(False, "--install", help="pip-install requirements.txt on the cluster"),
) -> None:
    """Submit `caviar tune JOB` to a Ray cluster (Job Submission SDK, token auth)."""
    address = address or cluster.default_address()
    job_id = cluster.submit(job, address, overrides, install)
    typer.echo(f"submitted {job_id} to {address}")
    if follow:
        status = cluster.follow(address, job_id, echo=typer.echo)
        typer.echo(f"job {job_id}: {status}")
        raise typer.Exit(0 if status == "SUCCEEDED" else 1)
    typer.echo(f"follow with: caviar jobs logs {job_id} --follow --address {address}")


jobs_app = typer.Typer(help="Jobs on a Ray cluster: list, logs, stop.", no_args_is_help=True, rich_markup_mode=None)
ADDRESS_HELP = "the cluster's dashboard (default RAY_ADDRESS or http://127.0.0.1:8265)"


@jobs_app.command("list")
def jobs_list(
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help="one JSON line: the jobs, oldest first"),
):
    """Jobs on the cluster, newest last."""
    rows = sorted(cluster.list_jobs(address or cluster.default_address()), key=lambda r: r["start_time"] or 0)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['id']}  {row['status']:<10} {row['entrypoint']}")
        if row["status"] in ("PENDING", "FAILED") and row["message"]:
            typer.echo(f"    {row['message']}")


@jobs_app.command("logs")
def jobs_logs(
    job_id: str,
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    follow: bool = typer.Option(False, "--follow", help="stream the logs until the job ends; exit with its status"),
) -> None:
    """The logs of a job so far (or, with --follow, as they come)."""
    address = address or cluster.default_address()
    if not follow:
        typer.echo(cluster.logs(address, job_id))
        return
    status = cluster.follow(address, job_id, echo=typer.echo)
    typer.echo(f"job {job_id}: {status}")
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


@jobs_app.command("stop")
def jobs_stop(job_id: str, address: str | None = typer.Option(None, help=ADDRESS_HELP)) -> None:
    """Ask a running job to stop."""
    stopped = cluster.stop(address or cluster.default_address(), job_id)
    typer.echo(f"{job_id}: {'stop requested' if stopped else 'was not running'}")
