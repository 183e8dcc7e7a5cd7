"""An S3-compatible store on loopback for trying object storage, the tests and bench/storage.py:
moto's server (the `moto[server]` dev extra) on 127.0.0.1, with one bucket and throwaway keys,
always stopped at the end. `cluster/local.sh objectstore up` starts the same for a shell."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BUCKET = "caviar"
KEYS = {"AWS_ACCESS_KEY_ID": "caviar", "AWS_SECRET_ACCESS_KEY": "caviar-secret", "AWS_DEFAULT_REGION": "us-east-1"}
START_TIMEOUT_S = 60  # a bound on a stuck start only; it answers within seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def object_store(log: Path, keys_checked: bool = False) -> Iterator[dict[str, str]]:
    """The AWS_* environment that reaches a fresh store holding an empty bucket. `keys_checked`: the
    store refuses every request not signed with the keys it handed out (moto's IAM checks), as a
    real one does; by default it takes any keys."""
    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    # moto answers the first N requests unchecked: those that make the user, its keys and its policy
    unchecked = {"INITIAL_NO_AUTH_ACTION_COUNT": str(len(_IAM_SETUP))} if keys_checked else {}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, env={**os.environ, **unchecked}
        )
    env = {**KEYS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        _wait_until_up(env, proc, log)
        if keys_checked:
            env |= _issued_keys(env)
        client(env).create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(env: dict[str, str], proc: subprocess.Popen, log: Path) -> None:
    """Until the server answers (a plain GET of its root: no AWS request, so none of moto's count)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(env["AWS_ENDPOINT_URL"] + "/moto-api/", timeout=5).close()
            return
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the object store did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.1)


_IAM_SETUP = ("create_user", "put_user_policy", "create_access_key")
ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'


def _issued_keys(env: dict[str, str]) -> dict[str, str]:
    """A user allowed everything, and its keys: the only ones a keys-checking store accepts."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    iam.create_user(UserName="caviar")
    iam.put_user_policy(UserName="caviar", PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="caviar")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def object_sizes(env: dict[str, str], prefix: str) -> dict[str, int]:
    """Every object under `prefix` in the bucket, with its bytes."""
    s3 = client(env)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def client(env: dict[str, str]):
    """boto3's S3 client for the store `env` reaches."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def keys_under(env: dict[str, str], prefix: str) -> list[str]:
    return list(object_sizes(env, prefix))
