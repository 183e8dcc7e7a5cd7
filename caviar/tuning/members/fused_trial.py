"""What one fused Ray trial runs: a group of member configurations as one stacked model.

One batch stream feeds every member (model/fused.py); at each evaluation each live member is scored
on validation, recorded and checkpointed in its own folder, <trial>/members/<member id>/, in the
layout a plain trial uses (result.json rows, checkpoint_<n>/ in the HF layout with its validation
predictions), so the leaderboard, promote, serve and predict read a member like any trial. ASHA's
decisions come from the experiment's one member rung table (tuning/members/member_rungs.py); a stopped
member is compacted out of the stack. The group's own checkpoint, reported to Ray at every
evaluation, holds the stack, the optimizer and every member's state, for a retry or a resume.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from ray import tune

from caviar.experiment.layout import GROUP_STATE, GROUP_STEP, MEMBER_FILE, MEMBERS_DIR
from caviar.job.keys import nest
from caviar.tuning.members.fusion import GROUP_KEY
from caviar.tuning.members.member_rungs import RungsSpec, actor_for
from caviar.tuning.ray_compat.tensorboard import RunBoard
from caviar.tuning.search.search_space import trial_config
from model.checkpoint import fill_checkpoint
from model.device import compiles, peak_memory_mb
from model.evaluate import EVAL_BATCH, scored
from model.files import temp_checkpoint_dir, write_json_atomically, write_text_atomically
from model.fit_loop import Patience, StepClock, Window, evaluation_plan, evaluation_row, fit_loop
from model.fused import StackedNet, StackedOptimizer, fused_step
from model.predictions import Predictions
from model.train import prepare_members


@dataclass
class Member:
    """One member's own record: where it writes, its best so far, its rows and its share of the cost."""

    member_id: str
    index: int  # its place in the group (stable); its place in the stack changes as members stop
    params: dict
    folder: Path
    rows: list[dict] = field(default_factory=list)
    best: float | None = None
    status: str = "RUNNING"
    share_s: float = 0.0  # its share of the group's seconds: each window's seconds over the live members
    patience: Patience = field(default_factory=Patience)  # train.patience, per member, as a run keeps it

    def write(self, group_id: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"member": self.member_id, "group": group_id, "index": self.index, "params": self.params}
        write_json_atomically(self.folder / MEMBER_FILE, {**record, "status": self.status})
        write_text_atomically(self.folder / "result.json", "".join(json.dumps(row) + "\n" for row in self.rows))


def run_fused_trial(config: dict, *, base: dict, groups: list, splits, cpus: float, rungs: RungsSpec) -> None:
    """`rungs`: the member table's name, rule and metric (member_rungs.RungsSpec, from fused_search.rungs_spec)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per report
    FusedGroup(groups[config[GROUP_KEY]], base, splits, cpus, rungs).fit()


class FusedGroup:
    """The group's stack, optimizer and members, trained by model/fit_loop.py's loop (as one run is):
    to the end, or until every member has stopped."""

    def __init__(self, members_params: list[dict], base: dict, splits, cpus: float, rungs: RungsSpec):
        started, self.rungs = time.perf_counter(), rungs
        context = tune.get_context()
        self.group_id, trial_dir = context.get_trial_id(), Path(context.get_trial_dir())
        self.cfgs = [trial_config(base, params) for params in members_params]
        for cfg in self.cfgs:
            cfg.train.num_threads = cfg.train.num_threads or max(1, int(cpus))
        self.run, nets = prepare_members(self.cfgs, splits)  # each member's init from its own seed
        self.net = StackedNet(nets, compile=compiles(self.cfgs[0].train.compile, self.run.device)).train()
        self.clock = StepClock(self.net.compiled is not None, started)  # its members compile as one
        # one network per distinct model config (its dropout) to load a member into for scoring and
        # saving; the members' own copies go once stacked
        self.eval_nets = {}
        for cfg, net in zip(self.cfgs, nets, strict=True):
            self.eval_nets.setdefault(_model_key(cfg), net)
        del nets
        self.data, self.tc = self.run.train_set, self.cfgs[0].train  # one batch stream: non-fusible
        self.plan = evaluation_plan(self.tc, len(self.data))
        self.optimizer = StackedOptimizer(
            self.net, [c.train for c in self.cfgs], self.plan.total_steps, self.plan.steps_per_epoch
        )
        self.members = [
            Member(f"{self.group_id}_m{i}", i, params, trial_dir / MEMBERS_DIR / f"{self.group_id}_m{i}")
            for i, params in enumerate(members_params)
        ]
        self.live, self.step = list(range(len(self.members))), 0
        if (checkpoint := tune.get_checkpoint()) is not None:
            with checkpoint.as_directory() as folder:
                self.live, self.step = _restore(Path(folder) / GROUP_STATE, self.net, self.optimizer, self.members)
        self.boards = {}
        for member in self.members:
            member.write(self.group_id)
            if member.status == "RUNNING":
                self.boards[member.index] = RunBoard(str(member.folder), nest(member.params))
        self.table = actor_for(rungs.experiment, rungs.rule)

    @property
    def done(self) -> bool:
        return self.step >= self.plan.total_steps or not self.live

    def fit(self) -> None:
        fit_loop(self, self.data)

    def train_one(self, width: int, rows) -> torch.Tensor:
        """One step of every live member on one batch: the [K] losses."""
        batch = self.data.batch(width, rows)
        losses = self.clock.timed(width, lambda: fused_step(self.net, self.optimizer, batch, self.tc.precision))
        self.step += 1
        return losses

    def evaluation(self, window: Window) -> None:
        """Score and record every live member, drop those that stop, report the group to Ray."""
        stopped = _evaluate(self, window)
        kept = [slot for slot in range(len(self.live)) if self.live[slot] not in stopped]
        if len(kept) < len(self.live):  # compaction: the step's cost falls with the members that left
            self.net.keep(kept)
            self.optimizer.keep(kept)
            self.live = [self.live[slot] for slot in kept]
        for member in self.members:
            member.write(self.group_id)
            if member.index in self.boards:
                self.boards[member.index].add(member.rows[-1], member.rows[-1]["training_iteration"])
                if member.status != "RUNNING":
                    self.boards.pop(member.index).close()
        _report_group(self)


def _evaluate(group: FusedGroup, window: Window) -> set[int]:
    """Score, record and checkpoint each live member; returns the members (group indices) that stop."""
    step, plan, seconds, live = group.step, group.plan, window.seconds(), group.live
    stopped, lrs, peak = set(), group.optimizer.group("lr"), peak_memory_mb(group.run.device)
    metric, sign = group.rungs.metric, 1 if group.rungs.mode == "max" else -1
    for slot, index in enumerate(live):
        member, cfg = group.members[index], group.cfgs[index]
        net = group.eval_nets[_model_key(cfg)]
        net.load_state_dict(group.net.member_state(slot))
        net.eval()
        val, positive = scored(net, group.run.val_set, EVAL_BATCH)
        member.share_s += seconds / len(live)
        patience = member.patience.spent(val.loss, cfg.train.patience)
        done = step >= plan.total_steps or patience
        n = len(member.rows) + 1
        row = {
            "training_iteration": n,
            **evaluation_row(group, n, window.mean_loss(slot), val, lrs[slot], window, group.clock),
            "group_examples_per_s": window.examples * len(live) / seconds,
            "members_live": len(live),
            "peak_memory_mb": peak,  # the group's process (CPU) or allocator (CUDA) peak so far
            "memory_share_mb": peak / len(group.members),  # its share: the peak comes with the whole stack
            "time_total_s": member.share_s,  # its share: the cost columns charge a member for it alone
            "done_training": done,
            "stopped_by_patience": patience,
            "trial_id": member.member_id,
        }
        if member.best is None or sign * row[metric] > sign * member.best:
            member.best = row[metric]
            labels = group.run.val_set.data.labels
            _keep_best_checkpoint(member, net, group.run.tokenizer, cfg, row, Predictions.of(labels, positive))
        member.rows.append(row)
        if done:
            member.status = "FINISHED"
            stopped |= {index} if patience else set()  # it leaves the stack; the others go on
            if group.table is not None:  # the others are still compared with it, as with a finished trial
                ray.get(group.table.finish.remote(member.member_id, row["training_iteration"], row[metric]))
        elif not math.isfinite(row["train_loss"]) or _told_to_stop(group, member, row):
            member.status, stopped = "STOPPED", stopped | {index}
    return stopped


def _told_to_stop(group: FusedGroup, member: Member, row: dict) -> bool:
    if group.table is None:
        return False
    return ray.get(group.table.decide.remote(member.member_id, row["training_iteration"], row[group.rungs.metric]))


def _model_key(cfg) -> str:
    return cfg.model.model_dump_json()


def _keep_best_checkpoint(member: Member, net, tokenizer, cfg, row: dict, predictions: Predictions) -> None:
    """The member's best evaluation as checkpoint_<n>/ (the HF layout, no optimizer state); the one
    it replaces is removed after the new one is in place."""
    old = sorted(member.folder.glob("checkpoint_*"))
    target = member.folder / f"checkpoint_{row['training_iteration'] - 1:06d}"
    tmp = temp_checkpoint_dir()
    try:
        fill_checkpoint(tmp, net, tokenizer, cfg, {"metrics": row, "pretrained": None}, None, predictions)
        shutil.move(str(tmp), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for folder in old:
        shutil.rmtree(folder, ignore_errors=True)


def _report_group(group: FusedGroup) -> None:
    """One result for Ray (the group's best member so far) with the group's checkpoint."""
    sign = 1 if group.rungs.mode == "max" else -1
    bests = [m.best for m in group.members if m.best is not None]
    folder = temp_checkpoint_dir()
    try:
        state = {
            "params": {k: v.detach() for k, v in group.net.params.items()},
            "buffers": group.net.buffers,
            "optimizer": group.optimizer.state,
            "step_count": group.optimizer.step_count,
            # the stand-in optimizers too: they hold the lr (and SGD's momentum) each member steps with
            "schedules": [(s.state_dict(), s.optimizer.state_dict()) for s in group.optimizer.schedules],
            "live": group.live,
            "step": group.step,
            "members": [
                {"rows": m.rows, "best": m.best, "status": m.status, "share_s": m.share_s}
                | {"best_val_loss": m.patience.best_val_loss, "bad_evals": m.patience.bad_evals}
                for m in group.members
            ],
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, folder / GROUP_STATE)
        write_json_atomically(folder / GROUP_STEP, {"step": group.step})  # read on resume without torch.load
        best = max(bests, key=lambda v: sign * v)
        metrics = {group.rungs.metric: best, "step": group.step, "members_live": len(group.live)}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _restore(path: Path, net: StackedNet, optimizer: StackedOptimizer, members: list[Member]) -> tuple[list[int], int]:
    """The group as its last checkpoint left it: the stack compacted to its live members."""
    state = torch.load(path, weights_only=False)  # noqa: S614 - the trial's own checkpoint
    live = state["live"]
    net.keep(live)
    optimizer.keep(live)
    net.params = {k: v.clone().requires_grad_(True) for k, v in state["params"].items()}
    net.buffers = state["buffers"]
    optimizer.state, optimizer.step_count = state["optimizer"], state["step_count"]
    for schedule, (saved, stand_in) in zip(optimizer.schedules, state["schedules"], strict=True):
        schedule.load_state_dict(saved)
        schedule.optimizer.load_state_dict(stand_in)
    for member, saved in zip(members, state["members"], strict=True):
        member.rows, member.best, member.status, member.share_s = (
            saved["rows"],
            saved["best"],
            saved["status"],
            saved["share_s"],
        )
        member.patience = Patience(saved.get("best_val_loss", math.inf), saved.get("bad_evals", 0))
    torch.set_rng_state(state["torch_rng"])
    return live, state["step"]
