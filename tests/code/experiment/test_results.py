"""Results checks on a finished tiny experiment: the report, promotion and the registry."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from caviar.experiment.record import Experiment
from caviar.experiment.report import write_report
from caviar.experiment.report_record import Report
from caviar.registry import store as registry
from caviar.registry.promote import promote
from caviar.serving.app import create_app
from model.errors import UserError
from model.predict import Predictor
from tests.conftest import FIXTURE_NSMC, variant_of

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_columns_best_and_plots(experiment):
    report = write_report(experiment, evaluate_top_k=2).record
    board = pd.read_csv(experiment / "leaderboard.csv")
    for column in (
        "rank",
        "trial_id",
        "status",
        "evaluations",
        "stopped_at_rung",
        "best_val_accuracy",
        "best_evaluation",
        "wall_s",
        "cpu_s",
        "gpu_s",
        "checkpoint_bytes",
        "train.lr",
        "model.dropout",
        "test_accuracy",
        "test_f1",
    ):
        assert column in board.columns, column
    assert len(board) == 4
    # the best trial is the maximum over trials of each trial's best-so-far
    best_so_far = {}
    for result in experiment.glob("*/result.json"):
        rows = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
        best_so_far[rows[0]["trial_id"]] = max(r["val_accuracy"] for r in rows)
    winner = max(best_so_far, key=best_so_far.get)
    assert report.best.value == best_so_far[winner] and report.metric == "val_accuracy"
    assert board.loc[0, "best_val_accuracy"] == max(best_so_far.values())
    assert board["test_accuracy"].notna().sum() == 2
    for name in ("learning_curves.png", "params_vs_metric.png", "parallel_coordinates.png"):
        data = (experiment / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert (experiment / "leaderboard.md").read_text().startswith("# copied")
    written = json.loads((experiment / "report.json").read_text())
    assert written["best"]["trial_id"] == report.best.trial_id and written["best"]["val_accuracy"] == report.best.value
    assert Report.from_json(written) == report  # the record reads back as it was written


def test_report_cli_prints_a_table(cli, experiment):
    proc = cli("report", experiment)
    assert proc.returncode == 0, proc.stderr
    assert "| rank | trial_id |" in proc.stdout
    assert cli("report", experiment.parent / "nope").returncode == 2


def test_promote_twice_then_rollback(experiment, registry_dir, tmp_path):
    first = promote(experiment, "nsmc")
    second = promote(variant_of(experiment, tmp_path / "variant"), "nsmc", force=True)  # it ties: forced
    model_dir = registry_dir / "nsmc"
    assert (first.version, second.version) == ("v1", "v2")
    assert registry.current_version(model_dir) == "v2"
    card = registry.verify(model_dir / "current")
    assert {"trial_id", "hparams", "val", "test", "data_fingerprint", "packages", "created", "files"} <= set(card)
    assert "trainer_state.pt" not in card["files"] and "model.safetensors" in card["files"]
    assert registry.rollback(model_dir) == "v1"
    assert registry.current_version(model_dir) == "v1"
    Predictor.from_checkpoint(model_dir / "current")


def test_promoting_the_same_checkpoint_again_names_its_version_and_makes_none(cli, experiment, registry_dir):
    """Issue 31, item 3: a second promotion of the same experiment made a second copy of the same weights."""
    promote(experiment, "nsmc")
    again = cli("promote", experiment, "--name", "nsmc", "--json")
    assert again.returncode == 0, again.stderr
    assert "nsmc/v1 already holds this checkpoint" in again.stdout + again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["already"] is True
    copied = shutil.copytree(experiment, registry_dir.parent / "copied")  # a copied folder is the same checkpoint
    assert promote(copied, "nsmc").already
    assert registry.versions(registry_dir / "nsmc") == ["v1"]


def test_the_test_file_no_longer_decides_a_promotion(cli, experiment, registry_dir, tmp_path):
    """Issue 31, item 3: with the old gate, a version in service scored 0.0 on test was replaced by
    anything; now the gate decides, and a candidate that ties with v1 on it is refused, unless forced."""
    promote(experiment, "nsmc")
    experiment = variant_of(experiment, tmp_path / "variant")
    card_path = registry_dir / "nsmc" / "v1" / registry.CARD
    card = json.loads(card_path.read_text())
    card["test"]["accuracy"] = 0.0  # the test score of the version in service: it plays no part
    card_path.write_text(json.dumps(card))
    proc = cli("promote", experiment, "--name", "nsmc")
    assert proc.returncode == 1
    assert "not promoted: +0.00 points [+0.00, +0.00] on 12 gate reviews against v1; --force" in proc.stderr
    assert registry.current_version(registry_dir / "nsmc") == "v1"
    proc = cli("promote", experiment, "--name", "nsmc", "--force")
    assert proc.returncode == 0, proc.stderr
    assert registry.current_version(registry_dir / "nsmc") == "v2"


def test_a_crash_mid_promotion_leaves_current_intact(experiment, registry_dir, monkeypatch, tmp_path):
    promote(experiment, "nsmc")
    experiment = variant_of(experiment, tmp_path / "variant")
    calls = []

    def copy_then_crash(src, dst, *a, **k):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return shutil.copy(src, dst)

    monkeypatch.setattr(registry.shutil, "copy2", copy_then_crash)
    with pytest.raises(OSError, match="injected"):
        promote(experiment, "nsmc", force=True)
    model_dir = registry_dir / "nsmc"
    assert registry.current_version(model_dir) == "v1"
    assert registry.versions(model_dir) == ["v1"]
    leftovers = [p for p in model_dir.iterdir() if p.name.startswith(".") and p.name != registry.LOCK]
    assert not leftovers, "temp folders must be cleaned up"
    registry.verify(model_dir / "current")


def test_reseed_gives_s_results_per_configuration(cli, experiment, registry_dir, tmp_path):
    experiment = Path(shutil.copytree(experiment, tmp_path / "experiment"))  # the shared one stays unseeded
    assert (
        cli("reseed", experiment, "--top-k", "two")
        .stderr.strip()
        .endswith("--top-k 'two': expected a count of 1 or more, or `tied`")
    )
    proc = cli("reseed", experiment, "--seeds", "2", "--top-k", "tied", "--max-tied", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    tied = _tied_with_best(experiment)
    assert tied >= 1  # on the fixture's 48 validation reviews
    left_out = f", {tied - 1} more left out (final.max_tied 1)" if tied > 1 else ""
    assert record["picked"] == f"the best and {tied} tied with it (paired 95%){left_out}"
    second = record["configs"][1]
    assert second["vs_leader"]["separated"] is False and second["vs_leader"]["n"] == 2 * len(_val_labels(experiment))
    assert f"chosen: config {record['chosen_rank']}: configurations 1, 2 are not separated" in proc.stderr
    proc = cli("promote", experiment, "--name", "nsmc", "--json")  # promotion reads the re-runs, trains nothing
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    spread = done["reseed"]
    assert spread["seeds"] == 2 and len(spread["configs"]) == 2
    for config in spread["configs"]:
        assert len(config["seeds"]) == 2 and len(set(config["seeds"])) == 2
    chosen = spread["configs"][0]
    assert chosen["rank"] == spread["chosen_rank"]
    # not separated and of one size and length: the cheapest is the better mean, which validation chose
    assert chosen["val_mean"] == max(c["val_mean"] for c in spread["configs"])
    assert spread["chosen_because"] == record["chosen_because"]
    card = registry.verify(registry_dir / "nsmc" / "current")
    assert card["reseed"]["best_seed"] in chosen["seeds"]
    assert card["trial_id"] == chosen["source_trial"]
    for config in json.loads((experiment / "reseed" / "reseed.json").read_text())["configs"]:
        assert len(config["runs"]) == 2
        vals = [r["val_accuracy"] for r in config["runs"]]
        assert config["val_mean"] == pytest.approx(statistics.fmean(vals))
        assert config["val_std"] == pytest.approx(statistics.stdev(vals))


def test_a_corrupt_weight_file_stops_serve(cli, experiment, registry_dir):
    promote(experiment, "nsmc")
    weights = registry_dir / "nsmc" / "v1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    os.chmod(weights, 0o644)
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.safetensors fails its sha256 check; the model is corrupt"):
        create_app(registry_dir / "nsmc" / "current")
    proc = cli("serve", "--model", registry_dir / "nsmc" / "current", "--port", "0")
    assert proc.returncode == 2
    assert "fails its sha256 check" in proc.stderr


def test_predict_cli(cli, experiment, registry_dir):
    promote(experiment, "nsmc")
    proc = cli("predict", "배우들 연기가 너무 좋았다", "--model", registry_dir / "nsmc" / "current", "--json")
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["label"] in ("긍정", "부정") and 0 <= line["positive_probability"] <= 1


def test_predict_and_serve_find_the_model_through_the_registry_root(
    cli, experiment, registry_dir, tmp_path, monkeypatch
):
    """Issue 9.10 and 9.25: no --model needed, --name picks one, and the number printed is the label's own."""
    promote(experiment, "other")
    monkeypatch.chdir(tmp_path)  # the default must not depend on the working folder
    proc = cli("predict", "배우들 연기가 너무 좋았다", "돈 주고 보기 아까웠어요", "--name", "other")
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.strip().splitlines():
        label, confidence = line.split()[:2]
        assert label in ("긍정", "부정") and confidence.endswith("%") and float(confidence[:-1]) >= 50
    proc = cli("predict", "좋다", "--json", "--name", "other")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["confidence"] == pytest.approx(max(row["positive_probability"], 1 - row["positive_probability"]))
    assert cli("predict", "좋다").returncode == 2  # nsmc-sentiment was never promoted here


UNSAFE_NAMES = ["../escaped", "../../x", "/tmp/abs", "..", ".", "", "a/b", "_under", "a b", "x" * 101]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_no_name_leaves_the_registry(cli, experiment, registry_dir, name):
    """Issue 9.9: promote, registry show/rollback, serve and predict all refuse it before any work."""
    for args in (
        ("promote", experiment, "--name", name),
        ("registry", "show", name),
        ("registry", "rollback", name),
        ("serve", "--name", name, "--port", "0"),
        ("predict", "좋다", "--name", name),
    ):
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "use 1 to 100 of A-Z" in proc.stderr and "Traceback" not in proc.stderr
    assert not registry_dir.exists() or not any(registry_dir.iterdir())
    assert not (registry_dir.parent / "escaped").exists()


DAMAGED_CARDS = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"name": "nsmc"}', "no 'files' table"),
    ('{"files": {}}', "does not list model.safetensors"),
]


@pytest.mark.parametrize(("card", "message"), DAMAGED_CARDS)
def test_a_damaged_card_is_one_line(cli, experiment, registry_dir, card, message, tmp_path):
    """Issue 9.11 and 9.12: one line and exit 2 everywhere; `registry list` still lists the rest."""
    promote(experiment, "nsmc")
    promote(variant_of(experiment, tmp_path / "variant"), "nsmc", force=True)  # a tie with v1: forced
    card_file = registry_dir / "nsmc" / "v2" / registry.CARD
    os.chmod(card_file, 0o644)
    card_file.write_text(card)
    weights = registry_dir / "nsmc" / "v2" / "model.safetensors"
    os.chmod(weights, 0o644)
    weights.write_bytes(weights.read_bytes()[:100])  # truncated too: `files: {}` must not hide it
    for args in (
        ("predict", "좋다", "--name", "nsmc"),
        ("serve", "--name", "nsmc", "--port", "0"),
        ("registry", "show", "nsmc"),
    ):
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    listed = cli("registry", "list")
    assert listed.returncode == 0, listed.stderr
    assert "nsmc/v1  test_accuracy" in listed.stdout and "nsmc/v2  DAMAGED" in listed.stdout
    assert registry.rollback(registry_dir / "nsmc") == "v1"


def test_a_killed_promotions_leftovers_are_swept(experiment, registry_dir, tmp_path):
    """Issue 9.13: only those whose process is gone."""
    promote(experiment, "nsmc")
    model_dir = registry_dir / "nsmc"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (model_dir / f".v2.{dead_pid}.tmp").mkdir()
    (model_dir / f".v2.{dead_pid}.tmp" / "model.safetensors").write_bytes(b"half")
    os.symlink("v1", model_dir / f".current.{dead_pid}.tmp")
    live = model_dir / f".v9.{os.getppid()}.tmp"  # a process that is still running
    live.mkdir()
    promote(variant_of(experiment, tmp_path / "variant"), "nsmc", force=True)  # a tie with v1: forced
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == sorted([registry.LOCK, live.name])


def test_concurrent_promotions_get_their_own_numbers(experiment, registry_dir, tmp_path):
    """Issue 9.14: the lock spans choosing v<N> and swapping `current`, so `previous` is never shared."""
    promote(experiment, "nsmc")
    variants = [variant_of(experiment, tmp_path / f"variant{i}", nudge=1e-4 * (i + 1)) for i in range(3)]
    cmd = [sys.executable, "-c", "from caviar.cli.main import main; main()", "promote"]
    procs = [
        subprocess.Popen([*cmd, str(folder), "--name", "nsmc", "--force"], stderr=subprocess.PIPE, text=True)
        for folder in variants
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    model_dir = registry_dir / "nsmc"
    assert registry.versions(model_dir) == ["v1", "v2", "v3", "v4"]
    previous = [registry.read_card(model_dir / v)["previous"] for v in ("v2", "v3", "v4")]
    assert previous == ["v1", "v2", "v3"]
    assert registry.current_version(model_dir) == "v4"


def test_evaluate_top_says_which_trials_kept_no_checkpoint(cli, experiment):
    """keep_best_trials: 3 of 4 trials: the fourth has nothing left to score, and report says so."""
    proc = cli("report", experiment, "--evaluate-top", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    scored = [t for t in report["trials"] if t["test_accuracy"] is not None]
    assert len(scored) == 3
    assert report["notes"] == [
        f"rank 4 ({report['trials'][3]['trial_id']}): not scored on test, no checkpoint "
        "(checkpoint.keep_best_trials is 3)"
    ]
    assert report["notes"][0] in proc.stderr


def test_an_experiment_whose_data_moved_says_where_to_point(cli, experiment, tmp_path, monkeypatch):
    copy = Path(shutil.copytree(experiment, tmp_path / "experiment"))
    job_file = copy / "caviar_job.json"
    job = json.loads(job_file.read_text())
    assert Path(job["data"]["dir"]).is_absolute() and job["data"]["fingerprint"]
    job["data"]["dir"] = str(tmp_path / "gone")
    job_file.write_text(json.dumps(job))
    monkeypatch.delenv("NSMC_DIR", raising=False)
    proc = cli("report", copy, "--evaluate-top", "1")
    assert proc.returncode == 2 and "is gone; set NSMC_DIR to the folder it moved to" in proc.stderr
    monkeypatch.setenv("NSMC_DIR", str(FIXTURE_NSMC))  # moved here: the fingerprint matches
    assert cli("report", copy, "--evaluate-top", "1").returncode == 0
    changed = tmp_path / "changed"
    shutil.copytree(FIXTURE_NSMC, changed)
    with open(changed / "ratings_test.txt", "a", encoding="utf-8") as f:
        f.write("999\t새로 넣은 리뷰\t1\n")
    monkeypatch.setenv("NSMC_DIR", str(changed))
    proc = cli("report", copy, "--evaluate-top", "1")
    assert proc.returncode == 2 and "the NSMC files changed since this run recorded them" in proc.stderr


def test_a_trial_that_reached_the_last_rung_was_not_stopped_early():
    import pandas as pd

    from caviar.experiment.record import TrialRecord

    history = pd.DataFrame({"training_iteration": [1, 2, 3, 4], "done_training": [False] * 4})
    trial = TrialRecord("t", "TERMINATED", {}, Path("."), history, None)
    assert trial.stopped_early  # no max_t known: ended before its own end
    trial.max_t = 4
    assert not trial.stopped_early
    trial.max_t = 6
    assert trial.stopped_early


def test_epochs_past_max_t_are_a_note():
    from caviar.job.schema import JobSpec
    from caviar.tuning.pipeline import max_t_notes

    job = JobSpec.model_validate({"train": {"epochs": 3, "eval_every": 0.25}, "scheduler": {"max_t": 4}})
    (note,) = max_t_notes(job)
    assert "train.epochs=3 makes 12 evaluations a trial, but scheduler.max_t is 4" in note
    assert max_t_notes(JobSpec.model_validate({"train": {"epochs": 1}, "scheduler": {"max_t": 4}})) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("state", "Ray's experiment state cannot be read"),
        ("job-not-json", "caviar_job.json: damaged, not valid JSON"),
        ("job-schema", "caviar_job.json: name: Input should be a valid string"),
        ("job-deep", "caviar_job.json: damaged, nested too deeply"),
        ("tuner-pkl", "tuner.pkl: not the file caviar recorded with the experiment state"),
    ],
)
def test_a_damaged_experiment_file_is_one_line(cli, experiment, tmp_path, damage, message):
    """Hardening 2, item 10: report and resume named the damaged file instead of a traceback."""
    copy = Path(shutil.copytree(experiment, tmp_path / "experiment"))
    commands = ("report", "resume")
    if damage == "state":
        state = next(copy.glob("experiment_state-*.json"))
        state.write_text(state.read_text()[:300])
    elif damage == "tuner-pkl":
        (copy / "tuner.pkl").write_bytes(b"garbage\n")
        commands = ("resume",)  # report reads the experiment state alone
    else:
        text = {"job-not-json": "{not json", "job-schema": '{"name": 3}', "job-deep": "[" * 100_000 + "]" * 100_000}
        (copy / "caviar_job.json").write_text(text[damage])
    for command in commands:
        proc = cli(command, copy)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-1500:]


def test_a_damaged_checkpoint_card_marks_its_trial_and_the_report_goes_on(cli, experiment, tmp_path, registry_dir):
    """Hardening 2, item 10: a checkpoint's caviar.json that is not JSON is passed over and named;
    the other trials still report, and promote takes the best readable checkpoint or says why not."""
    copy = Path(shutil.copytree(experiment, tmp_path / "experiment"))
    first = Experiment.load(copy)
    best, _ = first.best()
    damaged = first.best_checkpoint(best)
    (damaged / "caviar.json").write_text("{not json")
    proc = cli("report", copy)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert f"trial {best.trial_id}: a checkpoint was passed over, {damaged}/caviar.json: damaged" in proc.stdout
    assert "yes, see below" in proc.stdout
    board = pd.read_csv(copy / "leaderboard.csv")
    marked = board[board["damaged"].notna()]
    assert list(marked["trial_id"]) == [best.trial_id] and len(board) == len(first.trials())
    report = json.loads((copy / "report.json").read_text())
    assert any("not valid JSON" in note for note in report["notes"])
    promoted = cli("promote", copy, "--name", "damaged-test")
    again = Experiment.load(copy)
    if (readable := again.best_checkpoint(again.best()[0])) is None:
        assert promoted.returncode == 2 and "has no readable checkpoint" in promoted.stderr, promoted.stderr[-1500:]
    else:  # the trial kept another checkpoint: that one is promoted
        assert promoted.returncode == 0, promoted.stderr[-1500:]
        card = json.loads((registry_dir / "damaged-test" / "v1" / "model_card.json").read_text())
        assert card["val"]["step"] == json.loads((readable / "caviar.json").read_text())["metrics"]["step"]


def test_every_trial_has_an_interval_and_the_top_ones_a_paired_difference(cli, experiment, tmp_path):
    """Issue 31, items 1-2: each kept checkpoint carries its validation predictions; the outcome, the
    leaderboard and report.json give the 95% interval, the paired difference and the ties."""
    outcome = json.loads((experiment / "caviar_tune.json").read_text())
    low, high = outcome["best_interval"]
    assert low <= outcome["best_val_accuracy"] <= high and high - low < 0.5
    rows = {t["trial_id"]: t for t in outcome["trials"]}
    assert set(outcome["tied_with_best"]) <= set(rows) - {outcome["best_trial"]}
    compared = [t for t in rows.values() if "vs_best" in t and t["vs_best"] is not None]
    assert compared, "the trials behind the leader are compared with it"
    for row in compared:
        assert row["vs_best_low"] <= row["vs_best"] <= row["vs_best_high"]
        assert row["tied_with_best"] == (row["vs_best_low"] <= 0 <= row["vs_best_high"])
        assert row["tied_with_best"] == (row["trial_id"] in outcome["tied_with_best"])
    # the trial pruning took the checkpoint of (keep_best_trials 3 of 4) kept its predictions
    experiment_record = Experiment.load(experiment)
    pruned = [t for t in experiment_record.trials() if not t.checkpoints() and t.evaluations]
    assert pruned and all((t.path / "val_predictions.npz").is_file() for t in pruned)
    assert all(rows[t.trial_id]["metric_low"] is not None for t in pruned)

    copy = Path(shutil.copytree(experiment, tmp_path / "copy"))
    proc = cli("report", copy, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["best"]["interval"] == pytest.approx([low, high])
    assert sorted(report["best"]["tied_with_best"]) == sorted(outcome["tied_with_best"])
    board = pd.read_csv(copy / "leaderboard.csv")
    assert {"metric_low", "metric_high", "vs_best", "tied_with_best"} <= set(board.columns)
    assert "metric_low" in proc.stderr and "tied_with_best" in proc.stderr  # the printed table (stderr with --json)


def _val_labels(experiment: Path):
    from caviar.experiment.selection import best_predictions

    loaded = Experiment.load(experiment)
    return best_predictions(loaded, loaded.best()[0]).labels


def _tied_with_best(experiment: Path) -> int:
    from caviar.experiment.selection import standings

    return sum(bool(s.tied) for s in standings(Experiment.load(experiment)).values())
