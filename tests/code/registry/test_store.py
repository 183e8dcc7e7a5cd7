"""The registry follows no planted link, and a `current` that leads elsewhere is one line that
rollback --to repairs (hardening, round two, items 9 and 12)."""

from __future__ import annotations

import json
import os
import re

import pytest

from caviar.registry import store as registry
from caviar.registry.promote import promote
from model.errors import UserError
from tests.conftest import variant_of

pytestmark = pytest.mark.slow


def test_a_planted_model_link_is_not_followed(cli, experiment, registry_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    registry_dir.mkdir(parents=True)
    (registry_dir / "evil").symlink_to(outside)
    proc = cli("promote", experiment, "--name", "evil")
    assert proc.returncode == 2 and "is a link to" in proc.stderr and "Traceback" not in proc.stderr
    assert list(outside.iterdir()) == []


def test_a_planted_lock_or_version_link_is_refused(cli, experiment, registry_dir, tmp_path):
    promote(experiment, "nsmc")
    model_dir = registry_dir / "nsmc"
    (model_dir / "v7").symlink_to(tmp_path)
    assert registry.versions(model_dir) == ["v1"]  # a link named like a version is none
    proc = cli("registry", "show", "nsmc", "v7")
    assert proc.returncode == 2 and "is a link to" in proc.stderr
    (model_dir / registry.LOCK).unlink()
    (model_dir / registry.LOCK).symlink_to(tmp_path / "elsewhere.lock")
    proc = cli("promote", variant_of(experiment, tmp_path / "variant"), "--name", "nsmc", "--force")
    assert proc.returncode == 2 and ".lock: is a link to" in proc.stderr
    assert not (tmp_path / "elsewhere.lock").exists()


@pytest.mark.parametrize("target", ["/etc", "../..", "current"])
def test_a_current_that_leads_elsewhere_is_one_line_and_rollback_to_repairs_it(
    cli, experiment, registry_dir, target, tmp_path
):
    promote(experiment, "nsmc")
    promote(variant_of(experiment, tmp_path / "variant"), "nsmc", force=True)  # a tie with v1: forced
    link = registry_dir / "nsmc" / "current"
    link.unlink()
    os.symlink(target, link)
    proc = cli("registry", "rollback", "nsmc")
    assert proc.returncode == 2 and "not at a version beside it" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("predict", "좋아요", "--name", "nsmc")
    assert proc.returncode == 2 and "not at a version beside it" in proc.stderr
    listed = cli("registry", "list")
    assert listed.returncode == 0 and "nsmc/v1" in listed.stdout and "nsmc/v2" in listed.stdout
    assert cli("registry", "rollback", "nsmc", "--to", "v1").returncode == 0
    assert registry.current_version(registry_dir / "nsmc") == "v1"


def test_a_deeply_nested_card_is_damaged_not_a_crash(cli, experiment, registry_dir):
    promote(experiment, "nsmc")
    card = registry_dir / "nsmc" / "v1" / registry.CARD
    card.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UserError, match="nested too deeply"):
        registry.read_card(card.parent)
    listed = cli("registry", "list")
    assert listed.returncode == 0 and "DAMAGED" in listed.stdout


def _re_sign(version_dir, name, text: str | None) -> None:
    """Alter (or, with None, remove) one file and write its new checksum into the card, as a probe
    that wants the checksums to pass would."""
    card_path = version_dir / registry.CARD
    card = json.loads(card_path.read_text())
    if text is None:
        (version_dir / name).unlink()
        del card["files"][name]
    else:
        (version_dir / name).write_text(text)
        card["files"][name] = registry.sha256(version_dir / name)
    card_path.write_text(json.dumps(card))


def _config_with(version_dir, **changes) -> str:
    config = json.loads((version_dir / "config.json").read_text())
    return json.dumps({**config, **changes})


ALTERED = [
    ("caviar.json", lambda _: "{not json", "caviar.json: damaged, not valid JSON"),
    ("caviar.json", lambda _: "{}", "caviar.json: damaged, it has no 'config'"),
    ("caviar.json", lambda _: '{"config": {"model": {"layers": "many"}}}', "caviar.json: damaged, config.model.layers"),
    ("config.json", lambda _: "{not json", "config.json: damaged, cannot load it"),
    ("config.json", lambda v: _config_with(v, num_hidden_layers=1_000_000), "num_hidden_layers is 1000000; expected 1"),
    ("config.json", lambda v: _config_with(v, intermediate_size=64), "config.json: describes a network of"),
    ("tokenizer.json", lambda _: '{"version": "1.0", "model": 3}', "tokenizer.json: damaged, cannot load it"),
    ("config.json", lambda _: None, "does not list config.json"),
]


@pytest.mark.parametrize(("name", "altered", "expected"), ALTERED, ids=[f"{a[0]}-{i}" for i, a in enumerate(ALTERED)])
def test_a_version_altered_and_re_signed_is_one_line_in_serve_and_predict(
    cli, experiment, registry_dir, name, altered, expected
):
    """Hardening 2, item 9: what is loaded is validated, not only its checksum."""
    from caviar.serving.app import create_app

    promote(experiment, "nsmc")
    version_dir = registry_dir / "nsmc" / "v1"
    _re_sign(version_dir, name, altered(version_dir))
    with pytest.raises(UserError, match=re.escape(expected)):
        create_app(version_dir)
    proc = cli("predict", "정말 좋아요", "--name", "nsmc")
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_a_lock_folder_a_copied_current_and_a_hand_edited_card_are_one_line_or_repaired(cli, experiment, registry_dir):
    """Issue 47: `registry rollback --to v1` with `.lock` a folder, or with `current` a copied
    folder (the documented repair), was an IsADirectoryError that left `.current.<pid>.tmp`; and
    `registry list` of a card holding "test": {"accuracy": "high"} was a format ValueError."""
    import shutil

    promote(experiment, "nsmc")
    model_dir = registry_dir / "nsmc"
    (model_dir / registry.LOCK).unlink()
    (model_dir / registry.LOCK).mkdir()
    proc = cli("registry", "rollback", "nsmc", "--to", "v1")
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "is a folder, not the registry's lock file; remove it (rmdir) and run it again"
    )
    (model_dir / registry.LOCK).rmdir()

    (model_dir / "current").unlink()
    shutil.copytree(model_dir / "v1", model_dir / "current")
    proc = cli("registry", "rollback", "nsmc", "--to", "v1")
    assert proc.returncode == 0 and "current a folder, not a link -> v1" in proc.stdout, proc.stderr
    assert registry.current_version(model_dir) == "v1" and not list(model_dir.glob(".current.*.tmp"))
    kept = list(model_dir.glob("current.folder-*"))
    assert len(kept) == 1 and (kept[0] / "model.safetensors").is_file()  # kept aside, not deleted

    card = json.loads((model_dir / "v1" / registry.CARD).read_text())
    (model_dir / "v1" / registry.CARD).write_text(json.dumps({**card, "test": {"accuracy": "high"}}))
    listed = cli("registry", "list")
    assert listed.returncode == 0 and "nsmc/v1" in listed.stdout and "Traceback" not in listed.stderr


def test_a_min_gain_refusal_shows_the_floor_as_written():
    """Issue 47: promote.min_gain 0.999999 was shown as `100.00 points`."""
    from caviar.registry.gate import GateResult

    refused = GateResult(
        reviews=500, candidate_accuracy=0.9, against="v1", gain=0.01, interval=[0.0, 0.02], min_gain=0.999999
    )
    assert not refused.passed and "(promote.min_gain 99.9999 points)" in refused.refusal()


def _copy(experiment, where):
    import shutil

    return shutil.copytree(experiment, where, symlinks=True)


def test_promote_of_a_damaged_candidate_is_one_line(cli, experiment, registry_dir, tmp_path):
    """Issue 47: promote when the best checkpoint's weights are gone (FileNotFoundError), or when
    reseed.json chooses nothing it holds (StopIteration) or a checkpoint outside the experiment
    (/etc: FileNotFoundError). Each is one line, and nothing is promoted."""
    from caviar.experiment.record import Experiment

    gone = _copy(experiment, tmp_path / "gone")
    record = Experiment.load(gone)
    best = record.best_checkpoint(record.best()[0])
    (best / "model.safetensors").unlink()
    proc = cli("promote", gone, "--name", "nsmc")
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "the best checkpoint has no model.safetensors; nothing was promoted"
    )

    for name, reseed in [
        ("empty", {"configs": [], "chosen_rank": 1}),
        ("etc", {"chosen_rank": 1, "best_run": {"checkpoint": "/etc"}}),
    ]:
        folder = _copy(experiment, tmp_path / name)
        (folder / "reseed").mkdir(exist_ok=True)
        (folder / "reseed" / "reseed.json").write_text(json.dumps(_reseed_like(folder, **reseed)))
        proc = cli("promote", folder, "--name", "nsmc")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert "reseed.json:" in line and line.endswith("remove it to promote the search's best trial"), line
    assert not (registry_dir / "nsmc").exists() or not list((registry_dir / "nsmc").glob("v*"))


def _reseed_like(folder, **changes) -> dict:
    """A well-formed reseed.json of the experiment's best trial, with `changes` laid over it."""
    from caviar.experiment.record import Experiment

    record = Experiment.load(folder)
    trial, _ = record.best()
    run = {
        "seed": 1,
        "val": 0.5,
        "val_accuracy": 0.5,
        "test_accuracy": 0.5,
        "test_f1": 0.5,
        "test_metrics": {},
        "checkpoint": str(record.best_checkpoint(trial)),
        "parameters": 1,
        "steps": 1,
    }
    config = {
        "rank": 1,
        "source_trial": trial.trial_id,
        "params": trial.params,
        "runs": [run],
        "parameters": 1,
        "steps": 1,
        "val_mean": 0.5,
        "val_std": 0.0,
        "test_mean": 0.5,
        "test_std": 0.0,
    }
    raw = {
        "seeds": 2,
        "top_k": 1,
        "picked": "the best",
        "metric": "val_accuracy",
        "configs": [config],
        "leader_rank": 1,
        "chosen_rank": 1,
        "best_run": run,
    }
    best_run = {**run, **changes.pop("best_run", {})}
    return {**raw, **changes, "best_run": best_run}


def test_a_planted_version_link_is_stepped_over_not_a_block(cli, experiment, registry_dir, tmp_path, caplog):
    """Issue 47, item 10: a `v1` link planted in an empty model blocked every later promote with
    NotADirectoryError; promote names it and takes the next free number."""
    model_dir = registry_dir / "nsmc"
    model_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (model_dir / "v1").symlink_to(elsewhere)
    proc = cli("promote", experiment, "--name", "nsmc")
    assert proc.returncode == 0, proc.stderr
    said = f"{model_dir / 'v1'}: is not a version (a link or a file); promoting as the next free number"
    assert said in caplog.text
    assert registry.versions(model_dir) == ["v2"] and registry.current_version(model_dir) == "v2"
    assert (model_dir / "v1").is_symlink() and not list(elsewhere.iterdir())  # nothing written through it
