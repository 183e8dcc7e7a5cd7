"""Fused trials (issue 32, items 2 and 3): member i of a stacked run equals its configuration trained
alone, step for step; a member compacted away leaves the others' trajectories unchanged, bit for bit."""

from __future__ import annotations

import pytest
import torch

from model.batches import epoch_batches
from model.config import TrialConfig
from model.data import load_splits
from model.fused import StackedNet, StackedOptimizer, fused_step
from model.loop import train_step
from model.schedule import build_optimizer, build_schedule
from model.train import prepare, prepare_members
from tests.conftest import TINY

STEPS = 50
MEMBERS = [  # every fusible key that the step's arithmetic takes per member
    {"lr": 3e-3, "weight_decay": 0.0, "schedule": "linear", "warmup_ratio": 0.1, "grad_clip": 1.0, "seed": 1},
    {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.8, 0.99], "schedule": "cosine", "grad_clip": 0.05, "init_seed": 2},
    {"lr": 2e-3, "label_smoothing": 0.1, "schedule": "constant", "init_seed": 9},
    {"lr": 5e-3, "eps": 1e-6, "schedule": "cyclical", "cycle_epochs": 0.5, "grad_clip": None, "seed": 3},
]


def member_config(train: dict, optimizer: str = "adamw", **model_keys) -> TrialConfig:
    model = {**TINY["model"], "dropout": 0.0, "head_dropout": 0.0, **model_keys}
    return TrialConfig.model_validate(
        {**TINY, "model": model, "train": {**TINY["train"], **train, "optimizer": optimizer}}
    )


def the_batches(run, steps: int) -> list[tuple[int, torch.Tensor]]:
    """One data order for every member (the group's), epoch after epoch."""
    planned, epoch = [], 0
    while len(planned) < steps:
        planned += run.train_set.plan(epoch_batches(run.train_set.data, 8, 7, epoch))
        epoch += 1
    return planned[:steps]


def alone(cfg: TrialConfig, splits, batches) -> tuple[list[float], dict]:
    run = prepare(cfg, splits)  # its precision (bf16 autocast or not) comes with cfg.train
    optimizer = build_optimizer(run.net, cfg.train)
    schedule = build_schedule(optimizer, cfg.train, len(batches), 23)
    losses = []
    for width, rows in batches:
        losses.append(float(train_step(run, width, rows, optimizer, cfg.train.grad_clip, cfg.train.label_smoothing)))
        schedule.step()
    return losses, {k: v.detach().clone() for k, v in run.net.state_dict().items()}


def fused(
    cfgs: list[TrialConfig],
    splits,
    drop_at: int | None = None,
    drop: int = 1,
    how: str = "auto",
    compile=False,
    steps: int = STEPS,
):
    run, nets = prepare_members(cfgs, splits)  # each member's init from its own seed, the data once
    net = StackedNet(nets, how, compile=compile).train()
    optimizer = StackedOptimizer(net, [c.train for c in cfgs], steps, 23)
    batches = the_batches(run, steps)
    losses, live = [], list(range(len(cfgs)))
    for step, (width, rows) in enumerate(batches):
        if step == drop_at:
            kept = [i for i in range(len(live)) if live[i] != drop]
            net.keep(kept)
            optimizer.keep(kept)
            live = [live[i] for i in kept]
        got = fused_step(net, optimizer, run.train_set.batch(width, rows), cfgs[0].train.precision)
        losses.append(dict(zip(live, got.tolist(), strict=True)))
    return losses, {m: net.member_state(i) for i, m in enumerate(live)}, batches


@pytest.fixture(scope="module")
def splits():
    return load_splits(member_config({}).data)


@pytest.mark.parametrize(("optimizer", "how"), [("adamw", "loop"), ("adamw", "vmap"), ("sgd", "loop")])
def test_each_member_is_its_configuration_trained_alone(splits, optimizer, how):
    extra = {"momentum": 0.8} if optimizer == "sgd" else {}
    cfgs = [member_config({**m, **extra}, optimizer) for m in MEMBERS]
    losses, weights, batches = fused(cfgs, splits, how=how)
    for i, cfg in enumerate(cfgs):
        own_losses, own_weights = alone(cfg, splits, batches)
        assert [step[i] for step in losses] == pytest.approx(own_losses, abs=1e-5), f"member {i}"
        for name, value in own_weights.items():
            # attention's key bias shifts every score of a query alike, which softmax ignores: its exact
            # gradient is 0 and its computed one rounding noise, which AdamW's normalised step turns into
            # lr-sized moves. The loop (CPU) rounds as a single run does and matches it to the bit;
            # vmap's batched kernels round otherwise (1.1e-4 on member 2's key bias, measured; the
            # other weights within 2e-5)
            tolerance = 1e-3 if how == "vmap" and name.endswith("attention.self.key.bias") else 1e-4
            assert torch.allclose(weights[i][name], value, atol=tolerance, rtol=0), (i, name)
    assert len({round(step[0], 6) for step in losses}) > STEPS // 2  # it trained: the losses moved


@pytest.mark.parametrize("how", ["loop", "vmap"])
def test_a_member_compacted_away_leaves_the_others_unchanged_bit_for_bit(splits, how):
    cfgs = [member_config(m) for m in MEMBERS]
    whole, whole_weights, _ = fused(cfgs, splits, how=how)
    cut, cut_weights, _ = fused(cfgs, splits, drop_at=20, drop=1, how=how)
    assert all(1 not in step for step in cut[20:]) and all(1 in step for step in cut[:20])
    for member in (0, 2, 3):
        assert [step[member] for step in cut] == [step[member] for step in whole]
        for name, value in whole_weights[member].items():
            assert torch.equal(cut_weights[member][name], value), (member, name)


@pytest.mark.parametrize("how", ["loop", "vmap"])
def test_with_dropout_each_member_draws_its_own_masks(splits, how):
    """Two members with the same init and the same configuration part ways only through their masks."""
    cfg = TrialConfig.model_validate({**TINY, "model": {**TINY["model"], "dropout": 0.3}})
    run, nets = prepare_members([cfg, cfg], splits)
    net = StackedNet(nets, how).train()
    width, rows = the_batches(run, 1)[0]
    logits = net.logits(**{k: v for k, v in run.train_set.batch(width, rows).items() if k != "labels"})
    assert not torch.equal(logits[0], logits[1])
    net.train(False)
    logits = net.logits(**{k: v for k, v in run.train_set.batch(width, rows).items() if k != "labels"})
    assert torch.equal(logits[0], logits[1])


def test_without_the_fused_kernel_the_stacked_formula_stays_close(splits, monkeypatch):
    """Devices without torch's fused AdamW get the [K]-tensor update: an ulp a step from torch's,
    which this tiny run's 50 steps grow to a few 1e-5 in loss."""
    monkeypatch.setattr("model.fused.FUSED_ADAMW_DEVICES", ())
    cfgs = [member_config(m) for m in MEMBERS]
    losses, _, batches = fused(cfgs, splits)
    for i, cfg in enumerate(cfgs):
        own_losses, _ = alone(cfg, splits, batches)
        assert [step[i] for step in losses] == pytest.approx(own_losses, abs=2e-4), f"member {i}"


@pytest.mark.parametrize("how", ["loop", "vmap"])
def test_each_member_keeps_its_own_dropout(splits, how):
    """Dropout is fusible: a member without dropout in a group with dropout members still equals its
    configuration trained alone, and a member with dropout from the same init parts ways with it."""
    cfgs = [
        member_config({"init_seed": 4}),
        member_config({"init_seed": 4}, dropout=0.3),
        member_config({"init_seed": 4}, dropout=0.1),
        member_config({"init_seed": 6}),
    ]
    losses, _, batches = fused(cfgs, splits, how=how)
    for i in (0, 3):
        own, _ = alone(cfgs[i], splits, batches)
        assert [step[i] for step in losses] == pytest.approx(own, abs=1e-5), f"member {i}"
    for i in (1, 2):
        assert losses[0][i] != losses[0][0], f"member {i} drew no masks"


def test_a_compiled_stack_trains_as_the_eager_one(splits, monkeypatch):
    """train.compile on a fused group (vmap: the CUDA route, where `auto` compiles): the traced
    forward gives the eager numbers, through a compaction (a new member count) too. Traced by
    dynamo with the eager backend: the graph capture is what fusion adds (vmap over functional_call);
    aot_eager cost 17 s here, and test_train checks a compiled step's autograd."""
    from model.device import COMPILE_BACKEND_ENV

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")
    cfgs = [member_config(m) for m in MEMBERS[:3]]
    eager, eager_weights, _ = fused(cfgs, splits, drop_at=3, how="vmap", steps=6)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    traced, traced_weights, _ = fused(cfgs, splits, drop_at=3, how="vmap", compile=True, steps=6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it was traced, not run eagerly
    for member in (0, 2):
        assert [step[member] for step in traced] == pytest.approx([step[member] for step in eager], abs=1e-5)
        for name, value in eager_weights[member].items():
            assert torch.allclose(traced_weights[member][name], value, atol=1e-4, rtol=0), (member, name)


def test_under_bf16_autocast_each_member_is_its_run_alone(splits):
    """train.precision bf16: the stack steps under the single run's autocast; on CPU the loop does
    the same bf16 arithmetic as each run alone (CUDA's bf16 is unmeasured: no GPU was lent)."""
    cfgs = [member_config({**m, "precision": "bf16"}) for m in MEMBERS[:2]]
    losses, _, batches = fused(cfgs, splits, how="loop", steps=20)
    for i, cfg in enumerate(cfgs):
        own, _ = alone(cfg, splits, batches)
        assert [step[i] for step in losses] == pytest.approx(own, abs=1e-5), f"member {i}"
