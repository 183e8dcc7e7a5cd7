"""Issue 50, item 1: every `train.*` field holds for a fused member as for its trial alone.

A field is either fused per member (the step's arithmetic takes it per member: model/fused.py's
FUSIBLE_TRAIN) or shared by a group (members that differ in it go to different groups, and the
group trains with it through the loop a single run uses, model/fit_loop.py). The walk fails on a
field that is neither, so a new field cannot be silently ignored by fused trials.
"""

from __future__ import annotations

import pytest
import torch

from caviar.experiment.record import load_trials
from caviar.tuning.members.fusion import group_members
from model.config import TrainConfig
from model.data import load_splits
from model.fused import FUSIBLE_TRAIN
from tests.code.tuning.tune_runs import TUNE, run_caviar, summary_of
from tests.conftest import TINY, tiny_job_yaml
from tests.model.test_fused import alone, fused, member_config

# the shared fields a search can vary, each proved on a real search (below): the recipe's shape
SHARED_SEARCHED = {
    "optimizer": ["adamw", "sgd"],
    "batch_size": [8, 16],
    "epochs": [1, 2],
    "max_steps": [None, 20],
    "eval_every": [0.5, 1.0],
    "seed": [1, 2],
    "lr_scaling": ["none", "sqrt"],
    "reference_batch_size": [8, 64],
    "patience": [None, 1],
}
# how the steps compute, not what they compute (model/loop.py's _same_recipe ignores them too):
# shared by a group, since one stack runs on one device, in one precision, compiled or not
SHARED_EXECUTION = {"num_threads", "device", "compile", "precision"}
# a value other than the default for each field fused per member, and what it needs to act
PER_MEMBER = {
    "lr": ({"lr": 8e-3}, {}),
    "betas": ({"betas": [0.8, 0.99]}, {}),
    "eps": ({"eps": 1e-3}, {}),
    "weight_decay": ({"weight_decay": 0.3}, {}),
    "momentum": ({"momentum": 0.5}, {"optimizer": "sgd"}),
    "schedule": ({"schedule": "cosine"}, {}),
    "warmup_ratio": ({"warmup_ratio": 0.5}, {}),
    "base_lr": ({"base_lr": 1e-3}, {"schedule": "cyclical"}),
    "max_lr": ({"max_lr": 1e-2}, {"schedule": "cyclical"}),
    "cyclical_mode": ({"cyclical_mode": "triangular2"}, {"schedule": "cyclical", "cycle_epochs": 0.1}),
    "cycle_epochs": ({"cycle_epochs": 0.1}, {"schedule": "cyclical"}),
    "grad_clip": ({"grad_clip": 0.01}, {}),
    "label_smoothing": ({"label_smoothing": 0.2}, {}),
    "init_seed": ({"init_seed": 7}, {}),
}
STEPS = 12


def test_every_train_field_is_fused_per_member_or_shared_by_its_group():
    fields = set(TrainConfig.model_fields)
    classified = FUSIBLE_TRAIN | set(SHARED_SEARCHED) | SHARED_EXECUTION
    assert fields == classified, {"unclassified": sorted(fields - classified), "gone": sorted(classified - fields)}
    assert set(PER_MEMBER) == set(FUSIBLE_TRAIN)  # each per-member field has its proof below
    default = TrainConfig()
    for field in sorted(fields - FUSIBLE_TRAIN):  # members that differ in a shared field never share a stack
        values = SHARED_SEARCHED.get(field) or [getattr(default, field), {"num_threads": 2, "device": "cpu"}.get(field)]
        if field in ("compile", "precision"):
            values = ["auto", "off"] if field == "compile" else ["auto", "fp32"]
        members = [{"train.lr": 1e-3, f"train.{field}": value} for value in values]
        assert len(group_members(members, 8)) == 2, field


@pytest.fixture(scope="module")
def splits():
    return load_splits(member_config({}).data)


@pytest.mark.parametrize("field", sorted(PER_MEMBER))
def test_a_field_fused_per_member_trains_each_member_as_alone(splits, field):
    """Two members that differ in `field` only: each equals its run alone, and they part ways (the
    field acts: the proof is not vacuous)."""
    changed, needs = PER_MEMBER[field]
    optimizer = needs.get("optimizer", "adamw")
    base = {k: v for k, v in needs.items() if k != "optimizer"}
    cfgs = [member_config(base, optimizer), member_config({**base, **changed}, optimizer)]
    losses, weights, batches = fused(cfgs, splits, how="loop", steps=STEPS)
    for i, cfg in enumerate(cfgs):
        own_losses, own_weights = alone(cfg, splits, batches)
        assert [step[i] for step in losses] == pytest.approx(own_losses, abs=1e-5), (field, i)
        for name, value in own_weights.items():
            assert torch.allclose(weights[i][name], value, atol=1e-4, rtol=0), (field, i, name)
    assert any(not torch.equal(weights[0][n], weights[1][n]) for n in weights[0]), f"{field} changed nothing"


@pytest.mark.slow
def test_fields_shared_by_a_group_hold_as_for_the_trial_alone(tmp_path, ray_head):
    """A seeded FIFO search over every searchable shared field, run as single trials and with
    `fuse: 4`: each configuration gets the same evaluations (steps and validation losses)."""
    space = {f"train.{field}": {"choice": values} for field, values in SHARED_SEARCHED.items()}
    space["train.lr"] = {"choice": [3e-3]}
    spec = {**TUNE, "search_space": space, "num_samples": 4, "scheduler": {"type": "fifo"}, "seed": 11}
    histories = {}
    for fuse in (1, 4):
        job = tiny_job_yaml(tmp_path / f"job{fuse}.yaml", storage=str(tmp_path / "results"), fuse=fuse, **spec)
        summary = summary_of(run_caviar("tune", job, "--name", f"s{fuse}", "--json", env=ray_head))
        assert all(t["status"] in ("finished", "stopped") for t in summary["trials"]), summary["trials"]
        histories[fuse] = {
            tuple(sorted((k, str(v)) for k, v in trial.params.items())): (
                list(trial.history["step"]),
                [round(v, 4) for v in trial.history["val_loss"]],
            )
            for trial in load_trials(tmp_path / "results" / f"s{fuse}")
        }
    assert len(histories[1]) == 4 and histories[4] == histories[1]
    for field in SHARED_SEARCHED:  # every shared field took both its values: not vacuous
        taken = {dict(params)[f"train.{field}"] for params in histories[1]}
        assert len(taken) == 2, (field, taken)
    assert TINY["train"]["batch_size"] in SHARED_SEARCHED["batch_size"]
