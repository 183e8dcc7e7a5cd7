"""Every environment variable caviar reads, read here and nowhere else, but Ray's own
(caviar/ops/ray_env.py: model/ knows nothing of Ray).

It sits in model/ (the bottom layer) so that both packages can read it: model/ needs the cache and
the NSMC folder, caviar/ the rest. Read afresh at each call, so a test's monkeypatched variable counts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AwsSettings:
    """The standard AWS variables, for an s3:// storage (caviar/experiment/object_store.py)."""

    endpoint: str | None  # AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL: an S3-compatible store (MinIO, moto)
    region: str  # AWS_DEFAULT_REGION, else AWS_REGION (default us-east-1)
    access_key: str | None  # AWS_ACCESS_KEY_ID
    secret_key: str | None  # AWS_SECRET_ACCESS_KEY
    session_token: str | None  # AWS_SESSION_TOKEN

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AwsSettings:
        return cls(
            endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1",
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )


@dataclass(frozen=True)
class Settings:
    cache: Path  # CAVIAR_CACHE: NSMC copy, tokenizers, encoded splits (default ~/.cache/caviar)
    nsmc_dir: str | None  # NSMC_DIR: a folder holding ratings_train.txt and ratings_test.txt
    registry: Path | None  # CAVIAR_REGISTRY: the model registry (default <data_home>/caviar/registry)
    data_home: Path  # XDG_DATA_HOME: the user's data folder (default ~/.local/share)
    config_home: Path  # XDG_CONFIG_HOME: the user's settings folder (default ~/.config): the state key's
    state_key: str | None  # CAVIAR_STATE_KEY: the key (hex) that signs Ray's saved state, else a file's
    api_key: str | None  # CAVIAR_API_KEY: bearer key `caviar serve` requires, when set
    allocator: str  # CAVIAR_ALLOCATOR: jemalloc (default) or system
    jemalloc: str | None  # CAVIAR_JEMALLOC: a libjemalloc.so.2 outside the usual folders
    compile_backend: str  # CAVIAR_COMPILE_BACKEND: torch.compile backend (tests: aot_eager)
    inject_fault: str | None  # CAVIAR_INJECT_FAULT: testing hook, "<folder>:<n>" fails a trial once
    omp_threads: int | None  # OMP_NUM_THREADS: Ray sets it to a trial's CPU share
    verbose: bool  # CAVIAR_VERBOSE=1 (caviar tune --verbose): Ray's own live table, not caviar's lines
    client_bin: Path | None  # CAVIAR_CLIENT_BIN: the submitting machine's bin folder (caviar submit)
    aws: AwsSettings  # AWS_*: an s3:// storage

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        omp = env.get("OMP_NUM_THREADS", "")
        return cls(
            cache=Path(env.get("CAVIAR_CACHE") or "~/.cache/caviar").expanduser(),
            nsmc_dir=env.get("NSMC_DIR") or None,
            registry=_folder_registry(env.get("CAVIAR_REGISTRY", "")),
            data_home=Path(env.get("XDG_DATA_HOME") or "~/.local/share").expanduser(),
            config_home=Path(env.get("XDG_CONFIG_HOME") or "~/.config").expanduser(),
            state_key=env.get("CAVIAR_STATE_KEY") or None,
            api_key=env.get("CAVIAR_API_KEY"),
            allocator=env.get("CAVIAR_ALLOCATOR", "jemalloc"),
            jemalloc=env.get("CAVIAR_JEMALLOC") or None,
            compile_backend=env.get("CAVIAR_COMPILE_BACKEND", "inductor"),
            inject_fault=env.get("CAVIAR_INJECT_FAULT") or None,
            omp_threads=max(1, int(omp)) if omp.isdigit() else None,
            verbose=env.get("CAVIAR_VERBOSE", "") not in ("", "0"),
            client_bin=Path(env["CAVIAR_CLIENT_BIN"]) if env.get("CAVIAR_CLIENT_BIN") else None,
            aws=AwsSettings.from_env(env),
        )


MLFLOW_REGISTRY = "mlflow:"  # CAVIAR_REGISTRY=mlflow:<tracking URI> names MLflow's registry (caviar/cli/registry.py)


def names_mlflow(value: str) -> bool:
    """A registry setting that names MLflow's model registry rather than a folder."""
    return value.startswith(MLFLOW_REGISTRY)


def _folder_registry(value: str) -> Path | None:
    """CAVIAR_REGISTRY as a folder; None when unset or when it names MLflow's registry."""
    return Path(value).expanduser() if value and not names_mlflow(value) else None


def settings() -> Settings:
    return Settings.from_env()


PATH_VARIABLES = ("NSMC_DIR", "CAVIAR_CACHE", "CAVIAR_REGISTRY")


def path_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The path variables that are set, made absolute: what a job submitted to a cluster on this
    machine passes on (it runs in an uploaded copy of the project, where a relative path is wrong)."""
    env = os.environ if environ is None else environ
    return {
        k: env[k] if names_mlflow(env[k]) else str(Path(env[k]).expanduser().resolve())
        for k in PATH_VARIABLES
        if env.get(k)
    }
