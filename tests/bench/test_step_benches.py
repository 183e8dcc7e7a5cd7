"""The benchmarks of one process's work (a training step, stage 0, the allocator, the service and
the gate), each in its smoke form on the fixture reviews with a tiny model (issue 50, item 10)."""

from __future__ import annotations

import pytest

from tests.bench.smoke import smoke

pytestmark = pytest.mark.slow


def test_the_train_one_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "train_one")
    assert figures["smoke"] and figures["steps"] > 0 and figures["plain_loop_steps"] > 0
    assert 0 <= figures["test_accuracy"] <= 1 and figures["throughput_ratio"] > 0


def test_the_stack_of_one_benchmark_runs_and_its_two_steps_agree(tmp_path):
    """A configuration trained by the plain step and as a fused stack of one ends with the same loss."""
    figures = smoke(tmp_path, "stack_of_one")
    assert set(figures["models"]) == {"tiny", "default"}
    for model in figures["models"].values():
        assert model["steps"] > 0 and model["plain_ms_per_step"] > 0 and model["stacked_over_plain"] > 0
        assert model["first_loss"]["plain"] != model["last_loss"]["plain"] and model["last_loss_gap"] < 1e-4


def test_the_step_overhead_benchmark_runs(tmp_path):
    tiny = smoke(tmp_path, "step_overhead")["tiny"]
    assert tiny["old"]["ms_per_step"] > 0 and tiny["new"]["aten_ops_per_step"] > 0
    assert tiny["new_compiled"]["compile_pass_s"] > 0 and tiny["ms_ratio"] > 0


def test_the_precision_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "precision")
    assert figures["steps"]["mlm"]["ms_per_step"]["bf16"] > 0 and figures["steps"]["mlm"]["bf16_over_fp32"] > 0
    assert figures["short_pretraining"]["fp32"]["steps"] > 0


def test_the_mlm_rows_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "mlm_rows", result="mlm_rows_bf16")
    assert figures["ms_per_step"]["aligned"] > 0 and figures["aligned_over_unpadded"] > 0


def test_the_pretrain_objectives_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "pretrain_objectives")
    assert set(figures["precisions"]) == {"bf16", "fp32"} and figures["model"]["hidden"] == 32


def test_the_allocator_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "allocator")
    glibc = figures["variants"]["glibc"]
    assert glibc["peak_rss_gib"] > 0 and glibc["speed_vs_glibc"] == 1.0  # the yardstick against itself
    assert all(v["speed_vs_glibc"] is not None for v in figures["variants"].values())


def test_the_selection_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "selection")
    assert figures["gate_reviews"] > 0 and figures["false_promotions"]["pairs"] > 0


def test_the_gate_overlap_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "gate_overlap")
    assert figures["train_reviews"] == 240 and set(figures) >= {"split_1", "split_2"}
    # version 2 with another validation share: no gate review was trained on, before the rule or after
    assert figures["split_2"]["val_fraction 0.2"]["seen_by_the_version_in_service"] == 0
    assert all(row["seen_after_the_rule"] == 0 for v in (1, 2) for row in figures[f"split_{v}"].values())


def test_the_serve_load_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "serve_load")
    assert figures["single"]["requests"] == 100 and figures["single"]["errors"] == 0
    assert figures["batch"]["errors"] == 0 and figures["single"]["p99_ms"] > 0


def test_the_serve_swap_benchmark_runs(tmp_path):
    figures = smoke(tmp_path, "serve_swap")
    assert figures["requests"] > 0 and figures["link_flips"] >= 2 and figures["swaps_logged"] >= 1
    assert figures["versions_answering"] == ["swap/v1", "swap/v2"] and figures["failed"] == len(figures["failures"])


def test_the_slow_clients_benchmark_runs(tmp_path):
    (phase,) = smoke(tmp_path, "slow_clients")["phases"]
    assert phase["slow_connections"] == 20 and phase["/health"]["share_200"] > 0
