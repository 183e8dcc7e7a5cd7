"""Learning-rate schedules at known steps: the warmup ramp, linear decay, cosine, the cyclical triangle."""

from __future__ import annotations

import copy

import pytest
import torch

from model.config import TrainConfig
from model.schedule import build_optimizer, build_schedule


def lrs(steps: int, total: int = 100, per_epoch: int = 100, **train) -> list[float]:
    cfg = TrainConfig(**train)
    net = torch.nn.Linear(2, 2)
    opt = build_optimizer(net, cfg)
    sched = build_schedule(opt, cfg, total, per_epoch)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_ramps_then_decays_to_zero():
    got = lrs(101, lr=1e-3, schedule="linear", warmup_ratio=0.1)
    assert got[0] == 0.0
    assert got[5] == pytest.approx(0.5e-3)
    assert got[10] == pytest.approx(1e-3)
    assert got[55] == pytest.approx(0.5e-3)
    assert got[100] == pytest.approx(0.0)


def test_cosine_is_half_way_at_the_middle_of_decay():
    got = lrs(101, lr=1e-3, schedule="cosine", warmup_ratio=0.0)
    assert got[0] == pytest.approx(1e-3)
    assert got[50] == pytest.approx(0.5e-3)
    assert got[100] == pytest.approx(0.0, abs=1e-12)


def test_constant_after_warmup():
    got = lrs(50, lr=2e-3, schedule="constant", warmup_ratio=0.1)
    assert got[5] == pytest.approx(1e-3)
    assert got[10:] == pytest.approx([2e-3] * 40)


def test_cyclical_triangle():
    # half-cycle of 0.2 epochs = 20 steps: base at 0, max at 20, base at 40
    got = lrs(81, schedule="cyclical", base_lr=1e-4, max_lr=1e-3, cycle_epochs=0.2)
    assert got[0] == pytest.approx(1e-4)
    assert got[10] == pytest.approx(5.5e-4)
    assert got[20] == pytest.approx(1e-3)
    assert got[40] == pytest.approx(1e-4)
    assert got[60] == pytest.approx(1e-3)


def test_triangular2_halves_the_amplitude_each_cycle():
    got = lrs(61, schedule="cyclical", base_lr=1e-4, max_lr=1e-3, cycle_epochs=0.2, cyclical_mode="triangular2")
    assert got[20] == pytest.approx(1e-3)
    assert got[60] == pytest.approx(1e-4 + 0.5 * 9e-4)


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scaling_with_batch_size(rule, factor):
    cfg = TrainConfig(lr=1e-3, batch_size=128, reference_batch_size=32, lr_scaling=rule)
    assert cfg.effective_lr() == pytest.approx(1e-3 * factor)


def test_no_weight_decay_on_bias_and_layernorm():
    from transformers import BertConfig, BertForSequenceClassification

    net = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    )
    decay, no_decay = build_optimizer(net, TrainConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(names[id(p)].endswith(("bias", "LayerNorm.weight")) for p in no_decay["params"])


def test_the_cpu_adamw_is_fused_and_steps_as_the_reference_does():
    """The fused update (one kernel for all parameters) must move the weights exactly as
    torch's per-parameter AdamW would, decay groups included."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    twin, start = copy.deepcopy(net), copy.deepcopy(net)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    ours = build_optimizer(net, cfg)
    assert all(group["fused"] for group in ours.param_groups)
    weights = [p for n, p in twin.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in twin.named_parameters() if n.endswith("bias")]
    reference = torch.optim.AdamW(
        [{"params": weights, "weight_decay": 0.1}, {"params": biases, "weight_decay": 0.0}],
        lr=1e-2,
        betas=cfg.betas,
        eps=cfg.eps,
        foreach=False,
    )
    x, y = torch.randn(16, 6), torch.randint(0, 2, (16,))
    for model, opt in ((net, ours), (twin, reference)):
        for _ in range(5):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    for mine, theirs, before in zip(net.parameters(), twin.parameters(), start.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(mine, before)  # the update really moved every tensor
