"""The benchmarks of fused trials, GPU packing and object storage, each in its smoke form:
`bench.gpu --device cpu --smoke`, the first command a session with a GPU runs, was broken for a
round before anyone saw (issue 50, item 10). Apart from tests/bench/test_search_benches.py so that
the two run on different test workers."""

from __future__ import annotations

import pytest

from tests.bench.smoke import smoke

pytestmark = pytest.mark.slow


def test_the_gpu_benchmark_runs_on_cpu(tmp_path):
    """The first command a session with a GPU runs; on the fixture reviews, so it runs everywhere."""
    figures = smoke(tmp_path, "gpu", "--device", "cpu")
    assert [p["fraction"] for p in figures["packing"]] == [1.0, 0.125]  # the smoke form's two ends
    assert all(p["errored"] == 0 and p["trials"] == 2 for p in figures["packing"])
    assert [t["compile"] for t in figures["one_trial"]] == ["off", "on"] and figures["one_trial"][1]["compile_s"] > 0


def test_the_storage_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "storage")
    assert figures["trials"] == 2 and figures["met"]["store_bytes_over_bound"]
    assert figures["report_s_empty_cache"] > 0 and figures["promote_s_empty_cache"] > 0


def test_the_fused_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "fused")
    tiny = figures["models"]["tiny"]
    assert tiny["today_8_ray_trials_2_at_a_time"]["trials"] == 8
    assert tiny["fused"]["k2"]["examples_per_s"] > 0 and tiny["fused"]["k2"]["ratio_to_today"] > 0


def test_the_fused_asha_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "fused_asha")
    sequential = figures["one_at_a_time"]
    assert "as_shipped" not in figures  # the smoke form runs the one-at-a-time searches alone
    assert sequential["fuse_1"]["wall_s"] > 0 and sequential["fuse_4"]["wall_s"] > 0
    assert set(sequential["max_value_difference_by_sample"]) == {"0", "1", "2", "3"}
