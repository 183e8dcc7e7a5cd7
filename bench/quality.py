"""The quality target: NSMC test accuracy of the promoted model, pretrained on NSMC's own train text.

To run: NSMC_DIR=../shared/data/nsmc python -m bench.quality                 (both routes, side by side)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --no-compare    (the pretrained route only)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --experiment results/<done>   (skip tuning)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --job <another job> \
            --compare-job tune_jobs/nsmc_pretrained.yaml \
            --compare-record bench/results/quality.json   (that job; the MLM route as measured earlier)
        python -m bench.quality --smoke   (the route on the test fixture, seconds: checks the script runs)
        NSMC_DIR=../shared/data/nsmc python -m bench.quality --experiment results/<done> \
            --compare-experiment results/<other done>                       (score both, tune neither)

The route (tune_jobs/nsmc_pretrained.yaml): masked-LM pretraining on the train split's reviews,
an ASHA search over fine-tuning settings, promotion (validation chooses; the gate split, when the
job holds one out, is scored too), then one pass over the whole test file. Target: >= 89.0% test
accuracy in <= 2 h on 2 CPUs, with no outside weights and no text beyond NSMC's train split.
The comparison (--compare-job, from scratch by default: nsmc_best.yaml) runs after it in the same
process. A comparison with no pretraining stage gets the route's wall time as its Tuner's budget
and up to FILL_FACTOR times its trials, so the clock, not the trial count, ends its search; one
with a stage 0 runs as its job says. --compare-record reuses a route an earlier record measured
(the one whose job the compare job names), marked with where it came from.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from bench.common import JOBS, BenchParser, project_path, run_main, smoke_sets, write_result
from caviar.experiment.job_record import load_job_of
from caviar.experiment.layout import OUTCOME_FILE, PRETRAIN_CARD, PRETRAIN_FILE
from caviar.experiment.record import load_trials
from caviar.job.loading import SMOKE, load_job
from caviar.ops.allocator import run_on_jemalloc
from caviar.registry.promote import promote
from caviar.tuning.pipeline import reseed_experiment, tune_job
from model.data import TEST_FILE, locate_nsmc, read_reviews
from model.errors import UserError
from model.evaluate import evaluate_checkpoint
from model.files import read_json_object
from model.predict import Predictor

TARGET = 0.89
WALL_LIMIT_S = 7200
FILL_FACTOR = 8  # the comparison's trial count, as a multiple of its job's; its time budget binds first


def main() -> None:
    run_on_jemalloc()  # the route as the `caviar` command runs it
    parser = BenchParser(__doc__)
    parser.add_argument("--job", type=Path, default=JOBS / "nsmc_pretrained.yaml")
    parser.add_argument("--compare-job", type=Path, default=JOBS / "nsmc_best.yaml")
    parser.add_argument("--experiment", type=Path, default=None, help="a finished experiment: skip tuning")
    compare = parser.add_mutually_exclusive_group()
    compare.add_argument("--no-compare", action="store_true", help="skip the comparison route")
    compare.add_argument(
        "--compare-experiment",
        type=Path,
        default=None,
        help="a finished experiment of the comparison: score it, do not rerun",
    )
    compare.add_argument(
        "--compare-record",
        type=Path,
        default=None,
        help="an earlier quality JSON: report its route of --compare-job as measured, run nothing",
    )
    parser.add_argument("--reseed", type=int, default=None, help="seed re-runs before promotion")
    args = parser.parse_args()

    recorded = recorded_route(args.compare_record, args.compare_job) if args.compare_record else None  # before record()
    sets = [*SMOKE, *smoke_sets()] if args.smoke else []
    args.no_compare = args.no_compare or args.smoke  # --smoke: the route alone (the comparison runs the same code)
    main_route = route(args.job, args.experiment, args.reseed, sets=sets)
    record(main_route, None, args.smoke)  # kept even if the comparison is cut short
    if args.no_compare:
        return
    fill_s = None if args.smoke else main_route["wall_s"]
    compared = recorded or route(args.compare_job, args.compare_experiment, args.reseed, fill_s, sets)
    if abs(compared["wall_s"] - main_route["wall_s"]) > 0.05 * main_route["wall_s"]:
        print(f"note: {compared['job']} took {compared['wall_s']:.0f} s, this route {main_route['wall_s']:.0f} s")
    record(main_route, compared, args.smoke)


def recorded_route(path: Path, compare_job: Path) -> dict:
    """The route of `compare_job` in an earlier quality record, as it was measured. Rerunning a route
    costs 2 h for a figure that would barely move; the copy says where it came from."""
    recorded, name = read_json_object(path), load_job(compare_job).name
    found = [r for r in recorded.values() if isinstance(r, dict) and r.get("job") == name]
    if not found:
        raise UserError(f"--compare-record {path}: holds no route of job {name!r} ({compare_job})")
    return {**found[0], "reused_from": f"{project_path(path)}, measured {recorded.get('machine', {}).get('when', '?')}"}


def record(main_route: dict, compared: dict | None, smoke: bool) -> None:
    write_result(
        "quality",
        {
            "route": main_route,
            "compared_route": compared,
            "gain_test_accuracy": None if compared is None else main_route["test_accuracy"] - compared["test_accuracy"],
            "target": {"test_accuracy": f">= {TARGET}", "wall_s": f"<= {WALL_LIMIT_S}"},
            "met": {
                "test_accuracy": main_route["test_accuracy"] >= TARGET,
                "wall_s": main_route["wall_s"] <= WALL_LIMIT_S,
            },
        },
        smoke,
    )


def route(
    job_file: Path, experiment: Path | None, reseed: int | None, fill_s: float | None = None, sets: list[str] = ()
) -> dict:
    """Tune (unless given a finished experiment), promote, and score once on the whole test file;
    `sets`: --set assignments over the job (--smoke's)."""
    started, tuned_here = time.perf_counter(), experiment is None
    if experiment is None:
        job = load_job(job_file, list(sets))
        if job.model.pretrained:
            raise UserError(f"{job_file}: model.pretrained names outside weights; the target allows none")
        if fill_s is not None and not job.stages.pretrain:  # fill the route's wall time with trials
            job = job.model_copy(update={"time_budget_s": fill_s, "num_samples": job.num_samples * FILL_FACTOR})
        experiment = Path(tune_job(job).experiment_dir)
    if reseed:
        reseed_experiment(experiment, load_job_of(experiment).final.model_copy(update={"seeds": reseed}))
    with tempfile.TemporaryDirectory() as registry:
        ray.shutdown()
        done = promote(experiment, "quality", force=True, root=Path(registry)).as_json()
        job = load_job_of(experiment)
        full_test = read_reviews(locate_nsmc(job.data) / TEST_FILE)  # the whole file, whatever test_limit says
        metrics = evaluate_checkpoint(Path(done["path"]), full_test)
    wall = time.perf_counter() - started
    outcome = read_json_object(experiment / OUTCOME_FILE)
    if not tuned_here:
        wall += outcome["wall_s"]  # tuned earlier: count that run's wall time too
    stage0 = experiment / PRETRAIN_FILE
    pretrain = _pretrain_figures(read_json_object(stage0)) if stage0.is_file() else None
    if pretrain is not None and (pretrain["reused"] or not tuned_here):
        # pretrained by an earlier job, or outside the tuning run's own clock: it belongs to the route
        wall += pretrain["wall_s"]
    return {
        "job": job.name,
        "experiment": project_path(experiment),
        "pretrain": pretrain,
        "time_budget_s": job.time_budget_s,  # as the search ran, also when scored from a finished one
        "trials": len(outcome["trials"]),
        "search_wall_s": outcome["wall_s"],
        "stopped_early": outcome["stopped_early"],
        "cut_by_budget": outcome.get("cut_by_budget"),  # None: scored from a run before caviar recorded cuts
        "promoted": {k: done[k] for k in ("version", "val_accuracy", "reseed")} | _gate_figures(done["gate"]),
        "test_examples": len(full_test),
        "test_accuracy": metrics.accuracy,
        "test_f1": metrics.f1,
        "wall_s": wall,  # pretraining, tuning, promotion and the test pass
        "ensemble_of_kept_trials": ensemble_of_kept(experiment, job.metric, job.mode, full_test),
    }


def _gate_figures(gate: dict | None) -> dict:
    """The promoted model's accuracy on the gate split (held out of train and validation), if any."""
    if not gate or gate.get("candidate_accuracy") is None:
        return {"gate_accuracy": None}
    return {"gate_accuracy": gate["candidate_accuracy"], "gate_reviews": gate["reviews"]}


def _pretrain_figures(record: dict) -> dict:
    card = read_json_object(Path(record["folder"]) / PRETRAIN_CARD)
    keep = ("texts", "not_read", "steps", "mlm_loss", "examples_per_s", "wall_s", "settings")
    electra = {k: card[k] for k in ("disc_loss", "replaced_accuracy", "original_share") if card.get(k) is not None}
    return {
        "folder": project_path(record["folder"]),
        "reused": record["reused"],
        "objective": card.get("objective", "mlm"),
        **{k: card[k] for k in keep},
        **electra,
    }


def ensemble_of_kept(experiment: Path, metric: str, mode: str, reviews) -> dict:
    """Mean P(긍정) over the best checkpoints the job kept (its best K trials). Not the promoted
    model, and outside the timed run: a pointer to how far averaging alone would move the figure."""
    folders = [c for t in load_trials(experiment) if (c := t.best_checkpoint(metric, mode))]
    texts = reviews.document.tolist()
    probs = np.mean([Predictor.from_checkpoint(f).probabilities(texts) for f in folders], axis=0)
    return {"members": len(folders), "test_accuracy": float(((probs >= 0.5) == reviews.label.to_numpy()).mean())}


if __name__ == "__main__":
    run_main(main, "bench.quality")
