"""Job-spec checks: every bad tuning input stops the job with exit 2 and names the YAML path."""

from __future__ import annotations

import pytest

from caviar.job.schema import JobSpec
from caviar.tuning.search.search_space import param_space, trial_config
from tests.conftest import TINY, tiny_job_yaml

BAD_SPECS = [
    (
        {"search_space": {"train.lr": {"uniform": [0.1, 0.01]}}},
        "search_space.train.lr: uniform: low (0.1) must be below high (0.01)",
    ),
    (
        {"search_space": {"train.lr": {"loguniform": [0.0, 0.01]}}},
        "search_space.train.lr: loguniform: low must be > 0 (got 0.0)",
    ),
    ({"search_space": {"train.lr": {"loguniform": [-1, 0.01]}}}, "loguniform: low must be > 0"),
    ({"search_space": {"train.lrr": {"uniform": [0, 1]}}}, "search_space.train.lrr: unknown key"),
    ({"search_space": {"train.lr": {"normal": [0, 1]}}}, "search_space.train.lr.normal: unknown key"),
    ({"search_space": {"train.batch_size": {"choice": [32, "big"]}}}, "search_space.train.batch_size: value 'big'"),
    (
        {"search_space": {"model.layers": {"randint": [0, 3]}}},
        "search_space.model.layers: value 0: Input should be greater than or equal to 1",
    ),
    (
        {"scheduler": {"type": "asha", "grace_period": 5, "max_t": 3}},
        "scheduler.grace_period (5) is more than scheduler.max_t (3)",
    ),
    ({"scheduler": {"grace_period": 9}}, "scheduler.grace_period (9) is more than scheduler.max_t (8)"),
    ({"scheduler": {"type": "bohb"}}, "scheduler: Input tag 'bohb' found using 'type' does not match"),
    ({"scheduler": {"type": "asha", "brackets": 0}}, "scheduler.brackets: Input should be greater than or equal to 1"),
    (
        {"scheduler": {"type": "pbt", "mutations": {"model.layers": {"choice": [1, 2]}}}},
        "PBT can mutate train.* optimizer settings only",
    ),
    ({"num_samples": 0}, "num_samples: Input should be greater than or equal to 1"),
    ({"resources_per_trial": {"cpu": "two"}}, "resources_per_trial.cpu: Input should be a valid number"),
    ({"resources_per_trial": {"gpus": 1}}, "resources_per_trial.gpus: unknown key"),
    ({"metric": "accuracy"}, "metric: Input should be 'val_accuracy', 'val_loss', 'val_f1' or 'train_loss'"),
    (
        {"search": "grid", "search_space": {"train.lr": {"uniform": [0.1, 0.2]}}},
        "search: grid takes only grid or choice",
    ),
    ({"search": "optuna", "search_space": {"train.lr": {"grid": [0.1, 0.2]}}}, "search: optuna cannot sample a grid"),
    ({"fuse": 4, "search": "optuna"}, "fuse: 4 needs search: random or grid"),
    ({"fuse": 4, "scheduler": {"type": "hyperband"}}, "fuse: 4 works with scheduler asha, median_stopping or fifo;"),
    ({"fuse": 4, "scheduler": {"type": "pbt"}}, "fuse: 4 works with scheduler asha, median_stopping or fifo; pbt"),
    (
        {"fuse": 4, "scheduler": {"type": "median_stopping", "time_attr": "time_total_s"}},
        "fuse: 4 counts evaluations (scheduler.time_attr: training_iteration)",
    ),
    ({"fuse": 2, "rounds": 2}, "fuse: 2 runs a plain search: no rounds"),
    ({"fuse": 0}, "fuse: takes a whole number of configurations from 1 to 64, or auto (got 0)"),
    ({"fuse": "some"}, "fuse: takes a whole number of configurations from 1 to 64, or auto (got 'some')"),
    ({"fuse": "auto", "search": "optuna"}, "fuse: auto needs search: random or grid"),
    (
        {"checkpoint": {"keep_best_trials": 0}},
        "checkpoint.keep_best_trials: Input should be greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(("section", "message"), BAD_SPECS)
def test_bad_tuning_spec_exits_2_with_its_message(cli, tmp_path, monkeypatch, section, message):
    monkeypatch.chdir(tmp_path)  # the default storage, results/, would land here
    job = tiny_job_yaml(tmp_path / "job.yaml", **section)
    proc = cli("tune", job)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("caviar: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert errors[0].count("(got ") <= 1, errors[0]  # issue 47: the fuse errors said "(got 0) (got 0)"
    assert not (tmp_path / "results").exists(), "nothing may start before the spec is valid"


def test_set_reaches_tuning_keys(cli, tmp_path):
    job = tiny_job_yaml(tmp_path / "job.yaml")
    proc = cli("tune", job, "--set", "scheduler.max_t=0")
    assert proc.returncode == 2
    assert "--set scheduler.max_t=0: scheduler.max_t: Input should be greater than or equal to 1" in proc.stderr


def test_space_round_trip_lays_samples_over_the_fixed_values():
    job = JobSpec.model_validate(
        {
            **TINY,
            "search_space": {
                "train.lr": {"loguniform": [1e-4, 1e-2]},
                "model.layers": {"randint": [1, 2]},
                "train.schedule": {"grid": ["linear", "cosine"]},
            },
        }
    )
    space = param_space(job)
    assert set(space) == {"train", "model"}
    assert space["model"]["layers"].sample() in (1, 2)  # our randint includes high
    assert space["train"]["schedule"] == {"grid_search": ["linear", "cosine"]}
    cfg = trial_config(job.trial_config().model_dump(), {"train": {"lr": 5e-3, "schedule": "cosine"}})
    assert (cfg.train.lr, cfg.train.schedule, cfg.model.hidden) == (5e-3, "cosine", TINY["model"]["hidden"])


def test_shipped_jobs_are_valid():
    from pathlib import Path

    from caviar.job.loading import load_job

    jobs = sorted((Path(__file__).parents[3] / "tune_jobs").glob("*.yaml"))
    assert len(jobs) >= 5
    for path in jobs:
        load_job(path)


@pytest.mark.parametrize(
    "scheduler, live_cap, reuse",
    [
        ({"type": "asha"}, 2, True),
        ({"type": "fifo"}, 2, True),
        ({"type": "hyperband"}, None, False),  # pauses trials: no cap on live trials, no cached actors
        ({"type": "pbt", "mutations": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}, 2, False),
    ],
)
def test_pausing_schedulers_get_no_live_cap_or_actor_reuse(scheduler, live_cap, reuse):
    from caviar.tuning.search.schedulers import concurrency_limit, reuse_actors

    job = JobSpec.model_validate(
        {"search_space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, "scheduler": scheduler, "max_concurrent_trials": 2}
    )
    assert concurrency_limit(job) == live_cap
    assert reuse_actors(job) is reuse


def test_submit_install_ships_runtime_dependencies_only():
    from caviar.ops.cluster import runtime_requirements

    names = {r.split("==")[0].split("[")[0].lower() for r in runtime_requirements()}
    assert {"ray", "torch", "transformers", "fastapi", "numpy", "tqdm", "pyarrow", "swagger-ui-bundle"} <= names
    assert not names & {"pytest", "ruff", "hypothesis"}


def test_an_experiment_saved_by_an_older_caviar_still_loads(tmp_path):
    """caviar_job.json files written before the lr-find shorthand became a private flag hold it as a key."""
    import json

    from caviar.experiment.job_record import JOB_FILE, load_job_of

    saved = {**JobSpec.model_validate(TINY).model_dump(mode="json"), "lr_from_lr_find": False}
    (tmp_path / JOB_FILE).write_text(json.dumps(saved))
    assert load_job_of(tmp_path).name == "tiny"
