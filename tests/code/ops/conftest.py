"""Fixtures the cluster test modules share."""

from __future__ import annotations

import pytest

from tests.code.ops.ray_cluster import job_file


@pytest.fixture
def cluster_job(tmp_path):
    """Writes job files into the project's tune_jobs/ (jobs upload with the project); removes them after."""
    paths = []

    def make(tune: dict | None = None, **train):
        paths.append(job_file(tmp_path, tune, **train))
        return paths[-1]

    yield make
    for path in paths:
        path.unlink(missing_ok=True)
