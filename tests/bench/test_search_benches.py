"""The benchmarks that compare searches (ASHA, concurrency, Ray's overhead, caviar against panda, the
quality route), each in its smoke form, as Ray Tune's examples run with --smoke-test (issue 50, item
10). A smoke form runs the whole script on the fixture reviews with a tiny model; its figures say
the script works, not how fast anything is."""

from __future__ import annotations

import pytest

from tests.bench.smoke import smoke

pytestmark = pytest.mark.slow


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


def test_the_quality_benchmark_runs_its_route(tmp_path):
    figures = smoke(tmp_path, "quality")
    route = figures["route"]
    assert route["pretrain"] is not None and figures["compared_route"] is None  # stage 0; no comparison
    assert route["trials"] == 2 and route["test_examples"] > 0
    assert route["promoted"]["version"] == "v1" and 0 <= route["test_accuracy"] <= 1
