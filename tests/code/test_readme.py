"""Every command in the README runs as printed: the docs cannot drift from the code.

Each line of the README's bash blocks is one command. `caviar` commands are parsed by the real
command-line parser (an unknown command, option or bad value fails here), and the ones that finish
in seconds are run for real, through the real entry point and without NSMC_DIR, against a finished
experiment: `train`, `pretrain` and `lr-find` in their smoke form on the fixture reviews, the
results and registry commands exactly as printed.
They run as after `make tune`: NSMC in caviar's cache, where `make tune` copied it, and no NSMC_DIR
(the fixture reviews stand in where the workspace has no NSMC).
The long-running ones (tune, resume, reseed, serve and the cluster commands) are parsed only; their
real runs are in the tuning, serving and cluster tests. `make` targets are dry-run.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer

from caviar.cli.main import app
from caviar.job.loading import load_job
from model.data import fill_cache, has_nsmc
from tests.conftest import FIXTURE_NSMC, REAL_NSMC, variant_of

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
RUN_SMOKE = ("train", "pretrain", "lr-find")  # run with --smoke on the fixture reviews
RUN_AS_PRINTED = ("report", "promote", "registry", "predict", "schema", "experiments")
PARSE_ONLY = ("tune", "resume", "reseed", "serve", "submit", "jobs")


def readme_commands() -> list[str]:
    """The lines of the README's ```bash blocks, comments dropped."""
    commands, inside = [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and (command := re.sub(r"\s+#.*$", "", line).strip()):
            commands.append(command)
    return commands


def parse(args: list[str]) -> tuple[str, dict]:
    """The caviar command line through its real parser, as far as the sub-command: (name, values)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("caviar", list(args))
    while hasattr(command, "resolve_command"):
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx)
    return command.name, ctx.params


def test_the_readme_is_for_users():
    assert README.stat().st_size <= 12 * 1024
    assert len(readme_commands()) >= 15


def test_every_caviar_command_in_the_readme_parses():
    caviar_lines = [c for c in readme_commands() if c.startswith(".venv/bin/caviar ")]
    assert caviar_lines
    for line in caviar_lines:
        args = shlex.split(line)[1:]
        name, values = parse(args)
        assert args[0] in (*RUN_SMOKE, *RUN_AS_PRINTED, *PARSE_ONLY), f"{line}: no test covers `{args[0]}`"
        if name in ("tune", "train", "pretrain", "lr-find"):  # the job and its --set values load
            load_job(values["job"], values.get("overrides"), fixed_only=name != "tune")


def test_the_readme_make_and_cluster_lines_exist():
    for line in readme_commands():
        words = shlex.split(line)
        if words[0] == "make":
            assert subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True).returncode == 0, line
        elif words[0] == "cluster/local.sh":
            script = (ROOT / words[0]).read_text(encoding="utf-8")
            assert f"  {words[1]})" in script, f"{line}: local.sh has no `{words[1]}`"
        elif words[0] == ".venv/bin/tensorboard":
            assert words[1] == "--logdir", line
        elif words[0] == ".venv/bin/mlflow":  # the options parse with MLflow's own command line
            from mlflow.cli import cli

            command = cli.commands[words[1]]
            assert command.make_context(words[1], words[2:]).params["host"] == "127.0.0.1", line


def after_make_tune(cache: Path) -> list[str]:
    """NSMC where `make tune` leaves it (copied into caviar's cache from NSMC_DIR), NSMC_DIR unset;
    else the --set that points a smoke run at the fixture reviews."""
    if not has_nsmc(REAL_NSMC):
        return ["--set", f"data.dir={FIXTURE_NSMC}"]
    fill_cache(REAL_NSMC)
    assert has_nsmc(cache / "nsmc"), "make tune's copy of NSMC did not reach the cache"
    return []


@pytest.fixture
def runner(cli, experiment, tmp_path, monkeypatch):
    """Runs a README line through the real entry point, from the project root, with NSMC_DIR unset
    (the experiment recorded its data, and NSMC is in the cache as after `make tune`), its outputs
    under tmp_path and its registry there too."""
    monkeypatch.delenv("NSMC_DIR", raising=False)
    monkeypatch.setenv("CAVIAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CAVIAR_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.chdir(ROOT)
    data = after_make_tune(tmp_path / "cache")
    made: dict[str, str] = {"<experiment>": str(experiment), "<variant>": str(variant_of(experiment, tmp_path / "v"))}

    def run(line: str):
        for placeholder, value in made.items():
            line = line.replace(f"results/{placeholder}", value).replace(f"results/pretrain/{placeholder}", value)
        args = shlex.split(line)[1:]
        if args[0] in RUN_SMOKE:
            args += [*data, "--set", f"storage={tmp_path}"]
            args += ["--smoke"] if args[0] != "lr-find" else ["--set", "lr_find.steps=10", "--set", "data.limit=400"]
        proc = cli(*args)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        if args[0] == "pretrain":
            made["<folder>"] = next(str(p) for p in (tmp_path / "pretrain").iterdir() if p.is_dir())
        return proc

    return run


@pytest.mark.slow
def test_the_readme_commands_that_finish_in_seconds_run_as_printed(runner):
    lines = [  # an experiment on object storage is parsed only: its real runs are in test_object_store.py
        c
        for c in readme_commands()
        if c.startswith(".venv/bin/caviar ") and c.split()[1] in RUN_SMOKE + RUN_AS_PRINTED and "://" not in c
    ]
    assert any(" rollback " in c for c in lines) and any(" promote " in c for c in lines)
    # a version for `registry rollback` to go back to, then the experiment itself: the README's own
    # promote then finds its checkpoint already promoted (the gate is test_gate.py's)
    runner(".venv/bin/caviar promote results/<variant> --force")
    runner(".venv/bin/caviar promote results/<experiment> --force")
    outputs = {line: runner(line).stdout for line in lines}
    assert "| rank |" in outputs[next(c for c in lines if " report " in c)]
    predicted = outputs[next(c for c in lines if " predict " in c and "--file" not in c)]
    assert predicted.split()[0] in ("긍정", "부정") and "이 영화 정말 재미있어요" in predicted
    from_file = outputs[next(c for c in lines if " predict --file " in c)].splitlines()
    reviews = (ROOT / "tests" / "fixtures" / "reviews.txt").read_text(encoding="utf-8").splitlines()
    assert from_file[0].startswith("label\t") and [row.split("\t")[3] for row in from_file[1:]] == reviews
    assert "(newest last)" in outputs[".venv/bin/caviar experiments"]
    assert outputs[".venv/bin/caviar schema"] == (ROOT / "docs" / "jobs.md").read_text(encoding="utf-8")
