"""Model checks: training lowers val loss, checkpoints round-trip, resume continues the same curve."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.loop import Trainer
from model.predict import Predictor
from model.train import prepare, train


class Recorder:
    """A report callback that keeps every metrics row and copies of chosen checkpoints."""

    def __init__(self, keep_dir=None):
        self.rows, self.folders, self.keep_dir = [], [], keep_dir

    def __call__(self, metrics, checkpoint):
        self.rows.append(metrics)
        self.folders.append(checkpoint)
        if self.keep_dir is not None and checkpoint is not None:
            shutil.copytree(checkpoint, self.keep_dir / f"step{metrics['step']}")


def test_tiny_training_lowers_val_loss(tiny_config):
    rec = Recorder()
    result = train(tiny_config, report=rec)
    losses = [r["val_loss"] for r in rec.rows]
    assert len(losses) == 6  # eval_every 0.5 over 3 epochs
    assert losses[-1] < losses[0] - 0.1
    assert result.history == rec.rows
    assert max(r["val_accuracy"] for r in result.history) >= 0.9  # the fixture is easy: one phrase decides the label
    assert {"epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_f1", "lr", "examples_per_s"} <= set(
        rec.rows[0]
    )


@pytest.mark.parametrize(("precision", "dtype"), [("auto", torch.float32), ("bf16", torch.bfloat16)])
def test_steps_compute_in_the_precision_asked_for_on_fp32_weights(tiny_config, precision, dtype):
    cfg = tiny_config.model_copy(deep=True)
    cfg.train.precision, cfg.train.max_steps = precision, 4
    run = prepare(cfg)
    seen = []
    layer = run.net.get_submodule("bert.encoder.layer.0.attention.self.query")
    layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype) if module.training else None)
    before = layer.weight.detach().clone()

    Trainer(cfg, run).fit()

    assert seen and set(seen) == {dtype}  # auto on a CPU stays fp32; bf16 is autocast
    assert layer.weight.dtype == torch.float32 and not torch.equal(layer.weight, before)


def test_checkpoint_save_load_gives_identical_predictions(tiny_config, tmp_path):
    rec = Recorder(keep_dir=tmp_path)
    train(tiny_config, report=rec)
    folder = tmp_path / f"step{rec.rows[-1]['step']}"
    texts = ["이 영화 정말 재미있어요", "시간이 아까운 영화", "그냥 그랬다"]
    a = Predictor.from_checkpoint(folder).probabilities(texts)
    b = Predictor.from_checkpoint(folder).probabilities(texts)
    np.testing.assert_array_equal(a, b)
    loaded = load_checkpoint(folder)
    assert loaded.config == tiny_config
    assert loaded.meta["metrics"]["step"] == rec.rows[-1]["step"]
    assert len(loaded.meta["data_fingerprint"]) == 64


def test_predictions_are_labels_with_probabilities(tiny_config, tmp_path):
    rec = Recorder(keep_dir=tmp_path)
    train(tiny_config, report=rec)
    best = max(rec.rows, key=lambda r: r["val_accuracy"])
    pos, neg = Predictor.from_checkpoint(tmp_path / f"step{best['step']}").predict(
        ["배우들 연기가 너무 좋았다", "돈 주고 보기 아까웠어요"]
    )
    assert (pos.label, pos.label_id) == ("긍정", 1) and pos.positive_probability > 0.5
    assert (neg.label, neg.label_id) == ("부정", 0) and neg.positive_probability < 0.5


def test_resume_continues_the_same_loss_curve(tiny_config, tmp_path):
    straight = Recorder(keep_dir=tmp_path)
    train(tiny_config, report=straight)
    assert len(straight.rows) == 6
    first = straight.rows[0]
    resumed = Recorder()
    train(tiny_config, report=resumed, resume_from=tmp_path / f"step{first['step']}")
    assert [r["step"] for r in resumed.rows] == [r["step"] for r in straight.rows[1:]]
    for a, b in zip(resumed.rows, straight.rows[1:], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])


def test_patience_stops_early(tiny_config):
    # lr so small that val_loss cannot move by the 1e-4 that counts as an improvement
    cfg = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"lr": 1e-9, "patience": 2, "epochs": 5})}
    )
    result = train(cfg)
    assert result.stopped_early
    assert len(result.history) == 3  # the first sets the best, two more without improvement stop it


def test_a_resumed_run_reports_only_what_the_driver_has_not_recorded(tiny_config, tmp_path):
    """Issue 9.23: a run whose checkpoint is already its last adds no row on resume, unless the
    driver never recorded that evaluation (then exactly once); a midway one reports only new rows."""
    straight = Recorder(keep_dir=tmp_path)
    train(tiny_config, report=straight)
    last, first = tmp_path / f"step{straight.rows[-1]['step']}", tmp_path / f"step{straight.rows[0]['step']}"

    again = Recorder()
    train(tiny_config, report=again, resume_from=last)
    assert again.rows == []

    replayed = Recorder()
    train(tiny_config, report=replayed, resume_from=last, replay_after_step=straight.rows[-2]["step"])
    assert [r["step"] for r in replayed.rows] == [straight.rows[-1]["step"]]

    midway = Recorder()
    train(tiny_config, report=midway, resume_from=first, replay_after_step=-1)
    assert [r["step"] for r in midway.rows] == [r["step"] for r in straight.rows]

    # the driver's record short of the checkpoint by several evaluations: each comes again, in order,
    # with its own number; only the checkpoint's own evaluation carries the checkpoint
    several = Recorder()
    train(tiny_config, report=several, resume_from=last, replay_after_step=-1)
    assert [(r["step"], r["evaluation"]) for r in several.rows] == [(r["step"], r["evaluation"]) for r in straight.rows]
    assert several.folders[:-1] == [None] * (len(straight.rows) - 1) and several.folders[-1] == last


def test_a_diverging_run_stops_before_it_saves(tiny_config):
    """Issue 9.17: NaN or infinite loss is an error naming the step, and no checkpoint is reported."""
    from model.train import NonFiniteLoss

    cfg = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"lr": 1e30, "grad_clip": None, "warmup_ratio": 0.0})}
    )
    rec = Recorder()
    with pytest.raises(NonFiniteLoss, match="train loss became .* by step"):
        train(cfg, report=rec)
    assert all(np.isfinite(r["train_loss"]) for r in rec.rows)


def test_compiled_and_eager_training_agree(tiny_config, tmp_path, monkeypatch):
    """train.compile=on gives the eager run's numbers within float tolerance, and its checkpoints
    hold the plain module. CI traces with aot_eager (no code generation, seconds instead of ~50 s);
    the graph capture and the training path are the same as with inductor."""
    from model.device import COMPILE_BACKEND_ENV

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    runs = {}
    for setting in ("off", "on"):
        cfg = tiny_config.model_copy(
            update={"train": tiny_config.train.model_copy(update={"compile": setting, "epochs": 1})}
        )
        rec = Recorder(keep_dir=tmp_path / setting)
        (tmp_path / setting).mkdir()
        train(cfg, report=rec)
        runs[setting] = rec.rows
    for eager, compiled in zip(runs["off"], runs["on"], strict=True):
        assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
        assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    assert runs["off"][-1]["compile_s"] == 0 and runs["on"][-1]["compile_s"] > 0
    step = runs["on"][-1]["step"]
    texts = ["이 영화 정말 재미있어요", "시간이 아까운 영화"]
    a = Predictor.from_checkpoint(tmp_path / "off" / f"step{step}").probabilities(texts)
    b = Predictor.from_checkpoint(tmp_path / "on" / f"step{step}").probabilities(texts)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_killed_runs_temp_checkpoints_are_swept_at_the_next_start(tmp_path, monkeypatch):
    """Hardening 2, item 13: a SIGKILLed driver left caviar-ckpt-* folders in the temp folder."""
    import subprocess
    import tempfile

    from model.files import sweep_dead_temp_checkpoints, temp_checkpoint_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])  # a pid that is surely gone: one we waited for
    gone.wait()
    left = tmp_path / f"caviar-ckpt-{gone.pid}-abc123"
    left.mkdir()
    (left / "model.safetensors").write_bytes(b"x" * 100)
    mine = temp_checkpoint_dir()
    assert sweep_dead_temp_checkpoints() == 1
    assert not left.exists() and mine.exists()


def _with_train(cfg, **train):
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})


def test_init_seed_sets_the_init_apart_from_the_seed(tiny_config):
    """train.init_seed (fusible) sets the init apart from train.seed (the data order, which the
    Trainer takes from train.seed alone); unset, the seed sets both as before."""

    def weights(cfg):
        return {k: v.clone() for k, v in prepare(cfg).net.state_dict().items()}

    own = weights(_with_train(tiny_config, seed=1, init_seed=5))
    assert all(torch.equal(v, weights(_with_train(tiny_config, seed=5))[k]) for k, v in own.items())
    assert not all(torch.equal(v, weights(_with_train(tiny_config, seed=1))[k]) for k, v in own.items())


def test_label_smoothing_is_on_the_training_loss_only(tiny_config):
    """The same first step with and without smoothing: a larger training loss for a model that is
    not yet sure, and validation scored on the plain loss either way (so trials compare)."""
    rows = {}
    for smoothing in (0.0, 0.4):
        rec = Recorder()
        cfg = _with_train(tiny_config, label_smoothing=smoothing, max_steps=1, eval_every=1.0, lr=1e-9)
        train(cfg, report=rec)
        rows[smoothing] = rec.rows[-1]
    assert rows[0.4]["train_loss"] != pytest.approx(rows[0.0]["train_loss"], abs=1e-4)
    assert rows[0.4]["val_loss"] == pytest.approx(rows[0.0]["val_loss"], abs=1e-6)  # lr 1e-9: the same weights
