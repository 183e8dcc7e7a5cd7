"""K networks of one shape trained as one stacked model: horizontal fusion (HFTA, MLSys'21).

Every parameter gains a leading member dimension; one batch feeds all K members, and one forward
and one backward (vmap over functional_call) do all K members' work, so a small model that leaves
a GPU idle does K times the work per launch. The optimizer step is stacked too: AdamW or SGD with
per-member lr, betas, eps, weight decay and momentum as [K] tensors, gradient clipping by each
member's own norm, and each member's own schedule. Members never mix: member i's loss depends on
member i's parameters only, so the summed loss gives each member exactly its own gradients.

A stopped member is compacted away (`keep`): its parameters and optimizer state leave the stack.

To run: see bench/fused.py; tests/model/test_fused.py checks member i against the same
configuration trained alone.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from model.config import TrainConfig
from model.device import autocast, compiled
from model.evaluate import cross_entropy
from model.schedule import FUSED_ADAMW_DEVICES, NO_DECAY, build_schedule

# what may differ between the members of one fused group: the step's arithmetic takes them per member
FUSIBLE_TRAIN = frozenset(
    {
        "lr",
        "weight_decay",
        "betas",
        "eps",
        "momentum",
        "schedule",
        "warmup_ratio",
        "base_lr",
        "max_lr",
        "cyclical_mode",
        "cycle_epochs",
        "grad_clip",
        "label_smoothing",
        "init_seed",
    }
)
FUSIBLE_MODEL = frozenset({"dropout", "head_dropout"})  # each member runs its own skeleton's dropout


class StackedNet:
    """K copies of one architecture as stacked tensors; `logits` runs all K on one batch."""

    def __init__(self, nets: list[nn.Module], mode: str = "auto", compile: bool = False):
        self.mode = mode  # "vmap", "loop", or "auto": vmap on CUDA, the loop on CPU (see logits)
        # train.compile: the stacked forward traced by torch.compile; the parameters are its inputs
        self.compiled = None
        if compile:
            self.compiled = compiled(self._forward)
        if len({type(n) for n in nets}) != 1 or len({tuple(_shapes(n)) for n in nets}) != 1:
            raise ValueError("fused members must share one architecture (every parameter's name and shape)")
        # each member's module tree without weights: the same but for its dropout probabilities
        self.skeletons = [copy.deepcopy(n).to("meta") for n in nets]
        self.skeleton = self.skeletons[0]
        self.dropouts = [_dropouts(n) for n in nets]  # read once: the step groups members by them
        params, buffers = stack_module_state(nets)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
        self.decayed = {k: not k.endswith(NO_DECAY) for k in self.params}  # BERT's recipe, as parameter_groups

    @property
    def members(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def train(self, mode: bool = True) -> StackedNet:
        for skeleton in self.skeletons:
            skeleton.train(mode)
        return self

    def _alike(self) -> list[list[int]]:
        """Members in runs that share dropout probabilities (one run when all do): one vmap each."""
        return list({d: [i for i, e in enumerate(self.dropouts) if e == d] for d in self.dropouts}.values())

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[K, batch, labels], each member with its own dropout masks. On CUDA one vmap over
        functional_call runs all members at once; on CPU a loop over the members' slices, the same
        numbers and faster in whole steps there (bench/fused.py: 1.00x against vmap's 0.92x of
        today's way at K = 2, default model; vmap runs SDPA's CPU kernel member by member)."""
        forward = self.compiled or self._forward
        return forward(self.params, self.buffers, input_ids, attention_mask)

    def _forward(self, params: dict, buffers: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.how(input_ids.device) == "loop":
            return torch.stack(
                [
                    functional_call(
                        self.skeletons[i],
                        ({k: v[i] for k, v in params.items()}, {k: v[i] for k, v in buffers.items()}),
                        (),
                        kwargs,
                    ).logits
                    for i in range(self.members)
                ]
            )
        runs = self._alike()
        if len(runs) == 1:
            return self._vmapped(self.skeleton, params, buffers, input_ids, attention_mask)
        out = [None] * self.members
        for run in runs:  # a vmap over each run's slices; the stack's order is put back after
            index = torch.tensor(run, device=input_ids.device)
            mine = {k: v.index_select(0, index) for k, v in params.items()}
            theirs = {k: v.index_select(0, index) for k, v in buffers.items()}
            logits = self._vmapped(self.skeletons[run[0]], mine, theirs, input_ids, attention_mask)
            for j, i in enumerate(run):
                out[i] = logits[j]
        return torch.stack(out)

    @staticmethod
    def _vmapped(skeleton, params, buffers, input_ids, attention_mask) -> torch.Tensor:
        def one(params, buffers, ids, mask):
            return functional_call(skeleton, (params, buffers), (), {"input_ids": ids, "attention_mask": mask}).logits

        return vmap(one, in_dims=(0, 0, None, None), randomness="different")(params, buffers, input_ids, attention_mask)

    def how(self, device: torch.device) -> str:
        return self.mode if self.mode != "auto" else ("vmap" if device.type == "cuda" else "loop")

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i as an ordinary state dict (persistent buffers only), for load_state_dict."""
        stacked = {**self.params, **self.buffers}
        return {k: stacked[k][i].detach().clone() for k in self.skeleton.state_dict()}

    def keep(self, members: list[int]) -> None:
        """Compact the stack to `members` (indices, in the order they stay in)."""
        index = torch.tensor(members, dtype=torch.long)
        self.params = {k: v.detach()[index].clone().requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v[index].clone() for k, v in self.buffers.items()}
        self.skeletons = [self.skeletons[i] for i in members]
        self.dropouts = [self.dropouts[i] for i in members]
        self.skeleton = self.skeletons[0] if members else self.skeleton  # the last one stopped: kept for its keys


def _shapes(net: nn.Module):
    return [(k, tuple(v.shape)) for k, v in net.state_dict().items()]


def _dropouts(net: nn.Module) -> tuple[float, ...]:
    return tuple(m.p for m in net.modules() if isinstance(m, nn.Dropout))


def _per_member(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """[K] values shaped to broadcast against a stacked parameter [K, ...]."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """AdamW (torch's update, step for step) or SGD with momentum, each hyperparameter per member,
    with each member's schedule and gradient clip. Hyperparameters come from each member's TrainConfig."""

    def __init__(self, net: StackedNet, cfgs: list[TrainConfig], total_steps: int, steps_per_epoch: int):
        kinds = {c.optimizer for c in cfgs}
        if len(kinds) != 1:
            raise ValueError(f"fused members must share an optimizer kind (got {', '.join(sorted(kinds))})")
        self.kind, self.net, self.cfgs, self.step_count = kinds.pop(), net, list(cfgs), 0
        self.state = {k: {} for k in net.params}
        # each member's schedule, on a stand-in optimizer: the same code as a single run's, so the lr
        # (and SGD's cycled momentum) at every step is the one that run would use
        self.schedules = [self._schedule(c, total_steps, steps_per_epoch) for c in cfgs]

    def _schedule(self, cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
        stand_in = [torch.zeros(1, requires_grad=True)]
        if self.kind == "sgd":
            optimizer = torch.optim.SGD(stand_in, lr=cfg.effective_lr(), momentum=cfg.momentum)
        else:
            optimizer = torch.optim.AdamW(stand_in, lr=cfg.effective_lr(), betas=cfg.betas, eps=cfg.eps)
        return build_schedule(optimizer, cfg, total_steps, steps_per_epoch)

    def group(self, key: str) -> list[float]:
        """The value every member's optimizer holds now (lr, momentum), from its schedule."""
        return [s.optimizer.param_groups[0][key] for s in self.schedules]

    @torch.no_grad()
    def clip(self) -> torch.Tensor:
        """Scale each member's gradients to its own grad_clip by its own norm; returns the [K] norms.
        Member by member with clip_grad_norm_'s own arithmetic (its foreach norms, its coefficient):
        a norm summed another way differs by an ulp, which AdamW's normalised step grows, on BERT's
        attention key bias (whose gradient is rounding noise), to 2e-4 in 50 steps at lr 2e-3."""
        grads = [p.grad for p in self.net.params.values() if p.grad is not None]
        norms = []
        for i, cfg in enumerate(self.cfgs):
            mine = [g[i] for g in grads]
            norm = torch.nn.utils.get_total_norm(mine, 2.0, foreach=True)
            if cfg.grad_clip:
                torch._foreach_mul_(mine, torch.clamp(cfg.grad_clip / (norm + 1e-6), max=1.0))
            norms.append(norm)
        return torch.stack(norms)

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        lrs = self.group("lr")
        stepped = [(name, p) for name, p in self.net.params.items() if p.grad is not None]
        if self.kind == "adamw":
            for name, p in stepped:
                state = self.state[name]
                if not state:
                    state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
                    state["steps"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                state["steps"].add_(1)
        if self.kind == "adamw" and stepped and stepped[0][1].device.type in FUSED_ADAMW_DEVICES:
            self._adamw_kernel(stepped, lrs)
        else:
            for name, p in stepped:
                decay = [c.weight_decay if self.net.decayed[name] else 0.0 for c in self.cfgs]
                (self._sgd if self.kind == "sgd" else self._adamw_stacked)(name, p, lrs, decay)
        for schedule in self.schedules:
            schedule.optimizer.step()  # a no-op on the stand-in (no gradient); keeps torch's order check quiet
            schedule.step()

    def _adamw_kernel(self, stepped: list[tuple[str, torch.Tensor]], lrs: list[float]) -> None:
        """Each member through torch's fused AdamW kernel on its slices, one call per parameter group
        as a single run makes: that run's update to the bit. The [K]-tensor formula (below) is an ulp
        off a step (4e-5 in loss after 50 steps at lr 5e-3); this costs 2K calls a step, not 2."""
        for decayed in (True, False):
            group = [(name, p) for name, p in stepped if self.net.decayed[name] == decayed]
            if not group:
                continue
            states = [self.state[name] for name, _ in group]
            for i, c in enumerate(self.cfgs):
                torch._fused_adamw_(
                    [p[i] for _, p in group],
                    [p.grad[i] for _, p in group],
                    [state["m"][i] for state in states],
                    [state["v"][i] for state in states],
                    [],
                    [state["steps"][i] for state in states],
                    lr=lrs[i],
                    beta1=c.betas[0],
                    beta2=c.betas[1],
                    weight_decay=c.weight_decay if decayed else 0.0,
                    eps=c.eps,
                    amsgrad=False,
                    maximize=False,
                )

    def _adamw_stacked(self, name: str, p: torch.Tensor, lrs: list[float], decay: list[float]) -> None:
        """One update for all members, hyperparameters as [K] tensors (devices without the fused kernel)."""
        g, t, state = p.grad, self.step_count, self.state[name]
        beta1 = [c.betas[0] for c in self.cfgs]
        beta2 = [c.betas[1] for c in self.cfgs]
        lr = _per_member(lrs, p)
        p.mul_(1 - lr * _per_member(decay, p))
        state["m"].lerp_(g, 1 - _per_member(beta1, p))
        state["v"].mul_(_per_member(beta2, p)).addcmul_(g, g * (1 - _per_member(beta2, p)))
        correction1 = _per_member([1 - b**t for b in beta1], p)
        correction2 = _per_member([math.sqrt(1 - b**t) for b in beta2], p)
        denom = (state["v"].sqrt() / correction2).add_(_per_member([c.eps for c in self.cfgs], p))
        p.sub_((lr / correction1) * state["m"] / denom)

    def _sgd(self, name: str, p: torch.Tensor, lrs: list[float], decay: list[float]) -> None:
        g, state = p.grad.add(p * _per_member(decay, p)), self.state[name]
        momentum = _per_member(self.group("momentum"), p)
        if "buffer" not in state:
            state["buffer"] = g.clone()
        else:
            state["buffer"].mul_(momentum).add_(g)
        p.sub_(state["buffer"] * _per_member(lrs, p))

    def zero_grad(self) -> None:
        for p in self.net.params.values():
            p.grad = None

    def keep(self, members: list[int]) -> None:
        """Follow StackedNet.keep: each kept member's moments, configuration and schedule, in order."""
        index = torch.tensor(members, dtype=torch.long)
        for state in self.state.values():
            for key in list(state):
                state[key] = state[key][index].clone()
        self.cfgs = [self.cfgs[i] for i in members]
        self.schedules = [self.schedules[i] for i in members]


def fused_step(net: StackedNet, optimizer: StackedOptimizer, batch: dict, precision: str = "fp32") -> torch.Tensor:
    """One optimizer step of every member on one batch; returns the [K] losses, on the device."""
    device = batch["input_ids"].device
    with autocast(device, precision):
        logits = net.logits(batch["input_ids"], batch["attention_mask"])
    smoothing = [c.label_smoothing for c in optimizer.cfgs]  # a single run's loss, each with its own
    losses = torch.stack([cross_entropy(m, batch["labels"], s) for m, s in zip(logits, smoothing, strict=True)])
    losses.sum().backward()  # member i's loss reaches member i's parameters only
    optimizer.clip()
    optimizer.step()
    optimizer.zero_grad()
    return losses.detach()
