"""The benchmarks that run searches (Ray, the Tuner, promotion), each in its smoke form, as Ray
Tune's examples run with --smoke-test: `bench.gpu --device cpu --smoke`, the first command a session
with a GPU runs, was broken for a round before anyone saw (issue 50, item 10). A smoke form runs the
whole script on the fixture reviews with a tiny model; its figures say the script works, not how
fast anything is."""

from __future__ import annotations

import pytest

from tests.bench.smoke import smoke

pytestmark = pytest.mark.slow


def test_the_gpu_benchmark_runs_on_cpu(tmp_path):
    """The first command a session with a GPU runs; on the fixture reviews, so it runs everywhere."""
    figures = smoke(tmp_path, "gpu", "--device", "cpu")
    assert [p["fraction"] for p in figures["packing"]] == [1.0, 0.5, 0.25, 0.125]
    assert all(p["errored"] == 0 and p["trials"] == 2 for p in figures["packing"])
    assert [t["compile"] for t in figures["one_trial"]] == ["off", "on"] and figures["one_trial"][1]["compile_s"] > 0


def test_the_storage_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "storage")
    assert figures["trials"] == 2 and figures["met"]["store_bytes_over_bound"]
    assert figures["report_s_empty_cache"] > 0 and figures["promote_s_empty_cache"] > 0


def test_the_asha_against_fifo_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "asha_vs_fifo")
    assert figures["same_configurations"] and figures["samples"] == 2
    assert figures["fifo"]["evaluations"] > 0 and figures["asha_over_fifo_wall"] > 0


def test_the_concurrency_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "concurrency")
    assert figures["trials"] == 2 and figures["throughput_ratio"] > 0
    assert figures["one_at_a_time"]["wall_s"] > 0 and figures["two_at_a_time"]["wall_s"] > 0


def test_the_ray_overhead_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "overhead")
    assert figures["caviar_train_examples_per_s"] > 0 and figures["ray_tune_examples_per_s"] > 0
    assert figures["ratio"] > 0


def test_the_caviar_against_panda_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "caviar_vs_panda")
    assert figures["panda"]["trials"] == 1 and figures["caviar"]["trials"] == 2
    lr = figures["panda"]["lr_from_lr_find"]
    assert lr["base_lr"] < lr["lr"] < lr["max_lr"]
    assert 0 <= figures["caviar"]["test_accuracy"] <= 1


def test_the_quality_benchmark_runs_both_routes(tmp_path):
    figures = smoke(tmp_path, "quality")
    route, compared = figures["route"], figures["compared_route"]
    assert route["pretrain"] is not None and compared["pretrain"] is None  # stage 0, then from scratch
    assert route["trials"] == compared["trials"] == 2 and route["test_examples"] > 0
    assert route["promoted"]["version"] == "v1" and 0 <= route["test_accuracy"] <= 1


def test_the_fused_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "fused")
    tiny = figures["models"]["tiny"]
    assert tiny["today_8_ray_trials_2_at_a_time"]["trials"] == 8
    assert tiny["fused"]["k2"]["examples_per_s"] > 0 and tiny["fused"]["k2"]["ratio_to_today"] > 0


def test_the_fused_asha_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "fused_asha")
    shipped, sequential = figures["as_shipped"], figures["one_at_a_time"]
    assert shipped["fuse_1"]["wall_s"] > 0 and shipped["fuse_4"]["wall_s"] > 0
    assert set(sequential["max_value_difference_by_sample"]) == {"0", "1", "2", "3"}
